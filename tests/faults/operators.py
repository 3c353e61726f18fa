"""The fault suite's operator process: started, SIGKILLed, restarted, replaced with new settings.

As the session operator of tests/integration, it runs as its ServiceAccount with exactly the
RBAC of manifests/, in `--webhook-mode serve` behind the manifests' ValidatingWebhookConfiguration
`orgkeeper.dev` (failurePolicy Fail; the Service reference made a loopback URL). That
configuration stays whatever happens to the process, as it does in a cluster.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypedDict, Unpack

from orgkeeper_dev.localcluster import LocalCluster
from support import identity
from support.kube import Kube, wait_for
from support.operator import OperatorProcess
from support.replicas import NAMES, Replicas


class Settings(TypedDict, total=False):
    """The OperatorProcess settings the suite sets (durations, as `orgkeeper run` takes them)."""

    check_interval: str
    inactivity_window: str
    billing_cycle: str
    license_rotate_after: str


class Ports(TypedDict, total=False):
    """The OperatorProcess ports a replacement keeps."""

    health_port: int
    webhook_port: int
    metrics_port: int


# The suite's defaults: periodic checks every 2s, but nothing that changes objects on a timer
# (rotation, billing cycles, inactivity), so an idle operator writes nothing at all.
DEFAULTS: Settings = {
    "check_interval": "2s",
    "inactivity_window": "30d",
    "billing_cycle": "30d",
    "license_rotate_after": "182d",
}


class Operators:
    """One `orgkeeper run` at a time against the fault cluster."""

    def __init__(self, cluster: LocalCluster, admin: Kube, directory: Path) -> None:
        self.cluster = cluster
        self.admin = admin
        self.directory = directory
        self.settings: Settings = DEFAULTS.copy()
        identity.apply(cluster, identity.of_kinds(identity.render(), identity.IDENTITY_KINDS))
        self.identity = identity.issue_token(
            cluster, admin, directory / "kubeconfig", seconds=12 * 3600
        )
        # Where the operator finds the API server; the flaky-API test points it at a proxy.
        self.kubeconfig = self.identity.kubeconfig
        self.process = self._new()
        identity.apply(
            cluster, identity.loopback_webhooks(identity.render(), self.process.webhook_port)
        )

    def _new(self, **ports: Unpack[Ports]) -> OperatorProcess:
        return OperatorProcess(
            self.cluster,
            self.directory / "operator.log",
            webhook_mode="serve",
            kubeconfig=self.kubeconfig,
            extra_args=("--webhook-host=127.0.0.1",),
            **self.settings,
            **ports,
        )

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    def alive(self) -> bool:
        return self.process.process is not None and self.process.process.poll() is None

    def log_size(self) -> int:
        path = self.process.log_path
        return path.stat().st_size if path.exists() else 0

    def log_since(self, offset: int) -> str:
        with self.process.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def start(self) -> None:
        """Starts the operator and returns once its admission webhooks answer."""
        self.process.start()
        wait_for("the operator's admission webhooks to answer", self.webhooks_serve, timeout=60)

    def kill(self) -> None:
        """SIGKILL, as in a crash: no cleanup."""
        self.process.kill()

    def stop(self) -> None:
        self.process.stop()

    def replace(self, kubeconfig: Path | None = None, **settings: Unpack[Settings]) -> None:
        """Stops this operator and starts one with other settings (same ports and log)."""
        self.process.stop()
        self.settings = {**DEFAULTS, **settings}
        self.kubeconfig = kubeconfig or self.identity.kubeconfig
        self.process = self._new(
            health_port=self.process.health_port,
            webhook_port=self.process.webhook_port,
            metrics_port=self.process.metrics_port,
        )
        self.start()

    def webhooks_serve(self) -> bool:
        """A dry-run create goes through the webhooks: they are registered, up and trusted."""
        return identity.webhooks_answer(self.admin)

    @contextlib.contextmanager
    def made_way_for_replicas(
        self,
        directory: Path,
        *,
        serve_webhooks: bool = False,
        via: Mapping[str, Path] | None = None,
    ) -> Iterator[Replicas]:
        """Two --leader-elect replicas in this operator's place (it elects no leader), with the
        suite's settings; the webhook configurations go with it (with failurePolicy Fail and
        nothing serving, they would refuse every write), or, with `serve_webhooks`, call
        replica-a, which starts as the leader; `via`: a kubeconfig of its own for a replica (through
        a proxy, say). Both come back at the end."""
        self.stop()
        identity.remove_webhooks(self.cluster)
        pair = Replicas(
            self.cluster,
            self.admin,
            self.identity.kubeconfig,
            directory,
            webhook_mode="serve" if serve_webhooks else "off",
            extra_args=("--webhook-host=127.0.0.1",) if serve_webhooks else (),
            via=via or {},
            # The suite's settings: nothing changes objects on a timer.
            settings={key: str(value) for key, value in self.settings.items()},
        )
        if serve_webhooks:
            port = pair.processes[NAMES[0]].webhook_port
            identity.apply(self.cluster, identity.loopback_webhooks(identity.render(), port))
        try:
            pair.start()
            yield pair
        finally:
            pair.stop()
            # A replica stopped while writes were in flight leaves its Lease to run out rather
            # than release it; the suite's operator (not electing) refuses to start beside a
            # held one, as a second installation would.
            wait_for("the replicas' Lease to be released or run out", pair.lease_free, timeout=30)
            webhooks = identity.loopback_webhooks(identity.render(), self.process.webhook_port)
            identity.apply(self.cluster, webhooks)
            self.start()
