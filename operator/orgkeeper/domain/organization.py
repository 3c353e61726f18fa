"""Organizations: what one reconcile does (its plan), decided from what it observed, and the
status it reports once that is applied. Ownership, billing, lifecycle and counts live here."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

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
from . import conditions, lifecycle
from .events import Event
from .lifecycle import Lifecycle
from .membership import (
    OWNER_TEAM,
    FoundBinding,
    FoundMembership,
    Member,
    MembershipsPlan,
    OrgContext,
    membership_labels,
    plan_memberships,
    same_email,
    user_names,
)
from .namespaces import Claim, conflict, owned_namespaces, summary
from .workloads import Workload

PLUS_TRIAL = timedelta(days=30)
PLUS_TRIAL_CREDITS = 500

WorkloadAction = Literal["Decommission", "Park", "Freeze", "Unfreeze"]


@dataclass(frozen=True)
class OrgObservation:
    """Everything the reconcile of one Organization looked at, and the settings it acts by."""

    name: str
    uid: str
    generation: int
    created: datetime
    spec: OrganizationSpec
    status: OrganizationStatus
    now: datetime
    billing_cycle: timedelta
    inactivity_window: timedelta
    sso_prefix: str
    # org-<name> is the org's: it made it, owns it, or it was made for it (namespaces.made_for).
    namespace_ready: bool = False
    # org-<name> as found (None: this reconcile created it), for the NamespaceConflict message.
    org_namespace: Claim | None = None
    claims: Sequence[Claim] = ()  # the Namespaces labelled with the org
    memberships: Sequence[FoundMembership] = ()  # in org-<name>
    bindings: Sequence[FoundBinding] = ()  # the member RoleBindings in org-<name>
    provisioned: Collection[str] = field(default_factory=frozenset)  # has a Provisioned License
    workloads: Sequence[Workload] = ()  # labelled with the org, wherever they are


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


def owner_rules(organization: str, *, deactivated: bool = False) -> list[dict[str, list[str]]]:
    """The rules of the Owner's per-org ClusterRole: read, edit and delete this one
    Organization, and read its status. Admission decides which fields an edit may change;
    `update` is also what it asks of whoever labels a namespace for the org. A deactivated
    org's Owner loses the rest but keeps reading it (`kubectl get org`, `orgkeeper status`),
    so they see that it is deactivated and why."""
    return [
        {
            "apiGroups": [GROUP],
            "resources": ["organizations"],
            "resourceNames": [organization],
            "verbs": ["get"] if deactivated else ["get", "update", "patch", "delete"],
        },
        {
            "apiGroups": [GROUP],
            "resources": ["organizations/status"],
            "resourceNames": [organization],
            "verbs": ["get"],
        },
    ]


@dataclass(frozen=True)
class OwnerMembership:
    """The Membership orgkeeper creates for an Owner who has none."""

    member: Member
    labels: Mapping[str, str]

    @property
    def created(self) -> Event:
        """Told once it exists."""
        return Event(
            "Normal",
            "OwnerMembershipCreated",
            "created the Owner's Membership, with the team organization-admin",
        )


@dataclass(frozen=True)
class NamespacePlan:
    """What is written in org-<name>, which is the org's."""

    # The users granted the Owner's rights on the org (membership.user_names).
    owner_users: tuple[str, ...]
    owner_rules: tuple[Mapping[str, list[str]], ...]  # those rights: read-only while deactivated
    memberships: MembershipsPlan
    licenses: tuple[str, ...]  # the products that get a Provisioned License


@dataclass(frozen=True)
class OrganizationPlan:
    """One reconcile of an Organization, decided. The controller performs it in this order:
    the Owner's Membership; the status first when a deactivation begins; org-<name> (Owner
    RBAC, Memberships, Licenses); the workloads; then it asks for the status (organization_status)
    and the Events that close the reconcile (closing_events)."""

    observed: OrgObservation
    owner_membership: OwnerMembership | None  # the Owner asked for has none
    owner: OwnerDecision
    lifecycle: Lifecycle
    org: OrgContext  # what the org's Memberships see of it
    events: tuple[Event, ...]  # the owner decision's, and a deactivation beginning
    namespace: NamespacePlan | None  # None: org-<name> isn't the org's, nothing is written there
    owned_namespaces: frozenset[str]  # where its workloads are its own
    workloads: Mapping[str, WorkloadAction]  # by uid, for workloads in owned namespaces
    members: tuple[Member, ...]  # as found (the Owner's new Membership not among them)
    rolled_billing: Billing | None  # the billing found, rolled to the current cycle (or none)
    activity: Activity  # the current cycle's request counters, and the last login
    control_planes: int
    data_planes: int

    @property
    def records_deactivation_first(self) -> bool:
        """A deactivation begins: its status is written before any effect, so a crash midway
        resumes it."""
        return self.lifecycle.started and self.lifecycle.deactivation is not None


@dataclass(frozen=True)
class Applied:
    """What a reconcile's writes achieved, as the status reports it."""

    owner_membership_created: bool = False
    failed: Sequence[str] = ()  # targets (namespace, Secret, workload...) with a short reason
    # Products licensed now; None: the Licenses aren't reconciled yet (the status written
    # before a deactivation's effects), so LicensesProvisioned keeps what it said.
    licenses: Collection[str] | None = None
    complete: bool = False  # every effect was attempted (False: the status is written first)


def plan(observed: OrgObservation) -> OrganizationPlan:
    """What to do for this Organization, as observed."""
    spec, status, now = observed.spec, observed.status, observed.now
    # While org-<name> isn't the org's, no Membership there is the Owner's and none was made
    # for them: once it is the org's (the conflict resolved), the Owner gets theirs as at
    # creation, rather than being taken for an Owner who left.
    previous_ready = conditions.find(status.conditions, "Ready")
    conflicted = not observed.namespace_ready or (
        previous_ready is not None and previous_ready.reason == "NamespaceConflict"
    )
    known_owner = None if conflicted else status.owner
    members = tuple(found.member() for found in observed.memberships)
    owner_membership = None
    if observed.namespace_ready and owner_membership_needed(spec.owner, known_owner, members):
        owner_membership = OwnerMembership(
            Member(names.owner_membership(spec.owner), spec.owner, (OWNER_TEAM,)),
            membership_labels(observed.name, spec.owner),
        )
    # The Owner's new Membership doesn't change the decision: it is made only for a first
    # Owner or one support named after the previous one left, each valid without it.
    owner = decide_owner(spec.owner, known_owner, members)
    rolled_billing, activity = current_cycle(status, observed.billing_cycle, now)
    logins = [found.last_login for found in observed.memberships]
    lifecycle_plan = lifecycle.assess(
        spec,
        status,
        created=observed.created,
        logins=logins,
        activity=activity,
        now=now,
        window=observed.inactivity_window,
    )
    org = context(observed.name, spec, owner.effective, lifecycle_plan)
    owned = owned_namespaces(
        observed.name,
        observed.uid,
        spec.owner,
        observed.claims,
        org_namespace_owned=observed.namespace_ready,
    )
    served = [w for w in observed.workloads if w.namespace in owned]
    namespace_plan = None
    if observed.namespace_ready:
        namespace_plan = NamespacePlan(
            owner_users=user_names(
                owner.effective, sso_only=org.sso_only, sso_prefix=observed.sso_prefix
            ),
            owner_rules=tuple(owner_rules(observed.name, deactivated=org.deactivated)),
            memberships=plan_memberships(
                org,
                observed.memberships,
                observed.bindings,
                sso_prefix=observed.sso_prefix,
                now=now,
            ),
            licenses=tuple(p for p in PRODUCTS if p not in observed.provisioned),
        )
    return OrganizationPlan(
        observed=observed,
        owner_membership=owner_membership,
        owner=owner,
        lifecycle=lifecycle_plan,
        org=org,
        events=(*owner_events(owner, status), *starting_events(lifecycle_plan)),
        namespace=namespace_plan,
        owned_namespaces=owned,
        workloads={
            w.uid: action
            for w in served
            if (
                action := workload_action(
                    w, deactivated=org.deactivated, settled=observed.status.phase == "Deactivated"
                )
            )
            is not None
        },
        members=members,
        rolled_billing=rolled_billing,
        activity=activity.model_copy(
            update={"last_login_time": max((t for t in logins if t is not None), default=None)}
        ),
        control_planes=sum(1 for w in served if w.component == names.COMPONENT_CONTROL_PLANE),
        data_planes=sum(1 for w in served if w.component == names.COMPONENT_DATA_PLANE),
    )


def next_due(plan: OrganizationPlan) -> datetime | None:
    """The next moment a time rule may change what the reconcile decides: the billing cycle
    ends (the request counters roll), the Plus trial ends, an active Free org's inactivity
    window closes since its last activity, a reactivation request dated ahead comes due."""
    observed = plan.observed
    moments: list[datetime | None] = []
    cycle_start = billing_of(plan).cycle_start
    if cycle_start is not None:
        moments.append(cycle_start + observed.billing_cycle)
    trial_state = trial(observed.spec, observed.created)
    if trial_state is not None:
        moments.append(trial_state.ends_at)
    if observed.spec.plan == "Free" and plan.lifecycle.target == "Active":
        last_active = lifecycle.last_activity(
            observed.created,
            (found.last_login for found in observed.memberships),
            reactivated_at=lifecycle.reactivated_at(observed.status),
        )
        moments.append(last_active + observed.inactivity_window)
    moments.append(lifecycle.reactivation_due(observed.spec, plan.lifecycle.deactivation))
    return min((m for m in moments if m is not None and m > observed.now), default=None)


# What the Owner's Events say. Organization Events are kept in `default`, where whoever reads
# Events there reads them for every org: they name roles and fields, never an e-mail (the
# OwnerValid condition, which only the Owner and support read, names the people).
OWNER_EVENT_MESSAGES = {
    "OwnershipTransferred": (
        "ownership moved to the new Owner (status.owner names them); the previous Owner stays "
        "an organization-admin"
    ),
    "TransferRejected": (
        "the new Owner asked for in spec.owner is not a member of organization-admin, so the "
        "current Owner stays; add organization-admin to their Membership first, or set "
        "spec.owner back (the OwnerValid condition says who)"
    ),
    "OwnerLeft": (
        "the Owner has no Membership any more; support (orgkeeper-support) may transfer "
        "ownership by setting spec.owner to any e-mail"
    ),
}


def owner_events(owner: OwnerDecision, status: OrganizationStatus) -> list[Event]:
    """A transfer is told; a problem with the Owner once, when its reason changes."""
    if owner.transferred_from:
        return [Event("Normal", "OwnershipTransferred", OWNER_EVENT_MESSAGES[owner.reason])]
    previous = conditions.find(status.conditions, "OwnerValid")
    if not owner.valid and (previous is None or previous.reason != owner.reason):
        return [Event("Warning", owner.reason, OWNER_EVENT_MESSAGES[owner.reason])]
    return []


def starting_events(lifecycle_plan: Lifecycle) -> list[Event]:
    if lifecycle_plan.started and lifecycle_plan.deactivation is not None:
        reason = lifecycle_plan.deactivation.reason
        return [Event("Normal", "Deactivating", f"deactivating the organization ({reason})")]
    return []


def workload_action(
    workload: Workload, *, deactivated: bool, settled: bool = False
) -> WorkloadAction | None:
    """Deactivated: control planes decommissioned, data planes frozen (again, if the
    annotation was removed). Active: data planes unfrozen.

    A control plane is deleted while the deactivation is applied (`settled`: not yet, the
    status doesn't read Deactivated). One that appears once it is settled was made again by
    someone with rights no member keeps (a GitOps tool's self-heal, an admin): deleting it
    again would only loop with them, so it is parked once (scaled to 0 and annotated
    orgkeeper.dev/decommissioned) and then left alone."""
    if deactivated and workload.component == names.COMPONENT_CONTROL_PLANE:
        if not settled:
            return "Decommission"
        return None if workload.decommissioned else "Park"
    if workload.component == names.COMPONENT_DATA_PLANE and workload.frozen != deactivated:
        return "Freeze" if deactivated else "Unfreeze"
    return None


def parked_message(organization: str) -> str:
    """Told on a control plane parked in a deactivated org (a Warning Event on it)."""
    return (
        f"organization {organization} is deactivated: this control plane appeared after its "
        f"decommissioning, so orgkeeper scaled it to 0 and annotated it "
        f"{names.ANNOTATION_DECOMMISSIONED} instead of deleting it again (a GitOps tool would "
        "recreate it); it is left alone from now on: remove it from Git, or delete it"
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


def current_cycle(
    status: OrganizationStatus, cycle: timedelta, now: datetime
) -> tuple[Billing | None, Activity]:
    """The billing and activity found, moved on to the cycle `now` is in (no billing yet: the
    first cycle starts now, nothing to move)."""
    activity = status.activity or Activity()
    if status.billing is None:
        return None, activity
    return roll_billing_cycle(status.billing, activity, cycle, now)


def billing_of(plan: OrganizationPlan) -> Billing:
    """Stopped while deactivated (the cycle kept); else a subscription per product of the plan,
    in its trial while that lasts."""
    spec, now, rolled = plan.observed.spec, plan.observed.now, plan.rolled_billing
    if plan.lifecycle.target == "Deactivated":
        start = rolled.cycle_start if rolled else None
        return Billing(state="Stopped", cycle_start=start, subscriptions=[])
    billed = billing(spec, rolled, now)
    trial_state = trial(spec, plan.observed.created)
    if trial_state is not None and now < trial_state.ends_at:
        return billed.model_copy(update={"state": "Trial"})
    return billed


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
        billing=billing_of(plan),
        trial=trial(spec, observed.created),
        activity=plan.activity,
        deactivation=lifecycle_plan.deactivation,
        owner_email_locked=deactivated and not spec.unlock_owner_email,
        members=len(members),
        admins=admins,
        control_planes=plan.control_planes,
        data_planes=plan.data_planes,
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
