"""Admission rules: None allows; a refusal is one sentence that says what to do instead."""

from __future__ import annotations

import inspect

import pytest

from orgkeeper.api.v1alpha1.common import Team
from orgkeeper.domain import admission
from orgkeeper.domain.admission import (
    delete_organization_refusal,
    duplicate_email_refusal,
    locked_email_refusal,
    owner_left,
    owner_membership_delete_refusal,
    owner_team_removal_refusal,
    transfer_refusal,
)
from orgkeeper.domain.membership import Member

OWNER = "owner@example.com"
ADMIN = "admin@example.com"
DEV = "dev@example.com"
SSO_PREFIX = "oidc:"


def member(email: str, *teams: Team, name: str | None = None) -> Member:
    return Member(name=name or email.split("@")[0], email=email, teams=teams)


MEMBERS = (
    member(OWNER, "organization-admin"),
    member(ADMIN, "organization-admin", "portal-admin"),
    member(DEV, "api-product-developer"),
)


# transfer_refusal


@pytest.mark.parametrize(
    ("new_owner", "old_owner"),
    [
        (ADMIN, OWNER),
        ("Admin@Example.COM", OWNER),
        (OWNER, OWNER),
        ("OWNER@example.com", OWNER),
        (DEV, None),
    ],
    ids=["to-admin", "to-admin-other-case", "unchanged", "unchanged-other-case", "first-owner"],
)
def test_transfer_is_allowed_to_an_admin_or_when_nothing_changes(
    new_owner: str, old_owner: str | None
) -> None:
    assert transfer_refusal(new_owner, old_owner, MEMBERS) is None


def test_transfer_to_a_member_outside_organization_admin_is_refused() -> None:
    refusal = transfer_refusal(DEV, OWNER, MEMBERS)
    assert refusal is not None
    assert DEV in refusal
    assert "add organization-admin to their Membership first" in refusal


def test_transfer_to_someone_with_no_membership_says_to_create_one() -> None:
    """Finding 17: the refusal doesn't tell a non-member to edit a Membership they lack."""
    refusal = transfer_refusal("stranger@example.com", OWNER, MEMBERS)
    assert refusal is not None
    assert refusal.startswith("spec.owner: ownership can't be transferred to stranger@example.com")
    assert "they have no Membership in this organization" in refusal
    assert "create a Membership for them with the team organization-admin first" in refusal
    assert "their Membership first" not in refusal


def test_the_owner_may_only_transfer_to_an_admin_and_the_refusal_says_who_may() -> None:
    refusal = transfer_refusal(DEV, OWNER, MEMBERS, support=True)
    assert refusal is not None
    assert refusal.startswith("spec.owner: ")
    assert "the Owner may transfer ownership only to an organization-admin" in refusal


@pytest.mark.parametrize("new_owner", [DEV, "newcomer@example.com"])
def test_once_the_owner_left_support_may_transfer_to_any_email(new_owner: str) -> None:
    left = MEMBERS[1:]
    assert owner_left(OWNER, left)
    assert transfer_refusal(new_owner, OWNER, left, support=True) is None


def test_once_the_owner_left_others_still_transfer_only_to_an_admin() -> None:
    left = MEMBERS[1:]
    assert transfer_refusal(ADMIN, OWNER, left) is None
    refusal = transfer_refusal("newcomer@example.com", OWNER, left)
    assert refusal is not None
    assert f"the Owner {OWNER} left, so support (orgkeeper-support) may also" in refusal


def test_owner_left_is_false_while_the_owner_has_a_membership() -> None:
    assert not owner_left(OWNER, MEMBERS)
    assert not owner_left(None, ())


@pytest.mark.parametrize("support", [False, True])
def test_a_transfer_to_a_locked_email_is_refused_even_for_support(support: bool) -> None:
    """L9: a locked e-mail can't become an Owner by transfer either, even an admin's."""
    refusal = transfer_refusal(
        ADMIN, OWNER, MEMBERS[1:], locking_organizations=["old-acme"], support=support
    )
    assert refusal is not None
    assert refusal.startswith("spec.owner: ")
    assert f"{ADMIN}: the e-mail is locked by deactivated organization old-acme" in refusal
    assert "only support (orgkeeper-support) releases it" in refusal


def test_keeping_the_owner_is_allowed_even_when_their_email_is_locked() -> None:
    assert transfer_refusal(OWNER, OWNER, MEMBERS, locking_organizations=["old"]) is None


# delete_organization_refusal


@pytest.mark.parametrize(
    "user", [OWNER, "Owner@Example.com", "oidc:owner@example.com"], ids=["email", "case", "sso"]
)
def test_owner_may_delete_the_organization(user: str) -> None:
    assert delete_organization_refusal("acme", OWNER, user, SSO_PREFIX, support=False) is None


def test_owner_may_delete_under_the_configured_sso_prefix() -> None:
    user = "corp-sso:owner@example.com"
    assert delete_organization_refusal("acme", OWNER, user, "corp-sso:", support=False) is None


@pytest.mark.parametrize("owner", [OWNER, None], ids=["with-owner", "without-owner"])
@pytest.mark.parametrize(
    "user", ["kubernetes-admin", "system:serviceaccount:argocd:argocd-application-controller"]
)
def test_support_may_delete_any_organization(owner: str | None, user: str) -> None:
    """Support is the SubjectAccessReview's answer for the verb `support`: RBAC cluster-admins,
    orgkeeper-support, a GitOps controller granted it."""
    assert delete_organization_refusal("acme", owner, user, SSO_PREFIX, support=True) is None


@pytest.mark.parametrize(
    "user",
    [ADMIN, DEV, "oidc:admin@example.com", "corp-sso:owner@example.com", "system:admin"],
)
def test_anyone_but_the_owner_or_support_is_refused_deleting_the_organization(user: str) -> None:
    refusal = delete_organization_refusal("acme", OWNER, user, SSO_PREFIX, support=False)
    assert refusal == (
        "only the Owner of Organization acme or support (orgkeeper-support) can delete it: ask "
        "the Owner to delete it or to transfer ownership to you first, or ask support; "
        "cluster-admins and GitOps controllers count as support once they hold the verb "
        "support on organizations"
    )
    assert "@" not in refusal  # no one's e-mail


def test_no_group_is_trusted_by_name() -> None:
    """system:masters was trusted by name; now only the SubjectAccessReview's answer counts
    (it allows system:masters too, as the API server's own authorizer does)."""
    signature = inspect.signature(delete_organization_refusal)
    assert "groups" not in signature.parameters
    assert not hasattr(admission, "CLUSTER_ADMIN_GROUP")


@pytest.mark.parametrize("user", ["oidc:owner@example.com", "oidc:Owner@Example.com"])
def test_the_owner_of_an_sso_only_org_deletes_it_through_the_identity_provider(user: str) -> None:
    assert (
        delete_organization_refusal("acme", OWNER, user, SSO_PREFIX, support=False, sso_only=True)
        is None
    )


def test_the_owner_of_an_sso_only_org_is_refused_without_an_sso_session() -> None:
    refusal = delete_organization_refusal(
        "acme", OWNER, OWNER, SSO_PREFIX, support=False, sso_only=True
    )
    assert refusal == (
        "Organization acme is SSO-only (spec.ssoOnly): its Owner owner@example.com deletes it "
        "through the identity provider, signed in as oidc:owner@example.com, not as "
        "owner@example.com"
    )


# owner_membership_delete_refusal


@pytest.mark.parametrize(("email", "owner"), [(DEV, OWNER), (OWNER, None)])
def test_deleting_a_membership_that_is_not_the_owners_is_allowed(
    email: str, owner: str | None
) -> None:
    assert owner_membership_delete_refusal(email, owner) is None


@pytest.mark.parametrize("email", [OWNER, "Owner@Example.COM"])
def test_deleting_the_owners_membership_is_refused(email: str) -> None:
    refusal = owner_membership_delete_refusal(email, OWNER)
    assert refusal is not None
    assert "can't be deleted" in refusal
    assert "transfer ownership to another organization-admin first" in refusal


# owner_team_removal_refusal


@pytest.mark.parametrize(
    ("email", "teams"),
    [
        (OWNER, ["organization-admin"]),
        (OWNER, ["portal-admin", "organization-admin"]),
        (DEV, []),
        (DEV, ["portal-admin"]),
    ],
)
def test_teams_that_keep_the_owner_in_organization_admin_are_allowed(
    email: str, teams: list[str]
) -> None:
    assert owner_team_removal_refusal(email, teams, OWNER) is None


@pytest.mark.parametrize("teams", [[], ["portal-admin", "analytics-viewer"]])
def test_removing_organization_admin_from_the_owner_is_refused(teams: list[str]) -> None:
    refusal = owner_team_removal_refusal("OWNER@example.com", teams, OWNER)
    assert refusal is not None
    assert "always holds organization-admin" in refusal
    assert "transfer ownership first" in refusal


def test_removing_teams_is_allowed_when_the_org_has_no_owner() -> None:
    assert owner_team_removal_refusal(OWNER, [], None) is None


# duplicate_email_refusal


@pytest.mark.parametrize(
    ("email", "name"),
    [("new@example.com", "new"), (DEV, "dev")],
    ids=["new-email", "same-membership-updated"],
)
def test_a_membership_with_an_unused_email_or_its_own_is_allowed(email: str, name: str) -> None:
    assert duplicate_email_refusal(email, name, MEMBERS) is None


@pytest.mark.parametrize("email", [DEV, "DEV@example.com"])
def test_a_second_membership_for_the_same_email_is_refused(email: str) -> None:
    refusal = duplicate_email_refusal(email, "dev-again", MEMBERS)
    assert refusal is not None
    assert "already has Membership dev" in refusal
    assert "edit that one's teams instead" in refusal


# locked_email_refusal


def test_an_owner_email_without_locking_organizations_is_allowed() -> None:
    assert locked_email_refusal(OWNER, []) is None


def test_an_owner_email_locked_by_a_deactivated_org_is_refused() -> None:
    refusal = locked_email_refusal(OWNER, ["old-acme"])
    assert refusal is not None
    assert OWNER in refusal
    assert "old-acme" in refusal
    assert "spec.unlockOwnerEmail: true" in refusal
    assert refusal.startswith("spec.owner: ")
    assert "only support (orgkeeper-support) releases it" in refusal


def test_locked_email_refusal_lists_the_locking_organizations_sorted() -> None:
    refusal = locked_email_refusal(OWNER, {"zeta", "alpha"})
    assert refusal is not None
    assert "alpha, zeta" in refusal
