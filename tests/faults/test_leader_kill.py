"""SIGKILL of the leader of two `--leader-elect` replicas at seeded moments of a deactivation.

The follower must take the Lease within 20 s (the 15 s lease duration and one retry), finish
the cascade the dead leader left, and leave the org exactly as an uninterrupted run does; the
killed replica comes back as the follower, as its Deployment would restart it.

The suite's single operator makes way for the pair (it elects no leader) and its webhook
configurations go with it (with failurePolicy Fail and nothing serving, they would refuse every
write); both come back at the end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from orgkeeper.api.v1alpha1 import PRODUCTS
from orgkeeper.localcluster import LocalCluster
from support import identity
from support.kube import Kube, wait_for
from support.replicas import Replicas

from .operators import Operators, loopback_webhooks
from .report import MEMBERS, TALLY, TRIALS, Trials
from .scenarios import (
    AsUser,
    active_problems,
    add_members,
    control_plane,
    data_plane,
    deactivated_problems,
    new_org,
    provisioned_problems,
    wait_until,
)
from .state import Snapshot, delete_and_wait_gone, delete_namespaces, snapshot, wait_equal

FAILOVER_LIMIT = 20.0
RECOVERY_TIMEOUT = 60.0 + MEMBERS / 10
FAULT = f"SIGKILL of the leader during deactivation ({MEMBERS} members, 2 replicas)"


@pytest.fixture
def replicas(
    fault_cluster: LocalCluster,
    fault_admin: Kube,
    operators: Operators,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Replicas]:
    operators.stop()
    identity.remove_webhooks(fault_cluster)
    pair = Replicas(
        fault_cluster,
        fault_admin,
        operators.identity.kubeconfig,
        tmp_path_factory.mktemp("fault-replicas"),
        # The suite's settings: nothing changes objects on a timer.
        settings={key: str(value) for key, value in operators.settings.items()},
    )
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()
        webhooks = loopback_webhooks(identity.render(), operators.process.webhook_port)
        identity.apply(fault_cluster, webhooks)
        operators.start()


def test_leader_kill_during_deactivation(
    fault_admin: Kube, as_user: AsUser, replicas: Replicas
) -> None:
    admin, trials = fault_admin, Trials()
    org = f"ha-{uuid.uuid4().hex[:5]}"
    owner, edge = f"owner@{org}.test", f"edge-{org}"
    new_org(as_user, org, owner)
    dp = data_plane(admin, org, edge)
    wait_until(
        "the org provisioned",
        lambda: provisioned_problems(snapshot(admin, org, [dp]), PRODUCTS),
        timeout=60,
    )
    add_members(admin, org, MEMBERS)
    planes = [dp, control_plane(admin, org)]

    def read() -> Snapshot:
        return snapshot(admin, org, planes)

    def bound() -> list[str]:
        found = read()
        problems = active_problems(found, expected_members=MEMBERS + 1)
        if found["organization"] and found["organization"]["counts"][2] != 1:
            problems.append(f"control planes counted: {found['organization']['counts']}")
        return problems

    wait_until(f"{MEMBERS} members bound", bound, timeout=RECOVERY_TIMEOUT)

    def switch(state: str) -> float:
        admin.patch("organizations", org, {"spec": {"state": state}})
        return time.monotonic()

    # The control: a deactivation the leader runs through without a fault.
    started = switch("Deactivated")
    wait_until("the control deactivation", lambda: deactivated_problems(read()), timeout=120)
    window = time.monotonic() - started
    expected = read()
    TALLY.note(FAULT, f"kill at U(0, {window:.1f}s) after the change, the control's time")
    failovers: list[float] = []

    for index in range(TRIALS):
        switch("Active")
        # Control planes are decommissioned for good: each cycle gets a new one.
        control_plane(admin, org)
        wait_until("the org reactivated", bound, timeout=RECOVERY_TIMEOUT)
        with trials.trial(FAULT, index) as rng:
            leader = replicas.leader()
            dead, heir = replicas.name_of(leader), replicas.name_of(replicas.follower())
            switch("Deactivated")
            time.sleep(rng.uniform(0, window))  # the seeded fault moment
            leader.kill()
            killed = time.monotonic()
            wait_for(
                f"{heir} to take the Lease from {dead}",
                lambda: replicas.holder() == heir,  # noqa: B023 (read at once, in this trial)
                timeout=FAILOVER_LIMIT + 10,
                interval=0.1,
            )
            failover = time.monotonic() - killed
            failovers.append(failover)
            assert failover <= FAILOVER_LIMIT, f"failover took {failover:.1f}s"
            leader.start()  # back as the follower
            wait_equal("the deactivated org", read, expected, timeout=RECOVERY_TIMEOUT)
    if failovers:
        TALLY.note(FAULT, f"failover {min(failovers):.1f}-{max(failovers):.1f}s")
    delete_and_wait_gone(admin, org)
    delete_namespaces(admin, [edge])
    trials.check()
