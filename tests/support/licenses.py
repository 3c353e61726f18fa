"""Reading and making signed license documents in tests, with the operator's published keys."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from kubernetes import client

from orgkeeper import licensing, names
from support.kube import Kube

OPERATOR_NAMESPACE = "orgkeeper-system"


def public_key(admin: Kube) -> Ed25519PublicKey:
    published = admin.core.read_namespaced_config_map(
        "orgkeeper-license-verification", OPERATOR_NAMESPACE
    )
    return licensing.load_public(published.data["public-key.pem"].encode())


def signing_key(admin: Kube) -> Ed25519PrivateKey:
    """The vendor's key, as support would use it to sign a contract license."""
    secret = admin.core.read_namespaced_secret("orgkeeper-signing-key", OPERATOR_NAMESPACE)
    return licensing.load_private(base64.b64decode(secret.data["signing-key.pem"]))


def secret_document(admin: Kube, namespace: str, name: str, key: str = "license") -> bytes | None:
    found = admin.core.list_namespaced_secret(
        namespace, field_selector=f"metadata.name={name}"
    ).items
    return base64.b64decode(found[0].data[key]) if found else None


def namespace(admin: Kube, name: str, org: str) -> str:
    """A namespace the admin gives to `org` (labelled orgkeeper.dev/organization=<org>)."""
    labels = {names.LABEL_ORGANIZATION: org}
    admin.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    return name


def license_status(admin: Kube, org: str, name: str) -> dict[str, Any]:
    return admin.get("licenses", name, f"org-{org}").get("status") or {}


def delivered(admin: Kube, ns: str, product: str) -> licensing.VerifiedLicense | None:
    document = secret_document(admin, ns, f"orgkeeper-license-{product}")
    return licensing.verify(document, public_key(admin)) if document else None


def contract(
    org: str,
    product: str,
    issued: datetime,
    expires: datetime,
    plan: str = "Enterprise",
    region: str = "eu",
    *,
    uid: str = "",
) -> licensing.LicensePayload:
    """A contract license's payload; `uid`: the Organization's metadata.uid, which a license
    must name to be valid for it (an org is its UID, not its name)."""
    return licensing.LicensePayload(org, product, plan, region, issued, expires, uid)


def tampered(document: bytes) -> bytes:
    """The same document with its payload edited after signing (a later expiry)."""
    parsed: dict[str, Any] = json.loads(document)
    payload = json.loads(base64.b64decode(parsed["payload"]))
    payload["expiresAt"] = "2099-01-01T00:00:00Z"
    parsed["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps(parsed).encode()


def secret_body(name: str, document: bytes) -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": {"license": base64.b64encode(document).decode()}}


def license_body(name: str, product: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": "License",
        "metadata": {"name": name},
        "spec": {
            "product": product,
            "source": "SecretRef",
            "secretRef": {"name": secret, "key": "license"},
        },
    }
