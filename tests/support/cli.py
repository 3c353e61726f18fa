"""Running the `orgkeeper` command as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orgkeeper_dev.localcluster import LocalCluster


def orgkeeper(
    cluster: LocalCluster,
    *args: str,
    kubeconfig: Path | str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`orgkeeper ARGS`, with the cluster admin's kubeconfig unless another is given."""
    return subprocess.run(
        [sys.executable, "-m", "orgkeeper.cli", *args],
        env={**os.environ, "KUBECONFIG": str(kubeconfig or cluster.kubeconfig)},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def run_orgkeeper(
    kubeconfig: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`orgkeeper run ARGS` on loopback, none of the caller's ORGKEEPER_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORGKEEPER_")}
    return subprocess.run(
        [sys.executable, "-m", "orgkeeper.cli", "run", "--listen-address=127.0.0.1", *args],
        env={**clean, **(env or {}), "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def refused_in_one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line `orgkeeper run` refused with (exit code 2, no traceback)."""
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]
