"""Fixed shards (README: "Scaling out"): `orgkeeper run --shard i/N`, as the operator's
ServiceAccount, on a control plane of their own.

Two shards of two replicas each serve a few dozen orgs (a few hundred objects). The API server's
audit log, which tells replicas apart by their User-Agent `orgkeeper/<version> (<identity>)`,
shows one writer per org: in steady state, across a SIGKILL and a SIGTERM of a shard leader,
and across resharding 2 -> 3 -> 2. At the end an unsharded operator takes over and finds
nothing to change: the sharded end state is the unsharded one, object by object.

Identities are `g<N>s<i><replica>`: shard i of N (the generation), so the audit test can tell
which shard each write came from. The tests run in order and share the module's cluster.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from orgkeeper import names
from orgkeeper.domain.shards import Shard, map_of
from orgkeeper_dev.localcluster import LocalCluster, free_port, install_orgkeeper
from support import identity
from support.kube import Kube, api_client, load_yaml_documents, wait_for
from support.metrics import READER_ROLE, samples, scrape, service_account_token
from support.operator import OperatorProcess
from support.orgs import membership, organization, wait_members_bound
from support.replicas import (
    NAMESPACE,
    Replicas,
    code,
    completed_requests,
    describe,
    identity_of,
    is_lease,
    is_write,
    received,
)

ORGS = 24
TEAM = "api-product-developer"
RBAC = Path(__file__).resolve().parents[2] / "docs" / "shards" / "rbac.yaml"
IDENTITY = re.compile(r"^g(\d+)s(\d+)[a-z]$")


@dataclass
class Plane:
    cluster: LocalCluster
    admin: Kube
    kubeconfig: Path
    directory: Path
    scraper: str = ""
    orgs: list[str] = field(default_factory=list)
    # Members added so far per org (each phase adds one to every org).
    members: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # Identity -> when it stopped (after its exit: nothing it sent can land later).
    stopped: dict[str, datetime] = field(default_factory=dict)
    running: list[Replicas] = field(default_factory=list)
    maps: dict[int, tuple[int, ...]] = field(default_factory=dict)  # stored shard maps
    ports: set[int] = field(default_factory=set)  # every operator's, so none shares one

    def generation(self, count: int, replicas: str) -> list[Replicas]:
        """`count` shards, each with one replica per letter of `replicas`, the first leading."""
        shards = []
        for index in range(count):
            group = Replicas(
                self.cluster,
                self.admin,
                self.kubeconfig,
                self.directory,
                webhook_mode="serve",
                extra_args=("--webhook-host=127.0.0.1", f"--shard={index}/{count}"),
                names=tuple(f"g{count}s{index}{r}" for r in replicas),
                lease=f"orgkeeper-shard-{index}-of-{count}",
            )
            shards.append(group)
            for process in group.processes.values():
                self.own_ports(process)
        return shards

    def own_ports(self, process: OperatorProcess) -> None:
        """Ports no other process of the module has (free_port checks a port is free now, and
        a dozen processes are made before most of them start)."""
        for port in ("health_port", "webhook_port", "metrics_port"):
            while getattr(process, port) in self.ports:
                setattr(process, port, free_port())
            self.ports.add(getattr(process, port))

    def start(self, shards: list[Replicas]) -> None:
        """Every replica of every shard, one after another (whichever takes a Lease leads);
        stopped at the end of the module even if one fails to start."""
        self.running.extend(shards)
        for group in shards:
            for process in group.processes.values():
                process.start()

    def serve_webhooks(self, process: OperatorProcess) -> None:
        """The API server's admission goes to `process` (any replica of any shard answers)."""
        rendered = identity.loopback_webhooks(identity.render(), process.webhook_port)
        identity.apply(self.cluster, rendered)
        wait_for("the webhooks to answer", lambda: identity.webhooks_answer(self.admin))

    def stop(self, process: OperatorProcess, *, kill: bool = False) -> None:
        name = next(n for g in self.running for n, p in g.processes.items() if p is process)
        process.kill() if kill else process.stop()
        self.stopped[name] = datetime.now(UTC)

    def stop_all(self, shards: list[Replicas]) -> None:
        for group in shards:
            for process in group.processes.values():
                self.stop(process)
            self.running.remove(group)

    def add_members(self, phase: str) -> None:
        """One new member in every org; returns once every org bound all its members."""
        for org in self.orgs:
            email = f"{phase}@{org}.test"
            self.admin.create(
                "memberships", membership(phase, email, "api-product-developer"), f"org-{org}"
            )
            self.members[org][email] = ["api-product-developer"]
        for org in self.orgs:
            wait_members_bound(self.admin, org, self.members[org], timeout=60)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    local = LocalCluster(tmp_path_factory.mktemp("shards-cluster"))
    local.start()
    try:
        install_orgkeeper(local)
        identity.apply(local, identity.of_kinds(identity.render(), identity.IDENTITY_KINDS))
        identity.apply(local, load_yaml_documents(RBAC))  # docs/shards/: Leases and shard maps
        admin = Kube(api_client(local.kubeconfig))
        directory = tmp_path_factory.mktemp("shard-operators")
        account = identity.issue_token(local, admin, directory / "kubeconfig")
        found = Plane(local, admin, account.kubeconfig, directory)
        found.scraper = service_account_token(admin, NAMESPACE, "metrics-scraper", READER_ROLE)
        try:
            yield found
        finally:
            for group in found.running:
                group.stop()
    finally:
        local.stop()


def shard(plane: Plane, who: str) -> Shard:
    """The shard an identity served: its index and count, and the map the first shard of that
    count stored (names.shard_map), which every shard of the count reads."""
    count, index = (int(g) for g in IDENTITY.match(who).groups())  # type: ignore[union-attr]
    if count == 1:
        return Shard()
    if count not in plane.maps:
        name = names.shard_map(None, count)
        stored = plane.admin.core.read_namespaced_config_map(name, NAMESPACE)
        plane.maps[count] = map_of(stored.data, count)
    return Shard(index, count, plane.maps[count])


def holder(plane: Plane, lease: str) -> str:
    try:
        found = client.CoordinationV1Api(plane.admin.api).read_namespaced_lease(lease, NAMESPACE)
    except client.ApiException as error:
        if error.status == 404:
            return ""
        raise
    return str(found.spec.holder_identity or "")


def test_two_shards_serve_each_its_orgs(plane: Plane) -> None:
    shards = plane.generation(2, "ab")
    plane.start(shards)
    leaders = [group.leader() for group in shards]  # one replica of each shard leads
    plane.serve_webhooks(shards[1].follower())  # admission: a follower, of one shard
    plane.orgs = [f"org{i:03d}" for i in range(ORGS)]  # sequential names
    for org in plane.orgs:
        owner = f"owner@{org}.test"
        plane.admin.create("organizations", organization(org, owner))
        plane.members[org] = {}
    plane.add_members("first")
    elected = [g.name_of(p) for g, p in zip(shards, leaders, strict=True)]
    assert [holder(plane, g.lease) for g in shards] == elected  # no change of leader meanwhile
    # The first shard of 2 planned the map from the orgs there were (none yet: round robin).
    served = {i: [o for o in plane.orgs if shard(plane, f"g2s{i}a").serves(o)] for i in (0, 1)}
    assert served[0] and served[1]  # both shards have work
    # Everything of an org carries its slot: the org (stamped at admission), its Memberships
    # (admission), RoleBindings, namespace (the operator).
    for org in plane.orgs:
        slot = str(names.shard_slot(org))
        assert (
            plane.admin.get("organizations", org)["metadata"]["labels"][names.LABEL_SHARD_SLOT]
            == slot
        )
        namespace = f"org-{org}"
        for member in plane.admin.list("memberships", namespace):
            assert member["metadata"]["labels"][names.LABEL_SHARD_SLOT] == slot
        bindings = plane.admin.rbac.list_namespaced_role_binding(
            namespace, label_selector=names.MEMBER_BINDING_SELECTOR
        ).items
        assert bindings and {b.metadata.labels[names.LABEL_SHARD_SLOT] for b in bindings} == {slot}
        found = plane.admin.core.read_namespace(namespace)
        assert found.metadata.labels[names.LABEL_SHARD_SLOT] == slot


def test_each_shard_lists_and_watches_only_its_slots(plane: Plane) -> None:
    """The API server selects what a shard receives: every list and watch of Organizations,
    Memberships, member RoleBindings and Licenses a shard sends carries its slot selector
    (admission's reads of one namespace's Memberships, for another shard's org, excepted)."""
    sharded = {"organizations", "memberships", "rolebindings", "licenses"}
    seen: dict[str, set[str]] = defaultdict(set)
    for entry in completed_requests(plane.cluster.audit_log):
        who, ref = identity_of(entry), entry.get("objectRef") or {}
        if not IDENTITY.match(who) or entry["verb"] not in ("list", "watch"):
            continue
        if ref.get("resource") not in sharded or ref.get("namespace"):
            continue
        if ref["resource"] == "organizations" and "labelSelector" not in entry["requestURI"]:
            continue  # the Organizations informer admission reads holds every org (slim)
        wanted = str(shard(plane, who).selector())
        uri = str(entry["requestURI"])
        selector = parse_qs(urlsplit(uri).query).get("labelSelector", [""])[0]
        assert wanted in selector, f"{who}: {entry['verb']} {uri}"
        seen[who].add(ref["resource"])
    for index in (0, 1):  # whichever replica leads each shard (kopf lists and watches then)
        of_shard = [kinds for who, kinds in seen.items() if who.startswith(f"g2s{index}")]
        assert set().union(*of_shard) >= sharded, dict(seen)


def test_a_killed_and_a_terminated_shard_leader_are_replaced(plane: Plane) -> None:
    shard0, shard1 = plane.running
    killed = shard0.leader()
    follower = shard0.name_of(shard0.follower())
    plane.stop(killed, kill=True)  # SIGKILL: its Lease runs out (15 s)
    plane.add_members("after-kill")
    assert holder(plane, shard0.lease) == follower
    webhooks = shard1.follower()  # the API server's admission goes to it
    plane.stop(shard1.leader())  # SIGTERM: hands its Lease over at once
    plane.add_members("after-term")
    assert holder(plane, shard1.lease) == shard1.name_of(webhooks)


def test_resharding_2_to_3_to_2(plane: Plane) -> None:
    old = list(plane.running)
    three = plane.generation(3, "a")
    plane.start(three)
    # They wait: the shards of 2 lead (their Leases live), and no generation writes beside
    # another.
    for group in three:
        (process,) = group.processes.values()
        wait_for(
            f"{group.lease} to wait for the other generation",
            lambda p=process: "of 2 shard(s) is held" in p.log_text(),  # type: ignore[misc]
        )
        assert holder(plane, group.lease) == ""
    plane.serve_webhooks(three[0].processes["g3s0a"])
    plane.stop_all(old)  # SIGTERM: their Leases are released, the shards of 3 take theirs
    for group in three:
        wait_for(f"{group.lease} taken", lambda g=group: holder(plane, g.lease) != "")  # type: ignore[misc]
    plane.add_members("three")
    two = plane.generation(2, "c")
    plane.start(two)
    plane.serve_webhooks(two[1].processes["g2s1c"])
    plane.stop_all(three)
    for group in two:
        wait_for(f"{group.lease} taken", lambda g=group: holder(plane, g.lease) != "")  # type: ignore[misc]
    plane.add_members("two-again")


def org_of(entry: dict[str, Any]) -> str | None:
    """The org a write concerns: its namespace's, the Organization itself, org-<name> the
    Namespace, the Owner's ClusterRole and binding."""
    ref = entry.get("objectRef") or {}
    resource, name, namespace = ref.get("resource"), ref.get("name") or "", ref.get("namespace")
    if namespace:
        return names.organization_of_namespace(namespace)
    if resource == "organizations":
        return name or None
    if resource == "namespaces":
        return names.organization_of_namespace(name)
    if resource in ("clusterroles", "clusterrolebindings") and name.startswith("orgkeeper:owner:"):
        return name.removeprefix("orgkeeper:owner:")
    return None


def test_the_audit_log_shows_one_writer_per_org(plane: Plane) -> None:
    writes: dict[str, list[tuple[datetime, str, str]]] = defaultdict(list)
    for entry in completed_requests(plane.cluster.audit_log):
        who = identity_of(entry)
        if not IDENTITY.match(who) or not (200 <= code(entry) < 300) or not is_write(entry):
            continue
        if is_lease(entry):
            continue
        org = org_of(entry)
        if org is None:
            continue
        # No shard writes another shard's objects.
        assert shard(plane, who).serves(org), f"{who} wrote {describe(entry)}"
        writes[org].append((received(entry), who, describe(entry)))
        stopped = plane.stopped.get(who)
        assert stopped is None or received(entry) <= stopped, f"{who} wrote after it stopped"
    assert set(writes) == set(plane.orgs)
    writers = set()
    for org, found in writes.items():
        # One writer at a time: each writer's writes to the org form one unbroken run.
        ordered = [who for _, who, _ in sorted(found)]
        runs = [who for i, who in enumerate(ordered) if i == 0 or ordered[i - 1] != who]
        assert len(runs) == len(set(runs)), f"{org}: writers interleave: {runs}"
        writers |= set(runs)
    # Every generation wrote (the positive control): both shards of 2, all three of 3, and the
    # second shards of 2.
    for prefix in ("g2s0", "g2s1", "g3s0", "g3s1", "g3s2"):
        assert any(w.startswith(prefix) for w in writers), (prefix, writers)
    # Both replicas of each first shard of 2 (a leader, then its follower after the SIGKILL or
    # SIGTERM), and the second shards of 2.
    assert {"g2s0a", "g2s0b", "g2s1a", "g2s1b", "g2s0c", "g2s1c"} <= writers


def snapshot(plane: Plane) -> dict[str, Any]:
    """What the orgs are made of: statuses (without times), Memberships' status, member
    RoleBindings, namespaces' labels, the Owner's RBAC."""

    def timeless(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: timeless(v) for k, v in value.items() if not k.endswith(("Time", "At"))}
        if isinstance(value, list):
            return [timeless(v) for v in value]
        return value

    state: dict[str, Any] = {}
    for org in plane.orgs:
        namespace = f"org-{org}"
        body = plane.admin.get("organizations", org)
        state[org] = {
            "labels": body["metadata"].get("labels"),
            "status": timeless(body.get("status")),
            "members": {
                m["metadata"]["name"]: (m["metadata"].get("labels"), timeless(m.get("status")))
                for m in plane.admin.list("memberships", namespace)
            },
            "bindings": {
                b.metadata.name: (
                    b.metadata.labels,
                    b.role_ref.name,
                    [s.name for s in b.subjects or []],
                    b.metadata.resource_version,
                )
                for b in plane.admin.rbac.list_namespaced_role_binding(namespace).items
            },
            "namespace": plane.admin.core.read_namespace(namespace).metadata.labels,
            "owner": plane.admin.rbac.read_cluster_role_binding(
                f"orgkeeper:owner:{org}"
            ).metadata.resource_version,
            "versions": sorted(
                (o["metadata"]["name"], o["metadata"]["resourceVersion"])
                for o in plane.admin.list("memberships", namespace)
            ),
        }
    return state


def test_an_unsharded_operator_finds_the_end_state_its_own(plane: Plane) -> None:
    before = snapshot(plane)
    unsharded = OperatorProcess(
        plane.cluster,
        plane.directory / "g1s0a.log",
        webhook_mode="serve",
        kubeconfig=plane.kubeconfig,
        extra_args=("--leader-elect", "--identity=g1s0a", "--webhook-host=127.0.0.1"),
    )
    plane.own_ports(unsharded)
    unsharded.start()  # it waits behind the shards of 2 (their Leases live)
    wait_for(
        "the unsharded operator to wait for the shards",
        lambda: "of 2 shard(s) is held" in unsharded.log_text(),
    )
    plane.serve_webhooks(unsharded)
    plane.stop_all(list(plane.running))
    try:
        wait_for("the unsharded operator to lead", lambda: holder(plane, "orgkeeper") == "g1s0a")

        def reconciled_every_org() -> bool:
            status, text = scrape(unsharded.metrics_port, plane.scraper)
            key = 'orgkeeper_reconciles_total{kind="Organization",result="success"}'
            return status == 200 and samples(text).get(key, 0) >= len(plane.orgs)

        wait_for("the unsharded operator to reconcile every org", reconciled_every_org, timeout=60)
        assert snapshot(plane) == before
        org_writes = [
            describe(e)
            for e in completed_requests(plane.cluster.audit_log)
            if identity_of(e) == "g1s0a" and is_write(e) and org_of(e) is not None
        ]
        assert org_writes == []
    finally:
        unsharded.stop()
