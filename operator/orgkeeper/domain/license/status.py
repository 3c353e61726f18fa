"""Status: what a License reports once its copies are delivered (or not)."""

from __future__ import annotations

from datetime import datetime

from ...api.v1alpha1.license import MAX_COPY_NAMESPACES, LicenseStatus, PropagatedTo
from ..conditions import ConditionSet
from ..namespaces import summary
from .copies import CONFLICT, Delivery
from .evaluation import Evaluated

MAX_REFS = 16


def license_status(
    item: Evaluated,
    active: Evaluated | None,
    delivery: Delivery,
    previous: LicenseStatus,
    *,
    generation: int,
    now: datetime,
) -> LicenseStatus:
    """`delivery`: of the License's product; its copies are on the active License's record."""
    found = ConditionSet(previous.conditions, generation=generation, now=now)
    put = found.put
    put("Valid", item.valid, item.reason, item.message)
    is_active = active is not None and active.name == item.name
    propagated, ready = _delivery_conditions(item, active, delivery, is_active=is_active)
    put("Propagated", *propagated)
    put("Ready", *ready)
    verified = item.verified
    return LicenseStatus(
        conditions=found.conditions,
        observed_generation=generation,
        issued_at=verified.payload.issued_at if verified else None,
        expires_at=verified.payload.expires_at if verified else None,
        fingerprint=verified.fingerprint if verified else None,
        propagated_to=PropagatedTo(
            count=len(delivery.refs) if is_active else 0,
            refs=sorted(delivery.refs)[:MAX_REFS] if is_active else [],
            namespaces=sorted(delivery.namespaces)[:MAX_COPY_NAMESPACES]
            if is_active or active is None
            else [],
        ),
        active=is_active,
    )


Told = tuple[bool, str, str]  # a condition's status, reason and message


def _delivery_conditions(
    item: Evaluated, active: Evaluated | None, delivery: Delivery, *, is_active: bool
) -> tuple[Told, Told]:
    """Propagated and Ready, by the first case that holds."""
    if not item.valid:
        never: Told = (False, "NotValid", "an invalid license is never delivered")
        return never, (False, item.reason, item.message)
    if not is_active:
        newer = active.name if active is not None else "another license"
        superseded = f"valid, but License {newer} is the active one for {item.product}"
        return (False, "Superseded", f"not active: License {newer} is newer"), (
            True,
            "Superseded",
            superseded,
        )
    if delivery.conflicts:
        where = summary(sorted(delivery.conflicts))
        conflict: Told = (False, "SecretConflict", f"in {where}: {CONFLICT}")
        return conflict, conflict
    if delivery.failed:
        steps = f"{len(delivery.failed)} delivery step(s) failed: {summary(delivery.failed)}"
        failed: Told = (False, "DeliveryFailed", f"{steps}; retried at every check")
        return failed, failed
    if delivery.frozen:
        frozen = "the organization is deactivated; its data planes are frozen"
        resumes = "active; delivery resumes when the organization is reactivated"
        return (False, "Frozen", frozen), (True, "Frozen", resumes)
    delivered = f"delivered to {len(delivery.refs)} data plane(s)"
    active_told = "the active license for its product, delivered to every data plane"
    return (True, "Propagated", delivered), (True, "Active", active_told)
