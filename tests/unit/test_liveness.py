"""Liveness and fairness rules: one org's turn, the review verdicts kept and bounded, the
write gate at execution time, the sign-up bound, and a second operator refused at start."""

from __future__ import annotations

import asyncio
import copy
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aiohttp import web
from kubernetes import client

from orgkeeper.cli import parser
from orgkeeper.domain.admission import signup_limit_refusal
from orgkeeper.domain.fairness import take_turn, turn_order
from orgkeeper.kube import KubeApi, NotLeaderError, threaded
from orgkeeper.leader import LeaseHeldError, check_one_installation, micro_time
from orgkeeper.leases import Leases as LeaseApi
from orgkeeper.registrations import Registrations
from orgkeeper.reviews import BusyError, Verdicts, metrics_ttl, token_key, user_key
from orgkeeper.settings import SettingError, Settings, check
from orgkeeper.webhook_server import check_webhook_configurations
from support.inline import Inline

# --- one org's turn (domain/fairness.py) -----------------------------------------------------


def test_a_turn_takes_whole_items_in_order_while_they_fit_the_budget() -> None:
    costs = [("a", 3), ("b", 0), ("c", 4), ("d", 2), ("e", 1)]
    assert take_turn(costs, 7) == (["a", "c"], True)
    assert take_turn(costs, 10) == (["a", "c", "d", "e"], False)


def test_a_turn_always_makes_progress_even_past_the_budget() -> None:
    assert take_turn([("big", 50), ("small", 1)], 10) == (["big"], True)


def test_items_with_nothing_to_write_are_neither_taken_nor_left() -> None:
    assert take_turn([("a", 1), ("b", 0), ("c", 0)], 1) == (["a"], False)
    assert take_turn([], 5) == ([], False)


def test_ten_thousand_drifted_memberships_take_many_turns_each_within_the_budget() -> None:
    """The M2 case: every Membership rewrites 5 RoleBindings and its status."""
    pending = [(f"m{i:05}", 6) for i in range(10_000)]
    turns = 0
    while pending:
        taken, more = take_turn(pending, 500)
        assert 0 < sum(cost for _, cost in pending[: len(taken)]) <= 500
        pending = pending[len(taken) :]
        assert more == bool(pending)
        turns += 1
    assert turns == 10_000 * 6 // 498 + 1  # 83 Memberships (498 writes) a turn


def test_new_memberships_go_first_in_a_turn() -> None:
    assert turn_order([("old-1", False), ("new-1", True), ("old-2", False), ("new-2", True)]) == [
        "new-1",
        "new-2",
        "old-1",
        "old-2",
    ]


# --- review verdicts, kept and bounded (reviews.py) -------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_verdict_is_kept_for_its_ttl_then_asked_again() -> None:
    clock, asked = Clock(), []

    async def review() -> int:
        asked.append(1)
        return 401

    async def scenario() -> None:
        verdicts: Verdicts[str, int] = Verdicts(metrics_ttl, concurrency=2, clock=clock)
        assert await verdicts.ask("t", review) == 401
        assert await verdicts.ask("t", review) == 401
        assert len(asked) == 1
        clock.now += 10  # an unauthenticated verdict lasts 10 s
        assert await verdicts.ask("t", review) == 401
        assert len(asked) == 2

    asyncio.run(scenario())


def test_junk_tokens_never_grow_the_cache_past_its_capacity() -> None:
    async def review() -> int:
        return 401

    async def scenario() -> Verdicts[str, int]:
        verdicts: Verdicts[str, int] = Verdicts(metrics_ttl, concurrency=2, capacity=8)
        for index in range(100):
            await verdicts.ask(token_key(f"junk{index}", "/metrics"), review)
        return verdicts

    verdicts = asyncio.run(scenario())
    assert len(verdicts.kept) == 8
    assert token_key("junk99", "/metrics") in verdicts.kept
    assert all("junk" not in key for key in verdicts.kept)  # hashes, never tokens


def test_beyond_the_bound_a_caller_is_told_busy_at_once_and_nothing_queues() -> None:
    async def scenario() -> tuple[int, int, int]:
        release = asyncio.Event()
        running = 0

        async def slow() -> int:
            nonlocal running
            running += 1
            await release.wait()
            return 403

        verdicts: Verdicts[str, int] = Verdicts(metrics_ttl, concurrency=2, waiting=3)
        tasks = [asyncio.create_task(verdicts.ask(f"k{i}", slow)) for i in range(5)]
        await asyncio.sleep(0.01)
        with pytest.raises(BusyError):
            await verdicts.ask("one-too-many", slow)
        most = running
        release.set()
        answers = await asyncio.gather(*tasks)
        return most, len(answers), verdicts.refused

    most, answered, refused = asyncio.run(scenario())
    assert most == 2  # never more reviews at once than the bound
    assert answered == 5 and refused == 1


def test_an_authorization_verdict_is_keyed_by_the_whole_user_verb_and_org() -> None:
    user = {"username": "a", "groups": ["g"]}
    assert user_key(user, "support", "acme") == user_key(dict(user), "support", "acme")
    assert user_key(user, "support", "acme") != user_key(user, "support", "other")
    assert user_key(user, "support", "acme") != user_key({**user, "groups": []}, "support", "acme")


# --- the write gate, checked when a write runs ---------------------------------------------


def test_a_write_queued_while_leading_is_refused_if_the_lease_lapsed_before_it_runs() -> None:
    received: list[str] = []
    holding = [True]
    secret = "/api/v1/namespaces/ns/secrets/late"

    async def scenario() -> None:
        read_arrived, release = asyncio.Event(), asyncio.Event()

        async def handle(request: web.Request) -> web.Response:
            received.append(request.method)
            if request.method == "GET":
                read_arrived.set()
                await release.wait()  # holds kube's only thread: the write waits in the queue
            return web.json_response({})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{runner.addresses[0][1]}"
        api = KubeApi(client.ApiClient(configuration))
        api.executor = ThreadPoolExecutor(max_workers=1)
        api.write_gate = lambda: holding[0]
        try:
            busy = asyncio.create_task(api.read_secret("ns", "x"))
            queued = asyncio.create_task(api.delete_secret("ns", "late"))
            await asyncio.wait_for(read_arrived.wait(), 5)
            holding[0] = False  # the Lease lapses while the write waits for a thread
            release.set()
            await busy
            with pytest.raises(NotLeaderError, match=f"DELETE {secret}"):
                await queued
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
    assert received == ["GET"]


# --- the sign-up bound -----------------------------------------------------------------------


def test_sign_up_is_bounded_per_owner_and_support_is_exempt() -> None:
    owned = [f"org-{i}" for i in range(10)]
    assert signup_limit_refusal("a@x.test", owned[:9], 10) is None
    refusal = signup_limit_refusal("a@x.test", owned, 10)
    assert refusal is not None
    assert refusal.startswith("spec.owner: a@x.test already owns 10 Organizations")
    assert "--orgs-per-owner" in refusal and "ORGKEEPER_ORGS_PER_OWNER" in refusal
    assert "support (orgkeeper-support)" in refusal
    assert signup_limit_refusal("a@x.test", owned, 10, support=True) is None


def test_the_new_settings_are_flags_and_variables_with_their_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = parser().parse_args(["run"])
    assert (args.orgs_per_owner, args.writes_per_turn) == (10, 500)
    monkeypatch.setenv("ORGKEEPER_ORGS_PER_OWNER", "3")
    monkeypatch.setenv("ORGKEEPER_WRITES_PER_TURN", "50")
    args = parser().parse_args(["run"])
    assert (args.orgs_per_owner, args.writes_per_turn) == (3, 50)
    with pytest.raises(SettingError, match=r"^--orgs-per-owner \(ORGKEEPER_ORGS_PER_OWNER\)"):
        check(Settings(orgs_per_owner=0))
    with pytest.raises(SettingError, match=r"^--writes-per-turn \(ORGKEEPER_WRITES_PER_TURN\)"):
        check(Settings(writes_per_turn=0))


# --- a second operator, refused at start ----------------------------------------------------


def lease(namespace: str, holder: str, renewed: datetime) -> dict[str, Any]:
    return {
        "metadata": {"name": "orgkeeper", "namespace": namespace, "resourceVersion": "1"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "renewTime": micro_time(renewed),
        },
    }


class Cluster:
    """The reads the start checks make, from objects in memory."""

    def __init__(self) -> None:
        self.leases: list[dict[str, Any]] = []
        self.configurations: list[dict[str, Any]] = []
        self.executor = Inline()

    @threaded
    def read_lease(self, namespace: str, name: str, timeout: float | None = None) -> Any:
        found = [
            x
            for x in self.leases
            if (x["metadata"]["namespace"], x["metadata"]["name"]) == (namespace, name)
        ]
        return copy.deepcopy(found[0]) if found else None

    @threaded
    def leases_named(self, names: list[str]) -> list[dict[str, Any]]:
        return [x for x in self.leases if x["metadata"]["name"] in names]

    @threaded
    def webhook_configurations(self, names: Any) -> list[dict[str, Any]]:
        return [c for c in self.configurations if c["metadata"]["name"] in names]


def test_an_operator_that_does_not_elect_refuses_while_its_scope_is_led() -> None:
    cluster = Cluster()
    cluster.leases.append(lease("orgkeeper-system", "orgkeeper-abc", datetime.now(UTC)))
    kube = cast(LeaseApi, cluster)
    with pytest.raises(LeaseHeldError) as refused:
        check_one_installation(kube, Settings(identity="laptop_1"))
    message = str(refused.value)
    assert message.startswith("--leader-elect (ORGKEEPER_LEADER_ELECT): operator 'orgkeeper-abc'")
    assert "orgkeeper-system/orgkeeper" in message and "\n" not in message
    # The control: a replica of that installation starts (it follows).
    check_one_installation(kube, Settings(identity="orgkeeper-def", leader_elect=True))
    # An expired Lease is nobody's.
    cluster.leases[0] = lease("orgkeeper-system", "x", datetime.now(UTC) - timedelta(minutes=1))
    check_one_installation(kube, Settings(identity="laptop_1"))


def test_an_installation_in_another_namespace_is_refused_even_with_leader_election() -> None:
    cluster = Cluster()
    cluster.leases.append(lease("orgkeeper-prod", "prod-1", datetime.now(UTC)))
    settings = Settings(identity="staging-1", namespace="orgkeeper-staging", leader_elect=True)
    with pytest.raises(LeaseHeldError) as refused:
        check_one_installation(cast(LeaseApi, cluster), settings)
    message = str(refused.value)
    assert message.startswith("--namespace (ORGKEEPER_NAMESPACE): orgkeeper is installed in")
    assert "orgkeeper-prod/orgkeeper" in message and "--namespace orgkeeper-prod" in message


def configuration(kind: str, name: str, **client_config: Any) -> dict[str, Any]:
    hook = {"name": f"validate-organization.{name}", "clientConfig": client_config}
    return {"kind": kind, "metadata": {"name": name}, "webhooks": [hook]}


SERVICE = {"namespace": "orgkeeper-system", "name": "orgkeeper-webhook", "path": "/x"}


def test_managed_mode_refuses_to_replace_the_installed_configuration() -> None:
    cluster = Cluster()
    cluster.configurations.append(
        configuration("ValidatingWebhookConfiguration", "orgkeeper.dev", service=SERVICE)
    )
    kube = cast(Registrations, cluster)
    with pytest.raises(SettingError) as refused:
        check_webhook_configurations(kube, Settings(webhook_mode="managed"))
    assert str(refused.value).startswith("--webhook-mode (ORGKEEPER_WEBHOOK_MODE): managed would")
    assert "orgkeeper-system/orgkeeper-webhook" in str(refused.value)
    # Serving behind it, or with a regional configuration of its own, is no takeover.
    assert check_webhook_configurations(kube, Settings(webhook_mode="serve")) == []
    assert check_webhook_configurations(kube, Settings(webhook_mode="managed", region="eu")) == []


def test_a_configuration_calling_another_namespace_is_another_installation() -> None:
    cluster = Cluster()
    elsewhere = {**SERVICE, "namespace": "orgkeeper-prod"}
    cluster.configurations.append(
        configuration("ValidatingWebhookConfiguration", "orgkeeper.dev", service=elsewhere)
    )
    with pytest.raises(SettingError, match=r"^--namespace .*installed in namespace orgkeeper-prod"):
        check_webhook_configurations(cast(Registrations, cluster), Settings(webhook_mode="off"))


def test_configurations_calling_nothing_alive_are_told_with_the_command_to_remove_them() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    with socket.socket() as alive:
        alive.bind(("127.0.0.1", 0))
        alive.listen()
        live = alive.getsockname()[1]
        cluster = Cluster()
        cluster.configurations += [
            configuration(
                "ValidatingWebhookConfiguration",
                "eu.orgkeeper.dev",
                url=f"https://127.0.0.1:{dead}/x",
            ),
            configuration(
                "MutatingWebhookConfiguration",
                "eu.orgkeeper.dev",
                url=f"https://127.0.0.1:{dead}/y",
            ),
            configuration(
                "ValidatingWebhookConfiguration",
                "us.orgkeeper.dev",
                url=f"https://127.0.0.1:{live}/x",
            ),
        ]
        (warning,) = check_webhook_configurations(cast(Registrations, cluster), Settings())
        # Its own managed configuration is registered anew, not told about.
        mine = Settings(webhook_mode="managed", region="eu")
        assert check_webhook_configurations(cast(Registrations, cluster), mine) == []
        # Nor the one it serves behind, which calls it once it listens.
        cluster.configurations[:2] = [
            configuration(
                "ValidatingWebhookConfiguration", "orgkeeper.dev", url=f"https://127.0.0.1:{dead}/x"
            )
        ]
        serving = Settings(webhook_mode="serve")
        assert check_webhook_configurations(cast(Registrations, cluster), serving) == []
    assert warning.startswith(
        f"The webhook configurations eu.orgkeeper.dev call https://127.0.0.1:{dead}/"
    )
    assert "us.orgkeeper.dev" not in warning
    assert warning.endswith(
        "kubectl delete validatingwebhookconfiguration/eu.orgkeeper.dev "
        "mutatingwebhookconfiguration/eu.orgkeeper.dev"
    )


# --- a turn of Membership writes (controllers/membership.py) --------------------------------


def test_a_turn_writes_whole_memberships_within_the_budget_new_ones_first() -> None:
    from datetime import datetime

    from orgkeeper.controllers.membership import sync_memberships
    from orgkeeper.controllers.runtime import Runtime
    from orgkeeper.domain.membership import plan_memberships

    patched: list[str] = []

    class Kube:
        async def run(self, call: Any, *args: Any) -> Any:
            return call(*args)

        def patch_status(self, plural: str, name: str, body: Any, namespace: str) -> None:
            patched.append(name)

    from unittest.mock import MagicMock

    runtime = Runtime(kube=MagicMock(), settings=Settings())
    runtime.kube = cast(KubeApi, Kube())
    for index in range(10):
        status = {"state": "Active"} if index < 8 else {}  # m8 and m9 are new
        body = {
            "metadata": {"name": f"m{index}", "namespace": "org-x", "uid": f"u{index}"},
            "spec": {"email": f"m{index}@x.test", "teams": []},
            "status": status,
        }
        runtime.caches.members.observe(body)
    members = runtime.caches.members.in_namespace("org-x")
    plan = plan_memberships(None, members, [], sso_prefix="oidc:", now=datetime.now(UTC))

    async def turn() -> bool:
        return await sync_memberships(runtime, "org-x", plan, members, [], budget=3)

    assert asyncio.run(turn()) is True
    assert sorted(patched) == ["m0", "m8", "m9"]  # each goes Pending: the new ones first
    patched.clear()
    assert asyncio.run(sync_memberships(runtime, "org-x", plan, members, [])) is False
    assert len(patched) == 10  # without a budget (the pending loop), all at once
