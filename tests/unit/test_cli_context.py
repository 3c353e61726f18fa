"""`orgkeeper orgs|status|activity` pick a cluster as kubectl does: --kubeconfig, --context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orgkeeper import cli, client, views


def _kubeconfig(path: Path, current: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "current-context": current,
                "contexts": [
                    {"name": "kind-a", "context": {"cluster": "a", "user": "u"}},
                    {"name": "kind-b", "context": {"cluster": "b", "user": "u"}},
                ],
                "clusters": [
                    {"name": "a", "cluster": {"server": "https://a.test:6443"}},
                    {"name": "b", "cluster": {"server": "https://b.test:6443"}},
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
            }
        )
    )
    return path


def test_context_picks_a_context_other_than_the_current_one(tmp_path: Path) -> None:
    env = {"KUBECONFIG": str(_kubeconfig(tmp_path / "config", "kind-a"))}
    assert client.connect(env).server == "https://a.test:6443"
    assert client.connect(env, context="kind-b").server == "https://b.test:6443"
    with pytest.raises(client.UnreachableError, match="the kubeconfig has no context 'kind-c'"):
        client.connect(env, context="kind-c")


def test_kubeconfig_replaces_the_environment_s_and_wins_over_a_pod_s_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = _kubeconfig(tmp_path / "chosen", "kind-b")
    (tmp_path / "token").write_text("pod-token\n")
    monkeypatch.setattr(client, "IN_CLUSTER", tmp_path)
    env = {"KUBECONFIG": str(tmp_path / "absent"), "KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    assert client.connect(env, kubeconfig=str(chosen)).server == "https://b.test:6443"


@pytest.mark.parametrize(
    "argv",
    [
        ["orgs", "--email", "a@x", "--context", "kind-b", "--kubeconfig", "K"],
        ["status", "acme", "--context", "kind-b", "--kubeconfig", "K"],
        ["activity", "login", "--org", "acme", "--email", "a@x", "--context", "kind-b"],
        ["activity", "requests", "--org", "acme", "--count", "1", "--kubeconfig", "K"],
    ],
)
def test_every_cluster_command_takes_kubectl_s_flags(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def refuse(**chosen: Any) -> client.Cluster:
        seen.update(chosen)
        raise client.UnreachableError("stop here")

    monkeypatch.setattr(cli, "connect", refuse)
    assert cli.main(argv) == 1
    assert seen == {
        "kubeconfig": "K" if "--kubeconfig" in argv else None,
        "context": "kind-b" if "--context" in argv else None,
    }


def test_an_org_no_operator_has_reconciled_reads_unreconciled_not_pending() -> None:
    assert views.org_state({"metadata": {"name": "acme"}}) == "Unreconciled"
    assert views.org_state({"status": {"phase": "Active"}}) == "Active"
