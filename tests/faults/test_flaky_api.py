"""A slow and failing API: the operator talks to kube-apiserver through a proxy that answers a
seeded tenth of its requests with 429 or 500 and delays another tenth by up to 3 seconds. It
still converges, and no update is lost."""

from __future__ import annotations

import time
from pathlib import Path

from orgkeeper import names
from orgkeeper.api.v1alpha1 import PRODUCTS
from orgkeeper_dev.localcluster import LocalCluster
from support.kube import AsUser, Kube
from support.orgs import new_org, unique_suffix, wait_org

from .operators import Operators
from .proxy import FlakyProxy
from .report import TALLY, TRIALS, Trials, rng
from .scenarios import (
    active_problems,
    add_members,
    data_plane,
    licenses_problems,
    member_teams,
    wait_until,
)
from .state import delete_and_wait_gone, delete_namespaces, snapshot

FAULT = "API answering 10% 429/500, 10% slow"
MEMBERS = 20
CONVERGE_WITHIN = 180.0


def test_operator_converges_through_a_failing_api(
    fault_cluster: LocalCluster,
    fault_admin: Kube,
    as_user: AsUser,
    operators: Operators,
    tmp_path: Path,
) -> None:
    admin, trials = fault_admin, Trials()
    proxy = FlakyProxy(fault_cluster, tmp_path / "proxy", rng(FAULT, -1)).start()
    operators.replace(kubeconfig=proxy.kubeconfig_for(operators.identity.kubeconfig))
    took: list[float] = []
    try:
        for index in range(max(1, TRIALS // 3)):
            with trials.trial(FAULT, index) as generator:
                took.append(converge_through(admin, as_user, generator.random()))
    finally:
        operators.replace()
        proxy.stop()
    counts = proxy.injected
    TALLY.note(
        FAULT,
        f"{counts['requests']} requests: {counts['429']} got 429, {counts['500']} got 500, "
        f"{counts['delayed']} delayed, {counts['watches cut']} watches cut; converged in at "
        f"most {max(took, default=0):.0f}s",
    )
    assert counts["429"] and counts["500"] and counts["delayed"], counts
    trials.check()


def converge_through(admin: Kube, as_user: AsUser, salt: float) -> float:
    """An org provisioned, members added, then every member's teams changed, the org renamed
    and a data plane added: all of it must show, with nothing lost. The seconds it took."""
    org = f"flaky-{unique_suffix()}"
    owner, edge = f"owner@{org}.test", f"edge-{org}"
    namespace = names.org_namespace(org)
    new_org(as_user, org, owner)
    started = time.monotonic()
    # Memberships are admitted once the org is Ready: until kube-controller-manager has counted
    # the namespace's new quota, the API server refuses them.
    wait_org(admin, org, timeout=CONVERGE_WITHIN)
    wanted = add_members(admin, org, MEMBERS)
    # Every member's teams change once the first ones may have been bound.
    for i, email in enumerate(sorted(wanted)):
        teams = member_teams(i + 1 + int(salt * 10))
        admin.patch("memberships", email.split("@")[0], {"spec": {"teams": teams}}, namespace)
        wanted[email] = sorted(teams)
    admin.patch("organizations", org, {"spec": {"displayName": "Renamed under faults"}})
    plane = data_plane(admin, org, edge)

    def converged() -> list[str]:
        snap = snapshot(admin, org, [plane])
        problems = active_problems(snap, expected_members=MEMBERS + 1)
        problems += licenses_problems(snap)
        if sorted(found["product"] for found in snap["licenses"].values()) != sorted(PRODUCTS):
            problems.append(f"licenses {sorted(snap['licenses'])}")
        for found in snap["memberships"].values():
            if found["email"] in wanted and found["teams"] != wanted[found["email"]]:
                problems.append(f"{found['email']}: update lost")
        if snap["organization"]["counts"][3] != 1:
            problems.append(f"data planes counted {snap['organization']['counts']}")
        return problems

    wait_until(f"org {org} converged through the flaky API", converged, CONVERGE_WITHIN)
    elapsed = time.monotonic() - started
    assert admin.get("organizations", org)["spec"]["displayName"] == "Renamed under faults"
    delete_and_wait_gone(admin, org)
    delete_namespaces(admin, [edge])
    return elapsed
