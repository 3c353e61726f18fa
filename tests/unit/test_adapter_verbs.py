"""The operator's async code reaches the API one way: an adapter's `kube.threaded` verbs, which
run on KubeApi's thread pools (`await kube.read_secret(...)`); no other module hands blocking
client calls to an executor of its own."""

from __future__ import annotations

from pathlib import Path

import orgkeeper

PACKAGE = Path(orgkeeper.__file__).parent


def test_only_kube_py_runs_client_calls_on_threads() -> None:
    offloading = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "run_in_executor(" in path.read_text() or "kube.run(" in path.read_text()
    )
    assert offloading == ["kube.py"]
