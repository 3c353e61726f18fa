"""The plan of one reconcile of an Organization, decided from what it observed."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from ... import names
from ...api.v1alpha1 import PRODUCTS
from ...api.v1alpha1.organization import (
    Activity,
    Billing,
    OrganizationSpec,
    OrganizationStatus,
)
from .. import conditions, lifecycle
from ..events import Event
from ..lifecycle import Lifecycle
from ..membership import (
    OWNER_TEAM,
    FoundBinding,
    FoundMembership,
    Member,
    MembershipsPlan,
    OrgContext,
    membership_labels,
    plan_memberships,
    user_names,
)
from ..namespaces import Claim, owned_namespaces
from ..workloads import Workload
from .billing import billing_of, current_cycle, trial
from .ownership import (
    OwnerDecision,
    OwnerMembership,
    decide_owner,
    owner_events,
    owner_membership_needed,
    owner_rules,
)

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
    def billing(self) -> Billing:
        observed = self.observed
        return billing_of(
            observed.spec,
            self.rolled_billing,
            created=observed.created,
            now=observed.now,
            deactivated=self.lifecycle.target == "Deactivated",
        )

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


def plan_organization(observed: OrgObservation) -> OrganizationPlan:
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
    cycle_start = plan.billing.cycle_start
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


def context(name: str, spec: OrganizationSpec, owner: str, lifecycle: Lifecycle) -> OrgContext:
    """What memberships need of their org."""
    return OrgContext(
        name=name,
        owner=owner,
        sso_only=spec.sso_only,
        deactivated=lifecycle.target == "Deactivated",
        region=spec.region,
    )
