"""People log in through a real OpenID Connect provider (Ory Hydra) and act with their ID token.

No impersonation here: the ID token is the bearer credential of kubectl and `orgkeeper`, and
kube-apiserver checks it through its AuthenticationConfiguration (hack/orgkeeper_dev/oidc.py),
as `make cluster-up SSO=1` runs it. The non-SSO credential for the same e-mail is a client
certificate the control plane's CA issues (CN=<e-mail>). This module starts its own control
plane with the provider, so the rest of the suite never pays for it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import yaml

from orgkeeper_dev.localcluster import LocalCluster, install_orgkeeper, kubectl
from orgkeeper_dev.objects import membership, organization
from orgkeeper_dev.oidc import Provider
from support.cli import orgkeeper
from support.kube import Kube, api_client, wait_for
from support.orgs import wait_members_bound, wait_org


@dataclass
class Sso:
    cluster: LocalCluster
    provider: Provider
    admin: Kube
    directory: Path

    def session(self, email: str, *, verified: bool = True, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig acting with `email`'s ID token from a fresh login."""
        token = self.provider.login(email, verified=verified, groups=groups)
        path = self.directory / f"sso-{email}-{time.monotonic_ns()}.kubeconfig"
        return self.cluster.token_kubeconfig(path, token)

    def certificate(self, email: str) -> Path:
        """A kubeconfig acting as `email` with a client certificate: a login without SSO."""
        return self.cluster.user_kubeconfig(self.directory / f"cert-{email}.yaml", email)


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sso]:
    """A control plane whose kube-apiserver trusts a real provider, with orgkeeper running."""
    cluster = LocalCluster(tmp_path_factory.mktemp("sso-cluster"))
    cluster.start(sso=True)  # returns once kube-apiserver takes the provider's tokens
    try:
        install_orgkeeper(cluster)
        cluster.start_operator("--check-interval=10m")
        provider = Provider.of(cluster)
        found = Sso(
            cluster, provider, Kube(api_client(cluster.kubeconfig)), tmp_path_factory.mktemp("sso")
        )
        yield found
    finally:
        cluster.stop()


def run(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return kubectl(None, f"--kubeconfig={kubeconfig}", *args, check=False)


def whoami(kubeconfig: Path) -> str | None:
    done = run(kubeconfig, "auth", "whoami", "-o", "json")
    if done.returncode != 0:
        return None
    return str(json.loads(done.stdout)["status"]["userInfo"]["username"])


def create_config_map(
    kubeconfig: Path, namespace: str, name: str
) -> subprocess.CompletedProcess[str]:
    return run(kubeconfig, "create", "configmap", name, "-n", namespace, "--from-literal=a=b")


def acts(kubeconfig: Path, namespace: str, name: str) -> bool:
    return create_config_map(kubeconfig, namespace, name).returncode == 0


def member_org(sso: Sso, name: str, member: str, *, sso_only: bool) -> str:
    """An org (made by support, the admin) with `member` in control-plane-admin."""
    owner = f"owner@{name}.test"
    sso.admin.create("organizations", organization(name, owner, plan="Plus", ssoOnly=sso_only))
    wait_org(sso.admin, name)
    namespace = f"org-{name}"
    sso.admin.create("memberships", membership("member", member, "control-plane-admin"), namespace)
    wait_members_bound(sso.admin, name, {member: ["control-plane-admin"]})
    return namespace


def test_the_provider_names_the_user_by_the_verified_email_lower_cased_and_prefixed(
    sso: Sso,
) -> None:
    assert whoami(sso.session("Carol@Example.TEST")) == "oidc:carol@example.test"
    assert whoami(sso.certificate("carol@example.test")) == "carol@example.test"
    # The provider's groups arrive prefixed too: none can pass for system:masters or yours.
    grouped = sso.session("dave@example.test", groups=("staff", "system:masters"))
    seen = json.loads(run(grouped, "auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert seen["groups"] == ["oidc:staff", "oidc:system:masters", "system:authenticated"]
    assert run(grouped, "get", "secrets", "-A").returncode != 0


def test_an_sso_only_orgs_member_acts_with_an_sso_session_only(sso: Sso) -> None:
    name = "sso-only"
    alice = f"alice@{name}.test"
    namespace = member_org(sso, name, alice, sso_only=True)

    session, certificate = sso.session(alice), sso.certificate(alice)
    wait_for(
        "alice's SSO session to act in the org",
        partial(acts, session, namespace, "by-sso"),
        timeout=30,
    )
    refused = create_config_map(certificate, namespace, "by-certificate")
    assert refused.returncode != 0
    assert (
        f'User "{alice}" cannot create resource "configmaps" in API group "" in the namespace '
        f'"{namespace}"'
    ) in refused.stderr
    # The Owner's status page, through the CLI, likewise.
    owner = f"owner@{name}.test"
    status = orgkeeper(sso.cluster, "status", name, kubeconfig=sso.session(owner))
    assert status.returncode == 0, status.stderr
    assert "  Sign-in:  SSO only" in status.stdout
    denied = orgkeeper(sso.cluster, "status", name, kubeconfig=sso.certificate(owner))
    assert denied.returncode == 1
    assert "the API server refused (403)" in denied.stderr


def test_an_ordinary_orgs_member_acts_with_either_login(sso: Sso) -> None:
    name = "ordinary"
    bob = f"bob@{name}.test"
    namespace = member_org(sso, name, bob, sso_only=False)

    for how, kubeconfig in (("sso", sso.session(bob)), ("certificate", sso.certificate(bob))):
        wait_for(
            f"bob's {how} login to act in the org",
            partial(acts, kubeconfig, namespace, f"by-{how}"),
            timeout=30,
        )
    stranger = create_config_map(sso.session(f"mallory@{name}.test"), namespace, "stranger")
    assert stranger.returncode != 0
    assert f'User "oidc:mallory@{name}.test" cannot create resource "configmaps"' in stranger.stderr


def test_sign_up_through_an_sso_session(sso: Sso) -> None:
    dana = "dana@signup.test"
    session = sso.session(dana)
    manifest = sso.directory / "signup.yaml"
    manifest.write_text(yaml.safe_dump(organization("signup", dana, plan="Free", ssoOnly=True)))
    created = run(session, "create", "-f", str(manifest))
    assert created.returncode == 0, created.stderr
    assert wait_org(sso.admin, "signup")["status"]["owner"] == dana
    # The new Owner acts on it with the same session: a patch of displayName, through RBAC.
    wait_for(
        "dana's session to hold the Owner's rights",
        lambda: (
            run(
                session,
                "patch",
                "org",
                "signup",
                "--type=merge",
                "-p",
                '{"spec":{"displayName":"D"}}',
            ).returncode
            == 0
        ),
        timeout=30,
    )
    # Someone else's sign-up through their own session is refused by the sign-up policy.
    squat = sso.directory / "squat.yaml"
    squat.write_text(yaml.safe_dump(organization("squat", dana, plan="Free")))
    refused = run(sso.session("mallory@signup.test"), "create", "-f", str(squat))
    assert refused.returncode != 0
    assert (
        "sign-up is for yourself: you are signed in as oidc:mallory@signup.test" in refused.stderr
    )


def test_an_unverified_email_is_refused_by_the_api_server(sso: Sso) -> None:
    erin = "erin@unverified.test"
    assert whoami(sso.session(erin)) == f"oidc:{erin}"  # positive control
    unverified = run(sso.session(erin, verified=False), "auth", "whoami")
    assert unverified.returncode != 0
    assert "Unauthorized" in unverified.stderr


def expiry(kubeconfig: Path) -> float:
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    payload = token.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def test_an_expired_token_is_refused(sso: Sso) -> None:
    frank = "frank@expiry.test"
    sso.provider.set_id_token_lifespan("15s")
    try:
        used, unused = sso.session(frank), sso.session(frank)
    finally:
        sso.provider.set_id_token_lifespan("1h")
    assert expiry(unused) - time.time() < 20
    assert whoami(used) == f"oidc:{frank}"  # positive control: a short token works until then
    # `unused` was never presented before it expired, so no authentication cache holds it.
    wait_for("the short ID token to expire", lambda: time.time() > expiry(unused) + 1, timeout=30)
    expired = run(unused, "auth", "whoami")
    assert expired.returncode != 0
    assert "Unauthorized" in expired.stderr
    assert whoami(sso.session(frank)) == f"oidc:{frank}"  # a new login works again
