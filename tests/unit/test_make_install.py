"""`make install` applies with any kubectl on PATH, builds nothing then, and waits for the CRDs."""

from __future__ import annotations

from pathlib import Path

import pytest

from orgkeeper_dev import localcluster


def _kubectl_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> Path:
    """A `kubectl` alone on PATH that records its arguments in tmp_path/calls."""
    fake = tmp_path / "kubectl"
    fake.write_text(f"#!/bin/sh\n{script.format(calls=tmp_path / 'calls')}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "config"))
    return fake


def test_a_kubectl_on_path_is_used_and_nothing_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = _kubectl_on_path(tmp_path, monkeypatch, 'echo "$@" >> {calls}')

    def no_build(*, build: bool = True) -> dict[str, Path]:
        raise AssertionError("make install built the control plane")

    monkeypatch.setattr(localcluster, "binaries", no_build)
    assert localcluster.install_kubectl() == str(mine)
    assert localcluster.main(["install", "--state-dir", str(tmp_path / "state")]) == 0
    apply, wait = (tmp_path / "calls").read_text().splitlines()
    assert apply.startswith("apply --server-side -f ") and apply.endswith("manifests/policies")
    assert wait.startswith("wait --for=condition=Established --timeout=60s -f ")
    assert wait.endswith("/crds")


def test_without_a_kubectl_on_path_the_built_one_is_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    built = tmp_path / "built-kubectl"
    monkeypatch.setattr(localcluster, "binaries", lambda *, build=True: {"kubectl": built})
    assert localcluster.install_kubectl() == str(built)


def test_a_failed_apply_stops_before_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _kubectl_on_path(tmp_path, monkeypatch, 'echo "$1" >> {calls}; exit 1')
    assert localcluster.main(["install", "--state-dir", str(tmp_path / "state")]) == 1
    assert (tmp_path / "calls").read_text().split() == ["apply"]


def test_the_readme_gives_make_install_s_plain_kubectl_equivalent() -> None:
    readme = " ".join((localcluster.REPO_ROOT / "README.md").read_text().split())
    files = " ".join(
        f"-f {path}" + ("/" if path in ("crds", "manifests/policies") else "")
        for path in localcluster.INSTALL_MANIFESTS
    )
    assert f"`kubectl apply --server-side {files}`" in readme
    assert "`kubectl wait --for=condition=Established -f crds/`" in readme
