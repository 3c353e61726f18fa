"""Signed license documents: Ed25519 signatures over a canonical JSON payload.

A document is JSON: {"format": "orgkeeper.dev/license-v1", "keyId": ..., "payload": <base64>,
"signature": <base64>}. The payload names the organization (its name and UID: a later
Organization of the same name is another one), product, plan, region and validity.
Only its fingerprint (sha256 of the payload bytes) ever leaves a Secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "orgkeeper.dev/license-v1"


@dataclass(frozen=True)
class LicensePayload:
    organization: str
    product: str
    plan: str
    region: str
    issued_at: datetime
    expires_at: datetime
    organization_uid: str = ""  # metadata.uid of the Organization; "" in documents made before

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "organization": self.organization,
                "organizationUid": self.organization_uid,
                "product": self.product,
                "plan": self.plan,
                "region": self.region,
                "issuedAt": _stamp(self.issued_at),
                "expiresAt": _stamp(self.expires_at),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> LicensePayload:
        data = json.loads(raw)
        return cls(
            organization=str(data["organization"]),
            product=str(data["product"]),
            plan=str(data["plan"]),
            region=str(data["region"]),
            issued_at=_parse(data["issuedAt"]),
            expires_at=_parse(data["expiresAt"]),
            organization_uid=str(data.get("organizationUid") or ""),
        )


class LicenseError(ValueError):
    """Why a document is not a valid license: `reason` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def fingerprint(payload: bytes) -> str:
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(payload: LicensePayload, key: Ed25519PrivateKey) -> bytes:
    raw = payload.to_bytes()
    document = {
        "format": FORMAT,
        "keyId": key_id(key.public_key()),
        "payload": base64.b64encode(raw).decode(),
        "signature": base64.b64encode(key.sign(raw)).decode(),
    }
    return json.dumps(document, sort_keys=True).encode()


@dataclass(frozen=True)
class VerifiedLicense:
    payload: LicensePayload
    fingerprint: str


def verify(document: bytes, public_key: Ed25519PublicKey) -> VerifiedLicense:
    """The payload of a well-formed document whose signature verifies; LicenseError otherwise."""
    try:
        parsed: dict[str, Any] = json.loads(document)
        raw = base64.b64decode(parsed["payload"], validate=True)
        signature = base64.b64decode(parsed["signature"], validate=True)
        if parsed.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
    except (ValueError, KeyError, TypeError) as error:
        raise LicenseError("Malformed", f"not an orgkeeper license document ({error})") from None
    try:
        public_key.verify(signature, raw)
    except InvalidSignature:
        raise LicenseError("BadSignature", "the signature does not match the payload") from None
    try:
        payload = LicensePayload.from_bytes(raw)
    except (ValueError, KeyError, TypeError) as error:
        raise LicenseError("Malformed", f"the signed payload is incomplete ({error})") from None
    return VerifiedLicense(payload, fingerprint(raw))


def new_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the signing key is not an Ed25519 key")
    return key


def load_public(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the verification key is not an Ed25519 key")
    return key
