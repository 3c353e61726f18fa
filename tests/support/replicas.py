"""Two `orgkeeper run --leader-elect` replicas against one control plane, and their Lease."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client

from orgkeeper_dev.localcluster import LocalCluster
from support.kube import Kube, wait_for
from support.operator import OperatorProcess

NAMESPACE = "orgkeeper-system"
LEASE = "orgkeeper"
NAMES = ("replica-a", "replica-b")


@dataclass
class Replicas:
    cluster: LocalCluster
    admin: Kube
    kubeconfig: Path  # whose credentials they run with (the ServiceAccount's)
    directory: Path  # their logs
    webhook_mode: str = "off"
    extra_args: tuple[str, ...] = ()
    # A kubeconfig of its own for a replica (through a proxy, say).
    via: Mapping[str, Path] = field(default_factory=dict)
    # OperatorProcess settings (check_interval, license_rotate_after, ...) besides its defaults.
    settings: Mapping[str, str] = field(default_factory=dict)
    # Their identities, and the Lease they elect on (a shard's: tests/integration/test_shards.py).
    names: tuple[str, ...] = NAMES
    lease: str = LEASE
    processes: dict[str, OperatorProcess] = field(init=False)

    def __post_init__(self) -> None:
        self.processes = {
            name: OperatorProcess(
                self.cluster,
                self.directory / f"{name}.log",
                webhook_mode=self.webhook_mode,
                kubeconfig=self.via.get(name, self.kubeconfig),
                extra_args=("--leader-elect", f"--identity={name}", *self.extra_args),
                **self.settings,  # type: ignore[arg-type]
            )
            for name in self.names
        }

    def start(self) -> None:
        """replica-a first, until it leads; then replica-b, which follows."""
        first, *others = self.names
        self.processes[first].start()
        wait_for(f"{first} to take the Lease", lambda: self.holder() == first)
        for name in others:
            self.processes[name].start()

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()

    def holder(self) -> str:
        """The Lease's holderIdentity; "" when released or not created yet."""
        try:
            coordination = client.CoordinationV1Api(self.admin.api)
            lease = coordination.read_namespaced_lease(self.lease, NAMESPACE)
        except client.ApiException as error:
            if error.status == 404:
                return ""
            raise
        return str(lease.spec.holder_identity or "")

    def lease_free(self) -> bool:
        """Whether nobody holds the Lease: released, never taken, or not renewed in time."""
        try:
            coordination = client.CoordinationV1Api(self.admin.api)
            lease = coordination.read_namespaced_lease(self.lease, NAMESPACE)
        except client.ApiException as error:
            if error.status == 404:
                return True
            raise
        spec = lease.spec
        if not spec.holder_identity or spec.renew_time is None:
            return True
        expiry = spec.renew_time + timedelta(seconds=spec.lease_duration_seconds or 0)
        return bool(expiry < datetime.now(UTC))

    def leader(self) -> OperatorProcess:
        return self.processes[wait_for("a leader", lambda: self.holder() or None)]

    def follower(self) -> OperatorProcess:
        (other,) = [name for name in self.names if name != self.holder()]
        return self.processes[other]

    def name_of(self, process: OperatorProcess) -> str:
        return next(name for name, p in self.processes.items() if p is process)


# --- who did what, from the API server's audit log (each replica's User-Agent names it) ------

WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def completed_requests(audit_log: Path) -> list[dict[str, Any]]:
    found = []
    for line in audit_log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line the API server is writing right now
        if entry.get("stage") == "ResponseComplete":
            found.append(entry)
    return found


def replica_of(entry: Mapping[str, Any]) -> str:
    """The replica a request came from, by its User-Agent `orgkeeper/<version> (<identity>)`."""
    agent = str(entry.get("userAgent", ""))
    for name in NAMES:
        if agent.startswith("orgkeeper/") and agent.endswith(f"({name})"):
            return name
    return ""


def identity_of(entry: Mapping[str, Any]) -> str:
    """Any operator's identity, by its User-Agent `orgkeeper/<version> (<identity>)`; "" for
    requests of anyone else."""
    agent = str(entry.get("userAgent", ""))
    if not (agent.startswith("orgkeeper/") and agent.endswith(")") and " (" in agent):
        return ""
    return agent[agent.rindex(" (") + 2 : -1]


def received(entry: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["requestReceivedTimestamp"].replace("Z", "+00:00"))


def code(entry: Mapping[str, Any]) -> int:
    return int((entry.get("responseStatus") or {}).get("code", 0))


def is_lease(entry: Mapping[str, Any]) -> bool:
    return (entry.get("objectRef") or {}).get("resource") == "leases"


# Questions every replica asks (admission: is this support? /metrics: who is this token?); a
# `create` of one stores nothing.
REVIEWS = frozenset({"tokenreviews", "subjectaccessreviews"})


def is_write(entry: Mapping[str, Any]) -> bool:
    """A request that changes cluster state (reviews are creates that change nothing)."""
    return entry["verb"] in WRITES and (entry.get("objectRef") or {}).get("resource") not in REVIEWS


def describe(entry: Mapping[str, Any]) -> str:
    ref = entry.get("objectRef") or {}
    where = f"{ref.get('namespace')}/" if ref.get("namespace") else ""
    sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
    return f"{entry['verb']} {ref.get('resource')}{sub} {where}{ref.get('name')}"
