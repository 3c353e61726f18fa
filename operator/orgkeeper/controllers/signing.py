"""The license signing key and the replicas' webhook CA: Secrets in the operator's namespace,
created on first start."""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import licensing, names, pki
from ..kube import KubeApi, exists_ok

KEY_FIELD = "signing-key.pem"
PUBLIC_FIELD = "public-key.pem"


def load_or_create_signing_key(kube: KubeApi, namespace: str) -> Ed25519PrivateKey:
    """Reads the key (by name); creates it if absent. Publishes the public key in a ConfigMap."""
    kube.ensure_namespace.blocking(namespace)
    key = _read(kube, namespace)
    if key is None:
        created = licensing.new_signing_key()
        labels = {names.LABEL_MANAGED_BY: names.MANAGED_BY}
        written = exists_ok(
            kube.write_secret.blocking,
            namespace,
            names.SIGNING_KEY_SECRET,
            {KEY_FIELD: licensing.private_pem(created)},
            labels,
            exists=False,
        )
        # None: another replica won the race, and its key is the one to use.
        key = created if written is not None else _read(kube, namespace)
        if key is None:
            raise RuntimeError(
                f"the signing key Secret in {namespace} vanished while it was created"
            )
    public = licensing.public_pem(key.public_key()).decode()
    kube.apply_config_map.blocking(
        namespace, names.VERIFICATION_KEY_CONFIG_MAP, {PUBLIC_FIELD: public}
    )
    return key


def _read(kube: KubeApi, namespace: str) -> Ed25519PrivateKey | None:
    secret = kube.read_secret.blocking(namespace, names.SIGNING_KEY_SECRET)
    if secret is None:
        return None
    pem = (secret.data or {}).get(KEY_FIELD)
    if pem is None:
        raise RuntimeError(
            f"Secret {namespace}/{names.SIGNING_KEY_SECRET} has no {KEY_FIELD}; delete it to let "
            "orgkeeper generate a new key (issued licenses are then re-signed)"
        )
    return licensing.load_private(base64.b64decode(pem))


def load_or_create_webhook_authority(kube: KubeApi, namespace: str) -> pki.Authority:
    """The CA all replicas issue their webhook certificates from, kept in a Secret.

    Replicas behind one Service must be trusted by the one caBundle of the webhook
    configuration: one CA for all. The first replica to start creates it.
    """
    found = _read_authority(kube, namespace)
    if found is not None:
        return found
    cert, key = pki.webhook_authority()
    data = {
        "ca.crt": cert.public_bytes(serialization.Encoding.PEM),
        "ca.key": pki.pem_key(key),
    }
    labels = {names.LABEL_MANAGED_BY: names.MANAGED_BY}
    written = exists_ok(
        kube.write_secret.blocking, namespace, names.WEBHOOK_CA_SECRET, data, labels, exists=False
    )
    if written is not None:
        return cert, key
    found = _read_authority(kube, namespace)  # another replica won the race
    if found is None:
        raise RuntimeError(f"the webhook CA Secret in {namespace} vanished while it was created")
    return found


def _read_authority(kube: KubeApi, namespace: str) -> pki.Authority | None:
    secret = kube.read_secret.blocking(namespace, names.WEBHOOK_CA_SECRET)
    if secret is None:
        return None
    data = secret.data or {}
    if "ca.crt" not in data or "ca.key" not in data:
        raise RuntimeError(
            f"Secret {namespace}/{names.WEBHOOK_CA_SECRET} lacks ca.crt or ca.key; delete it to "
            "let orgkeeper generate a new webhook CA"
        )
    cert = x509.load_pem_x509_certificate(base64.b64decode(data["ca.crt"]))
    key = serialization.load_pem_private_key(base64.b64decode(data["ca.key"]), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise RuntimeError(f"Secret {namespace}/{names.WEBHOOK_CA_SECRET}: ca.key is not EC")
    return cert, key
