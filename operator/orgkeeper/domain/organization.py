"""Organizations: ownership, billing, counts, phase and conditions, from what was observed."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..api.v1alpha1 import PRODUCTS
from ..api.v1alpha1.common import Condition, Product
from ..api.v1alpha1.organization import (
    Activity,
    ApiRequests,
    Billing,
    OrganizationSpec,
    OrganizationStatus,
    Phase,
    Subscription,
    Trial,
)
from . import conditions
from .membership import OWNER_TEAM, Member, OrgContext, same_email

PLUS_TRIAL = timedelta(days=30)
PLUS_TRIAL_CREDITS = 500


@dataclass(frozen=True)
class OrgObservation:
    """Everything the reconcile of one Organization looked at."""

    name: str
    generation: int
    created: datetime
    spec: OrganizationSpec
    status: OrganizationStatus
    members: Sequence[Member] = ()
    namespace_ready: bool = False
    namespace_conflict: bool = False
    licenses: Collection[Product] = field(default_factory=frozenset)
    control_planes: int = 0
    data_planes: int = 0


@dataclass(frozen=True)
class OwnerDecision:
    effective: str
    valid: bool
    reason: str
    message: str
    transferred_from: str | None = None


def find_member(members: Sequence[Member], email: str | None) -> Member | None:
    return next((m for m in members if same_email(m.email, email)), None)


def decide_owner(spec_owner: str, previous: str | None, members: Sequence[Member]) -> OwnerDecision:
    """Exactly one Owner: the requested one if the transfer is allowed, else the previous one."""
    if previous is None:
        return OwnerDecision(
            spec_owner, True, "OwnerAssigned", f"{spec_owner} owns the organization"
        )
    if same_email(spec_owner, previous):
        if find_member(members, previous) is None:
            return OwnerDecision(
                previous,
                False,
                "OwnerLeft",
                f"the Owner {previous} has no Membership any more; transfer ownership by setting "
                "spec.owner to a member of organization-admin",
            )
        return OwnerDecision(previous, True, "OwnerIsAdmin", f"{previous} owns the organization")
    candidate = find_member(members, spec_owner)
    if candidate is None or OWNER_TEAM not in candidate.teams:
        return OwnerDecision(
            previous,
            False,
            "TransferRejected",
            f"{spec_owner} is not a member of organization-admin, so {previous} stays Owner; add "
            f"organization-admin to their Membership first, or set spec.owner back to {previous}",
        )
    return OwnerDecision(
        spec_owner,
        True,
        "OwnershipTransferred",
        f"ownership moved from {previous} to {spec_owner}",
        transferred_from=previous,
    )


def context(name: str, spec: OrganizationSpec, status: OrganizationStatus) -> OrgContext:
    """What memberships need of their org; the effective owner is the status one once set."""
    return OrgContext(
        name=name,
        owner=status.owner or spec.owner,
        sso_only=spec.sso_only,
        deactivated=status.phase in ("Deactivating", "Deactivated"),
        region=spec.region,
    )


def billing(spec: OrganizationSpec, previous: Billing | None, now: datetime) -> Billing:
    """Billing for an active org; a trial for Plus while its credits last."""
    started = previous.cycle_start if previous and previous.cycle_start else now
    subscriptions = (
        previous.subscriptions
        if previous and previous.state != "Stopped" and previous.subscriptions
        else [
            Subscription(name=f"{spec.plan.lower()}-{product}", started_at=now)
            for product in PRODUCTS
        ]
    )
    return Billing(state="Active", cycle_start=started, subscriptions=subscriptions)


def trial(spec: OrganizationSpec, created: datetime) -> Trial | None:
    if spec.plan != "Plus":
        return None
    return Trial(ends_at=created + PLUS_TRIAL, credits=PLUS_TRIAL_CREDITS)


def roll_billing_cycle(
    billing_state: Billing, activity: Activity, cycle: timedelta, now: datetime
) -> tuple[Billing, Activity]:
    """Moves the request counters on when one or more billing cycles have ended."""
    start = billing_state.cycle_start or now
    elapsed = int((now - start) / cycle) if now > start else 0
    if elapsed == 0:
        return billing_state, activity
    requests = activity.api_requests
    previous = requests.current_cycle if elapsed == 1 else 0
    rolled = activity.model_copy(
        update={"api_requests": ApiRequests(current_cycle=0, previous_cycle=previous)}
    )
    return billing_state.model_copy(update={"cycle_start": start + elapsed * cycle}), rolled


def organization_status(
    observed: OrgObservation,
    owner: OwnerDecision,
    *,
    namespace: str,
    now: datetime,
    billing_cycle: timedelta,
) -> OrganizationStatus:
    """The status of an active (not deactivated) org after one reconcile."""
    spec, previous, generation = observed.spec, observed.status, observed.generation
    billed = billing(spec, previous.billing, now)
    trial_state = trial(spec, observed.created)
    if trial_state is not None and now < trial_state.ends_at:
        billed = billed.model_copy(update={"state": "Trial"})
    billed, activity = roll_billing_cycle(
        billed, previous.activity or Activity(), billing_cycle, now
    )

    missing = sorted(set(PRODUCTS) - set(observed.licenses))
    found: list[Condition] = list(previous.conditions)
    found = conditions.put(
        found,
        "OwnerValid",
        owner.valid,
        owner.reason,
        owner.message,
        generation=generation,
        now=now,
    )
    found = conditions.put(
        found,
        "LicensesProvisioned",
        not missing,
        "Provisioned" if not missing else "LicensesMissing",
        "a License exists for every product"
        if not missing
        else f"no License yet for {', '.join(missing)}",
        generation=generation,
        now=now,
    )
    found = conditions.put(
        found,
        "Deactivated",
        False,
        "Active",
        "the organization is active",
        generation=generation,
        now=now,
    )
    ready, reason, message = readiness(observed, owner, missing)
    found = conditions.put(found, "Ready", ready, reason, message, generation=generation, now=now)
    phase: Phase = "Active" if observed.namespace_ready else "Provisioning"
    admins = sum(
        1 for m in observed.members if OWNER_TEAM in m.teams or same_email(m.email, owner.effective)
    )
    return OrganizationStatus(
        phase=phase,
        conditions=found,
        observed_generation=generation,
        namespace=namespace,
        owner=owner.effective,
        billing=billed,
        trial=trial_state,
        activity=activity,
        deactivation=None,
        owner_email_locked=False,
        members=len(observed.members),
        admins=admins,
        control_planes=observed.control_planes,
        data_planes=observed.data_planes,
    )


def readiness(
    observed: OrgObservation, owner: OwnerDecision, missing: Sequence[str]
) -> tuple[bool, str, str]:
    if observed.namespace_conflict:
        return (
            False,
            "NamespaceConflict",
            f"namespace org-{observed.name} belongs to something else; delete or rename it",
        )
    if not observed.namespace_ready:
        return False, "Provisioning", "creating the organization's namespace"
    if not owner.valid:
        return False, owner.reason, owner.message
    if missing:
        return False, "LicensesMissing", f"waiting for licenses: {', '.join(missing)}"
    return True, "Reconciled", "the organization is provisioned and its policy applied"
