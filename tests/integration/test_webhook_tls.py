"""`--webhook-mode serve`: the webhook's TLS and caBundle, on a control plane of their own.

The operator runs as its ServiceAccount with the manifests' RBAC, as in a cluster; the
webhook configuration is the manifests' with its Service reference made a loopback URL.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes.client.rest import ApiException

from orgkeeper import names
from orgkeeper.names import WEBHOOK_CONFIGURATION
from orgkeeper.pki import certificate, pem_key, subject_name
from orgkeeper_dev.localcluster import LocalCluster, install_orgkeeper
from support import identity
from support.identity import ServiceAccountIdentity
from support.kube import Kube, api_client, rejection, wait_for
from support.operator import OperatorProcess
from support.orgs import membership, organization, wait_members_bound, wait_org


@dataclass
class Bare:
    cluster: LocalCluster
    admin: Kube
    operator_identity: ServiceAccountIdentity
    logs: Path

    def operator(self, name: str, *extra: str) -> OperatorProcess:
        return OperatorProcess(
            self.cluster,
            self.logs / f"{name}.log",
            webhook_mode="serve",
            kubeconfig=self.operator_identity.kubeconfig,
            extra_args=("--webhook-host=127.0.0.1", *extra),
            # The webhook configurations' CA is re-checked on a timer (no watch: a configuration
            # made later, or changed, is picked up at the next check), which these tests watch.
            check_interval="2s",
        )

    def apply_webhooks(self, port: int) -> None:
        identity.apply(self.cluster, identity.loopback_webhooks(identity.render(), port))

    def ca_bundles(self) -> list[str | None]:
        """Every webhook's caBundle, of both configurations."""
        return [b for hooks in identity.ca_bundles(self.admin).values() for b in hooks]

    def remove_webhooks(self) -> None:
        identity.remove_webhooks(self.cluster)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bare]:
    """CRDs and the operator's identity from manifests/, and no webhook configuration yet."""
    local = LocalCluster(tmp_path_factory.mktemp("tls-cluster"))
    local.start()
    try:
        install_orgkeeper(local)
        identity.apply(local, identity.of_kinds(identity.render(), identity.IDENTITY_KINDS))
        admin = Kube(api_client(local.kubeconfig))
        work = tmp_path_factory.mktemp("tls")
        yield Bare(local, admin, identity.issue_token(local, admin, work / "kubeconfig"), work)
    finally:
        local.stop()


def new_org(bare: Bare, name: str) -> tuple[str, str]:
    owner, bob = f"owner@{name}.test", f"bob@{name}.test"
    bare.admin.create("organizations", organization(name, owner))
    wait_org(bare.admin, name)
    bare.admin.create("memberships", membership("bob", bob, "analytics-viewer"), f"org-{name}")
    wait_members_bound(bare.admin, name, {owner: ["organization-admin"], bob: ["analytics-viewer"]})
    return owner, bob


def transfer(bare: Bare, name: str, to: str) -> None:
    bare.admin.patch("organizations", name, {"spec": {"owner": to}})


def refused_in_a_dry_run(bare: Bare, name: str, to: str) -> bool:
    """Would admission refuse the transfer? A dry run writes nothing; the API server sends it
    to webhooks without side effects, as orgkeeper's are."""
    try:
        bare.admin.custom.patch_cluster_custom_object(
            names.GROUP,
            names.VERSION,
            "organizations",
            name,
            {"spec": {"owner": to}},
            dry_run="All",
        )
    except ApiException as error:
        return bool(error.status == 403)
    return False


def test_the_operator_starts_without_its_webhook_configuration_and_picks_it_up(
    bare: Bare,
) -> None:
    process = bare.operator("no-configuration").start()
    try:
        wait_for(
            "the operator to say its webhook configuration is missing",
            lambda: (
                "ValidatingWebhookConfiguration orgkeeper.dev does not exist" in process.log_text()
            ),
        )
        # Without admission the operator still works, and keeps the rules as conditions: a
        # transfer to a non-admin gets in, but the previous Owner stays effective.
        owner, bob = new_org(bare, "plain")
        transfer(bare, "plain", bob)
        org = wait_org(bare.admin, "plain", "OwnerValid", "False")
        assert org["status"]["owner"] == owner
        transfer(bare, "plain", owner)
        wait_org(bare.admin, "plain")

        # The configuration appears (kubectl apply -k): the operator gives it its CA, and the
        # same transfer is now refused at admission, with the reason.
        bare.apply_webhooks(process.webhook_port)
        wait_for("the CA in every webhook", lambda: all(bare.ca_bundles()))
        # The API server takes the configuration and its CA in from its own watch.
        wait_for(
            "the API server to call the webhook", lambda: refused_in_a_dry_run(bare, "plain", bob)
        )
        status, message = rejection(lambda: transfer(bare, "plain", bob))
        assert status == 403
        assert "not a member of the organization-admin team" in message
    finally:
        process.stop()
        bare.remove_webhooks()


def write_certificates(directory: Path) -> bytes:
    """A CA and a serving certificate for 127.0.0.1, laid out as cert-manager mounts them."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(subject_name("test-issuer"), ca_key, None, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    served = certificate(
        subject_name("127.0.0.1"), key, (ca, ca_key), server_names=("127.0.0.1", "localhost")
    )
    directory.mkdir(parents=True, exist_ok=True)
    authority = ca.public_bytes(serialization.Encoding.PEM)
    (directory / "tls.crt").write_bytes(served.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(pem_key(key))
    (directory / "ca.crt").write_bytes(authority)
    return authority


def audit_lines(bare: Bare) -> list[str]:
    return bare.cluster.audit_log.read_text().splitlines()


def configuration_calls(bare: Bare, verb: str, since: int) -> list[str]:
    """The operator's requests with `verb` on its webhook configurations, from line `since`."""
    calls = []
    for line in audit_lines(bare)[since:]:
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if (
            event["user"].get("username") == identity.USER
            and event["verb"] == verb
            and ref.get("name") == WEBHOOK_CONFIGURATION
        ):
            calls.append(ref["resource"])
    return calls


def test_a_mounted_certificate_is_served_and_its_ca_published(bare: Bare) -> None:
    authority = write_certificates(bare.logs / "webhook-tls")
    process = bare.operator("mounted", f"--webhook-cert-dir={bare.logs / 'webhook-tls'}")
    bare.apply_webhooks(process.webhook_port)
    since = len(audit_lines(bare))
    try:
        process.start()
        expected = base64.b64encode(authority).decode()
        wait_for(
            "the mounted ca.crt in every webhook",
            lambda: (found := bare.ca_bundles()) and found == [expected] * len(found),
        )
        _, bob = new_org(bare, "mounted")
        # The API server reached the webhooks over TLS with the mounted certificate.
        status, message = rejection(lambda: transfer(bare, "mounted", bob))
        assert status == 403
        assert "not a member of the organization-admin team" in message
        assert bare.admin.get("memberships", "bob", "org-mounted")["metadata"]["labels"]

        # Re-checked every interval, written once: a configuration already right is left alone.
        wait_for(
            "the operator to re-check its webhook configurations",
            lambda: len(configuration_calls(bare, "get", since)) >= 6,
        )
        assert sorted(configuration_calls(bare, "patch", since)) == [
            "mutatingwebhookconfigurations",
            "validatingwebhookconfigurations",
        ]
    finally:
        process.stop()
        bare.remove_webhooks()
