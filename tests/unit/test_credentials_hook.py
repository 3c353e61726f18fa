"""The client's credentials hook runs now and then, not before every request: with a
kubeconfig's token it re-applied the whole kubeconfig each time (6% of the operator's CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.config import kube_config

from orgkeeper.kube import load_client, throttled


def test_the_hook_runs_once_per_period_and_the_token_stays_applied_between() -> None:
    calls: list[float] = []
    now = [100.0]

    def hook(configuration: client.Configuration) -> None:
        calls.append(now[0])
        configuration.api_key["BearerToken"] = f"token-{len(calls)}"

    configuration = client.Configuration()
    configuration.refresh_api_key_hook = throttled(hook, 10.0, clock=lambda: now[0])
    keys = []
    for _ in range(50):  # requests within the period
        keys.append(configuration.get_api_key_with_prefix("BearerToken"))
        now[0] += 0.125
    now[0] += 10.0
    keys.append(configuration.get_api_key_with_prefix("BearerToken"))
    assert calls == [100.0, 116.25]
    assert set(keys[:50]) == {"token-1"} and keys[50] == "token-2"


def test_a_kubeconfig_token_client_has_its_hook_throttled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "secret-token"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    configuration = load_client("test").configuration
    assert configuration.refresh_api_key_hook.__name__ == "hook_now_and_then"
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer secret-token"
