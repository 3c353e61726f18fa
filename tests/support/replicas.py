"""Two `orgkeeper run --leader-elect` replicas against one control plane, and their Lease."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client

from orgkeeper.localcluster import LocalCluster
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
    # OperatorProcess settings (check_interval, license_rotate_after, ...) besides its defaults.
    settings: Mapping[str, str] = field(default_factory=dict)
    processes: dict[str, OperatorProcess] = field(init=False)

    def __post_init__(self) -> None:
        self.processes = {
            name: OperatorProcess(
                self.cluster,
                self.directory / f"{name}.log",
                webhook_mode=self.webhook_mode,
                kubeconfig=self.kubeconfig,
                extra_args=("--leader-elect", f"--identity={name}", *self.extra_args),
                **self.settings,  # type: ignore[arg-type]
            )
            for name in NAMES
        }

    def start(self) -> None:
        """replica-a first, until it leads; then replica-b, which follows."""
        self.processes[NAMES[0]].start()
        wait_for(f"{NAMES[0]} to take the Lease", lambda: self.holder() == NAMES[0])
        self.processes[NAMES[1]].start()

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()

    def holder(self) -> str:
        """The Lease's holderIdentity; "" when released or not created yet."""
        try:
            lease = client.CoordinationV1Api(self.admin.api).read_namespaced_lease(LEASE, NAMESPACE)
        except client.ApiException as error:
            if error.status == 404:
                return ""
            raise
        return str(lease.spec.holder_identity or "")

    def leader(self) -> OperatorProcess:
        return self.processes[wait_for("a leader", lambda: self.holder() or None)]

    def follower(self) -> OperatorProcess:
        (other,) = [name for name in NAMES if name != self.holder()]
        return self.processes[other]

    def name_of(self, process: OperatorProcess) -> str:
        return next(name for name, p in self.processes.items() if p is process)
