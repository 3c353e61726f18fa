"""The local control plane's OpenID Connect provider (hack/orgkeeper_dev/oidc.py): what
kube-apiserver is told to trust, and how the build fails when a tool is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from orgkeeper_dev import oidc
from orgkeeper_dev.localcluster import ControlPlaneError


def provider(tmp_path: Path) -> oidc.Provider:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    return oidc.Provider("https://127.0.0.1:4444/", "http://127.0.0.1:4445", ca, "secret")


def test_kube_apiserver_trusts_the_verified_email_lower_cased_with_the_sso_prefix(
    tmp_path: Path,
) -> None:
    config = oidc.authentication_config(provider(tmp_path))
    assert config["apiVersion"] == "apiserver.config.k8s.io/v1"
    (jwt,) = config["jwt"]
    assert jwt["issuer"]["url"] == "https://127.0.0.1:4444/"
    assert jwt["issuer"]["audiences"] == [oidc.CLIENT_ID]
    assert jwt["issuer"]["certificateAuthority"].startswith("-----BEGIN CERTIFICATE-----")
    assert jwt["claimMappings"] == {
        "username": {"expression": '"oidc:" + claims.email.lowerAscii()'},
        "groups": {"claim": "groups", "prefix": "oidc:"},
    }
    assert [rule["expression"] for rule in jwt["claimValidationRules"]] == [
        "claims.?email_verified.orValue(false) == true"
    ]
    assert [rule["expression"] for rule in jwt["userValidationRules"]] == [
        "!user.username.startsWith('system:')"
    ]


def test_the_prefix_is_quoted_into_the_username_expression(tmp_path: Path) -> None:
    config = oidc.authentication_config(provider(tmp_path), username_prefix='sso"x:')
    username = config["jwt"][0]["claimMappings"]["username"]["expression"]
    assert username == '"sso\\"x:" + claims.email.lowerAscii()'


def test_an_unbuilt_provider_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oidc, "CACHE_ROOT", tmp_path)
    with pytest.raises(ControlPlaneError, match=r"Hydra is not built; run `make oidc`"):
        oidc.hydra_binary(build=False)


def test_a_missing_c_compiler_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oidc, "CACHE_ROOT", tmp_path)
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ControlPlaneError, match=r"a C compiler \(gcc\) is needed to build Hydra"):
        oidc.hydra_binary()


def test_a_missing_go_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oidc, "CACHE_ROOT", tmp_path)
    monkeypatch.setattr("shutil.which", lambda name: None if name == "go" else "/bin/cc")
    with pytest.raises(ControlPlaneError, match=r"Go is needed to build Hydra"):
        oidc.hydra_binary()


@pytest.mark.parametrize(
    ("url", "step", "value"),
    [
        ("http://127.0.0.1:9/login?login_challenge=abc", "login", "abc"),
        ("http://127.0.0.1:9/consent?consent_challenge=def", "consent", "def"),
        ("http://127.0.0.1:9/callback?code=ghi&state=x", "code", "ghi"),
    ],
)
def test_each_step_of_the_login_takes_its_parameter_from_the_redirect(
    url: str, step: str, value: str
) -> None:
    assert oidc._param(url, step) == value


def test_a_refused_step_says_why() -> None:
    url = "http://127.0.0.1:9/callback?error=access_denied&error_description=no+such+user"
    with pytest.raises(ControlPlaneError, match="the provider's code step failed: no such user"):
        oidc._param(url, "code")
