"""The plan of one Organization reconcile, from what it observed: no cluster, only facts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orgkeeper import names
from orgkeeper.api.v1alpha1 import PRODUCTS
from orgkeeper.api.v1alpha1.common import Team
from orgkeeper.api.v1alpha1.organization import (
    Activity,
    ApiRequests,
    Billing,
    Deactivation,
    OrganizationSpec,
    OrganizationStatus,
    Plan,
)
from orgkeeper.controllers.records import BindingRecord, MemberRecord, WorkloadRecord
from orgkeeper.domain import conditions
from orgkeeper.domain.conditions import find
from orgkeeper.domain.lifecycle import CLOCK_SKEW
from orgkeeper.domain.membership import OrgContext, membership_labels, plan_memberships
from orgkeeper.domain.namespaces import Claim, org_namespace_ready
from orgkeeper.domain.organization import billing as billing_domain
from orgkeeper.domain.organization.billing import PLUS_TRIAL, roll_billing_cycle
from orgkeeper.domain.organization.plan import (
    Applied,
    OrganizationPlan,
    OrgObservation,
    next_due,
    parked_message,
    plan_organization,
)
from orgkeeper.domain.organization.status import closing_events, organization_status

OWNER = "owner@example.com"
ADMIN = "admin@example.com"
DEV = "dev@example.com"
BOTH = (OWNER, f"oidc:{OWNER}")  # the Owner's users in an ordinary org
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(days=30)
CYCLE = timedelta(days=30)
LONG_AGO = NOW - timedelta(days=200)
RECENTLY = NOW - timedelta(days=2)


def membership(
    email: str, *teams: Team, last_login: datetime | None = None, labelled: bool = True
) -> MemberRecord:
    name = email.split("@")[0]
    return MemberRecord(
        name=name,
        namespace="org-acme",
        uid=f"uid-{name}",
        generation=1,
        email=email,
        teams=teams,
        labels=membership_labels("acme", email) if labelled else {},
        status={"lastLoginTime": last_login.isoformat()} if last_login else {},
    )


def workload(
    name: str, component: str, *, frozen: bool = False, namespace: str = "org-acme"
) -> WorkloadRecord:
    return WorkloadRecord(
        kind="Deployment",
        namespace=namespace,
        name=name,
        uid=name,
        organization="acme",
        component=component,
        product="mesh",
        annotations={names.ANNOTATION_FROZEN: "true"} if frozen else {},
    )


PLANES = (
    workload("cp", "control-plane"),
    workload("dp", "data-plane"),
    workload("dp-frozen", "data-plane", frozen=True),
)
MEMBERS = (membership(OWNER, "organization-admin"), membership(DEV, "api-product-developer"))


def active_status(
    *, owner: str = OWNER, cycle_start: datetime = NOW - timedelta(days=3), requests: int = 0
) -> OrganizationStatus:
    """An org reconciled before: it has an Owner and a running billing cycle."""
    return OrganizationStatus(
        phase="Active",
        owner=owner,
        billing=Billing(state="Active", cycle_start=cycle_start),
        activity=Activity(api_requests=ApiRequests(current_cycle=requests)),
    )


def deactivated_status(reason: str, at: datetime = NOW - timedelta(days=10)) -> OrganizationStatus:
    return OrganizationStatus.model_validate(
        {
            "phase": "Deactivated",
            "owner": OWNER,
            "billing": {"state": "Stopped", "cycleStart": NOW - timedelta(days=3)},
            "deactivation": {"at": at, "reason": reason},
        }
    )


def observe(
    *,
    plan: Plan = "Free",
    status: OrganizationStatus | None = None,
    created: datetime = RECENTLY,
    members: Sequence[MemberRecord] = MEMBERS,
    bindings: Sequence[BindingRecord] = (),
    workloads: Sequence[WorkloadRecord] = PLANES,
    claims: Sequence[Claim] = (),
    namespace_ready: bool = True,
    provisioned: Sequence[str] = PRODUCTS,
    **spec: Any,
) -> OrgObservation:
    """Org acme, by default a Free one created lately and reconciled before."""
    return OrgObservation(
        name="acme",
        uid="uid-acme",
        generation=2,
        created=created,
        spec=OrganizationSpec.model_validate(
            {"displayName": "Acme", "plan": plan, "region": "eu", "owner": OWNER, **spec}
        ),
        status=active_status() if status is None else status,
        now=NOW,
        billing_cycle=CYCLE,
        inactivity_window=WINDOW,
        sso_prefix="oidc:",
        namespace_ready=namespace_ready,
        claims=claims,
        memberships=members,
        bindings=bindings,
        provisioned=frozenset(provisioned),
        workloads=workloads,
    )


def reasons(planned: OrganizationPlan) -> list[str]:
    return [event.reason for event in planned.events]


# The lifecycle: who is deactivated, what happens to their workloads and the Owner's rights.


def logged_in(at: datetime) -> dict[str, Any]:
    """An org created long ago whose Owner last logged in `at`."""
    return {
        "created": LONG_AGO,
        "members": (membership(OWNER, "organization-admin", last_login=at),),
    }


IDLE, USED = logged_in(LONG_AGO), logged_in(RECENTLY)
STOPPED = {"cp": "Decommission", "dp": "Freeze"}  # what deactivation does to the planes
RUNNING = {"dp-frozen": "Unfreeze"}
# Once a deactivation is settled, a control plane found is one made again: parked, not deleted.
SETTLED = {"cp": "Park", "dp": "Freeze"}


@pytest.mark.parametrize(
    ("facts", "target", "started", "workloads", "owner_users"),
    [
        (IDLE, "Deactivated", True, STOPPED, BOTH),
        (USED, "Active", False, RUNNING, BOTH),
        ({**IDLE, "plan": "Plus"}, "Active", False, RUNNING, BOTH),
        ({**IDLE, "plan": "Enterprise"}, "Active", False, RUNNING, BOTH),
        ({**IDLE, "created": RECENTLY}, "Active", False, RUNNING, BOTH),
        ({**IDLE, "status": active_status(requests=3)}, "Active", False, RUNNING, BOTH),
        ({**USED, "state": "Deactivated"}, "Deactivated", True, STOPPED, BOTH),
        ({**USED, "status": deactivated_status("Requested")}, "Active", False, RUNNING, BOTH),
        ({**USED, "status": deactivated_status("Inactive")}, "Deactivated", False, SETTLED, BOTH),
        ({**IDLE, "status": deactivated_status("Inactive"), "reactivationRequestedAt": NOW},
            "Active", False, RUNNING, BOTH),
        ({**IDLE, "ssoOnly": True, "plan": "Plus"}, "Active", False, RUNNING, (f"oidc:{OWNER}",)),
    ],
    ids=[
        "free-idle-past-the-window",
        "free-logged-in-lately",
        "plus-never-idle",
        "enterprise-never-idle",
        "free-created-lately",
        "free-with-api-requests",
        "requested",
        "requested-then-active-again",
        "inactive-stays-deactivated",
        "inactive-reactivated-on-request",
        "sso-only-owner-is-the-idps-user",
    ],
)  # fmt: skip
def test_the_lifecycle_decides_the_workloads_and_the_owners_rights(
    facts: dict[str, Any],
    target: str,
    started: bool,
    workloads: dict[str, str],
    owner_users: tuple[str, ...],
) -> None:
    planned = plan_organization(observe(**facts))
    assert planned.namespace is not None
    assert (planned.lifecycle.target, planned.lifecycle.started) == (target, started)
    assert planned.records_deactivation_first is started
    assert ("Deactivating" in reasons(planned)) is started
    assert dict(planned.workloads) == workloads
    assert planned.namespace.owner_users == owner_users
    # A deactivated org's Owner keeps reading it, and nothing more.
    verbs = {verb for rule in planned.namespace.owner_rules for verb in rule["verbs"]}
    assert verbs == ({"get"} if target == "Deactivated" else {"get", "update", "patch", "delete"})


def test_a_deactivation_tells_deactivated_once_every_effect_is_applied() -> None:
    planned = plan_organization(observe(**IDLE))
    assert planned.events[-1].message == "deactivating the organization (Inactive)"
    first = organization_status(planned, Applied())
    assert (first.phase, closing_events(planned, first)) == ("Deactivating", [])
    failed = organization_status(planned, Applied(failed=("Deployment org-acme/cp (x)",)))
    assert failed.phase == "Deactivating"
    done = organization_status(planned, Applied(complete=True))
    (told,) = closing_events(planned, done)
    assert (done.phase, told.reason) == ("Deactivated", "Deactivated")
    assert done.billing is not None and done.billing.state == "Stopped"


def test_the_status_written_before_a_deactivations_effects_keeps_the_licenses_condition() -> None:
    licensed = conditions.put(
        [],
        "LicensesProvisioned",
        True,
        "Provisioned",
        "a License exists for every product",
        generation=1,
        now=LONG_AGO,
    )
    status = active_status().model_copy(update={"conditions": licensed})
    first = organization_status(plan_organization(observe(**IDLE, status=status)), Applied())
    assert first.phase == "Deactivating"
    assert find(first.conditions, "LicensesProvisioned") == licensed[0]


def test_a_reactivation_tells_reactivated_and_restarts_billing() -> None:
    planned = plan_organization(observe(**USED, status=deactivated_status("Requested")))
    status = organization_status(planned, Applied(licenses=frozenset(PRODUCTS), complete=True))
    assert [e.reason for e in closing_events(planned, status)] == ["Reactivated"]
    assert status.billing is not None and status.billing.state == "Active"
    assert (status.phase, status.deactivation) == ("Active", None)


def test_a_deactivated_org_holds_no_member_roles() -> None:
    bound = plan_organization(observe(**USED)).namespace
    assert bound is not None and bound.memberships.bindings
    existing = [
        BindingRecord(b.name, "org-acme", b.users, b.cluster_role, b.labels, ("uid-owner",))
        for b in bound.memberships.bindings
    ]
    removed = plan_organization(observe(**USED, state="Deactivated", bindings=existing)).namespace
    assert removed is not None
    assert removed.memberships.bindings == ()
    assert removed.memberships.stale_bindings == tuple(sorted(b.name for b in existing))
    assert {s.state for s in removed.memberships.statuses.values()} == {"Removed"}


# Billing: rolled once, at the end of a cycle, and what the inactivity rule counts.


@pytest.mark.parametrize(
    ("cycle_start", "requests", "rolled", "target"),
    [
        (NOW - timedelta(days=3), 5, ApiRequests(current_cycle=5), "Active"),
        (NOW - CYCLE - timedelta(days=3), 5, ApiRequests(previous_cycle=5), "Active"),
        (NOW - 2 * CYCLE - timedelta(days=3), 5, ApiRequests(), "Deactivated"),
    ],
    ids=["within-the-cycle", "one-cycle-ended", "two-cycles-ended"],
)
def test_the_billing_cycle_rolls_at_its_end_and_the_rolled_counters_decide_idleness(
    cycle_start: datetime, requests: int, rolled: ApiRequests, target: str
) -> None:
    status = active_status(cycle_start=cycle_start, requests=requests)
    planned = plan_organization(observe(**IDLE, status=status))
    assert (planned.activity.api_requests, planned.lifecycle.target) == (rolled, target)
    written = organization_status(planned, Applied(complete=True))
    assert written.activity is not None and written.activity.api_requests == rolled
    assert written.billing is not None and written.billing.cycle_start is not None
    assert NOW - CYCLE < written.billing.cycle_start <= NOW


def test_the_billing_cycle_is_rolled_once_per_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    rolls: list[datetime] = []
    roll = roll_billing_cycle

    def counted(*args: Any) -> Any:
        rolls.append(args[-1])
        return roll(*args)

    monkeypatch.setattr(billing_domain, "roll_billing_cycle", counted)
    planned = plan_organization(observe(status=active_status(cycle_start=NOW - CYCLE, requests=5)))
    organization_status(planned, Applied())  # the status written before the effects
    organization_status(planned, Applied(complete=True))
    assert rolls == [NOW]


def test_the_last_login_is_the_latest_of_the_members() -> None:
    members = (
        membership(OWNER, "organization-admin", last_login=LONG_AGO),
        membership(DEV, last_login=RECENTLY),
        membership(ADMIN),
    )
    assert plan_organization(observe(members=members)).activity.last_login_time == RECENTLY


# The Owner: their Membership, a transfer, and nothing at all in a namespace not the org's.


@pytest.mark.parametrize(
    ("status", "members", "namespace_ready", "created"),
    [
        (OrganizationStatus(), (), True, True),
        (OrganizationStatus(), (), False, False),
        (active_status(), MEMBERS, True, False),
        (active_status(), MEMBERS[1:], True, False),  # the Owner left: no Membership back
        (active_status(owner=ADMIN), MEMBERS[1:], True, True),  # support named a new Owner
    ],
    ids=["new-org", "new-org-namespace-conflict", "owner-present", "owner-left", "support"],
)
def test_the_owners_membership_is_created_only_in_the_orgs_namespace(
    status: OrganizationStatus,
    members: Sequence[MemberRecord],
    namespace_ready: bool,
    created: bool,
) -> None:
    planned = plan_organization(
        observe(status=status, members=members, namespace_ready=namespace_ready)
    )
    assert (planned.owner_membership is not None) is created
    if planned.owner_membership is not None:
        owner = planned.owner_membership
        assert (owner.member.name, owner.member.teams) == (
            names.owner_membership(OWNER),
            ("organization-admin",),
        )
        assert owner.labels == membership_labels("acme", OWNER)
        assert owner.created.reason == "OwnerMembershipCreated"
        status_after = organization_status(planned, Applied(owner_membership_created=True))
        assert (status_after.members, status_after.admins) == (len(members) + 1, 1)


def test_a_transfer_to_an_organization_admin_moves_the_owners_rights() -> None:
    members = (*MEMBERS, membership(ADMIN, "organization-admin"))
    planned = plan_organization(observe(members=members, owner=ADMIN))
    assert planned.namespace is not None
    assert planned.owner.effective == ADMIN
    assert planned.namespace.owner_users == (ADMIN, f"oidc:{ADMIN}")
    assert reasons(planned) == ["OwnershipTransferred"]


def test_a_rejected_transfer_is_told_once() -> None:
    planned = plan_organization(observe(owner=DEV))
    assert (planned.owner.effective, reasons(planned)) == (OWNER, ["TransferRejected"])
    again = plan_organization(observe(owner=DEV, status=organization_status(planned, Applied())))
    assert reasons(again) == []


def test_a_conflicted_namespace_writes_nothing_in_it() -> None:
    elsewhere = workload("edge-dp", "data-plane", frozen=True, namespace="edge")
    planned = plan_organization(
        observe(
            status=OrganizationStatus(),
            members=(),
            namespace_ready=False,
            workloads=(*PLANES, elsewhere),
            claims=(Claim("edge", "acme"),),
        )
    )
    assert (planned.namespace, planned.owner_membership) == (None, None)
    assert planned.owned_namespaces == {"edge"}
    assert dict(planned.workloads) == {"edge-dp": "Unfreeze"}
    ready = organization_status(planned, Applied(complete=True)).conditions[-1]
    assert (ready.type, ready.reason) == ("Ready", "NamespaceConflict")


HASH = names.email_hash(OWNER)


@pytest.mark.parametrize(
    ("owners", "labels", "ready"),
    [
        (["uid-acme"], {}, True),
        (["uid-other"], {names.LABEL_ORGANIZATION: "acme"}, False),
        ([], {names.LABEL_ORGANIZATION: "acme", names.LABEL_EMAIL_HASH: HASH}, True),
        ([], {names.LABEL_ORGANIZATION: "acme", names.LABEL_ORGANIZATION_UID: "uid-acme"}, True),
        ([], {names.LABEL_ORGANIZATION: "acme"}, False),
        ([], {names.LABEL_ORGANIZATION: "acme", names.LABEL_EMAIL_HASH: "0" * 16}, False),
        ([], {names.LABEL_ORGANIZATION: "acme", names.LABEL_ORGANIZATION_UID: "uid-old"}, False),
        (
            [],
            {
                names.LABEL_ORGANIZATION: "acme",
                names.LABEL_ORGANIZATION_UID: "uid-acme",
                names.LABEL_RELEASED_FROM: "acme",
            },
            False,
        ),
        ([], {names.LABEL_ORGANIZATION: "other", names.LABEL_EMAIL_HASH: HASH}, False),
        ([], {}, False),
    ],
    ids=[
        "owned",
        "someone-elses",
        "made-ahead-for-its-owner",
        "handed-to-its-uid",
        "made-ahead-for-nobody-named",
        "made-ahead-for-another-owner",
        "held-for-an-earlier-org",
        "released",
        "labelled-for-another",
        "squatted",
    ],
)
def test_a_found_org_namespace_serves_the_org_if_it_owns_it_or_it_was_made_for_it(
    owners: list[str], labels: dict[str, str], ready: bool
) -> None:
    claim = Claim.of("org-acme", labels, [("acme", uid) for uid in owners])
    assert org_namespace_ready(claim, "acme", "uid-acme", OWNER) is ready


def test_the_provisioned_licenses_missing_are_created() -> None:
    planned = plan_organization(observe(provisioned=["mesh"]))
    assert planned.namespace is not None
    assert planned.namespace.licenses == ("gateway-enterprise", "ingress-controller")


def test_planes_are_counted_in_owned_namespaces_only() -> None:
    elsewhere = workload("stray", "control-plane", namespace="elsewhere")
    status = organization_status(
        plan_organization(observe(workloads=(*PLANES, elsewhere))), Applied()
    )
    assert (status.control_planes, status.data_planes) == (1, 2)


# Member RoleBindings: desired, drifted, stale; labels; Pending without an org.

ORG = OrgContext(name="acme", owner=OWNER, sso_only=False, deactivated=False, region="eu")


def found(name: str, user: str, role: str, owner: str, **labels: str) -> BindingRecord:
    dev_labels = {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_ORGANIZATION: "acme",
        names.LABEL_MEMBERSHIP: "dev",
        names.LABEL_EMAIL_HASH: names.email_hash(DEV),
        names.LABEL_TEAM: "api-product-developer",
        **names.shard_slot_label("acme"),
    }
    users = (user,) if user != DEV else (DEV, f"oidc:{DEV}")  # DEV: as an ordinary org binds
    return BindingRecord(name, "org-acme", users, role, {**dev_labels, **labels}, (owner,))


DEV_BINDING = names.member_binding(DEV, "api-product-developer")
DEV_ROLE = "orgkeeper-api-product-developer"
OTHER_TEAM = {names.LABEL_TEAM: "portal-admin"}
IN_PLACE = found(DEV_BINDING, DEV, DEV_ROLE, "uid-dev")


@pytest.mark.parametrize(
    ("existing", "written", "stale"),
    [
        ((), [DEV_BINDING], ()),
        ((IN_PLACE,), [], ()),
        ((found(DEV_BINDING, "oidc:" + DEV, DEV_ROLE, "uid-dev"),), [DEV_BINDING], ()),
        ((found(DEV_BINDING, DEV, DEV_ROLE, "uid-other"),), [DEV_BINDING], ()),
        ((found(DEV_BINDING, DEV, DEV_ROLE, "uid-dev", **OTHER_TEAM),), [DEV_BINDING], ()),
        ((IN_PLACE, found("gone", DEV, DEV_ROLE, "x")), [], ("gone",)),
    ],
    ids=["missing", "in-place", "subject-drifted", "owner-drifted", "label-drifted", "stale"],
)  # fmt: skip
def test_member_bindings_are_written_where_missing_or_drifted_and_stale_ones_removed(
    existing: Sequence[BindingRecord], written: list[str], stale: tuple[str, ...]
) -> None:
    members = (membership(DEV, "api-product-developer"),)
    planned = plan_memberships(ORG, members, existing, sso_prefix="oidc:", now=NOW)
    assert [b.name for b in planned.bindings] == written
    assert planned.stale_bindings == stale
    assert planned.statuses["dev"].effective_teams == ["api-product-developer"]


def test_a_membership_missing_its_labels_gets_them() -> None:
    members = (membership(DEV, labelled=False), membership(OWNER))
    planned = plan_memberships(ORG, members, (), sso_prefix="oidc:", now=NOW)
    assert planned.labels == {"dev": membership_labels("acme", DEV)}


def test_without_an_org_memberships_are_pending_and_hold_no_roles() -> None:
    members = (membership(DEV, "api-product-developer", labelled=False),)
    existing = (found(DEV_BINDING, DEV, DEV_ROLE, "uid-dev"),)
    planned = plan_memberships(None, members, existing, sso_prefix="oidc:", now=NOW)
    assert (planned.bindings, planned.stale_bindings, planned.labels) == ((), (DEV_BINDING,), {})
    assert planned.statuses["dev"].state == "Pending"


def test_deactivation_records_its_start() -> None:
    planned = plan_organization(observe(**IDLE))
    assert planned.lifecycle.deactivation == Deactivation(at=NOW, reason="Inactive")


# When the loop wakes without an event: the next moment a time rule changes the plan.

CYCLE_ENDS = NOW + timedelta(days=29)
FRESH_CYCLE = active_status(cycle_start=CYCLE_ENDS - CYCLE)


@pytest.mark.parametrize(
    ("facts", "due"),
    [
        ({**USED, "status": FRESH_CYCLE}, RECENTLY + WINDOW),
        ({**USED, "status": FRESH_CYCLE, "plan": "Enterprise"}, CYCLE_ENDS),
        ({"plan": "Plus", "created": NOW - timedelta(days=5), "status": FRESH_CYCLE},
            NOW - timedelta(days=5) + PLUS_TRIAL),
        ({**IDLE, "status": active_status(cycle_start=CYCLE_ENDS - CYCLE, requests=3)},
            CYCLE_ENDS),
        ({**USED, "status": deactivated_status("Inactive")},
            NOW - timedelta(days=3) + CYCLE),
        ({**USED, "plan": "Enterprise", "status": OrganizationStatus()}, NOW + CYCLE),
        ({**IDLE, "status": deactivated_status("Inactive"),
            "reactivationRequestedAt": NOW + timedelta(hours=1)},
            NOW + timedelta(hours=1) - CLOCK_SKEW),
    ],
    ids=[
        "free-inactivity-window-closes",
        "enterprise-billing-cycle-ends",
        "plus-trial-ends",
        "free-idle-with-requests-counters-roll",
        "deactivated-no-inactivity-window",
        "the-first-billing-cycle-starts-now",
        "a-reactivation-request-dated-ahead-comes-due",
    ],
)  # fmt: skip
def test_the_next_due_moment_is_the_first_time_rule_still_ahead(
    facts: dict[str, Any], due: datetime
) -> None:
    assert next_due(plan_organization(observe(**facts))) == due


def test_a_control_plane_made_again_after_the_deactivation_is_parked_once_not_deleted() -> None:
    """Argo CD or Flux self-heal recreates what orgkeeper deletes: deleting again would loop."""
    parked = WorkloadRecord(
        kind="StatefulSet",
        namespace="org-acme",
        name="cp-parked",
        uid="cp-parked",
        organization="acme",
        component="control-plane",
        product="mesh",
        annotations={names.ANNOTATION_DECOMMISSIONED: "true"},
    )
    planes = (*PLANES, parked)
    # While the deactivation is applied, every control plane is deleted, parked or not.
    applying = deactivated_status("Requested").model_copy(update={"phase": "Deactivating"})
    planned = plan_organization(observe(workloads=planes, status=applying, state="Deactivated"))
    assert dict(planned.workloads) == {
        "cp": "Decommission",
        "cp-parked": "Decommission",
        "dp": "Freeze",
    }
    # Settled: a new one is parked, a parked one is left alone.
    settled = plan_organization(
        observe(workloads=planes, status=deactivated_status("Requested"), state="Deactivated")
    )
    assert dict(settled.workloads) == {"cp": "Park", "dp": "Freeze"}
    # Reactivated: parked control planes stay as they are (not recreated, not scaled up).
    active = plan_organization(observe(workloads=planes))
    assert dict(active.workloads) == {"dp-frozen": "Unfreeze"}
    assert "orgkeeper.dev/decommissioned" in parked_message("acme")
