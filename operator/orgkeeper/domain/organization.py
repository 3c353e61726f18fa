"""Organizations: ownership, billing, counts, phase and conditions, from what was observed."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .. import names
from ..api.v1alpha1 import GROUP, PRODUCTS
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
from .lifecycle import Lifecycle
from .membership import OWNER_TEAM, Member, OrgContext, same_email
from .namespaces import summary

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
    licenses: Collection[str] = field(default_factory=frozenset)
    control_planes: int = 0
    data_planes: int = 0
    # Targets (namespace, Secret, workload...) a write failed for, each with a short reason.
    failed: Sequence[str] = ()


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
                f"the Owner {previous} has no Membership any more; support (orgkeeper-support) "
                "may transfer ownership by setting spec.owner to any e-mail",
            )
        return OwnerDecision(previous, True, "OwnerIsAdmin", f"{previous} owns the organization")
    candidate = find_member(members, spec_owner)
    # Once the Owner left, only support may change spec.owner (admission), to any e-mail.
    previous_left = find_member(members, previous) is None
    if not previous_left and (candidate is None or OWNER_TEAM not in candidate.teams):
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


def owner_membership_needed(
    spec_owner: str, previous: str | None, members: Sequence[Member]
) -> bool:
    """The Owner asked for has no Membership: a new org's first Owner, or someone support made
    Owner after the previous one left. An Owner who left without a transfer gets none back."""
    if find_member(members, spec_owner) is not None:
        return False
    if previous is None:
        return True
    return not same_email(spec_owner, previous) and find_member(members, previous) is None


def owner_rules(organization: str) -> list[dict[str, list[str]]]:
    """The rules of the Owner's per-org ClusterRole: read, edit and delete this one
    Organization, and read its status. Admission decides which fields an edit may change;
    `update` is also what it asks of whoever labels a namespace for the org."""
    return [
        {
            "apiGroups": [GROUP],
            "resources": ["organizations"],
            "resourceNames": [organization],
            "verbs": ["get", "update", "patch", "delete"],
        },
        {
            "apiGroups": [GROUP],
            "resources": ["organizations/status"],
            "resourceNames": [organization],
            "verbs": ["get"],
        },
    ]


def context(name: str, spec: OrganizationSpec, owner: str, lifecycle: Lifecycle) -> OrgContext:
    """What memberships need of their org."""
    return OrgContext(
        name=name,
        owner=owner,
        sso_only=spec.sso_only,
        deactivated=lifecycle.target == "Deactivated",
        region=spec.region,
    )


def billing(spec: OrganizationSpec, previous: Billing | None, now: datetime) -> Billing:
    """Billing for an active org: one subscription per product of its plan."""
    started = previous.cycle_start if previous and previous.cycle_start else now
    names = [f"{spec.plan.lower()}-{product}" for product in PRODUCTS]
    kept = (
        {s.name: s for s in previous.subscriptions}
        if previous and previous.state != "Stopped"
        else {}
    )
    subscriptions = [kept.get(name) or Subscription(name=name, started_at=now) for name in names]
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
    lifecycle: Lifecycle,
    *,
    namespace: str,
    now: datetime,
    billing_cycle: timedelta,
    last_login: datetime | None,
    effects_applied: bool,
) -> OrganizationStatus:
    """The status after one reconcile; `effects_applied` says a deactivation is complete."""
    spec, previous, generation = observed.spec, observed.status, observed.generation
    deactivated = lifecycle.target == "Deactivated"
    trial_state = trial(spec, observed.created)
    if deactivated:
        start = previous.billing.cycle_start if previous.billing else None
        billed = Billing(state="Stopped", cycle_start=start, subscriptions=[])
    else:
        billed = billing(spec, previous.billing, now)
        if trial_state is not None and now < trial_state.ends_at:
            billed = billed.model_copy(update={"state": "Trial"})
    billed, activity = roll_billing_cycle(
        billed, previous.activity or Activity(), billing_cycle, now
    )
    activity = activity.model_copy(update={"last_login_time": last_login})

    missing = sorted(set(PRODUCTS) - set(observed.licenses))
    found = conditions.ConditionSet(previous.conditions, generation=generation, now=now)
    put = found.put

    put("OwnerValid", owner.valid, owner.reason, owner.message)
    put(
        "LicensesProvisioned",
        not missing,
        "Provisioned" if not missing else "LicensesMissing",
        "a License exists for every product"
        if not missing
        else f"no License yet for {', '.join(missing)}",
    )
    phase: Phase
    if deactivated and lifecycle.deactivation is not None:
        reason = lifecycle.deactivation.reason
        phase = "Deactivated" if effects_applied else "Deactivating"
        if effects_applied:
            put("Deactivated", True, reason, deactivation_message(lifecycle, spec))
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
            if observed.failed:
                put("Ready", False, "PartiallyApplied", partially_applied(observed.failed))
            else:
                put("Ready", False, "Deactivating", "deactivation is in progress")
    else:
        phase = "Active" if observed.namespace_ready else "Provisioning"
        put("Deactivated", False, "Active", "the organization is active")
        put("Ready", *readiness(observed, owner, missing))
    admins = sum(
        1 for m in observed.members if OWNER_TEAM in m.teams or same_email(m.email, owner.effective)
    )
    return OrganizationStatus(
        phase=phase,
        conditions=found.conditions,
        observed_generation=generation,
        namespace=namespace,
        owner=owner.effective,
        billing=billed,
        trial=trial_state,
        activity=activity,
        deactivation=lifecycle.deactivation,
        owner_email_locked=deactivated and not spec.unlock_owner_email,
        members=len(observed.members),
        admins=admins,
        control_planes=observed.control_planes,
        data_planes=observed.data_planes,
    )


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
    observed: OrgObservation, owner: OwnerDecision, missing: Sequence[str]
) -> tuple[bool, str, str]:
    if observed.namespace_conflict:
        return (
            False,
            "NamespaceConflict",
            f"namespace org-{observed.name} belongs to something else; delete it, or have "
            f"support (orgkeeper-support) label it {names.LABEL_ORGANIZATION}={observed.name} "
            "if it is meant for this organization (one nothing owns is then served as its own); a "
            "deleted one is noticed at the next periodic check (--check-interval)",
        )
    if not observed.namespace_ready:
        return False, "Provisioning", "creating the organization's namespace"
    if not owner.valid:
        return False, owner.reason, owner.message
    if missing:
        return False, "LicensesMissing", f"waiting for licenses: {', '.join(missing)}"
    if observed.failed:
        return False, "PartiallyApplied", partially_applied(observed.failed)
    return True, "Reconciled", "the organization is provisioned and its policy applied"
