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
