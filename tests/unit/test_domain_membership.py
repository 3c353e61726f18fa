"""Memberships: effective teams, RoleBindings and status, from the member and their org."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orgkeeper import names
from orgkeeper.api.v1alpha1.common import Condition, Team
from orgkeeper.api.v1alpha1.membership import MembershipStatus
from orgkeeper.domain.membership import (
    Binding,
    Member,
    OrgContext,
    desired_bindings,
    effective_teams,
    is_user,
    membership_status,
    user_names,
)

OWNER = "owner@example.com"
DEV = "dev@example.com"
SSO_PREFIX = "oidc:"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(days=2)


def org(
    *, owner: str | None = OWNER, sso_only: bool = False, deactivated: bool = False
) -> OrgContext:
    return OrgContext(
        name="acme", owner=owner, sso_only=sso_only, deactivated=deactivated, region="eu"
    )


def member(email: str, *teams: Team, name: str = "someone") -> Member:
    return Member(name=name, email=email, teams=teams)


# effective_teams


def test_member_holds_their_own_teams_in_canonical_order() -> None:
    dev = member(DEV, "analytics-viewer", "portal-admin", "control-plane-admin")
    assert effective_teams(dev, org()) == [
        "control-plane-admin",
        "portal-admin",
        "analytics-viewer",
    ]


def test_member_who_is_not_the_owner_does_not_get_organization_admin() -> None:
    assert effective_teams(member(DEV, "api-product-developer"), org()) == ["api-product-developer"]


def test_member_of_no_team_holds_no_team() -> None:
    assert effective_teams(member(DEV), org()) == []


def test_owner_always_holds_organization_admin_first() -> None:
    owner = member(OWNER, "analytics-viewer", "portal-admin")
    assert effective_teams(owner, org()) == [
        "organization-admin",
        "portal-admin",
        "analytics-viewer",
    ]


def test_owner_listing_organization_admin_holds_it_once() -> None:
    owner = member(OWNER, "organization-admin", "portal-admin")
    assert effective_teams(owner, org()) == ["organization-admin", "portal-admin"]


@pytest.mark.parametrize("spelling", ["Owner@Example.COM", " owner@example.com "])
def test_owner_is_recognised_whatever_the_case_of_the_email(spelling: str) -> None:
    assert effective_teams(member(spelling), org()) == ["organization-admin"]


def test_members_of_a_deactivated_org_hold_no_team() -> None:
    owner = member(OWNER, "organization-admin", "portal-admin")
    assert effective_teams(owner, org(deactivated=True)) == []


def test_member_without_an_org_holds_no_team() -> None:
    assert effective_teams(member(OWNER, "organization-admin"), None) == []


def test_org_without_an_owner_gives_nobody_organization_admin() -> None:
    assert effective_teams(member(OWNER, "portal-admin"), org(owner=None)) == ["portal-admin"]


# desired_bindings


def test_bindings_are_named_with_member_binding_one_per_effective_team() -> None:
    dev = member(DEV, "portal-admin", "control-plane-admin", name="dev")
    assert [b.name for b in desired_bindings(dev, org(), SSO_PREFIX)] == [
        names.member_binding(DEV, "control-plane-admin"),
        names.member_binding(DEV, "portal-admin"),
    ]


def test_binding_binds_the_email_to_the_team_cluster_role() -> None:
    (binding,) = desired_bindings(member(DEV, "portal-admin", name="dev"), org(), SSO_PREFIX)
    assert binding == Binding(
        name=names.member_binding(DEV, "portal-admin"),
        organization="acme",
        membership="dev",
        email=DEV,
        team="portal-admin",
        users=(DEV, f"oidc:{DEV}"),
    )
    assert binding.cluster_role == "orgkeeper-portal-admin"
    assert binding.labels == {
        "app.kubernetes.io/managed-by": "orgkeeper",
        "orgkeeper.dev/organization": "acme",
        "orgkeeper.dev/membership": "dev",
        "orgkeeper.dev/email-hash": names.email_hash(DEV),
        "orgkeeper.dev/team": "portal-admin",
        "orgkeeper.dev/shard-slot": str(names.shard_slot("acme")),
    }


def test_bindings_of_an_sso_only_org_bind_only_the_prefixed_user() -> None:
    dev = member(DEV, "portal-admin", "analytics-viewer")
    users = {b.users for b in desired_bindings(dev, org(sso_only=True), SSO_PREFIX)}
    assert users == {("oidc:dev@example.com",)}


def test_bindings_of_an_ordinary_org_bind_the_email_and_the_prefixed_user() -> None:
    dev = member(DEV, "portal-admin")
    (binding,) = desired_bindings(dev, org(sso_only=False), "corp-sso:")
    assert binding.users == (DEV, "corp-sso:dev@example.com")


def test_sso_only_bindings_use_the_configured_prefix() -> None:
    (binding,) = desired_bindings(member(DEV, "portal-admin"), org(sso_only=True), "corp-sso:")
    assert binding.users == ("corp-sso:dev@example.com",)


@pytest.mark.parametrize("sso_only", [False, True], ids=["ordinary", "sso-only"])
def test_bindings_name_the_lower_cased_email_however_the_membership_spells_it(
    sso_only: bool,
) -> None:
    (binding,) = desired_bindings(
        member(" Dev@Example.COM ", "portal-admin"), org(sso_only=sso_only), SSO_PREFIX
    )
    expected = ("oidc:dev@example.com",) if sso_only else (DEV, "oidc:dev@example.com")
    assert binding.users == expected


@pytest.mark.parametrize(
    ("user", "sso_only", "matches"),
    [
        ("dev@example.com", False, True),
        ("Dev@Example.com", False, True),
        ("oidc:dev@example.com", False, True),
        ("oidc:DEV@example.com", True, True),
        ("dev@example.com", True, False),
        ("corp:dev@example.com", False, False),
        ("oidc:other@example.com", False, False),
    ],
    ids=["email", "case", "sso", "sso-only-sso", "sso-only-bare", "other-prefix", "other"],
)
def test_is_user_names_the_logins_a_person_holds_the_orgs_rights_with(
    user: str, sso_only: bool, matches: bool
) -> None:
    assert is_user(user, DEV, sso_only=sso_only, sso_prefix=SSO_PREFIX) is matches
    assert is_user(user, None, sso_only=sso_only, sso_prefix=SSO_PREFIX) is False


def test_user_names_of_an_sso_only_org_are_only_the_identity_providers() -> None:
    assert user_names("A@B.test", sso_only=True, sso_prefix="sso/") == ("sso/a@b.test",)
    assert user_names("A@B.test", sso_only=False, sso_prefix="sso/") == ("a@b.test", "sso/a@b.test")


def test_owner_gets_an_organization_admin_binding_without_the_team_in_spec() -> None:
    bindings = desired_bindings(member(OWNER), org(), SSO_PREFIX)
    assert [(b.team, b.name) for b in bindings] == [
        ("organization-admin", names.member_binding(OWNER, "organization-admin"))
    ]


def test_binding_names_do_not_depend_on_the_case_of_the_email() -> None:
    upper = desired_bindings(member("Dev@Example.com", "portal-admin"), org(), SSO_PREFIX)
    lower = desired_bindings(member(DEV, "portal-admin"), org(), SSO_PREFIX)
    assert [b.name for b in upper] == [b.name for b in lower]


@pytest.mark.parametrize("context", [None, org(deactivated=True)], ids=["no-org", "deactivated"])
def test_no_bindings_without_an_active_org(context: OrgContext | None) -> None:
    assert desired_bindings(member(OWNER, "organization-admin"), context, SSO_PREFIX) == []


# membership_status


@pytest.mark.parametrize(
    ("context", "state", "ready", "reason"),
    [
        (org(), "Active", "True", "Bound"),
        (org(deactivated=True), "Removed", "True", "OrganizationDeactivated"),
        (None, "Pending", "False", "OrganizationNotFound"),
    ],
    ids=["active", "deactivated", "no-org"],
)
def test_membership_status_state_and_ready_reason_follow_the_org(
    context: OrgContext | None, state: str, ready: str, reason: str
) -> None:
    status = membership_status(
        member(DEV, "portal-admin"), context, MembershipStatus(), generation=3, now=NOW
    )
    (condition,) = status.conditions
    assert (status.state, condition.type, condition.status, condition.reason) == (
        state,
        "Ready",
        ready,
        reason,
    )


def test_active_membership_status_lists_the_effective_teams() -> None:
    status = membership_status(
        member(OWNER, "analytics-viewer"), org(), MembershipStatus(), generation=1, now=NOW
    )
    assert status.effective_teams == ["organization-admin", "analytics-viewer"]


def test_active_membership_ready_message_counts_the_bound_teams() -> None:
    status = membership_status(
        member(OWNER, "analytics-viewer"), org(), MembershipStatus(), generation=1, now=NOW
    )
    assert status.conditions[0].message == "bound to 2 team role(s)"


def test_removed_membership_has_no_effective_teams_and_names_the_org() -> None:
    status = membership_status(
        member(DEV, "portal-admin"),
        org(deactivated=True),
        MembershipStatus(),
        generation=1,
        now=NOW,
    )
    assert status.effective_teams == []
    assert "acme is deactivated" in status.conditions[0].message


def test_pending_membership_says_the_namespace_must_belong_to_an_org() -> None:
    status = membership_status(
        member(DEV, "portal-admin"), None, MembershipStatus(), generation=1, now=NOW
    )
    assert "org-<name>" in status.conditions[0].message


def test_membership_status_records_the_generation_on_status_and_condition() -> None:
    status = membership_status(member(DEV), org(), MembershipStatus(), generation=7, now=NOW)
    assert status.observed_generation == 7
    assert status.conditions[0].observed_generation == 7


def test_membership_status_keeps_the_last_login_time() -> None:
    previous = MembershipStatus(last_login_time=EARLIER)
    status = membership_status(member(DEV), org(), previous, generation=1, now=NOW)
    assert status.last_login_time == EARLIER


def test_membership_status_keeps_ready_transition_time_while_still_ready() -> None:
    previous = MembershipStatus(
        conditions=[
            Condition(
                type="Ready",
                status="True",
                reason="Bound",
                message="member of no team",
                last_transition_time=EARLIER,
            )
        ]
    )
    status = membership_status(
        member(DEV, "portal-admin"), org(deactivated=True), previous, generation=2, now=NOW
    )
    assert status.conditions[0].last_transition_time == EARLIER
