"""SIGTERM of the leader while one of kopf's own PATCHes is on its way to the API server.

The leader (replica-a) reaches the API server through a proxy that answers one org's requests
2 s late, so kopf's first write to that org (its finalizer) is still in flight when the
SIGTERM comes. The leader must release the Lease only after that write was answered: the
audit log shows no write of the stepped-down leader received after its release.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from orgkeeper_dev.localcluster import LocalCluster
from support.kube import AsUser, Kube, wait_for
from support.orgs import new_org, unique_suffix, wait_org
from support.replicas import (
    NAMES,
    code,
    completed_requests,
    describe,
    is_lease,
    is_write,
    received,
    replica_of,
)

from .operators import Operators
from .proxy import FlakyProxy
from .report import TALLY, once, rng

STEPDOWN = "SIGTERM of the leader with kopf's PATCH in flight (2 replicas)"
SLOW = 2.0  # less than the 5 s a resigning leader waits for its writes in flight


def test_a_sigtermed_leader_releases_the_lease_only_after_kopfs_write_in_flight(
    fault_cluster: LocalCluster,
    fault_admin: Kube,
    as_user: AsUser,
    operators: Operators,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    admin = fault_admin
    directory = tmp_path_factory.mktemp("fault-stepdown")
    proxy = FlakyProxy(
        fault_cluster,
        directory / "proxy",
        rng(STEPDOWN, 0),
        error_rate=0,
        delay_rate=0,
        slow_seconds=SLOW,
    ).start()
    via = {NAMES[0]: proxy.kubeconfig_for(operators.identity.kubeconfig)}
    try:
        # replica-a, behind the proxy, leads
        with operators.made_way_for_replicas(directory, via=via) as pair, once(STEPDOWN):
            leader = pair.processes[NAMES[0]]
            org = f"term-{unique_suffix()}"
            proxy.slowed = (f"/organizations/{org}",)  # the org's own path: not the watch
            since = datetime.now(UTC)
            new_org(as_user, org, f"owner@{org}.test")
            wait_for("kopf's first write to the org in the proxy", lambda: proxy.injected["slowed"])
            sigterm = time.monotonic()
            leader.stop()  # SIGTERM: stop writing, wait for writes in flight, release
            stopped = time.monotonic() - sigterm
            assert leader.process is not None and leader.process.poll() == 0
            wait_for(f"{NAMES[1]} to take the Lease", lambda: pair.holder() == NAMES[1])
            wait_org(admin, org, timeout=60)  # the new leader finishes it

            entries = [
                e
                for e in completed_requests(fault_cluster.audit_log)
                if replica_of(e) == NAMES[0] and 200 <= code(e) < 300 and received(e) >= since
            ]
            releases = [received(e) for e in entries if is_lease(e) and is_write(e)]
            release = max(releases)
            late = [
                describe(e)
                for e in entries
                if is_write(e) and not is_lease(e) and received(e) > release
            ]
            assert late == [], f"{NAMES[0]} wrote after releasing the Lease: {late}"
            assert ": released." in leader.log_text()  # not left to expire: answered in time
            TALLY.note(STEPDOWN, f"SIGTERM to exit {stopped:.1f}s, kopf's PATCH {SLOW:g}s late")
    finally:
        proxy.stop()
