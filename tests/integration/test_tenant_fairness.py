"""No tenant stalls the others, on a control plane of its own: self-service sign-up is bounded
per owner e-mail (support exempt), and one org's reconcile holds its slot for a turn of
`--writes-per-turn` writes, not for all of them (API.md "Footprint").

The operator runs in managed mode (its webhooks by URL, as `make run`) with small bounds:
`--orgs-per-owner=2`, `--writes-per-turn=4`.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from orgkeeper import names
from orgkeeper_dev.localcluster import LocalCluster, install_orgkeeper
from support.kube import Kube, api_client, rejection, wait_for
from support.operator import OperatorProcess
from support.orgs import membership, organization, wait_members_bound, wait_org
from support.replicas import code, completed_requests, received

ORGS_PER_OWNER = 2
WRITES_PER_TURN = 4  # many turns per big org: none is done before a poll sees the flip begin
BIG_ORGS = 8  # as many as the operator's reconcile slots (RECONCILE_CONCURRENCY)
MEMBERS = 40  # per big org: 320 Memberships, 640 member RoleBindings
TEAMS = ("api-product-developer", "analytics-viewer")
SSO_PREFIX = "oidc:"


@dataclass
class Tenants:
    cluster: LocalCluster
    admin: Kube
    operator: OperatorProcess

    def as_user(self, user: str) -> Kube:
        return Kube(
            api_client(self.cluster.kubeconfig, user=user, groups=("system:authenticated",))
        )


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    local = LocalCluster(tmp_path_factory.mktemp("tenants-cluster"))
    local.start()
    try:
        install_orgkeeper(local)
        log: Path = tmp_path_factory.mktemp("tenants-operator") / "operator.log"
        process = OperatorProcess(
            local,
            log,
            webhook_mode="managed",
            check_interval="10m",
            extra_args=(
                f"--orgs-per-owner={ORGS_PER_OWNER}",
                f"--writes-per-turn={WRITES_PER_TURN}",
            ),
        ).start()
        try:
            admin = Kube(api_client(local.kubeconfig))
            wait_for("the managed webhooks registered", lambda: _registered(admin))
            yield Tenants(local, admin, process)
        finally:
            process.stop()
    finally:
        local.stop()


def _registered(admin: Kube) -> bool:
    from kubernetes import client

    found = client.AdmissionregistrationV1Api(admin.api).list_validating_webhook_configuration()
    return any(c.metadata.name == names.WEBHOOK_CONFIGURATION for c in found.items)


def test_sign_up_is_bounded_per_owner_and_support_may_exceed_it(tenants: Tenants) -> None:
    admin, mallory = tenants.admin, "mallory@evil.test"
    for index in range(ORGS_PER_OWNER):
        tenants.as_user(mallory).create(
            "organizations", organization(f"m-{index}", mallory, plan="Plus")
        )
        wait_org(admin, f"m-{index}")  # in the webhook's cache, as the next sign-up is checked

    status, message = rejection(
        lambda: tenants.as_user(mallory).create(
            "organizations", organization("m-extra", mallory, plan="Plus")
        )
    )
    assert status == 403
    assert f"spec.owner: {mallory} already owns {ORGS_PER_OWNER} Organizations" in message
    assert "--orgs-per-owner, ORGKEEPER_ORGS_PER_OWNER" in message
    assert "support (orgkeeper-support)" in message
    # The bound is per e-mail, however it is written.
    status, _ = rejection(
        lambda: tenants.as_user(mallory).create(
            "organizations", organization("m-upper", "Mallory@Evil.test", plan="Plus")
        )
    )
    assert status == 403

    # Positive controls: another owner signs up; support creates one more for mallory.
    tenants.as_user("alice@good.test").create(
        "organizations", organization("alice-org", "alice@good.test", plan="Plus")
    )
    admin.create("organizations", organization("m-by-support", mallory, plan="Plus"))
    wait_org(admin, "m-by-support")


def test_a_big_org_rewriting_every_binding_does_not_hold_a_slot_until_it_is_done(
    tenants: Tenants,
) -> None:
    """Eight orgs (as many as the reconcile slots) flip ssoOnly, each rewriting 80 member
    RoleBindings; a small org's new Membership is served while every one of them is still
    rewriting. Without turns the small org would wait until one of the eight was done."""
    admin = tenants.admin
    big = [f"big-{index}" for index in range(BIG_ORGS)]
    for org in [*big, "small"]:
        admin.create("organizations", organization(org, f"owner@{org}.test"))
    for org in big:
        wait_org(admin, org, timeout=60)
        for index in range(MEMBERS):
            body = membership(f"u{index}", f"u{index}@{org}.test", *TEAMS)
            admin.create("memberships", body, names.org_namespace(org))
    for org in big:
        emails = {f"u{index}@{org}.test": sorted(TEAMS) for index in range(MEMBERS)}
        wait_members_bound(admin, org, emails, timeout=180)
    wait_org(admin, "small", timeout=60)

    since = datetime.now().astimezone()
    # Together, so that every big org is rewriting before the small org's member arrives.
    with ThreadPoolExecutor(max_workers=BIG_ORGS) as flips:
        list(
            flips.map(
                lambda org: admin.patch("organizations", org, {"spec": {"ssoOnly": True}}), big
            )
        )
    # At once, not after polling for the flip to start: the eight big orgs' wakes come first
    # and hold every slot for many turns each; the small org's new member waits behind them.
    admin.create("memberships", membership("newbie", "newbie@small.test", *TEAMS), "org-small")
    wait_members_bound(admin, "small", {"newbie@small.test": sorted(TEAMS)}, timeout=120)
    for org in big:
        wait_for(
            f"{org}'s bindings all flipped",
            lambda org=org: _flipped(admin, org) == MEMBERS * len(TEAMS),  # type: ignore[misc]
            timeout=180,
        )

    # Who was served when, by the API server's own clock (the audit log).
    entries = [
        e
        for e in completed_requests(tenants.cluster.audit_log)
        if received(e) >= since and 200 <= code(e) < 300 and e["verb"] in ("patch", "update")
    ]
    served = min(
        received(e) for e in entries if _ref(e) == ("memberships", "org-small", "newbie", "status")
    )
    done = {
        org: max(received(e) for e in entries if _ref(e)[:2] == ("rolebindings", f"org-{org}"))
        for org in big
    }
    finished_first = sorted(org for org, last in done.items() if last < served)
    assert not finished_first, (
        f"the small org's new member was served only after {finished_first} finished rewriting"
    )


def _flipped(admin: Kube, org: str) -> int:
    """The big org's member RoleBindings (not the Owner's) that bind the SSO user name only
    (before the flip they bind the bare e-mail too)."""
    wanted = {
        names.member_binding(f"u{index}@{org}.test", team)
        for index in range(MEMBERS)
        for team in TEAMS
    }
    bindings = admin.rbac.list_namespaced_role_binding(
        names.org_namespace(org), label_selector=names.LABEL_MEMBERSHIP
    ).items
    return sum(
        1
        for binding in bindings
        if binding.metadata.name in wanted
        and binding.subjects
        and all(s.name.startswith(SSO_PREFIX) for s in binding.subjects)
    )


def _ref(entry: dict[str, object]) -> tuple[str, str, str, str]:
    ref = entry.get("objectRef") or {}
    assert isinstance(ref, dict)
    return (
        str(ref.get("resource")),
        str(ref.get("namespace")),
        str(ref.get("name")),
        str(ref.get("subresource") or ""),
    )
