"""X.509 helpers for the local control plane and the admission webhook's TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server_names: tuple[str, ...] = (),
    client: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            sans: list[x509.GeneralName] = []
            for name in server_names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    sans.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def subject_name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


Authority = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def webhook_authority() -> Authority:
    """A fresh CA for webhook serving certificates."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    return certificate(subject_name("orgkeeper-webhook-ca"), ca_key, None, ca=True), ca_key


def webhook_tls(
    directory: Path, hosts: tuple[str, ...], authority: Authority | None = None
) -> tuple[Path, Path, bytes]:
    """A serving certificate for the webhook server, from `authority` (default: a fresh CA):
    (cert, key, CA PEM)."""
    ca_cert, ca_key = authority or webhook_authority()
    key = ec.generate_private_key(ec.SECP256R1())
    served = certificate(subject_name(hosts[0]), key, (ca_cert, ca_key), server_names=hosts)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(served.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(pem_key(key))
    key_path.chmod(0o600)
    return cert_path, key_path, ca_cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class MountedTLS:
    """A serving certificate in a directory, as cert-manager (or any TLS Secret volume) lays it."""

    certificate: Path
    key: Path
    authority: Path | None  # ca.crt: what the API server must trust; None when not mounted


def mounted_webhook_tls(directory: Path) -> MountedTLS:
    """tls.crt and tls.key (required) and ca.crt (optional) in `directory`; clear errors if not."""
    cert_path, key_path, ca_path = (directory / n for n in ("tls.crt", "tls.key", "ca.crt"))
    missing = [path.name for path in (cert_path, key_path) if not path.is_file()]
    if missing:
        raise ValueError(
            f"the webhook certificate directory {directory} has no {' or '.join(missing)}; "
            "mount a kubernetes.io/tls Secret there (cert-manager writes tls.crt, tls.key and "
            "ca.crt) or leave --webhook-cert-dir unset to generate a certificate at start"
        )
    for path in (cert_path, *([ca_path] if ca_path.is_file() else [])):
        try:
            x509.load_pem_x509_certificates(path.read_bytes())
        except ValueError:
            raise ValueError(f"{path} is not a PEM certificate") from None
    return MountedTLS(cert_path, key_path, ca_path if ca_path.is_file() else None)
