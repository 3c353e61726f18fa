"""Licenses: validity, which one is active per product, rotation, and where copies go."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..api.v1alpha1.common import Condition
from ..api.v1alpha1.license import MAX_COPY_NAMESPACES, LicenseStatus, PropagatedTo
from ..licensing import LicenseError, VerifiedLicense, verify
from . import conditions
from .namespaces import summary

MAX_REFS = 16


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
    public_key: Ed25519PublicKey,
    now: datetime,
    missing: str = "",
) -> Evaluated:
    def invalid(reason: str, message: str) -> Evaluated:
        return Evaluated(name, product, source, created, None, reason, message)

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
    if payload.product != product:
        return invalid("WrongProduct", f"the license is for {payload.product}, not {product}")
    if now >= payload.expires_at:
        return invalid("Expired", f"the license expired at {payload.expires_at.isoformat()}")
    if now < payload.issued_at - timedelta(minutes=5):
        return invalid("NotYetValid", f"the license is issued for {payload.issued_at.isoformat()}")
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


@dataclass(frozen=True)
class Delivery:
    """What happened to the copies of the active license of one product."""

    refs: Sequence[str] = ()
    conflicts: Sequence[str] = ()  # namespaces where a Secret of that name isn't orgkeeper's
    failed: Sequence[str] = ()  # targets a write to failed, each with a short reason
    frozen: bool = False
    namespaces: Sequence[str] = ()  # where a copy of this license now is


def license_status(
    item: Evaluated,
    active: Evaluated | None,
    delivery: Delivery,
    previous: LicenseStatus,
    *,
    generation: int,
    now: datetime,
) -> LicenseStatus:
    found: list[Condition] = list(previous.conditions)

    def put(type_: str, status: bool, reason: str, message: str) -> None:
        nonlocal found
        found = conditions.put(
            found, type_, status, reason, message, generation=generation, now=now
        )

    put("Valid", item.valid, item.reason, item.message)
    is_active = active is not None and active.name == item.name
    if not item.valid:
        put("Propagated", False, "NotValid", "an invalid license is never delivered")
        put("Ready", False, item.reason, item.message)
    elif not is_active:
        newer = active.name if active is not None else "another license"
        put("Propagated", False, "Superseded", f"not active: License {newer} is newer")
        put(
            "Ready",
            True,
            "Superseded",
            f"valid, but License {newer} is the active one for {item.product}",
        )
    elif delivery.conflicts:
        where = summary(sorted(delivery.conflicts))
        message = (
            f"a Secret of the same name that orgkeeper does not own exists in {where}; "
            "rename or delete it so the license can be delivered"
        )
        put("Propagated", False, "SecretConflict", message)
        put("Ready", False, "SecretConflict", message)
    elif delivery.failed:
        message = (
            f"{len(delivery.failed)} delivery step(s) failed: {summary(delivery.failed)}; "
            "retried at every check"
        )
        put("Propagated", False, "DeliveryFailed", message)
        put("Ready", False, "DeliveryFailed", message)
    elif delivery.frozen:
        put(
            "Propagated",
            False,
            "Frozen",
            "the organization is deactivated; its data planes are frozen",
        )
        put(
            "Ready", True, "Frozen", "active; delivery resumes when the organization is reactivated"
        )
    else:
        put("Propagated", True, "Propagated", f"delivered to {len(delivery.refs)} data plane(s)")
        put(
            "Ready",
            True,
            "Active",
            "the active license for its product, delivered to every data plane",
        )
    verified = item.verified
    return LicenseStatus(
        conditions=found,
        observed_generation=generation,
        issued_at=verified.payload.issued_at if verified else None,
        expires_at=verified.payload.expires_at if verified else None,
        fingerprint=verified.fingerprint if verified else None,
        propagated_to=PropagatedTo(
            count=len(delivery.refs) if is_active else 0,
            refs=sorted(delivery.refs)[:MAX_REFS] if is_active else [],
            namespaces=sorted(delivery.namespaces)[:MAX_COPY_NAMESPACES],
        ),
        active=is_active,
    )
