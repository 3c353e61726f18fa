"""The operator's resident memory, measured the same way by the soak and the stranger bench.

"At rest" is the lowest VmRSS (/proc/<pid>/status) sampled every second over a window longer
than the operator's malloc_trim interval (30 s, orgkeeper/memory.py), once it has converged:
glibc keeps freed pages until the trim, so a single sample would measure the last burst's
garbage, not what the operator holds.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from orgkeeper.memory import TRIM_INTERVAL_SECONDS

MIB = 1024 * 1024
REST_WINDOW = TRIM_INTERVAL_SECONDS + 2.0
# `make faults`: an hour of churn; in `make test`, a couple of minutes.
SOAK_SECONDS = float(os.environ.get("ORGKEEPER_FAULT_SOAK_SECONDS", "120"))
# Stranger's objects in the bench (the review's scenario: 2,000 Deployments, 60 fat bindings).
STRANGER_DEPLOYMENTS = int(os.environ.get("ORGKEEPER_FAULT_STRANGER_DEPLOYMENTS", "2000"))
STRANGER_BINDINGS = int(os.environ.get("ORGKEEPER_FAULT_STRANGER_BINDINGS", "60"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def rest_rss_mib(pid: int, window: float = REST_WINDOW) -> float:
    """The lowest resident memory over `window` seconds (see the module's docstring)."""
    lowest = rss_mib(pid)
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        time.sleep(1.0)
        lowest = min(lowest, rss_mib(pid))
    return lowest


def probe(pid: int, seconds: float, mib: float) -> None:
    """With MEMPROBE_DIR set (hack/memprobe), the rest sample written to rest.txt and the
    operator's live objects per type (SIGUSR1), taken after the sample so the probe's own
    garbage is never measured; else nothing."""
    directory = os.environ.get("MEMPROBE_DIR")
    if not directory:
        return
    with (Path(directory) / "rest.txt").open("a") as out:
        out.write(f"{seconds:.0f} {mib:.2f}\n")
    done = len(list(Path(directory).glob("done-*")))
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while not (Path(directory) / f"done-{done + 1}").exists() and time.monotonic() < deadline:
        time.sleep(0.5)


@dataclass
class RestSamples:
    """Resident memory at rest over a soak: (seconds since start, MiB)."""

    points: list[tuple[float, float]] = field(default_factory=list)

    def add(self, seconds: float, mib: float) -> None:
        self.points.append((seconds, mib))

    def trough(self) -> float:
        return min(mib for _, mib in self.points)

    def above_trough(self) -> float:
        """How far the highest rest sample is above the trough."""
        return max(mib for _, mib in self.points) - self.trough()

    def slope_per_hour(self) -> float:
        """Least-squares slope of the rest samples, MiB per hour."""
        n = len(self.points)
        if n < 2:
            return 0.0
        mean_t = sum(t for t, _ in self.points) / n
        mean_m = sum(m for _, m in self.points) / n
        spread = sum((t - mean_t) ** 2 for t, _ in self.points)
        if spread == 0:
            return 0.0
        slope = sum((t - mean_t) * (m - mean_m) for t, m in self.points) / spread
        return slope * 3600.0
