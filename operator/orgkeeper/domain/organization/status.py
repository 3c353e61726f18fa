"""What an Organization reports once a plan is applied: its status, and the Events that close
the reconcile."""

from __future__ import annotations

from collections.abc import Sequence

from ... import names
from ...api.v1alpha1 import PRODUCTS
from ...api.v1alpha1.organization import (
    OrganizationSpec,
    OrganizationStatus,
    Phase,
)
from .. import conditions
from ..events import Event
from ..lifecycle import Lifecycle
from ..membership import (
    OWNER_TEAM,
    same_email,
)
from ..namespaces import conflict, summary
from .billing import trial
from .ownership import OwnerDecision
from .plan import Applied, OrganizationPlan, OrgObservation


def organization_status(plan: OrganizationPlan, applied: Applied) -> OrganizationStatus:
    """The status once the plan is applied as far as `applied` says; a deactivation is
    complete when every effect was applied."""
    observed, owner, lifecycle_plan = plan.observed, plan.owner, plan.lifecycle
    spec, previous, generation, now = (
        observed.spec,
        observed.status,
        observed.generation,
        observed.now,
    )
    deactivated = lifecycle_plan.target == "Deactivated"
    effects_applied = applied.complete and not applied.failed
    missing = sorted(set(PRODUCTS) - set(applied.licenses or ()))
    found = conditions.ConditionSet(previous.conditions, generation=generation, now=now)
    put = found.put

    put("OwnerValid", owner.valid, owner.reason, owner.message)
    if applied.licenses is not None:
        put(
            "LicensesProvisioned",
            not missing,
            "Provisioned" if not missing else "LicensesMissing",
            "a License exists for every product"
            if not missing
            else f"no License yet for {', '.join(missing)}",
        )
    phase: Phase
    if deactivated and lifecycle_plan.deactivation is not None:
        reason = lifecycle_plan.deactivation.reason
        phase = "Deactivated" if effects_applied else "Deactivating"
        if effects_applied:
            put("Deactivated", True, reason, deactivation_message(lifecycle_plan, spec))
            put(
                "Ready",
                True,
                "Deactivated",
                "the organization is deactivated and every effect applied",
            )
        else:
            put(
                "Deactivated",
                False,
                "Deactivating",
                f"applying the effects of deactivation ({reason})",
            )
            if applied.failed:
                put("Ready", False, "PartiallyApplied", partially_applied(applied.failed))
            else:
                put("Ready", False, "Deactivating", "deactivation is in progress")
    else:
        phase = "Active" if observed.namespace_ready else "Provisioning"
        put("Deactivated", False, "Active", "the organization is active")
        put("Ready", *readiness(observed, owner, missing, applied.failed))
    members = list(plan.members)
    if applied.owner_membership_created and plan.owner_membership is not None:
        members.append(plan.owner_membership.member)
    admins = sum(
        1 for m in members if OWNER_TEAM in m.teams or same_email(m.email, owner.effective)
    )
    return OrganizationStatus(
        phase=phase,
        conditions=found.conditions,
        observed_generation=generation,
        namespace=names.org_namespace(observed.name),
        owner=owner.effective,
        billing=plan.billing,
        trial=trial(spec, observed.created),
        activity=plan.activity,
        deactivation=lifecycle_plan.deactivation,
        owner_email_locked=deactivated and not spec.unlock_owner_email,
        members=len(members),
        admins=admins,
        control_planes=plan.control_planes,
        data_planes=plan.data_planes,
    )


def closing_events(plan: OrganizationPlan, status: OrganizationStatus) -> list[Event]:
    """What the reconcile tells last, given the status it wrote."""
    events = []
    finished = status.phase == "Deactivated" and plan.observed.status.phase != "Deactivated"
    if finished and plan.lifecycle.deactivation is not None:
        message = deactivation_message(plan.lifecycle, plan.observed.spec)
        events.append(Event("Normal", "Deactivated", message))
    if plan.lifecycle.reactivated:
        events.append(
            Event("Normal", "Reactivated", "billing, roles and license propagation restored")
        )
    return events


def deactivation_message(lifecycle: Lifecycle, spec: OrganizationSpec) -> str:
    how = (
        "set spec.state back to Active to reactivate"
        if lifecycle.deactivation and lifecycle.deactivation.reason == "Requested"
        else "set spec.reactivationRequestedAt to the current time to reactivate"
    )
    lock = (
        "the owner e-mail is unlocked"
        if spec.unlock_owner_email
        else "the owner e-mail is locked until spec.unlockOwnerEmail is set"
    )
    effects = "billing stopped, control planes decommissioned, data planes frozen, roles removed"
    return f"deactivated; {effects}; {lock}; {how}"


def partially_applied(failed: Sequence[str]) -> str:
    return (
        f"{len(failed)} target(s) failed, the rest of the policy is applied: "
        f"{summary(failed)}; retried at every check"
    )


def readiness(
    observed: OrgObservation, owner: OwnerDecision, missing: Sequence[str], failed: Sequence[str]
) -> tuple[bool, str, str]:
    if not observed.namespace_ready:
        message = conflict(observed.org_namespace, observed.name, observed.uid, observed.spec.owner)
        return False, "NamespaceConflict", message
    if not owner.valid:
        return False, owner.reason, owner.message
    if missing:
        return False, "LicensesMissing", f"waiting for licenses: {', '.join(missing)}"
    if failed:
        return False, "PartiallyApplied", partially_applied(failed)
    return True, "Reconciled", "the organization is provisioned and its policy applied"
