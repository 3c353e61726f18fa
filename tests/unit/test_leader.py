"""Leader election's rules on a Lease held in memory (compare-and-swap as the API server does)."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import functools
import os
import socket
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from kubernetes.client.rest import ApiException

from orgkeeper import names
from orgkeeper.cli import parser
from orgkeeper.controllers.signing import load_or_create_webhook_authority
from orgkeeper.kube import KubeApi, threaded, user_agent
from orgkeeper.leader import (
    Elector,
    LeaseConfig,
    LeaseHeldError,
    LeaseRecord,
    check_sharing,
    micro_time,
)
from orgkeeper.leases import Leases as LeaseApi
from orgkeeper.settings import SettingError, Settings, check, default_identity, lease_name
from orgkeeper.webhook_server import webhook_server
from support.inline import Inline

NAMESPACE = "orgkeeper-system"


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Runs an async test in a loop of its own (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class Leases:
    """The Lease API in memory: 409 on a stale resourceVersion or an existing name."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.reachable = True
        self.forbidden = False  # reads answer 403
        self.executor = Inline(lambda: not self.reachable)

    scope_leases = LeaseApi.scope_leases  # the real one, over the reads below

    @threaded
    def read_lease(self, namespace: str, name: str, timeout: float | None = None) -> Any:
        if self.forbidden:
            raise ApiException(status=403, reason="Forbidden")
        found = self.stored.get(name)
        return copy.deepcopy(found) if found else None

    @threaded
    def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """What the API server selects: the Leases that carry orgkeeper's label."""
        assert selector == names.LEASE_SELECTOR
        return [
            {**copy.deepcopy(found), "metadata": {**found["metadata"], "name": name}}
            for name, found in self.stored.items()
            if names.LABEL_LEASE in (found["metadata"].get("labels") or {})
        ]

    @threaded
    def create_lease(
        self, namespace: str, body: dict[str, Any], timeout: float | None = None
    ) -> Any:
        name = body["metadata"]["name"]
        if name in self.stored:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(body)

    @threaded
    def replace_lease(
        self, namespace: str, body: dict[str, Any], timeout: float | None = None
    ) -> Any:
        current = self.stored[body["metadata"]["name"]]
        if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> Any:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.stored[stored["metadata"]["name"]] = stored
        return copy.deepcopy(stored)

    def record(self, name: str = "orgkeeper") -> LeaseRecord:
        return LeaseRecord.of(self.stored[name])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(leases: Leases, clock: Clock, identity: str, log: list[str]) -> Elector:
    config = LeaseConfig(NAMESPACE, "orgkeeper", identity, 15.0, 10.0, 2.0)

    async def started() -> None:
        log.append(f"{identity} leads")

    async def stopped() -> None:
        log.append(f"{identity} stops")

    return Elector(
        cast(LeaseApi, leases),
        config,
        on_started_leading=started,
        on_stopped_leading=stopped,
        clock=clock,
    )


@pytest.fixture
def leases() -> Leases:
    return Leases()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@run_async
async def test_the_first_replica_takes_the_lease_and_the_second_waits(
    leases: Leases, clock: Clock
) -> None:
    a, b = elector(leases, clock, "a", []), elector(leases, clock, "b", [])
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    record = leases.record()
    assert (record.holder, record.duration, record.transitions) == ("a", 15.0, 0)
    assert a.holds_lease() and not b.holds_lease()


@run_async
async def test_a_lease_not_renewed_is_taken_over_only_after_its_duration_as_seen_locally(
    leases: Leases, clock: Clock
) -> None:
    a, b = elector(leases, clock, "a", []), elector(leases, clock, "b", [])
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()  # b sees a's record now
    clock.now += 14.9
    assert not await b.try_acquire_or_renew()
    clock.now += 0.2
    assert await b.try_acquire_or_renew()
    record = leases.record()
    assert (record.holder, record.transitions) == ("b", 1)
    # a, by then past its renew deadline, had stopped writing before b could take over.
    assert not a.holds_lease()


@run_async
async def test_a_leader_stops_writing_at_the_renew_deadline_before_anyone_may_take_over(
    leases: Leases, clock: Clock
) -> None:
    a = elector(leases, clock, "a", [])
    assert await a.try_acquire_or_renew()
    leases.reachable = False
    clock.now += 9.9
    assert not await a.try_acquire_or_renew()
    assert a.holds_lease()  # within the renew deadline
    clock.now += 0.2
    assert not a.holds_lease()  # 10 s: the gate closes, 5 s before the Lease can expire


@run_async
async def test_renewing_keeps_the_acquire_time_and_counts_no_transition(
    leases: Leases, clock: Clock
) -> None:
    a = elector(leases, clock, "a", [])
    assert await a.try_acquire_or_renew()
    first = leases.record()
    clock.now += 2
    assert await a.try_acquire_or_renew()
    again = leases.record()
    assert again.acquire_time == first.acquire_time
    assert again.transitions == 0


@run_async
async def test_a_released_lease_is_taken_at_the_next_try(leases: Leases, clock: Clock) -> None:
    log: list[str] = []
    a, b = elector(leases, clock, "a", log), elector(leases, clock, "b", log)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    a.leading = True
    await a.resign()
    assert not a.holds_lease()
    assert log == ["a stops"]
    await a.release()
    assert leases.record().holder == ""
    assert await b.try_acquire_or_renew()  # no waiting for the lease duration
    assert leases.record().holder == "b"


@run_async
async def test_release_leaves_a_lease_someone_else_holds(leases: Leases, clock: Clock) -> None:
    a, b = elector(leases, clock, "a", []), elector(leases, clock, "b", [])
    assert await b.try_acquire_or_renew()
    await a.release()
    assert leases.record().holder == "b"


@run_async
async def test_two_replicas_racing_for_an_expired_lease_have_one_winner(
    leases: Leases, clock: Clock
) -> None:
    a, b, c = (elector(leases, clock, name, []) for name in "abc")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert not await c.try_acquire_or_renew()
    clock.now += 16
    won = await asyncio.gather(b.try_acquire_or_renew(), c.try_acquire_or_renew())
    assert sorted(won) == [False, True]


@run_async
async def test_run_leads_then_steps_down_when_renewals_fail(leases: Leases, clock: Clock) -> None:
    log: list[str] = []
    a = elector(leases, clock, "a", log)
    a.config = LeaseConfig(NAMESPACE, "orgkeeper", "a", 0.3, 0.2, 0.05)
    a.clock = time.monotonic
    campaign = asyncio.create_task(a.run())
    while log != ["a leads"]:
        await asyncio.sleep(0.01)
    leases.reachable = False
    while log != ["a leads", "a stops"]:
        await asyncio.sleep(0.01)
    assert not a.holds_lease()
    leases.reachable = True
    while log != ["a leads", "a stops", "a leads"]:
        await asyncio.sleep(0.01)
    await a.resign()
    await asyncio.wait_for(campaign, timeout=2)


def lease(holder: str, renewed: datetime, seconds: int = 15) -> dict[str, Any]:
    return {
        "metadata": {"name": "x", "resourceVersion": "1"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": seconds,
            "renewTime": micro_time(renewed),
            "acquireTime": micro_time(renewed),
            "leaseTransitions": 0,
        },
    }


def test_an_all_regions_operator_refuses_while_a_regional_one_holds_its_lease(
    leases: Leases,
) -> None:
    leases.stored[lease_name("eu")] = lease("eu-1", datetime.now(UTC))
    settings = Settings(identity="global-1")
    with pytest.raises(LeaseHeldError) as refused:
        check_sharing(cast(LeaseApi, leases), settings)
    message = str(refused.value)
    assert "'eu-1'" in message and "orgkeeper-system/orgkeeper-eu" in message
    assert "region eu" in message and "\n" not in message


def test_a_regional_operator_refuses_while_the_all_regions_one_holds_orgkeeper(
    leases: Leases,
) -> None:
    leases.stored["orgkeeper"] = lease("global-1", datetime.now(UTC))
    with pytest.raises(LeaseHeldError, match=r"'global-1'.*orgkeeper-system/orgkeeper "):
        check_sharing(cast(LeaseApi, leases), Settings(region="us", identity="us-1"))


def test_expired_released_or_other_region_leases_are_no_obstacle(leases: Leases) -> None:
    long_ago = datetime.now(UTC) - timedelta(minutes=1)
    leases.stored[lease_name("eu")] = lease("eu-1", long_ago)
    leases.stored[lease_name("us")] = lease("", datetime.now(UTC))
    check_sharing(cast(LeaseApi, leases), Settings(identity="global-1"))
    leases.stored[lease_name("au")] = lease("au-1", datetime.now(UTC))
    check_sharing(cast(LeaseApi, leases), Settings(region="us", identity="us-1"))


def test_the_renew_deadline_must_be_shorter_than_the_lease() -> None:
    elected = Settings(leader_elect=True)
    check(elected)
    with pytest.raises(SettingError, match=r"--renew-deadline .*ORGKEEPER_RENEW_DEADLINE"):
        check(dataclasses.replace(elected, renew_deadline=timedelta(seconds=15)))
    with pytest.raises(SettingError, match="--retry-period"):
        check(dataclasses.replace(elected, retry_period=timedelta(seconds=10)))


def test_the_identity_is_the_pod_name_else_host_and_pid() -> None:
    assert default_identity({"POD_NAME": "orgkeeper-7d9-abc"}) == "orgkeeper-7d9-abc"
    in_cluster = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "orgkeeper-7d9-xyz"}
    assert default_identity(in_cluster) == "orgkeeper-7d9-xyz"
    assert default_identity({"HOSTNAME": "laptop"}) == f"{socket.gethostname()}_{os.getpid()}"


def test_leader_election_flags_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parser().parse_args(["run"])
    assert args.leader_elect is False
    assert args.lease_duration == timedelta(seconds=15)
    monkeypatch.setenv("ORGKEEPER_LEADER_ELECT", "true")
    monkeypatch.setenv("ORGKEEPER_IDENTITY", "replica-a")
    monkeypatch.setenv("ORGKEEPER_RENEW_DEADLINE", "8s")
    args = parser().parse_args(["run"])
    assert (args.leader_elect, args.identity) == (True, "replica-a")
    assert args.renew_deadline == timedelta(seconds=8)
    args = parser().parse_args(["run", "--leader-elect", "--retry-period=1s"])
    assert args.retry_period == timedelta(seconds=1)


def test_the_user_agent_names_the_replica() -> None:
    assert user_agent("0.1.0", "replica-a") == "orgkeeper/0.1.0 (replica-a)"


class Secrets:
    """Secrets by name in memory, as KubeApi reads and creates them."""

    executor = Inline()

    def __init__(self) -> None:
        self.stored: dict[str, SimpleNamespace] = {}
        self.created = 0
        self.theirs: dict[str, SimpleNamespace] | None = None  # see RacedSecrets

    @threaded
    def read_secret(self, namespace: str, name: str) -> SimpleNamespace | None:
        return self.stored.get(name)

    @threaded
    def write_secret(
        self, namespace: str, name: str, data: dict[str, bytes], labels: Any, *, exists: bool
    ) -> SimpleNamespace:
        if self.theirs is not None:
            self.stored.update(self.theirs)
            raise ApiException(status=409, reason="AlreadyExists")
        self.created += 1
        encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
        self.stored[name] = SimpleNamespace(data=encoded)
        return self.stored[name]


class RacedSecrets(Secrets):
    """Another replica creates its Secrets between this one's read and its create."""

    def __init__(self, theirs: dict[str, SimpleNamespace]) -> None:
        super().__init__()
        self.theirs = theirs


def test_replicas_serve_their_webhooks_under_one_ca() -> None:
    """Behind one Service, each replica must be trusted by the configuration's one caBundle."""
    secrets = Secrets()
    first = load_or_create_webhook_authority(cast(KubeApi, secrets), NAMESPACE)
    second = load_or_create_webhook_authority(cast(KubeApi, secrets), NAMESPACE)
    assert secrets.created == 1
    assert first[0] == second[0]
    settings = Settings(webhook_mode="serve", leader_elect=True)
    servers = [webhook_server(settings, authority) for authority in (first, second)]
    assert servers[0].cadata == servers[1].cadata
    assert servers[0].certfile != servers[1].certfile  # each its own key and certificate
    alone = webhook_server(Settings(webhook_mode="serve"))
    assert alone.cadata != servers[0].cadata  # without replicas, a CA of its own as before


def test_a_replica_that_loses_the_race_to_create_the_ca_takes_the_winners() -> None:
    winner = Secrets()
    theirs = load_or_create_webhook_authority(cast(KubeApi, winner), NAMESPACE)
    late = RacedSecrets(winner.stored)
    mine = load_or_create_webhook_authority(cast(KubeApi, late), NAMESPACE)
    assert mine[0] == theirs[0]


def test_without_lease_rights_only_an_electing_operator_is_stopped(leases: Leases) -> None:
    leases.forbidden = True
    check_sharing(cast(LeaseApi, leases), Settings(identity="global-1"))  # a warning only
    with pytest.raises(ApiException):
        check_sharing(cast(LeaseApi, leases), Settings(identity="a", leader_elect=True))
