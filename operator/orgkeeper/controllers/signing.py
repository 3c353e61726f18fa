"""The license signing key: a Secret in the operator's namespace, created on first start."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import licensing, names
from ..kube import KubeApi, is_status

KEY_FIELD = "signing-key.pem"
PUBLIC_FIELD = "public-key.pem"


def load_or_create_signing_key(kube: KubeApi, namespace: str) -> Ed25519PrivateKey:
    """Reads the key (by name); creates it if absent. Publishes the public key in a ConfigMap."""
    kube.ensure_namespace(namespace)
    key = _read(kube, namespace)
    if key is None:
        created = licensing.new_signing_key()
        labels = {names.LABEL_MANAGED_BY: names.MANAGED_BY}
        try:
            kube.write_secret(
                namespace,
                names.SIGNING_KEY_SECRET,
                {KEY_FIELD: licensing.private_pem(created)},
                labels,
                exists=False,
            )
            key = created
        except Exception as error:
            if not is_status(error, 409):
                raise
            key = _read(kube, namespace)  # another replica won the race
        if key is None:
            raise RuntimeError(
                f"the signing key Secret in {namespace} vanished while it was created"
            )
    public = licensing.public_pem(key.public_key()).decode()
    kube.apply_config_map(namespace, names.VERIFICATION_KEY_CONFIG_MAP, {PUBLIC_FIELD: public})
    return key


def _read(kube: KubeApi, namespace: str) -> Ed25519PrivateKey | None:
    secret = kube.read_secret(namespace, names.SIGNING_KEY_SECRET)
    if secret is None:
        return None
    pem = (secret.data or {}).get(KEY_FIELD)
    if pem is None:
        raise RuntimeError(
            f"Secret {namespace}/{names.SIGNING_KEY_SECRET} has no {KEY_FIELD}; delete it to let "
            "orgkeeper generate a new key (issued licenses are then re-signed)"
        )
    return licensing.load_private(base64.b64decode(pem))
