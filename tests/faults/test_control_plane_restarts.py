"""kube-apiserver, then etcd, restarted while the operator converges an org: the same operator
process (no restart of its own) notices and converges again within 90 seconds."""

from __future__ import annotations

import time
from functools import partial

from orgkeeper_dev.localcluster import LocalCluster
from support.kube import AsUser, Kube
from support.orgs import new_org, unique_suffix, wait_org

from .operators import Operators
from .report import RESTARTS, TALLY, Trials
from .scenarios import active_problems, add_members, wait_until
from .state import delete_and_wait_gone, snapshot

CONVERGE_WITHIN = 90.0
MEMBERS_BEFORE, MEMBERS_DURING, MEMBERS_AFTER = 5, 40, 5


def _problems(admin: Kube, org: str, members: int) -> list[str]:
    """What keeps the org from being converged with `members` Memberships (none once it is)."""
    return active_problems(snapshot(admin, org), expected_members=members)


def test_control_plane_restarts_during_convergence(
    fault_cluster: LocalCluster, fault_admin: Kube, as_user: AsUser, operators: Operators
) -> None:
    admin, trials = fault_admin, Trials()
    for component in ("kube-apiserver", "etcd"):
        fault = f"{component} restarted during convergence"
        TALLY.note(
            fault,
            f"{MEMBERS_DURING} Memberships being bound, restart at U(0, 1s); "
            f"{MEMBERS_AFTER} more and a spec change once it is back",
        )
        recoveries: list[float] = []
        for index in range(RESTARTS):
            with trials.trial(fault, index) as rng:
                pid = operators.pid
                org = f"restart-{unique_suffix()}"
                owner = f"owner@{org}.test"
                new_org(as_user, org, owner)
                wait_org(admin, org)
                add_members(admin, org, MEMBERS_BEFORE)
                wait_until(
                    "the org converged before the fault",
                    partial(_problems, admin, org, MEMBERS_BEFORE + 1),
                    timeout=60,
                )
                add_members(admin, org, MEMBERS_DURING, start=MEMBERS_BEFORE)
                time.sleep(rng.uniform(0, 1.0))  # the seeded fault moment
                fault_cluster.restart(component)
                # Changes made once it is back must get through as well.
                add_members(admin, org, MEMBERS_AFTER, start=MEMBERS_BEFORE + MEMBERS_DURING)
                admin.patch("organizations", org, {"spec": {"displayName": "After the restart"}})
                total = MEMBERS_BEFORE + MEMBERS_DURING + MEMBERS_AFTER + 1
                took = wait_until(
                    f"org {org} converged after {component} came back",
                    partial(_problems, admin, org, total),
                    timeout=CONVERGE_WITHIN,
                )
                assert operators.alive() and operators.pid == pid, (
                    f"the operator restarted (pid {pid} -> {operators.pid}):\n"
                    f"{operators.process.log_tail()}"
                )
                recoveries.append(took)
                delete_and_wait_gone(admin, org)
        if recoveries:
            TALLY.note(fault, f"converged at most {max(recoveries):.1f}s after it was back")
    trials.check()
