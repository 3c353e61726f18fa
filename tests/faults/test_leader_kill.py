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
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from orgkeeper.api.v1alpha1 import PRODUCTS
from orgkeeper_dev.localcluster import LocalCluster
from support import identity
from support.kube import AsUser, Kube, wait_for
from support.orgs import new_org, unique_suffix
from support.replicas import (
    NAMES,
    Replicas,
    code,
    completed_requests,
    is_lease,
    is_write,
    received,
    replica_of,
)

from .operators import Operators
from .proxy import FlakyProxy
from .report import MEMBERS, TALLY, TRIALS, Trials, once, rng
from .scenarios import (
    active_problems,
    add_members,
    big_org,
    control_plane,
    provisioned_problems,
    wait_until,
)
from .state import delete_and_wait_gone, delete_namespaces, snapshot, wait_equal

FAILOVER_LIMIT = 20.0
RECOVERY_TIMEOUT = 60.0 + MEMBERS / 10
FAULT = f"SIGKILL of the leader during deactivation ({MEMBERS} members, 2 replicas)"


@pytest.fixture
def replicas(operators: Operators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    with operators.made_way_for_replicas(tmp_path_factory.mktemp("fault-replicas")) as pair:
        yield pair


def test_leader_kill_during_deactivation(
    fault_admin: Kube, as_user: AsUser, replicas: Replicas
) -> None:
    admin, trials = fault_admin, Trials()
    big = big_org(admin, as_user, f"ha-{unique_suffix()}", MEMBERS, PRODUCTS, RECOVERY_TIMEOUT)
    org, edge = big.name, big.edge
    read, bound, switch = big.read, big.bound, big.switch

    # The control: a deactivation the leader runs through without a fault.
    started = switch("Deactivated")
    wait_until("the control deactivation", big.deactivated, timeout=120)
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


PARTITION = "leader cut off from its Lease, its other requests passing (2 replicas)"
# The gate closes 10 s after the last renewal was sent; what the API server receives may be
# later by its transit (through the proxy, on a loaded machine): a second of slack, well
# inside the 5 s between the renew deadline and the lease duration.
RENEW_DEADLINE = timedelta(seconds=10)
TRANSIT = timedelta(seconds=1)


def test_a_leader_cut_off_from_its_lease_stops_writing_before_the_takeover(
    fault_cluster: LocalCluster,
    fault_admin: Kube,
    as_user: AsUser,
    operators: Operators,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Only the leader's Lease requests go unanswered: it can still write everything else, so
    only its renew deadline stops it. Members keep arriving throughout, so there is always work
    to write. The audit log must show its last write within the renew deadline of its last
    renewal and before the follower's takeover, and the follower must finish the work."""
    admin = fault_admin
    directory = tmp_path_factory.mktemp("fault-partition")
    operators.stop()
    identity.remove_webhooks(fault_cluster)
    proxy = FlakyProxy(
        fault_cluster, directory / "proxy", rng(PARTITION, 0), error_rate=0, delay_rate=0
    ).start()
    pair = Replicas(
        fault_cluster,
        admin,
        operators.identity.kubeconfig,
        directory,
        via={NAMES[0]: proxy.kubeconfig_for(operators.identity.kubeconfig)},
        settings={key: str(value) for key, value in operators.settings.items()},
    )
    try:
        with once(PARTITION):
            pair.start()  # replica-a, behind the proxy, leads
            org = f"cut-{unique_suffix()}"
            owner = f"owner@{org}.test"
            new_org(as_user, org, owner)
            wait_until(
                "the org provisioned",
                lambda: provisioned_problems(snapshot(admin, org), PRODUCTS),
                timeout=60,
            )
            since = datetime.now(UTC)
            proxy.held = ("/leases",)
            cut = time.monotonic()
            added = 0
            # Work for whoever leads: one Membership every 0.3 s until 5 s after the takeover.
            while pair.holder() != NAMES[1] and time.monotonic() - cut < 40:
                add_members(admin, org, 1, start=added)
                added += 1
                time.sleep(0.3)
            takeover = time.monotonic() - cut
            until = time.monotonic() + 5
            while time.monotonic() < until:
                add_members(admin, org, 1, start=added)
                added += 1
                time.sleep(0.3)
            assert pair.holder() == NAMES[1], "the follower never took over"
            wait_until(
                f"{added} members bound by the new leader",
                lambda: active_problems(snapshot(admin, org), expected_members=added + 1),
                timeout=RECOVERY_TIMEOUT,
            )

            entries = [
                e
                for e in completed_requests(fault_cluster.audit_log)
                if replica_of(e) and 200 <= code(e) < 300 and is_write(e)
            ]
            writes = [e for e in entries if not is_lease(e) and received(e) >= since]
            leases = [e for e in entries if is_lease(e)]
            # (Earlier tests' replicas had the same names: only this cut's takeover counts.)
            taken = min(
                received(e) for e in leases if replica_of(e) == NAMES[1] and received(e) >= since
            )
            renewed = max(
                received(e) for e in leases if replica_of(e) == NAMES[0] and received(e) < taken
            )
            old = [received(e) for e in writes if replica_of(e) == NAMES[0]]
            assert old, "the leader wrote nothing while cut off: the test proves nothing"
            assert max(old) <= renewed + RENEW_DEADLINE + TRANSIT, (
                f"{NAMES[0]} wrote {(max(old) - renewed).total_seconds():.1f}s after its last "
                "renewal"
            )
            assert max(old) < taken, "the old leader still wrote after the takeover"
            assert min(received(e) for e in writes if replica_of(e) == NAMES[1]) > taken
            TALLY.note(
                PARTITION,
                f"last write {(max(old) - renewed).total_seconds():.1f}s after the last "
                f"renewal (deadline 10s), takeover {takeover:.1f}s after the cut, "
                f"{added} members added meanwhile",
            )
        delete_and_wait_gone(admin, org)
    finally:
        pair.stop()
        proxy.stop()
        webhooks = identity.loopback_webhooks(identity.render(), operators.process.webhook_port)
        identity.apply(fault_cluster, webhooks)
        operators.start()
