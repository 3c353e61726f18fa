"""Runs `orgkeeper run` as a real process against the test control plane."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from orgkeeper_dev.localcluster import LocalCluster, free_port, healthy
from support.kube import wait_for

TIMERS = frozenset({"check_interval", "inactivity_window", "billing_cycle", "license_rotate_after"})


# The time rules made short enough to watch in a test: a 20 s inactivity window and billing
# cycle, rotation after 30 s (orgs in tests are Enterprise unless a test wants the Free plan's
# inactivity rule).
FAST_CLOCK: dict[str, str] = {
    "inactivity_window": "20s",
    "billing_cycle": "20s",
    "license_rotate_after": "30s",
}


@dataclass
class OperatorProcess:
    cluster: LocalCluster
    log_path: Path
    extra_args: tuple[str, ...] = ()
    webhook_mode: str = "managed"
    # As the session operator's: the periodic check far beyond any test, and nothing that changes
    # objects on a timer (rotation, billing cycles, inactivity: the defaults of `orgkeeper
    # run`), so an idle operator does nothing and what a test waits for comes from an event
    # (a 2 s check also reconciled every org every 2 s: about half of test_shards.py's CPU).
    # Tests of the time rules take FAST_CLOCK; a test of something done on a timer sets its
    # own check (test_webhook_tls.py), as the fault suite does (tests/faults/operators.py).
    check_interval: str = "10m"
    inactivity_window: str = "30d"
    billing_cycle: str = "30d"
    license_rotate_after: str = "182d"
    health_port: int = field(default_factory=free_port)
    webhook_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    people_api_port: int | None = None  # the people API (--people-api-port), if served
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
            *([f"--people-api-port={self.people_api_port}"] if self.people_api_port else []),
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

    def restart(self, **settings: str) -> OperatorProcess:
        """Stops the process and starts it again, on the same ports and log, with `settings`
        (durations, as the fields above take them); returns once it is ready (caches synced)
        and its webhook server listens."""
        self.stop()
        for key, value in settings.items():
            if key not in TIMERS:
                raise TypeError(f"restart() takes the durations {sorted(TIMERS)}, not {key}")
            setattr(self, key, value)
        self.start()
        wait_for(
            "the restarted operator to be ready and serve its webhooks",
            lambda: healthy(self.health_port, "/readyz") and listening(self.webhook_port),
            timeout=60,
        )
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


def listening(port: int) -> bool:
    """Whether something accepts connections on the loopback port."""
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0
