"""High availability: two `orgkeeper run --leader-elect` replicas, as the operator's ServiceAccount.

They run on a control plane of their own (the session's operator elects no leader and would
reconcile the same orgs), share one webhook certificate, and are told apart in the API server's
audit log by their User-Agent, `orgkeeper/<version> (<identity>)`.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client, watch

from orgkeeper import names
from orgkeeper.api.v1alpha1 import GROUP, VERSION
from orgkeeper_dev.localcluster import LocalCluster, free_port, install_orgkeeper
from support import identity
from support.kube import Kube, api_client, rejection, wait_for
from support.metrics import READER_ROLE, samples, scrape, service_account_token
from support.operator import OperatorProcess
from support.orgs import (
    membership,
    organization,
    unique_suffix,
    wait_members_bound,
    wait_org,
    wait_owner_rights,
)
from support.replicas import (
    LEASE,
    NAMES,
    NAMESPACE,
    WRITES,
    Replicas,
    code,
    completed_requests,
    describe,
    is_lease,
    is_write,
    received,
    replica_of,
)

MEMBERS = 100
# What was measured, printed at the end of the module (README: "High availability").
MEASURED: dict[str, float] = {}


@dataclass
class Pair(Replicas):
    ca: bytes = b""  # the CA both replicas' webhook certificates come from
    scraper: str = ""  # a token bound to orgkeeper-metrics-reader
    # When each replica was SIGTERMed (monotonic is useless against the audit log's clock).
    terminated: list[tuple[str, datetime]] = field(default_factory=list)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    local = LocalCluster(tmp_path_factory.mktemp("ha-cluster"))
    local.start()
    try:
        install_orgkeeper(local)
        identity.apply(local, identity.of_kinds(identity.render(), identity.IDENTITY_KINDS))
        admin = Kube(api_client(local.kubeconfig))
        directory = tmp_path_factory.mktemp("ha-operators")
        account = identity.issue_token(local, admin, directory / "kubeconfig")
        found = Pair(
            local,
            admin,
            account.kubeconfig,
            directory,
            webhook_mode="serve",
            extra_args=("--webhook-host=127.0.0.1",),
        )
        # The manifests' webhook configurations, their Service made the URL of replica-b, which
        # starts as the follower: the API server's admission goes to a follower, trusting the
        # CA the leader put in (the replicas share one).
        follower_port = found.processes[NAMES[1]].webhook_port
        identity.apply(local, identity.loopback_webhooks(identity.render(), follower_port))
        try:
            found.start()
            bundles = wait_for(
                "the shared CA in every webhook",
                lambda: (b := identity.ca_bundles(admin)) and all(all(h) for h in b.values()) and b,
            )
            (bundle,) = {hook for hooks in bundles.values() for hook in hooks}
            found.ca = base64.b64decode(str(bundle))
            found.scraper = service_account_token(admin, NAMESPACE, "metrics-scraper", READER_ROLE)
            yield found
        finally:
            found.stop()
            print(f"\nhigh availability, measured: {MEASURED}")
    finally:
        local.stop()


def metric(pair: Pair, process: OperatorProcess, name: str) -> float:
    status, text = scrape(process.metrics_port, pair.scraper)
    assert status == 200, text
    return samples(text)[name]


def test_one_replica_leads_and_only_it_reconciles(pair: Pair) -> None:
    leader, follower = pair.leader(), pair.follower()
    assert metric(pair, leader, "orgkeeper_leader") == 1
    assert metric(pair, follower, "orgkeeper_leader") == 0
    name = f"lead-{unique_suffix()}"
    pair.admin.create("organizations", organization(name, f"owner@{name}.test"))
    wait_org(pair.admin, name)
    lease = client.CoordinationV1Api(pair.admin.api).read_namespaced_lease(LEASE, NAMESPACE)
    assert lease.spec.lease_duration_seconds == 15


def review(operation: str, user: str, old: dict[str, Any], new: dict[str, Any] | None) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": names.GROUP, "version": names.VERSION, "kind": "Organization"},
                "resource": {
                    "group": names.GROUP,
                    "version": names.VERSION,
                    "resource": "organizations",
                },
                "name": old["metadata"]["name"],
                "operation": operation,
                "userInfo": {"username": user, "groups": ["system:authenticated"]},
                "object": new,
                "oldObject": old,
                "dryRun": False,
            },
        }
    ).encode()


def admit(pair: Pair, process: OperatorProcess, path: str, body: bytes) -> dict[str, Any]:
    """An AdmissionReview posted to the replica's own webhook port, its certificate verified."""
    context = ssl.create_default_context(cadata=pair.ca.decode())
    request = urllib.request.Request(
        f"https://127.0.0.1:{process.webhook_port}/{path}",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as reply:
        answer: dict[str, Any] = json.loads(reply.read())["response"]
    return answer


def test_a_follower_answers_admission_on_its_own_port(pair: Pair) -> None:
    name = f"adm-{unique_suffix()}"
    owner, member = f"owner@{name}.test", f"dev@{name}.test"
    pair.admin.create("organizations", organization(name, owner))
    wait_org(pair.admin, name)
    pair.admin.create(
        "memberships",
        membership("dev", member, "api-product-developer"),
        names.org_namespace(name),
    )
    wait_members_bound(pair.admin, name, {member: ["api-product-developer"]})
    org = pair.admin.get("organizations", name)
    follower = pair.follower()

    refused = admit(
        pair, follower, "validate-organization-delete", review("DELETE", member, org, None)
    )
    assert refused["allowed"] is False
    assert refused["status"]["code"] == 403
    assert f"only the Owner of Organization {name} or support" in refused["status"]["message"]
    allowed = admit(
        pair, follower, "validate-organization-delete", review("DELETE", owner, org, None)
    )
    assert allowed["allowed"] is True

    # A transfer to a member who is not an Org Admin: the follower's Membership cache is warm
    # (it takes dev in from its own watch, not from the leader that bound dev).
    transfer = {**org, "spec": {**org["spec"], "owner": member}}

    def transfer_refused() -> dict[str, Any] | None:
        answer = admit(
            pair, follower, "validate-organization", review("UPDATE", owner, org, transfer)
        )
        assert answer["allowed"] is False, answer
        message = answer["status"]["message"]
        return answer if "not a member of the organization-admin team" in message else None

    wait_for("the follower to refuse a transfer to dev, an api-product-developer", transfer_refused)
    same = {**org, "spec": {**org["spec"], "displayName": "Renamed"}}
    assert admit(pair, follower, "validate-organization", review("UPDATE", owner, org, same))[
        "allowed"
    ]

    # Through the API server: its webhooks reach replica-b, the follower.
    assert pair.name_of(follower) == NAMES[1]
    wait_owner_rights(pair.admin, name, owner)
    as_owner = Kube(api_client(pair.cluster.kubeconfig, user=owner))
    status, message = rejection(
        lambda: as_owner.patch("organizations", name, {"spec": {"owner": member}})
    )
    assert status == 403
    assert "not a member of the organization-admin team" in message
    as_owner.patch("organizations", name, {"spec": {"displayName": "Renamed"}})
    assert pair.admin.get("organizations", name)["spec"]["displayName"] == "Renamed"
    # Membership rules need the Organization, which a follower reads from the API server.
    namespace = names.org_namespace(name)
    status, message = rejection(
        lambda: as_owner.delete("memberships", names.owner_membership(owner), namespace)
    )
    assert status == 403
    assert f"{owner} is the Owner of this organization" in message
    as_owner.delete("memberships", "dev", namespace)


def test_sigterm_hands_the_lease_over_before_it_could_expire(pair: Pair) -> None:
    leader, follower = pair.leader(), pair.follower()
    old, new = pair.name_of(leader), pair.name_of(follower)
    leases = client.CoordinationV1Api(pair.admin.api)
    held = leases.read_namespaced_lease(LEASE, NAMESPACE).spec
    pair.terminated.append((old, audit_now()))
    started = time.monotonic()
    leader.stop()  # SIGTERM: stop writing, release the Lease, exit
    wait_for(f"{new} to take the Lease", lambda: pair.holder() == new, interval=0.05, timeout=30)
    MEASURED["handover_seconds"] = time.monotonic() - started
    # Released, not expired: a follower takes a Lease that was not released only once it has
    # seen it unchanged for a whole lease duration after the last renewal.
    taken = leases.read_namespaced_lease(LEASE, NAMESPACE).spec
    waited = (taken.acquire_time - held.renew_time).total_seconds()
    assert waited < held.lease_duration_seconds, (
        f"{new} took the Lease {waited:.1f}s after {old}'s last renewal seen before the "
        f"SIGTERM: it expired ({held.lease_duration_seconds}s) instead of being released"
    )
    assert metric(pair, follower, "orgkeeper_leader") == 1
    # The new leader reconciles.
    name = f"hand-{unique_suffix()}"
    pair.admin.create("organizations", organization(name, f"owner@{name}.test"))
    wait_org(pair.admin, name)
    leader.start()  # back, as the follower
    assert pair.holder() == new


MEMBER_BINDINGS = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY},{names.LABEL_MEMBERSHIP}"


def member_bindings(admin: Kube, namespace: str) -> list[Any]:
    listed = admin.rbac.list_namespaced_role_binding(namespace, label_selector=MEMBER_BINDINGS)
    return list(listed.items)


def kill_on_first_delete(
    pair: Pair, leader: OperatorProcess, namespace: str, at: list[float]
) -> None:
    """SIGKILLs the leader the moment a member binding of `namespace` is deleted."""
    listed = pair.admin.rbac.list_namespaced_role_binding(namespace, label_selector=MEMBER_BINDINGS)
    stream = watch.Watch().stream(
        pair.admin.rbac.list_namespaced_role_binding,
        namespace,
        label_selector=MEMBER_BINDINGS,
        resource_version=listed.metadata.resource_version,
        timeout_seconds=60,
    )
    for event in stream:
        if event["type"] == "DELETED":
            leader.kill()
            at.append(time.monotonic())
            return


def test_a_leader_killed_mid_deactivation_is_replaced_and_the_cascade_ends_exactly(
    pair: Pair,
) -> None:
    name = f"kill-{unique_suffix()}"
    namespace = names.org_namespace(name)
    owner = f"owner@{name}.test"
    pair.admin.create("organizations", organization(name, owner))
    wait_org(pair.admin, name)
    emails = {f"m{i}@{name}.test": ["analytics-viewer"] for i in range(MEMBERS)}
    for i, email in enumerate(emails):
        pair.admin.create("memberships", membership(f"m{i}", email, "analytics-viewer"), namespace)
    wait_members_bound(pair.admin, name, emails, timeout=120)
    total = len(member_bindings(pair.admin, namespace))
    assert total == MEMBERS + 1  # the Owner's organization-admin binding too

    leader = pair.leader()
    old, new = pair.name_of(leader), pair.name_of(pair.follower())
    # The kill comes with the cascade's first binding deletion, seen on a watch.
    kill_times: list[float] = []
    killer = threading.Thread(
        target=kill_on_first_delete, args=(pair, leader, namespace, kill_times)
    )
    killer.start()
    pair.admin.patch("organizations", name, {"spec": {"state": "Deactivated"}})
    killer.join(timeout=60)
    assert leader.process is not None and leader.process.poll() is not None, "no kill"
    (killed,) = kill_times
    left = len(member_bindings(pair.admin, namespace))
    not_removed = sum(
        (m.get("status") or {}).get("state") != "Removed"
        for m in pair.admin.list("memberships", namespace)
    )
    MEASURED["bindings_left_at_kill"] = left
    MEASURED["memberships_not_removed_at_kill"] = not_removed
    assert left or not_removed, "the cascade had ended before the kill"
    wait_for(f"{new} to take the Lease", lambda: pair.holder() == new, interval=0.1, timeout=30)
    MEASURED["failover_seconds"] = failover = time.monotonic() - killed
    assert failover <= 20, f"{new} took the Lease {failover:.1f}s after {old} was killed"

    wait_org(pair.admin, name, "Deactivated", "True", timeout=120)
    removed = wait_for(
        "every Membership Removed",
        lambda: all(
            (m.get("status") or {}).get("state") == "Removed"
            for m in pair.admin.list("memberships", namespace)
        ),
        timeout=60,
    )
    assert removed
    assert member_bindings(pair.admin, namespace) == []
    MEASURED["cascade_done_after_kill_seconds"] = time.monotonic() - killed

    # Nothing done twice: no binding deleted again after a delete of it succeeded.
    deletes: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for entry in audit(pair):
        ref = entry.get("objectRef") or {}
        if (entry["verb"], ref.get("resource"), ref.get("namespace")) == (
            "delete",
            "rolebindings",
            namespace,
        ):
            deletes[ref["name"]].append((received(entry), code(entry)))
    assert len(deletes) == total
    again = {
        binding: calls
        for binding, calls in deletes.items()
        if any(200 <= c < 300 for _, c in sorted(calls)[:-1])
    }
    assert again == {}, f"deleted again after success: {again}"
    leader.start()  # back, as the follower that the API server's webhooks reach

    # The deactivated org locks its owner's e-mail, on the follower too; others sign up.
    as_owner = Kube(api_client(pair.cluster.kubeconfig, user=owner))
    locked = organization(f"{name}-2", owner, plan="Plus")

    def refused() -> str | None:
        status, message = rejection(lambda: as_owner.create("organizations", locked))
        return message if status == 403 else None  # else its webhook is not up yet

    message = wait_for("the follower's webhook to refuse", refused)
    assert f"the e-mail {owner} is locked by deactivated organization {name}" in message
    other = f"owner@{name}-3.test"
    as_other = Kube(api_client(pair.cluster.kubeconfig, user=other))
    as_other.create("organizations", organization(f"{name}-3", other, plan="Plus"))


BURST = 20
ORGANIZATIONS = (GROUP, VERSION, "organizations")
RELEASED = f"Lease {NAMESPACE}/{LEASE}: released."


def sigterm_once_kopf_writes(pair: Pair, leader: OperatorProcess, prefix: str) -> None:
    """SIGTERMs the leader the moment kopf has written to an org of the burst (its finalizer):
    kopf's workers and the reconciles are busy with the rest."""
    listed = pair.admin.custom.list_cluster_custom_object(*ORGANIZATIONS)
    stream = watch.Watch().stream(
        pair.admin.custom.list_cluster_custom_object,
        *ORGANIZATIONS,
        resource_version=listed["metadata"]["resourceVersion"],
        timeout_seconds=60,
    )
    for event in stream:
        metadata = event["object"]["metadata"]
        if metadata["name"].startswith(prefix) and metadata.get("finalizers"):
            pair.terminated.append((pair.name_of(leader), audit_now()))
            leader.stop()  # SIGTERM, and waits for the exit
            return


def test_sigterm_with_writes_in_flight_sends_none_after_the_release(pair: Pair) -> None:
    """Orgs created back to back while the leader is SIGTERMed: kopf's patches (finalizers,
    annotations) and the reconciles' writes are in flight; the audit test below checks that
    none reached the API server after the Lease was released."""
    webhooks = pair.processes[NAMES[1]]  # the API server's admission goes to replica-b
    if pair.leader() is webhooks:  # it must stay up for the orgs to be created: hand over
        webhooks.restart()  # returns once its webhooks listen again
        wait_for(f"{NAMES[0]} to take the Lease", lambda: pair.holder() == NAMES[0], timeout=30)
    leader = pair.leader()
    new = pair.name_of(pair.follower())
    released = leader.log_text().count(RELEASED)
    prefix = f"burst-{unique_suffix()}"
    stopper = threading.Thread(target=sigterm_once_kopf_writes, args=(pair, leader, prefix))
    stopper.start()
    orgs = [f"{prefix}-{i}" for i in range(BURST)]
    for name in orgs:
        pair.admin.create("organizations", organization(name, f"owner@{name}.test"))
    stopper.join(timeout=60)
    assert leader.process is not None and leader.process.poll() == 0, "no clean SIGTERM exit"
    wait_for(f"{new} to take the Lease", lambda: pair.holder() == new, timeout=30)
    for name in orgs:  # the new leader finishes what the old one left
        wait_org(pair.admin, name, timeout=120)
    # Its writes in flight had their answers within the drain: it released the Lease.
    assert leader.log_text().count(RELEASED) == released + 1
    leader.start()  # back, as the follower


def test_the_audit_log_shows_no_write_by_a_follower_and_no_overlap_at_handover(
    pair: Pair,
) -> None:
    # Every request of the ServiceAccount, kopf's included, names its replica.
    anonymous = {
        str(e.get("userAgent"))
        for e in audit(pair)
        if e["user"]["username"] == identity.USER and not replica_of(e)
    }
    assert anonymous == set(), f"requests without the replica's User-Agent: {anonymous}"
    entries = [e for e in audit(pair) if replica_of(e) and 200 <= code(e) < 300]
    lease_writes = sorted(
        (received(e), replica_of(e)) for e in entries if e["verb"] in WRITES and is_lease(e)
    )
    writes = [e for e in entries if is_write(e) and not is_lease(e) and not shared_ca_created(e)]
    assert writes, "the replicas wrote nothing"
    assert {replica_of(e) for e in writes} == set(NAMES)  # each led at some point
    for entry in writes:
        at, writer = received(entry), replica_of(entry)
        held = [who for when, who in lease_writes if when <= at]
        assert held and held[-1] == writer, (
            f"{writer} wrote {describe(entry)} at {at} while the Lease was "
            f"{held[-1] if held else 'nobody'}'s"
        )
    # The replica stopped by SIGTERM wrote nothing after it released the Lease, so nothing
    # the next leader did overlapped with it.
    assert len(pair.terminated) >= 2  # an idle leader, and one with writes in flight
    for stopped, since in pair.terminated:
        taken = min(when for when, who in lease_writes if who != stopped and when >= since)
        release = max(when for when, who in lease_writes if who == stopped and when < taken)
        late = [
            describe(e)
            for e in writes
            if replica_of(e) == stopped and release < received(e) < taken
        ]
        assert late == [], f"{stopped} wrote after releasing the Lease: {late}"
        MEASURED["release_to_takeover_seconds"] = (taken - release).total_seconds()


def test_a_regional_operator_refuses_to_start_while_the_all_regions_one_leads(
    pair: Pair,
) -> None:
    holder = pair.holder()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orgkeeper.cli",
            "run",
            "--region=eu",
            "--leader-elect",
            "--identity=eu-1",
            "--listen-address=127.0.0.1",
            "--webhook-mode=off",
            f"--health-port={free_port()}",
            f"--metrics-port={free_port()}",
        ],
        env={**os.environ, "KUBECONFIG": str(pair.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"operator {holder!r}, serving every region, holds Lease {NAMESPACE}/{LEASE}" in line
    assert "--region" in line and "Traceback" not in done.stderr


# --- the audit log ----------------------------------------------------------------------


def audit_now() -> datetime:
    return datetime.now(UTC)


def may(kube: Kube, verb: str, name: str | None, namespace: str) -> bool:
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                group="coordination.k8s.io",
                resource="leases",
                verb=verb,
                name=name,
                namespace=namespace,
            )
        )
    )
    answer = client.AuthorizationV1Api(kube.api).create_self_subject_access_review(review)
    return bool(answer.status.allowed)


def test_the_service_account_holds_only_its_own_leases(pair: Pair) -> None:
    """As the operator's token: its Leases by name in its namespace, nobody else's."""
    operator = Kube(api_client(pair.kubeconfig))
    for name in ("orgkeeper", "orgkeeper-eu", "orgkeeper-sg"):
        assert may(operator, "get", name, NAMESPACE), name
        assert may(operator, "update", name, NAMESPACE), name
    assert may(operator, "create", None, NAMESPACE)
    # Refused: another Lease of its namespace, the control plane's, any namespace else.
    assert not may(operator, "update", "other-controller", NAMESPACE)
    assert not may(operator, "update", "kube-controller-manager", "kube-system")
    assert not may(operator, "create", None, "default")
    assert not may(operator, "delete", "orgkeeper", NAMESPACE)
    # Listing its namespace's Leases (the shard-count fence: README, Scaling out), no other's.
    assert may(operator, "list", None, NAMESPACE)
    assert not may(operator, "list", None, "kube-system")
    # And the API server agrees on a real request, not only on a review.
    coordination = client.CoordinationV1Api(operator.api)
    status, _ = rejection(lambda: coordination.read_namespaced_lease("other", NAMESPACE))
    assert status == 403
    assert coordination.read_namespaced_lease(LEASE, NAMESPACE).spec.holder_identity in NAMES


def audit(pair: Pair) -> list[dict[str, Any]]:
    return completed_requests(pair.cluster.audit_log)


def shared_ca_created(entry: dict[str, Any]) -> bool:
    """The replicas' webhook CA Secret: created once, by the first replica to start, before any
    election (every replica serves admission under it)."""
    ref = entry.get("objectRef") or {}
    return (entry["verb"], ref.get("resource"), ref.get("name")) == (
        "create",
        "secrets",
        names.WEBHOOK_CA_SECRET,
    )
