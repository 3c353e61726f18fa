"""Running the `orgkeeper` command as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

from orgkeeper.localcluster import LocalCluster


def orgkeeper(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orgkeeper.cli", *args],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
