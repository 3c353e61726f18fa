"""Evaluation: whether a document is valid for this org and product now, which License is
active per product, and when a Provisioned one needs a fresh document."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ...licensing import LicenseError, LicensePayload, VerifiedLicense, verify
from .observation import LicenseObservation, LicenseSeen, W

# A license issued a little ahead of the operator's clock is valid already.
ISSUE_SKEW = timedelta(minutes=5)


PROVISIONED = "Provisioned"


@dataclass(frozen=True)
class Evaluated:
    """One License after its Secret was read and its signature checked."""

    name: str
    product: str
    source: str
    created: str
    verified: VerifiedLicense | None
    reason: str
    message: str
    valid_from: datetime | None = None  # NotYetValid: when it becomes valid

    @property
    def valid(self) -> bool:
        return self.verified is not None


def evaluate(
    name: str,
    product: str,
    source: str,
    created: str,
    document: bytes | None,
    *,
    organization: str,
    organization_uid: str,
    public_key: Ed25519PublicKey,
    now: datetime,
    missing: str = "",
) -> Evaluated:
    def invalid(reason: str, message: str, valid_from: datetime | None = None) -> Evaluated:
        return Evaluated(name, product, source, created, None, reason, message, valid_from)

    if document is None:
        return invalid("SecretMissing", missing or "the license Secret was not found")
    try:
        verified = verify(document, public_key)
    except LicenseError as error:
        return invalid(error.reason, str(error))
    payload = verified.payload
    if payload.organization != organization:
        return invalid(
            "WrongOrganization", f"the license is for organization {payload.organization}"
        )
    if payload.organization_uid != organization_uid:
        return invalid("WrongOrganization", wrong_uid(payload, organization_uid))
    if payload.product != product:
        return invalid("WrongProduct", f"the license is for {payload.product}, not {product}")
    if now >= payload.expires_at:
        return invalid("Expired", f"the license expired at {payload.expires_at.isoformat()}")
    valid_from = payload.issued_at - ISSUE_SKEW
    if now < valid_from:
        message = f"the license is issued for {payload.issued_at.isoformat()}"
        return invalid("NotYetValid", message, valid_from)
    expires = payload.expires_at.isoformat().replace("+00:00", "Z")
    return Evaluated(
        name,
        product,
        source,
        created,
        verified,
        "Verified",
        f"signature verified; valid until {expires}",
    )


def evaluate_seen(
    seen: LicenseSeen, observation: LicenseObservation[W], document: bytes | None = None
) -> Evaluated:
    return evaluate(
        seen.name,
        seen.product,
        seen.source,
        seen.created,
        seen.document if document is None else document,
        organization=observation.organization,
        organization_uid=observation.organization_uid,
        public_key=observation.public_key,
        now=observation.now,
        missing=seen.missing,
    )


def wrong_uid(payload: LicensePayload, organization_uid: str) -> str:
    """Why a license for the org's name is not this org's: an org is its UID, and a document
    issued to an earlier Organization of the same name (or before documents carried the UID)
    is not valid for it."""
    issued_to = (
        f"organization {payload.organization} with UID {payload.organization_uid}"
        if payload.organization_uid
        else f"organization {payload.organization} without an organization UID"
    )
    return (
        f"the license is issued to {issued_to}, not to this Organization (UID "
        f"{organization_uid}); a license must name the UID of the Organization it is for "
        "(kubectl get org -o jsonpath='{.metadata.uid}'): have it issued again for this one"
    )


def active_by_product(evaluated: Sequence[Evaluated]) -> dict[str, Evaluated]:
    """The newest valid license of each product (ties: the newer object, then the name)."""
    chosen: dict[str, Evaluated] = {}
    for candidate in evaluated:
        if candidate.verified is None:
            continue
        current = chosen.get(candidate.product)
        if current is None or _newer(candidate, current):
            chosen[candidate.product] = candidate
    return chosen


def _newer(a: Evaluated, b: Evaluated) -> bool:
    assert a.verified is not None and b.verified is not None
    return (a.verified.payload.issued_at, a.created, a.name) > (
        b.verified.payload.issued_at,
        b.created,
        b.name,
    )


def needs_issuing(
    current: Evaluated,
    *,
    now: datetime,
    rotate_after: timedelta,
    plan: str | None = None,
    region: str | None = None,
) -> str | None:
    """Why a Provisioned license needs a fresh payload (None: it doesn't).

    A payload naming another plan or region than the org's spec is reissued at once: data
    planes must not run on a stale plan until the next rotation.
    """
    if current.verified is None:
        return "issued" if current.reason == "SecretMissing" else "reissued"
    payload = current.verified.payload
    if (plan is not None and payload.plan != plan) or (
        region is not None and payload.region != region
    ):
        return "reissued"
    if now - payload.issued_at >= rotate_after:
        return "rotated"
    return None


def next_due(
    evaluated: Iterable[Evaluated], *, now: datetime, rotate_after: timedelta
) -> datetime | None:
    """The next moment a valid license expires, a Provisioned one is due for rotation, or a
    license issued ahead becomes valid."""
    moments = []
    for item in evaluated:
        if item.valid_from is not None:
            moments.append(item.valid_from)
        if item.verified is None:
            continue
        payload = item.verified.payload
        moments.append(payload.expires_at)
        if item.source == PROVISIONED:
            moments.append(payload.issued_at + rotate_after)
    return min((moment for moment in moments if moment > now), default=None)
