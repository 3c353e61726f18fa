"""The CLI's own kubeconfig client, and what the cluster commands import."""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from orgkeeper import client, views
from orgkeeper.pki import webhook_authority

HEAVY = ("kopf", "kubernetes", "pydantic", "urllib3", "orgkeeper.api", "orgkeeper.settings")


@pytest.mark.parametrize("module", ["orgkeeper.cli", "orgkeeper.client", "orgkeeper.views"])
def test_the_cluster_commands_import_no_operator_client_or_models(module: str) -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [m for m in loaded if m.split(".")[0] in HEAVY or m.startswith(HEAVY)] == []


def test_building_a_cluster_command_s_parser_loads_no_settings() -> None:
    script = (
        "import sys; from orgkeeper import cli; cli.parser('orgs').parse_args(['orgs', '--email', "
        "'a@b']); print('orgkeeper.settings' in sys.modules, 'pydantic' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "False"]


def write(path: Path, contexts: list[tuple[str, str, str]], **extra: Any) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "contexts": [
                    {"name": name, "context": {"cluster": c, "user": u}} for name, c, u in contexts
                ],
                **extra,
            }
        )
    )
    return path


def test_kubeconfig_files_merge_as_kubectl_merges_them(tmp_path: Path) -> None:
    first = write(
        tmp_path / "first",
        [("a", "one", "alice")],
        **{
            "current-context": "a",
            "clusters": [{"name": "one", "cluster": {"server": "https://one.test:6443"}}],
        },
    )
    second = write(
        tmp_path / "second",
        [("a", "two", "bob")],  # the first file's context of this name wins
        **{
            "current-context": "b",
            "clusters": [{"name": "one", "cluster": {"server": "https://ignored.test"}}],
            "users": [{"name": "alice", "user": {"tokenFile": "token"}}],
        },
    )
    (tmp_path / "token").write_text("s3cret\n")
    kubeconfig = f"{tmp_path / 'absent'}:{first}:{second}"
    cluster = client.from_kubeconfig({"KUBECONFIG": kubeconfig})
    assert cluster.server == "https://one.test:6443"
    assert cluster._headers == {"Authorization": "Bearer s3cret"}


def test_a_kubeconfig_without_a_context_or_server_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(client.UnreachableError, match=r"no kubeconfig with a context at .*absent"):
        client.from_kubeconfig({"KUBECONFIG": str(tmp_path / "absent")})
    empty = write(tmp_path / "empty", [("a", "none", "u")], **{"current-context": "a"})
    with pytest.raises(client.UnreachableError, match="context a names no cluster server"):
        client.from_kubeconfig({"KUBECONFIG": str(empty)})
    other = write(tmp_path / "other", [("a", "none", "u")], **{"current-context": "b"})
    with pytest.raises(client.UnreachableError, match="no current context 'b'"):
        client.from_kubeconfig({"KUBECONFIG": str(other)})


def _with_user(tmp_path: Path, user: dict[str, Any]) -> dict[str, str]:
    path = write(
        tmp_path / "config",
        [("a", "c", "u")],
        **{
            "current-context": "a",
            "clusters": [{"name": "c", "cluster": {"server": "https://c.test"}}],
            "users": [{"name": "u", "user": user}],
        },
    )
    return {"KUBECONFIG": str(path)}


def test_an_exec_plugin_s_token_and_a_failing_plugin(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    plugin.write_text(
        '#!/bin/sh\necho "{\\"status\\": {\\"token\\": \\"$TOKEN_FROM_ENV\\"}}"\n'
        'test "$KUBERNETES_EXEC_INFO" != ""\n'
    )
    plugin.chmod(0o700)
    spec = {"command": str(plugin), "env": [{"name": "TOKEN_FROM_ENV", "value": "t0k"}]}
    cluster = client.from_kubeconfig(_with_user(tmp_path, {"exec": spec}))
    assert cluster._headers == {"Authorization": "Bearer t0k"}

    failing = {"command": str(tmp_path / "absent-plugin")}
    with pytest.raises(
        client.UnreachableError,
        match=r"credential plugin .*absent-plugin can't run: no such file or directory$",
    ):
        client.from_kubeconfig(_with_user(tmp_path, {"exec": failing}))


def test_a_failing_plugin_s_error_names_it_but_not_its_arguments(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    plugin.write_text("#!/bin/sh\nexit 3\n")
    plugin.chmod(0o700)
    spec = {"command": str(plugin), "args": ["--client-secret", "hunter2"]}
    with pytest.raises(client.UnreachableError) as raised:
        client.from_kubeconfig(_with_user(tmp_path, {"exec": spec}))
    assert str(raised.value) == (
        f"the kubeconfig's credential plugin {plugin} failed with exit status 3"
    )
    garbage = tmp_path / "garbage"
    garbage.write_text("#!/bin/sh\necho 'token: hunter2'\n")
    garbage.chmod(0o700)
    with pytest.raises(client.UnreachableError) as raised:
        client.from_kubeconfig(_with_user(tmp_path, {"exec": {"command": str(garbage)}}))
    assert str(raised.value).endswith("printed no ExecCredential")
    assert "hunter2" not in str(raised.value)


def test_a_relative_plugin_path_is_the_kubeconfig_s_and_a_bare_name_comes_from_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """client-go's rule: `./bin/token` is beside the kubeconfig, never in the working
    directory (an untrusted checkout); `token` is looked up in PATH."""

    def plugin(path: Path, token: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'#!/bin/sh\necho \'{{"status": {{"token": "{token}"}}}}\'\n')
        path.chmod(0o700)

    home, checkout = tmp_path / "home", tmp_path / "checkout"
    plugin(home / "bin" / "token", "from-the-kubeconfig-s-directory")
    plugin(checkout / "bin" / "token", "from-the-working-directory")
    plugin(tmp_path / "path" / "token", "from-path")
    home.mkdir(exist_ok=True)
    monkeypatch.chdir(checkout)
    relative = client.from_kubeconfig(_with_user(home, {"exec": {"command": "./bin/token"}}))
    assert relative._headers == {"Authorization": "Bearer from-the-kubeconfig-s-directory"}

    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    bare = client.from_kubeconfig(_with_user(home, {"exec": {"command": "token"}}))
    assert bare._headers == {"Authorization": "Bearer from-path"}


@pytest.mark.parametrize(
    ("kind", "fields", "named"),
    [
        ("cluster", {"proxy-url": "http://proxy.test:3128"}, "proxy-url"),
        ("cluster", {"tls-server-name": "api.test"}, "tls-server-name"),
        ("user", {"token": "t", "as": "admin"}, "as"),
        (
            "user",
            {"token": "t", "as-groups": ["system:masters"], "as-uid": "1"},
            "as-groups, as-uid",
        ),
    ],
)
def test_kubeconfig_fields_it_cannot_honour_are_refused_in_one_line(
    tmp_path: Path, kind: str, fields: dict[str, Any], named: str
) -> None:
    cluster = {"server": "https://c.test", **(fields if kind == "cluster" else {})}
    path = write(
        tmp_path / "config",
        [("a", "c", "u")],
        **{
            "current-context": "a",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": fields if kind == "user" else {"token": "t"}}],
        },
    )
    with pytest.raises(client.UnreachableError) as raised:
        client.from_kubeconfig({"KUBECONFIG": str(path)})
    name = "c" if kind == "cluster" else "u"
    assert str(raised.value) == (
        f"the kubeconfig's {kind} {name} sets {named}, which orgkeeper doesn't support; "
        f"use a context whose {kind} doesn't (kubectl --context, or KUBECONFIG)"
    )


def test_basic_auth_and_an_unsupported_auth_provider(tmp_path: Path) -> None:
    basic = client.from_kubeconfig(_with_user(tmp_path, {"username": "u", "password": "p"}))
    assert basic._headers == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    with pytest.raises(client.UnreachableError, match="auth-provider, which orgkeeper doesn't"):
        client.from_kubeconfig(_with_user(tmp_path, {"auth-provider": {"name": "gcp"}}))


def test_a_new_trial_shows_30_days_and_its_last_hours_one() -> None:
    created = datetime(2026, 12, 1, tzinfo=UTC)
    org = {
        "metadata": {"name": "plusco"},
        "spec": {"plan": "Plus"},
        "status": {"trial": {"endsAt": "2026-12-31T00:00:00Z"}},
    }
    days = [
        views.status_summary(org, [], created + after)["trialDaysLeft"]
        for after in (timedelta(seconds=5), timedelta(days=29, hours=22), timedelta(days=31))
    ]
    assert days == [30, 1, 0]


def test_a_license_row_says_why_it_is_not_valid_else_why_not_ready() -> None:
    def lic(*conditions: tuple[str, str, str]) -> dict[str, Any]:
        return {
            "metadata": {"name": "l"},
            "spec": {"product": "mesh", "source": "SecretRef"},
            "status": {
                "conditions": [
                    {"type": t, "status": s, "reason": r, "message": f"{r} said"}
                    for t, s, r in conditions
                ]
            },
        }

    org = {"metadata": {"name": "o"}, "spec": {}}
    rows = [
        views.status_summary(org, [body], datetime.now(UTC))["licenses"][0]
        for body in (
            lic(("Valid", "False", "SecretMissing"), ("Ready", "False", "SecretMissing")),
            lic(("Valid", "True", "Verified"), ("Ready", "False", "Superseded")),
            lic(("Valid", "True", "Verified"), ("Ready", "True", "Delivered")),
            lic(),
        )
    ]
    assert [(r["valid"], r["reason"], r["message"]) for r in rows] == [
        (False, "SecretMissing", "SecretMissing said"),
        (True, "Superseded", "Superseded said"),
        (True, None, None),
        (False, None, None),
    ]


def test_in_a_pod_the_service_account_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, _ = webhook_authority()
    (tmp_path / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "token").write_text("pod-token\n")
    monkeypatch.setattr(client, "IN_CLUSTER", tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    cluster = client.connect({**env, "KUBECONFIG": str(tmp_path / "absent")})
    assert cluster.server == "https://10.96.0.1:443"
    assert cluster._headers == {"Authorization": "Bearer pod-token"}
    # Outside a Pod (no service host), the kubeconfig.
    with pytest.raises(client.UnreachableError, match="no kubeconfig"):
        client.connect({"KUBECONFIG": str(tmp_path / "absent")})


def test_in_a_pod_a_kubeconfig_wins_over_the_service_account_as_with_kubectl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`KUBECONFIG=~/prod orgkeeper ...` in a CI Pod acts on prod as its user, not on the Pod's
    cluster as the Pod's ServiceAccount; so does ~/.kube/config."""
    (tmp_path / "token").write_text("pod-token\n")
    monkeypatch.setattr(client, "IN_CLUSTER", tmp_path)
    pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    prod = _with_user(tmp_path, {"token": "prod-token"})
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(Path(prod["KUBECONFIG"]).read_text())
    for environ in ({**pod, **prod}, {**pod, "HOME": str(home)}):
        cluster = client.connect(environ)
        assert (cluster.server, cluster._headers) == (
            "https://c.test",
            {"Authorization": "Bearer prod-token"},
        )
    # A kubeconfig that is there but broken is its error, not a silent switch to the Pod's.
    broken = write(tmp_path / "broken", [("a", "none", "u")], **{"current-context": "b"})
    with pytest.raises(client.UnreachableError, match="no current context 'b'"):
        client.connect({**pod, "KUBECONFIG": str(broken)})
