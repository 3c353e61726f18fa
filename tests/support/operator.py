"""Runs `orgkeeper run` as a real process against the test control plane."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from orgkeeper_dev.localcluster import LocalCluster, free_port, healthy
from support.kube import wait_for


@dataclass
class OperatorProcess:
    cluster: LocalCluster
    log_path: Path
    extra_args: tuple[str, ...] = ()
    webhook_mode: str = "managed"
    # Short enough that drift repair and periodic checks show within a test's patience. Orgs in
    # tests are Enterprise unless a test wants the Free plan's inactivity rule.
    check_interval: str = "2s"
    inactivity_window: str = "20s"
    billing_cycle: str = "20s"
    license_rotate_after: str = "30s"
    health_port: int = field(default_factory=free_port)
    webhook_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    # Whose credentials the operator runs with; the cluster admin's unless given.
    kubeconfig: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "orgkeeper.cli",
            "run",
            "--verbose",
            "--listen-address=127.0.0.1",
            f"--webhook-mode={self.webhook_mode}",
            f"--webhook-port={self.webhook_port}",
            f"--health-port={self.health_port}",
            f"--metrics-port={self.metrics_port}",
            f"--check-interval={self.check_interval}",
            f"--inactivity-window={self.inactivity_window}",
            f"--billing-cycle={self.billing_cycle}",
            f"--license-rotate-after={self.license_rotate_after}",
            *self.extra_args,
        ]

    def start(self) -> OperatorProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv(),
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig or self.cluster.kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_for("the operator's liveness endpoint", self._healthy, timeout=60)
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"the operator exited with {self.process.returncode}:\n{self.log_tail()}"
            )
        return healthy(self.health_port)

    def log_tail(self, size: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-size:]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to clean up, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
