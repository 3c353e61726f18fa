"""The admission webhook's TLS settings: certificate names, a mounted certificate, clear errors."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orgkeeper import cli
from orgkeeper.pki import certificate, mounted_webhook_tls, pem_key, subject_name
from orgkeeper.settings import Settings
from orgkeeper.webhook_server import ServingWebhookServer, serving_names, webhook_server


def write_mount(directory: Path, *, with_ca: bool = True) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(subject_name("orgkeeper-webhook"), key, None, ca=True)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "tls.crt").write_bytes(pem)
    (directory / "tls.key").write_bytes(pem_key(key))
    if with_ca:
        (directory / "ca.crt").write_bytes(pem)


def test_in_a_cluster_the_certificate_names_the_webhook_service() -> None:
    settings = Settings(webhook_mode="serve", namespace="ops", listen_address="0.0.0.0")
    assert serving_names(settings) == (
        "orgkeeper-webhook.ops.svc",
        "orgkeeper-webhook.ops.svc.cluster.local",
    )


def test_a_webhook_host_and_a_specific_address_are_named_too() -> None:
    settings = Settings(
        webhook_mode="serve", webhook_host="hooks.example", listen_address="10.0.0.7"
    )
    assert serving_names(settings) == (
        "hooks.example",
        "orgkeeper-webhook.orgkeeper-system.svc",
        "orgkeeper-webhook.orgkeeper-system.svc.cluster.local",
        "10.0.0.7",
    )


def test_serve_mode_generates_a_certificate_for_those_names() -> None:
    server = webhook_server(Settings(webhook_mode="serve", namespace="ops"))
    assert isinstance(server, ServingWebhookServer)
    assert server.cadata is not None and server.certfile is not None
    served = x509.load_pem_x509_certificate(Path(server.certfile).read_bytes())
    sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "orgkeeper-webhook.ops.svc" in sans.get_values_for_type(x509.DNSName)


def test_managed_mode_keeps_kopfs_own_server() -> None:
    server = webhook_server(Settings(webhook_mode="managed", listen_address="127.0.0.1"))
    assert type(server) is kopf.WebhookServer
    assert server.host == "127.0.0.1"


def test_a_mounted_certificate_is_served_with_its_ca(tmp_path: Path) -> None:
    write_mount(tmp_path)
    server = webhook_server(Settings(webhook_mode="serve", webhook_cert_dir=str(tmp_path)))
    assert (server.certfile, server.pkeyfile, server.cafile) == (
        str(tmp_path / "tls.crt"),
        str(tmp_path / "tls.key"),
        str(tmp_path / "ca.crt"),
    )


def test_without_ca_crt_the_ca_bundle_is_left_to_the_issuer(tmp_path: Path) -> None:
    write_mount(tmp_path, with_ca=False)
    assert mounted_webhook_tls(tmp_path).authority is None
    server = webhook_server(Settings(webhook_mode="serve", webhook_cert_dir=str(tmp_path)))
    assert server.cafile is None and server.cadata is None


def test_a_mount_without_the_key_says_what_is_missing(tmp_path: Path) -> None:
    write_mount(tmp_path)
    (tmp_path / "tls.key").unlink()
    with pytest.raises(ValueError, match=r"has no tls\.key; mount a kubernetes\.io/tls Secret"):
        mounted_webhook_tls(tmp_path)


def test_a_certificate_that_is_not_pem_is_named(tmp_path: Path) -> None:
    write_mount(tmp_path)
    (tmp_path / "ca.crt").write_text("not a certificate")
    with pytest.raises(ValueError, match=r"ca\.crt is not a PEM certificate"):
        mounted_webhook_tls(tmp_path)


def test_orgkeeper_run_refuses_an_empty_certificate_directory_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", "--webhook-mode=serve", f"--webhook-cert-dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: --webhook-cert-dir (ORGKEEPER_WEBHOOK_CERT_DIR): "
        f"the webhook certificate directory {tmp_path} has no tls.crt"
    )
    assert err.count("\n") == 1
