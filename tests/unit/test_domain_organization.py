"""Organizations: ownership, billing cycles, trial and status from what one reconcile saw."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orgkeeper.api.v1alpha1 import GROUP, PRODUCTS
from orgkeeper.api.v1alpha1.common import Condition, Product, Team
from orgkeeper.api.v1alpha1.organization import (
    Activity,
    ApiRequests,
    Billing,
    Deactivation,
    DeactivationReason,
    OrganizationSpec,
    OrganizationStatus,
    Plan,
    Subscription,
)
from orgkeeper.controllers.records import MemberRecord, WorkloadRecord
from orgkeeper.domain.lifecycle import Lifecycle
from orgkeeper.domain.membership import Member, membership_labels
from orgkeeper.domain.organization.billing import billing, roll_billing_cycle, trial
from orgkeeper.domain.organization.ownership import (
    OwnerDecision,
    decide_owner,
    owner_membership_needed,
    owner_rules,
)
from orgkeeper.domain.organization.plan import Applied, OrgObservation, plan_organization
from orgkeeper.domain.organization.status import organization_status

OWNER = "owner@example.com"
ADMIN = "admin@example.com"
DEV = "dev@example.com"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CYCLE = timedelta(days=30)
CYCLE_START = datetime(2026, 1, 15, 8, 30, tzinfo=UTC)
LAST_LOGIN = datetime(2026, 1, 20, 10, 0, tzinfo=UTC)


def member(email: str, *teams: Team) -> Member:
    return Member(name=email.split("@")[0], email=email, teams=teams)


MEMBERS = (
    member(OWNER, "organization-admin"),
    member(ADMIN, "organization-admin"),
    member(DEV, "api-product-developer"),
)


def spec(plan: Plan = "Free", owner: str = OWNER) -> OrganizationSpec:
    return OrganizationSpec(display_name="Acme", plan=plan, region="eu", owner=owner)


def subscriptions(plan: str, at: datetime) -> list[Subscription]:
    return [Subscription(name=f"{plan}-{product}", started_at=at) for product in PRODUCTS]


# decide_owner


def test_first_owner_is_assigned_even_without_a_membership() -> None:
    assert decide_owner(OWNER, None, []) == OwnerDecision(
        OWNER, True, "OwnerAssigned", f"{OWNER} owns the organization"
    )


def test_unchanged_owner_with_a_membership_stays_valid() -> None:
    decision = decide_owner(OWNER, OWNER, MEMBERS)
    assert (decision.effective, decision.valid, decision.reason, decision.transferred_from) == (
        OWNER,
        True,
        "OwnerIsAdmin",
        None,
    )


def test_unchanged_owner_without_a_membership_is_owner_left() -> None:
    decision = decide_owner(OWNER, OWNER, MEMBERS[1:])
    assert (decision.effective, decision.valid, decision.reason) == (OWNER, False, "OwnerLeft")
    assert "transfer ownership" in decision.message


def test_transfer_to_an_organization_admin_moves_ownership() -> None:
    decision = decide_owner(ADMIN, OWNER, MEMBERS)
    assert decision == OwnerDecision(
        ADMIN,
        True,
        "OwnershipTransferred",
        f"ownership moved from {OWNER} to {ADMIN}",
        transferred_from=OWNER,
    )


@pytest.mark.parametrize(
    "requested", [DEV, "stranger@example.com"], ids=["non-admin-member", "unknown"]
)
def test_transfer_outside_organization_admin_is_rejected_and_the_previous_owner_stays(
    requested: str,
) -> None:
    decision = decide_owner(requested, OWNER, MEMBERS)
    assert (decision.effective, decision.valid, decision.reason, decision.transferred_from) == (
        OWNER,
        False,
        "TransferRejected",
        None,
    )
    assert "add organization-admin to their Membership first" in decision.message


@pytest.mark.parametrize(
    "requested", [DEV, "newcomer@example.com"], ids=["non-admin-member", "newcomer"]
)
def test_once_the_owner_left_a_transfer_to_anyone_moves_ownership(requested: str) -> None:
    """Only support may set spec.owner then (admission), to any e-mail."""
    decision = decide_owner(requested, OWNER, MEMBERS[1:])
    assert (decision.effective, decision.valid, decision.reason, decision.transferred_from) == (
        requested,
        True,
        "OwnershipTransferred",
        OWNER,
    )


@pytest.mark.parametrize(
    ("spec_owner", "previous", "members", "needed"),
    [
        (OWNER, None, (), True),
        (OWNER, None, MEMBERS, False),
        (OWNER, OWNER, MEMBERS[1:], False),
        ("newcomer@example.com", OWNER, MEMBERS[1:], True),
        ("newcomer@example.com", OWNER, MEMBERS, False),
        (DEV, OWNER, MEMBERS[1:], False),
    ],
    ids=[
        "first-owner",
        "first-owner-already-member",
        "owner-left-no-transfer",
        "support-transfer-to-newcomer",
        "transfer-while-owner-is-member",
        "support-transfer-to-member",
    ],
)
def test_the_owners_membership_is_created_for_a_first_owner_or_a_support_transfer(
    spec_owner: str, previous: str | None, members: Sequence[Member], needed: bool
) -> None:
    assert owner_membership_needed(spec_owner, previous, members) is needed


def test_unchanged_owner_is_matched_case_insensitively() -> None:
    members = (member("OWNER@Example.com", "organization-admin"),)
    decision = decide_owner(" Owner@EXAMPLE.com ", OWNER, members)
    assert (decision.effective, decision.valid, decision.reason) == (OWNER, True, "OwnerIsAdmin")


def test_transfer_candidate_is_matched_case_insensitively() -> None:
    decision = decide_owner("Admin@Example.COM", OWNER, MEMBERS)
    assert (decision.valid, decision.reason, decision.transferred_from) == (
        True,
        "OwnershipTransferred",
        OWNER,
    )


# roll_billing_cycle


def cycle_state(current: int = 42, previous: int = 7) -> tuple[Billing, Activity]:
    return (
        Billing(state="Active", cycle_start=CYCLE_START, subscriptions=subscriptions("free", NOW)),
        Activity(
            last_login_time=LAST_LOGIN,
            api_requests=ApiRequests(current_cycle=current, previous_cycle=previous),
        ),
    )


@pytest.mark.parametrize(
    "elapsed",
    [timedelta(0), timedelta(days=1), CYCLE - timedelta(microseconds=1), -timedelta(days=3)],
    ids=["at-start", "one-day", "just-before-end", "clock-behind"],
)
def test_no_roll_within_a_cycle(elapsed: timedelta) -> None:
    billed, activity = cycle_state()
    assert roll_billing_cycle(billed, activity, CYCLE, CYCLE_START + elapsed) == (billed, activity)


@pytest.mark.parametrize(
    "elapsed", [CYCLE, CYCLE * 1.5, 2 * CYCLE - timedelta(seconds=1)], ids=["1", "1.5", "~2"]
)
def test_one_ended_cycle_moves_current_requests_to_previous(elapsed: timedelta) -> None:
    billed, activity = cycle_state(current=42, previous=7)
    _, rolled = roll_billing_cycle(billed, activity, CYCLE, CYCLE_START + elapsed)
    assert rolled.api_requests == ApiRequests(current_cycle=0, previous_cycle=42)


@pytest.mark.parametrize("cycles", [2, 2.5, 5], ids=["2", "2.5", "5"])
def test_two_or_more_ended_cycles_clear_both_counters(cycles: float) -> None:
    billed, activity = cycle_state(current=42, previous=7)
    _, rolled = roll_billing_cycle(billed, activity, CYCLE, CYCLE_START + CYCLE * cycles)
    assert rolled.api_requests == ApiRequests(current_cycle=0, previous_cycle=0)


@pytest.mark.parametrize(
    ("elapsed", "whole_cycles"),
    [(CYCLE, 1), (CYCLE * 1.5, 1), (2 * CYCLE, 2), (CYCLE * 5 + timedelta(hours=3), 5)],
)
def test_rolling_advances_cycle_start_by_whole_cycles(
    elapsed: timedelta, whole_cycles: int
) -> None:
    billed, activity = cycle_state()
    rolled, _ = roll_billing_cycle(billed, activity, CYCLE, CYCLE_START + elapsed)
    assert rolled.cycle_start == CYCLE_START + whole_cycles * CYCLE


def test_rolling_keeps_billing_state_and_subscriptions() -> None:
    billed, activity = cycle_state()
    rolled, _ = roll_billing_cycle(billed, activity, CYCLE, CYCLE_START + CYCLE)
    assert (rolled.state, rolled.subscriptions) == ("Active", billed.subscriptions)


def test_rolling_keeps_the_last_login_time() -> None:
    billed, activity = cycle_state()
    _, rolled = roll_billing_cycle(billed, activity, CYCLE, CYCLE_START + 3 * CYCLE)
    assert rolled.last_login_time == LAST_LOGIN


def test_billing_without_a_cycle_start_does_not_roll() -> None:
    billed = Billing(state="Active")
    activity = Activity(api_requests=ApiRequests(current_cycle=5, previous_cycle=3))
    assert roll_billing_cycle(billed, activity, CYCLE, NOW) == (billed, activity)


# billing and trial


def test_plus_plan_gets_a_30_day_trial_from_creation() -> None:
    created = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)
    granted = trial(spec("Plus"), created)
    assert granted is not None
    assert granted.ends_at == datetime(2026, 3, 12, 9, 0, tzinfo=UTC)
    assert granted.credits > 0


@pytest.mark.parametrize("plan", ["Free", "Enterprise"])
def test_other_plans_get_no_trial(plan: Plan) -> None:
    assert trial(spec(plan), NOW) is None


@pytest.mark.parametrize("plan", ["Free", "Plus", "Enterprise"])
def test_new_billing_subscribes_every_product_from_now(plan: Plan) -> None:
    assert billing(spec(plan), None, NOW) == Billing(
        state="Active", cycle_start=NOW, subscriptions=subscriptions(plan.lower(), NOW)
    )


@pytest.mark.parametrize("state", ["Active", "Trial"])
def test_running_billing_keeps_its_cycle_start_and_subscriptions(state: str) -> None:
    earlier = subscriptions("plus", CYCLE_START)
    previous = Billing.model_validate(
        {"state": state, "cycleStart": CYCLE_START, "subscriptions": earlier}
    )
    billed = billing(spec("Plus"), previous, NOW)
    assert (billed.state, billed.cycle_start, billed.subscriptions) == (
        "Active",
        CYCLE_START,
        earlier,
    )


@pytest.mark.parametrize(
    "left_over", [[], subscriptions("plus", CYCLE_START)], ids=["emptied", "stale"]
)
def test_stopped_billing_gets_new_subscriptions_on_reactivation(
    left_over: list[Subscription],
) -> None:
    previous = Billing(state="Stopped", cycle_start=CYCLE_START, subscriptions=left_over)
    billed = billing(spec("Plus"), previous, NOW)
    assert (billed.state, billed.subscriptions) == ("Active", subscriptions("plus", NOW))


# organization_status


def record(found: Member, last_login: datetime | None = None) -> MemberRecord:
    """A Membership as the cache holds it."""
    status = {"lastLoginTime": last_login.isoformat()} if last_login else {}
    return MemberRecord(
        name=found.name,
        namespace="org-acme",
        uid=f"uid-{found.name}",
        generation=1,
        email=found.email,
        teams=found.teams,
        labels=membership_labels("acme", found.email),
        status=status,
    )


def workload(name: str, component: str, *, namespace: str = "org-acme") -> WorkloadRecord:
    return WorkloadRecord(
        kind="Deployment",
        namespace=namespace,
        name=name,
        uid=f"uid-{name}",
        organization="acme",
        component=component,
        product="mesh",
        annotations={},
    )


PLANES = (
    *(workload(f"cp-{i}", "control-plane") for i in range(2)),
    *(workload(f"dp-{i}", "data-plane") for i in range(5)),
)


def observe(
    *,
    namespace_ready: bool = True,
    members: Sequence[Member] = MEMBERS,
    plan: Plan = "Free",
    created: datetime = NOW - timedelta(days=1),
    status: OrganizationStatus | None = None,
    generation: int = 3,
) -> OrgObservation:
    """An org with 2 control planes and 5 data planes; its first member logged in LAST_LOGIN."""
    return OrgObservation(
        name="acme",
        uid="uid-acme",
        generation=generation,
        created=created,
        spec=spec(plan),
        status=status or OrganizationStatus(),
        now=NOW,
        billing_cycle=CYCLE,
        inactivity_window=timedelta(days=30),
        sso_prefix="oidc:",
        namespace_ready=namespace_ready,
        memberships=[record(m, LAST_LOGIN if i == 0 else None) for i, m in enumerate(members)],
        workloads=PLANES,
    )


VALID_OWNER = OwnerDecision(OWNER, True, "OwnerIsAdmin", f"{OWNER} owns the organization")
REJECTED_OWNER = OwnerDecision(
    OWNER, False, "TransferRejected", "dev@example.com is not a member of organization-admin"
)


ACTIVE = Lifecycle("Active", None)


def status_of(
    observed: OrgObservation,
    owner: OwnerDecision = VALID_OWNER,
    *,
    now: datetime = NOW,
    lifecycle: Lifecycle = ACTIVE,
    licenses: Collection[Product] = PRODUCTS,
    effects_applied: bool = False,
) -> OrganizationStatus:
    """The status after one reconcile, for the given owner decision and lifecycle (by default
    of an org that stays active), with a License per product (by default)."""
    planned = replace(
        plan_organization(replace(observed, now=now)), owner=owner, lifecycle=lifecycle
    )
    applied = Applied(licenses=frozenset(licenses), complete=effects_applied)
    return organization_status(planned, applied)


def condition(status: OrganizationStatus, type_: str) -> Condition:
    (found,) = [c for c in status.conditions if c.type == type_]
    return found


def test_converged_org_is_ready_and_active() -> None:
    status = status_of(observe())
    ready = condition(status, "Ready")
    assert (status.phase, ready.status, ready.reason) == ("Active", "True", "Reconciled")


@pytest.mark.parametrize(
    ("namespace_ready", "owner", "licenses", "reason"),
    [
        (True, VALID_OWNER, PRODUCTS, "Reconciled"),
        (False, VALID_OWNER, PRODUCTS, "NamespaceConflict"),
        (False, REJECTED_OWNER, PRODUCTS, "NamespaceConflict"),
        (True, REJECTED_OWNER, PRODUCTS, "TransferRejected"),
        (True, VALID_OWNER, [], "LicensesMissing"),
        (True, VALID_OWNER, ["gateway-enterprise", "mesh"], "LicensesMissing"),
        (True, REJECTED_OWNER, [], "TransferRejected"),
    ],
    ids=[
        "converged",
        "namespace-conflict",
        "namespace-conflict-before-owner",
        "owner-invalid",
        "no-licenses",
        "one-license-missing",
        "owner-before-licenses",
    ],
)
def test_ready_says_what_the_org_waits_for(
    namespace_ready: bool, owner: OwnerDecision, licenses: list[Product], reason: str
) -> None:
    observed = observe(namespace_ready=namespace_ready)
    ready = condition(status_of(observed, owner, licenses=licenses), "Ready")
    assert (ready.status, ready.reason) == (str(reason == "Reconciled"), reason)


def test_namespace_conflict_tells_what_to_do() -> None:
    ready = condition(status_of(observe(namespace_ready=False)), "Ready")
    assert ready.message.startswith("namespace org-acme belongs to something else; nothing is")
    # Finding 7/9: how to hand it over (support, in one step), and when a deletion is noticed.
    assert "Delete it, or have support (orgkeeper-support) hand it" in ready.message
    assert (
        "kubectl label namespace org-acme --overwrite orgkeeper.dev/organization=acme "
        "orgkeeper.dev/organization-uid=uid-acme orgkeeper.dev/released-from-"
    ) in ready.message
    assert "next periodic check (--check-interval)" in ready.message


def test_org_is_provisioning_until_its_namespace_is_ready() -> None:
    assert status_of(observe(namespace_ready=False)).phase == "Provisioning"


def test_licenses_provisioned_names_the_missing_products() -> None:
    provisioned = condition(
        status_of(observe(), licenses=["gateway-enterprise"]), "LicensesProvisioned"
    )
    assert (provisioned.status, provisioned.reason, provisioned.message) == (
        "False",
        "LicensesMissing",
        "no License yet for ingress-controller, mesh",
    )


def test_licenses_provisioned_is_true_with_a_license_per_product() -> None:
    provisioned = condition(status_of(observe()), "LicensesProvisioned")
    assert (provisioned.status, provisioned.reason) == ("True", "Provisioned")


def test_owner_valid_reports_the_owner_decision() -> None:
    owner_valid = condition(status_of(observe(), REJECTED_OWNER), "OwnerValid")
    assert (owner_valid.status, owner_valid.reason, owner_valid.message) == (
        "False",
        "TransferRejected",
        REJECTED_OWNER.message,
    )


def test_status_owner_is_the_effective_owner() -> None:
    decision = decide_owner(DEV, OWNER, MEMBERS)
    assert status_of(observe(), decision).owner == OWNER


def test_active_org_is_not_deactivated_and_its_owner_email_is_unlocked() -> None:
    status = status_of(observe())
    deactivated = condition(status, "Deactivated")
    assert (deactivated.status, status.deactivation, status.owner_email_locked) == (
        "False",
        None,
        False,
    )


def test_status_has_exactly_the_four_condition_types() -> None:
    types = sorted(c.type for c in status_of(observe()).conditions)
    assert types == ["Deactivated", "LicensesProvisioned", "OwnerValid", "Ready"]


def test_every_condition_carries_the_observed_generation() -> None:
    status = status_of(observe(generation=9))
    assert status.observed_generation == 9
    assert [c.observed_generation for c in status.conditions] == [9, 9, 9, 9]


def test_reconciling_again_keeps_the_ready_transition_time() -> None:
    first = status_of(observe())
    later = status_of(observe(status=first), now=NOW + timedelta(hours=1))
    assert condition(later, "Ready").last_transition_time == NOW


def test_status_counts_members_and_admins_with_the_owner_as_admin() -> None:
    members = (
        member(OWNER),  # the Owner is an admin even without the team in spec
        member(ADMIN, "organization-admin", "portal-admin"),
        member(DEV, "api-product-developer"),
        member("viewer@example.com", "analytics-viewer"),
    )
    status = status_of(observe(members=members))
    assert (status.members, status.admins) == (4, 2)


def test_status_reports_namespace_and_plane_counts() -> None:
    status = status_of(observe())
    assert (status.namespace, status.control_planes, status.data_planes) == ("org-acme", 2, 5)


def test_plus_org_is_billed_as_trial_during_its_trial() -> None:
    created = NOW - timedelta(days=10)
    status = status_of(observe(plan="Plus", created=created))
    assert status.billing is not None and status.trial is not None
    assert (status.billing.state, status.trial.ends_at) == ("Trial", created + timedelta(days=30))


def test_plus_org_is_billed_as_active_once_the_trial_ended() -> None:
    status = status_of(observe(plan="Plus", created=NOW - timedelta(days=30)))
    assert status.billing is not None
    assert status.billing.state == "Active"


@pytest.mark.parametrize("plan", ["Free", "Enterprise"])
def test_orgs_without_a_trial_are_billed_as_active(plan: Plan) -> None:
    status = status_of(observe(plan=plan))
    assert status.billing is not None
    assert (status.billing.state, status.trial) == ("Active", None)


def test_reconcile_rolls_the_request_counters_at_the_end_of_a_cycle() -> None:
    previous = OrganizationStatus(
        billing=Billing(
            state="Active", cycle_start=NOW - CYCLE, subscriptions=subscriptions("free", NOW)
        ),
        activity=Activity(api_requests=ApiRequests(current_cycle=12, previous_cycle=4)),
    )
    status = status_of(observe(status=previous))
    assert status.billing is not None and status.activity is not None
    assert status.billing.cycle_start == NOW
    assert status.activity.api_requests == ApiRequests(current_cycle=0, previous_cycle=12)


def test_reconcile_records_the_last_login_time() -> None:
    status = status_of(observe())
    assert status.activity is not None
    assert status.activity.last_login_time == LAST_LOGIN


def test_reconcile_of_a_stopped_org_restarts_billing() -> None:
    previous = OrganizationStatus(
        billing=Billing(state="Stopped", cycle_start=NOW - timedelta(days=3), subscriptions=[])
    )
    status = status_of(observe(status=previous))
    assert status.billing is not None
    assert (status.billing.state, status.billing.subscriptions) == (
        "Active",
        subscriptions("free", NOW),
    )


# organization_status of a deactivated org

DEACTIVATED_AT = NOW - timedelta(minutes=5)


def deactivating(reason: DeactivationReason = "Requested") -> Lifecycle:
    return Lifecycle("Deactivated", Deactivation(at=DEACTIVATED_AT, reason=reason))


def running_billing(plan: str = "free") -> OrganizationStatus:
    return OrganizationStatus(
        billing=Billing(
            state="Active",
            cycle_start=NOW - timedelta(days=3),
            subscriptions=subscriptions(plan, CYCLE_START),
        )
    )


def unlocked(observed: OrgObservation) -> OrgObservation:
    return replace(observed, spec=observed.spec.model_copy(update={"unlock_owner_email": True}))


def test_deactivation_in_progress_is_deactivating_and_not_ready() -> None:
    status = status_of(observe(status=running_billing()), lifecycle=deactivating())
    ready = condition(status, "Ready")
    assert (status.phase, ready.status, ready.reason) == ("Deactivating", "False", "Deactivating")


@pytest.mark.parametrize("reason", ["Requested", "Inactive"])
def test_deactivated_condition_is_false_while_the_effects_are_applied(
    reason: DeactivationReason,
) -> None:
    status = status_of(observe(status=running_billing()), lifecycle=deactivating(reason))
    deactivated = condition(status, "Deactivated")
    assert (deactivated.status, deactivated.reason) == ("False", "Deactivating")
    assert reason in deactivated.message


@pytest.mark.parametrize("effects_applied", [False, True], ids=["deactivating", "deactivated"])
def test_deactivation_stops_billing_and_empties_subscriptions(effects_applied: bool) -> None:
    status = status_of(
        observe(status=running_billing()),
        lifecycle=deactivating(),
        effects_applied=effects_applied,
    )
    assert status.billing is not None
    assert (status.billing.state, status.billing.subscriptions) == ("Stopped", [])


def test_deactivation_keeps_the_billing_cycle_start() -> None:
    previous = running_billing()
    status = status_of(observe(status=previous), lifecycle=deactivating())
    assert previous.billing is not None and status.billing is not None
    assert status.billing.cycle_start == previous.billing.cycle_start


@pytest.mark.parametrize("effects_applied", [False, True], ids=["deactivating", "deactivated"])
def test_deactivation_records_when_and_why(effects_applied: bool) -> None:
    status = status_of(
        observe(), lifecycle=deactivating("Inactive"), effects_applied=effects_applied
    )
    assert status.deactivation == Deactivation(at=DEACTIVATED_AT, reason="Inactive")


@pytest.mark.parametrize("effects_applied", [False, True], ids=["deactivating", "deactivated"])
def test_deactivation_locks_the_owner_email(effects_applied: bool) -> None:
    status = status_of(observe(), lifecycle=deactivating(), effects_applied=effects_applied)
    assert status.owner_email_locked is True


@pytest.mark.parametrize("effects_applied", [False, True], ids=["deactivating", "deactivated"])
def test_unlock_owner_email_releases_the_lock_of_a_deactivated_org(effects_applied: bool) -> None:
    status = status_of(
        unlocked(observe()), lifecycle=deactivating(), effects_applied=effects_applied
    )
    assert status.owner_email_locked is False


def test_unlock_owner_email_on_an_active_org_changes_nothing() -> None:
    assert status_of(unlocked(observe())).owner_email_locked is False


def test_deactivation_with_every_effect_applied_is_deactivated_and_ready() -> None:
    status = status_of(observe(), lifecycle=deactivating(), effects_applied=True)
    ready = condition(status, "Ready")
    assert (status.phase, ready.status, ready.reason) == ("Deactivated", "True", "Deactivated")


@pytest.mark.parametrize(
    ("reason", "how_to_reactivate"),
    [
        ("Requested", "set spec.state back to Active to reactivate"),
        ("Inactive", "set spec.reactivationRequestedAt to the current time to reactivate"),
    ],
)
def test_deactivated_condition_gives_the_reason_and_how_to_reactivate(
    reason: DeactivationReason, how_to_reactivate: str
) -> None:
    status = status_of(observe(), lifecycle=deactivating(reason), effects_applied=True)
    deactivated = condition(status, "Deactivated")
    assert (deactivated.status, deactivated.reason) == ("True", reason)
    assert how_to_reactivate in deactivated.message


@pytest.mark.parametrize(
    ("unlock", "lock_message"),
    [
        (False, "the owner e-mail is locked until spec.unlockOwnerEmail is set"),
        (True, "the owner e-mail is unlocked"),
    ],
    ids=["locked", "unlocked"],
)
def test_deactivated_condition_says_whether_the_owner_email_is_locked(
    unlock: bool, lock_message: str
) -> None:
    observed = unlocked(observe()) if unlock else observe()
    status = status_of(observed, lifecycle=deactivating(), effects_applied=True)
    assert lock_message in condition(status, "Deactivated").message


def test_deactivated_ready_does_not_wait_for_provisioning_or_licenses() -> None:
    """Converged means deactivated: a missing namespace or license is no longer a goal."""
    status = status_of(
        observe(namespace_ready=False),
        licenses=[],
        lifecycle=deactivating(),
        effects_applied=True,
    )
    ready = condition(status, "Ready")
    assert (status.phase, ready.status) == ("Deactivated", "True")


def test_finishing_a_deactivation_moves_the_transition_times() -> None:
    active = status_of(observe())
    started = status_of(
        observe(status=active), lifecycle=deactivating(), now=NOW + timedelta(minutes=1)
    )
    done = status_of(
        observe(status=started),
        lifecycle=deactivating(),
        effects_applied=True,
        now=NOW + timedelta(minutes=2),
    )
    assert condition(started, "Ready").last_transition_time == NOW + timedelta(minutes=1)
    assert condition(started, "Deactivated").last_transition_time == NOW
    assert condition(done, "Ready").last_transition_time == NOW + timedelta(minutes=2)
    assert condition(done, "Deactivated").last_transition_time == NOW + timedelta(minutes=2)


def test_deactivation_keeps_counting_members_and_planes() -> None:
    status = status_of(observe(), lifecycle=deactivating(), effects_applied=True)
    assert (status.members, status.admins, status.control_planes, status.data_planes) == (
        3,
        2,
        2,
        5,
    )


# organization_status on reactivation and plan changes


def stopped_status() -> OrganizationStatus:
    return OrganizationStatus(
        billing=Billing(state="Stopped", cycle_start=NOW - timedelta(days=3), subscriptions=[]),
        deactivation=Deactivation(at=NOW - timedelta(days=3), reason="Requested"),
    )


@pytest.mark.parametrize("plan", ["Free", "Enterprise"])
def test_reactivation_restarts_billing_with_a_subscription_per_product(plan: Plan) -> None:
    reactivated = Lifecycle("Active", None, reactivated=True)
    status = status_of(observe(plan=plan, status=stopped_status()), lifecycle=reactivated)
    assert status.billing is not None
    assert status.billing.state == "Active"
    assert [s.name for s in status.billing.subscriptions] == [
        f"{plan.lower()}-gateway-enterprise",
        f"{plan.lower()}-ingress-controller",
        f"{plan.lower()}-mesh",
    ]
    assert {s.started_at for s in status.billing.subscriptions} == {NOW}


def test_reactivation_clears_the_deactivation_and_the_email_lock() -> None:
    reactivated = Lifecycle("Active", None, reactivated=True)
    status = status_of(observe(status=stopped_status()), lifecycle=reactivated)
    deactivated = condition(status, "Deactivated")
    assert (status.phase, status.deactivation, status.owner_email_locked) == (
        "Active",
        None,
        False,
    )
    assert (deactivated.status, deactivated.reason) == ("False", "Active")


def test_plan_change_from_free_to_plus_renames_the_subscriptions() -> None:
    status = status_of(
        observe(plan="Plus", created=NOW - timedelta(days=90), status=running_billing("free"))
    )
    assert status.billing is not None
    assert status.billing.state == "Active"
    assert status.billing.subscriptions == subscriptions("plus", NOW)


def test_plan_change_keeps_the_billing_cycle() -> None:
    previous = running_billing("free")
    status = status_of(observe(plan="Plus", created=NOW - timedelta(days=90), status=previous))
    assert previous.billing is not None and status.billing is not None
    assert status.billing.cycle_start == previous.billing.cycle_start


def _granted(rules: Sequence[Mapping[str, Sequence[str]]], resource: str, verb: str) -> set[str]:
    """The Organizations (by name) on which `rules` grant `verb` on `resource`."""
    return {
        name
        for rule in rules
        if rule["apiGroups"] == [GROUP] and resource in rule["resources"] and verb in rule["verbs"]
        for name in rule["resourceNames"]
    }


def test_the_owner_may_read_edit_and_delete_their_own_org_and_nothing_else() -> None:
    # README "Who may do what" and API.md: the Owner changes their fields (an edit: `update`
    # or `patch`; admission decides which fields), labels a namespace for the org (`update`),
    # and deletes the org. Support's verb, creating orgs and writing status are not theirs.
    rules = owner_rules("acme")
    for verb in ("get", "update", "patch", "delete"):
        assert _granted(rules, "organizations", verb) == {"acme"}, verb
    assert _granted(rules, "organizations/status", "get") == {"acme"}
    for verb in ("list", "watch", "create", "deletecollection", "support"):
        assert _granted(rules, "organizations", verb) == set(), verb
    for verb in ("update", "patch"):
        assert _granted(rules, "organizations/status", verb) == set(), verb
    assert all(set(rule) == {"apiGroups", "resources", "resourceNames", "verbs"} for rule in rules)


def test_a_deactivated_org_s_owner_may_only_read_it() -> None:
    rules = owner_rules("acme", deactivated=True)
    assert _granted(rules, "organizations", "get") == {"acme"}
    assert _granted(rules, "organizations/status", "get") == {"acme"}
    for verb in ("update", "patch", "delete", "list", "support"):
        assert _granted(rules, "organizations", verb) == set(), verb
