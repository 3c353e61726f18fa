"""Junk at the open ports: a 60-second flood from 64 parallel clients at the leader's webhook and
metrics ports costs it the Lease zero times (API.md "Footprint"; review finding M3).

Anyone who reaches those ports is unauthenticated: each junk bearer token at `/metrics` makes
the operator ask a TokenReview, and a crafted AdmissionReview (an update of a real org from an
Owner who is no member, by a made-up user each time) makes it ask whether that user is
support. Those reviews run on threads of their own, their verdicts kept briefly and their
number bounded (operator/orgkeeper/reviews.py); the Lease has threads of its own too. So while
the flood lasts the Lease's holder never changes and its renewTime keeps advancing (never a gap
as long as the renew deadline), readiness answers 200, and admission through the API server
still answers. The positive control: the flood did reach both ports (their answers counted)
and did make the operator ask the API server (its TokenReviews in the audit log).

Loopback only; each client's loop ends by itself at the deadline.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import ssl
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from orgkeeper.api.v1alpha1 import GROUP, VERSION
from orgkeeper_dev.localcluster import LocalCluster
from support.kube import AsUser, Kube, wait_for
from support.orgs import membership, new_org, unique_suffix, wait_org
from support.replicas import LEASE, NAMES, NAMESPACE, Replicas, completed_requests, received

from .operators import Operators
from .report import TALLY, once

T = TypeVar("T")
CLIENTS = 64
FLOOD_SECONDS = float(os.environ.get("ORGKEEPER_FAULT_FLOOD_SECONDS", "60"))
RENEW_DEADLINE = timedelta(seconds=10)
FAULT = f"flood of both open ports ({CLIENTS} clients, {FLOOD_SECONDS:.0f}s) at the leader"
UNVERIFIED = ssl._create_unverified_context()  # the ports' own certificates; loopback only


@pytest.fixture
def replicas(operators: Operators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two --leader-elect replicas; the API server's admission goes to replica-a, the leader,
    which is also the one flooded."""
    directory = tmp_path_factory.mktemp("fault-flood")
    with operators.made_way_for_replicas(directory, serve_webhooks=True) as pair:
        yield pair


def crafted_review(org: str, index: int) -> bytes:
    """M3's AdmissionReview: an update of `org` moving it from an Owner who is no member."""
    meta = {"name": org}
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(index),
                "kind": {"group": GROUP, "version": VERSION, "kind": "Organization"},
                "resource": {"group": GROUP, "version": VERSION, "resource": "organizations"},
                "name": org,
                "operation": "UPDATE",
                "userInfo": {"username": f"x{index}@flood.test"},
                "object": {"metadata": meta, "spec": {"owner": "a@flood.test"}},
                "oldObject": {"metadata": meta, "spec": {"owner": f"gone{index}@flood.test"}},
            },
        }
    ).encode()


def request(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> int:
    """One request on a new TLS connection (as curl in a loop makes them); 0 if it failed."""
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=15, context=UNVERIFIED)
    try:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        answer.read()
        return answer.status
    except OSError:
        return 0
    finally:
        connection.close()


def flood(webhook_port: int, metrics_port: int, org: str, until: float) -> Counter[str]:
    """CLIENTS threads, each alternating a crafted review and a junk-token scrape until `until`."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def client_loop(number: int) -> None:
        index = number
        while time.monotonic() < until:
            index += CLIENTS
            review = request(
                webhook_port,
                "POST",
                "/validate-organization",
                crafted_review(org, index),
                {"Content-Type": "application/json"},
            )
            scrape = request(
                metrics_port, "GET", "/metrics", None, {"Authorization": f"Bearer junk{index}"}
            )
            with lock:
                counts[f"webhook {review}"] += 1
                counts[f"metrics {scrape}"] += 1

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=FLOOD_SECONDS + 60)
    return counts


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
        counts = flood(leader.webhook_port, leader.metrics_port, org, until)
        for watcher in watchers:
            watcher.join(timeout=60)
        ended = lease()

        # The positive control: the flood reached both ports and made the operator ask.
        reviews = sum(
            1
            for e in completed_requests(fault_cluster.audit_log)
            if received(e) >= since
            and (e.get("objectRef") or {}).get("resource") == "tokenreviews"
            and "(replica-a)" in str(e.get("userAgent", ""))
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

        # The Lease: one holder throughout, renewed without a gap as long as the deadline.
        holders = {holder for holder, _ in leases}
        assert holders == {NAMES[0]}, f"the Lease changed hands: {holders}"
        renewals = sorted({renewed for _, renewed in leases} | {ended[1]})
        gaps = [later - earlier for earlier, later in itertools.pairwise(renewals)]
        assert len(renewals) >= FLOOD_SECONDS / 10, f"renewTime barely moved: {renewals}"
        assert max(gaps) < RENEW_DEADLINE, f"a renewal came {max(gaps)} after the one before"
        after = coordination.read_namespaced_lease(LEASE, NAMESPACE).spec.lease_transitions
        assert after == before and replicas.holder() == NAMES[0]
        assert ready and set(ready) == {200}, f"readiness answered {Counter(ready)}"
        assert admitted and set(admitted) == {"admitted"}, f"admission: {Counter(admitted)}"
        TALLY.note(
            FAULT,
            f"largest renewal gap {max(gaps).total_seconds():.1f}s (deadline 10s), "
            f"{len(admitted)} admissions through the API server all answered",
        )
    wait_for("the flood's clients gone", lambda: threading.active_count() < CLIENTS)
