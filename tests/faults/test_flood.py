"""Junk at the open ports: a 60-second flood from 64 parallel clients at the leader's webhook and
metrics ports costs it the Lease zero times (API.md "Footprint"; review finding M3). `make
faults` floods for 60 s; `make test` for 30 s (ORGKEEPER_FAULT_FLOOD_SECONDS), still twice the
Lease's 15 s duration and three renew deadlines: a flood that starved the renewals would lose
the Lease within it.

Anyone who reaches those ports is unauthenticated: each junk bearer token at `/metrics` makes
the operator ask a TokenReview, and a crafted AdmissionReview (an update of a real org from an
Owner who is no member, by a made-up user each time) makes it ask whether that user is
support. The leader reaches the API server through a proxy that answers those reviews 2 s late,
as an API server under load (its flow control throttling the operator) would, so each holds an
operator thread that long. Those reviews run on threads of their own, their verdicts kept
briefly and their number bounded (operator/orgkeeper/reviews.py); the Lease has threads of its
own too. So while the flood lasts the Lease's holder never changes and the leader renews it
without a gap as long as the renew deadline (the audit log's renewals), readiness answers 200,
and admission through the API server still answers. The positive control: the flood did reach
both ports (their answers counted) and did make the operator ask the API server (its
TokenReviews in the audit log).

The clients run in a process of their own (flood.py); loopback only; each client's loop ends by
itself at the deadline.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from orgkeeper.api.v1alpha1 import GROUP, VERSION
from orgkeeper_dev.localcluster import LocalCluster
from support.kube import AsUser, Kube
from support.orgs import membership, new_org, unique_suffix, wait_org
from support.replicas import (
    LEASE,
    NAMES,
    NAMESPACE,
    Replicas,
    code,
    completed_requests,
    is_lease,
    received,
    replica_of,
)

from .operators import Operators
from .proxy import FlakyProxy
from .report import TALLY, once, rng

T = TypeVar("T")
CLIENTS = 64
# `make faults`: 60 s; `make test`: 30 s (its CPU-bound clients take a core from the other lanes).
FLOOD_SECONDS = float(os.environ.get("ORGKEEPER_FAULT_FLOOD_SECONDS", "30"))
RENEW_DEADLINE = timedelta(seconds=10)
# How late the API server answers the leader's reviews (its other requests are not slowed).
REVIEW_SECONDS = 2.0
FAULT = (
    f"flood of both open ports ({CLIENTS} clients, {FLOOD_SECONDS:.0f}s) at the leader, its "
    f"reviews answered {REVIEW_SECONDS:.0f}s late"
)
FLOOD = Path(__file__).with_name("flood.py")


@pytest.fixture
def replicas(
    fault_cluster: LocalCluster, operators: Operators, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    """Two --leader-elect replicas; the API server's admission goes to replica-a, the leader,
    which is also the one flooded, and which reaches the API server through a proxy that
    answers its Token- and SubjectAccessReviews REVIEW_SECONDS late (as an API server under
    load does): the operator's threads would be held as long."""
    directory = tmp_path_factory.mktemp("fault-flood")
    proxy = FlakyProxy(
        fault_cluster,
        directory / "proxy",
        rng(FAULT, 0),
        error_rate=0,
        delay_rate=0,
        slowed=("/tokenreviews", "/subjectaccessreviews"),
        slow_seconds=REVIEW_SECONDS,
    ).start()
    via = {NAMES[0]: proxy.kubeconfig_for(operators.identity.kubeconfig)}
    try:
        with operators.made_way_for_replicas(directory, serve_webhooks=True, via=via) as pair:
            yield pair
    finally:
        proxy.stop()


def flood(webhook_port: int, metrics_port: int, org: str, seconds: float) -> Counter[str]:
    """The clients, in a process of their own (flood.py): their threads would otherwise take
    the GIL from this process's proxy and watchers. Each client's loop ends by itself."""
    done = subprocess.run(
        [sys.executable, str(FLOOD), str(webhook_port), str(metrics_port), org, str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
    )
    return Counter(json.loads(done.stdout.strip().splitlines()[-1]))


def sample_until(until: float, interval: float, probe: Callable[[], T]) -> list[T]:
    found: list[T] = []
    while time.monotonic() < until:
        found.append(probe())
        time.sleep(interval)
    return found


def test_a_flood_of_both_open_ports_never_costs_the_leader_its_lease(
    fault_cluster: LocalCluster, fault_admin: Kube, as_user: AsUser, replicas: Replicas
) -> None:
    admin = fault_admin
    leader = replicas.processes[NAMES[0]]
    coordination = client.CoordinationV1Api(admin.api)
    with once(FAULT):
        org = f"flood-{unique_suffix()}"
        new_org(as_user, org, f"owner@{org}.test")
        wait_org(admin, org, timeout=60)
        assert replicas.holder() == NAMES[0]
        before = coordination.read_namespaced_lease(LEASE, NAMESPACE).spec.lease_transitions
        since = datetime.now(UTC)

        until = time.monotonic() + FLOOD_SECONDS
        leases: list[tuple[str, datetime]] = []
        ready: list[int] = []
        admitted: list[str] = []

        def lease() -> tuple[str, datetime]:
            spec = coordination.read_namespaced_lease(LEASE, NAMESPACE).spec
            return str(spec.holder_identity), spec.renew_time

        def readiness() -> int:
            url = f"http://127.0.0.1:{leader.health_port}/readyz"
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    return int(answer.status)
            except OSError:
                return 0

        def admission() -> str:
            """A real write through the API server, checked by the flooded leader's webhook."""
            body = membership(f"m{time.monotonic_ns()}", f"m{time.monotonic_ns()}@{org}.test")
            try:
                admin.custom.create_namespaced_custom_object(
                    GROUP, VERSION, f"org-{org}", "memberships", body, dry_run="All"
                )
            except ApiException as error:
                return f"{error.status}: {error.reason}"
            return "admitted"

        watchers = [
            threading.Thread(target=lambda: leases.extend(sample_until(until, 0.5, lease))),
            threading.Thread(target=lambda: ready.extend(sample_until(until, 1.0, readiness))),
            threading.Thread(target=lambda: admitted.extend(sample_until(until, 5.0, admission))),
        ]
        for watcher in watchers:
            watcher.start()
        counts = flood(leader.webhook_port, leader.metrics_port, org, FLOOD_SECONDS)
        for watcher in watchers:
            watcher.join(timeout=60)
        ended = lease()

        # The positive control: the flood reached both ports and made the operator ask.
        window = [
            e
            for e in completed_requests(fault_cluster.audit_log)
            if since <= received(e) and replica_of(e) == NAMES[0]
        ]
        reviews = sum(
            1 for e in window if (e.get("objectRef") or {}).get("resource") == "tokenreviews"
        )
        junk = counts["metrics 401"] + counts["metrics 429"]
        answered = counts["webhook 200"]
        note = (
            f"{answered} crafted reviews answered, {junk} junk scrapes refused "
            f"({counts['metrics 429']} of them 429), {reviews} TokenReviews asked"
        )
        TALLY.note(FAULT, note)
        assert answered > CLIENTS and counts["metrics 401"] > 0, counts
        assert reviews > 0, "the operator asked no TokenReview: the flood proved nothing"

        # The Lease: one holder throughout (as sampled), and renewed by the leader without a
        # gap as long as the renew deadline (as the API server received the renewals).
        holders = {holder for holder, _ in leases} | {ended[0]}
        assert holders == {NAMES[0]}, f"the Lease changed hands: {holders}"
        renewals = [
            received(e)
            for e in window
            if is_lease(e) and e["verb"] == "update" and 200 <= code(e) < 300
        ]
        moments = sorted([since, *renewals, since + timedelta(seconds=FLOOD_SECONDS)])
        gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
        assert len(renewals) >= FLOOD_SECONDS / 10, f"only {len(renewals)} renewals"
        assert max(gaps) < RENEW_DEADLINE, f"no renewal for {max(gaps)}"
        after = coordination.read_namespaced_lease(LEASE, NAMESPACE).spec.lease_transitions
        assert after == before and replicas.holder() == NAMES[0]
        assert ready and set(ready) == {200}, f"readiness answered {Counter(ready)}"
        assert admitted and set(admitted) == {"admitted"}, f"admission: {Counter(admitted)}"
        TALLY.note(
            FAULT,
            f"largest renewal gap {max(gaps).total_seconds():.1f}s (deadline 10s), "
            f"{len(admitted)} admissions through the API server all answered",
        )
