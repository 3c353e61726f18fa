"""The admission rules: each returns None to allow, or one sentence saying what to do instead."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from .membership import OWNER_TEAM, Member, same_email

CLUSTER_ADMIN_GROUP = "system:masters"


def transfer_refusal(
    new_owner: str, old_owner: str | None, members: Sequence[Member]
) -> str | None:
    """Ownership may only move to someone already in organization-admin."""
    if old_owner is None or same_email(new_owner, old_owner):
        return None
    candidate = next((m for m in members if same_email(m.email, new_owner)), None)
    if candidate is not None and OWNER_TEAM in candidate.teams:
        return None
    return (
        f"ownership can't be transferred to {new_owner}: they are not a member of the "
        f"organization-admin team; add organization-admin to their Membership first"
    )


def delete_organization_refusal(
    organization: str, owner: str | None, user: str, groups: Collection[str], sso_prefix: str
) -> str | None:
    """Only the Owner (as themselves or through the identity provider) or a cluster admin."""
    if CLUSTER_ADMIN_GROUP in groups:
        return None
    if owner is not None and (same_email(user, owner) or same_email(user, f"{sso_prefix}{owner}")):
        return None
    return (
        f"only the Owner ({owner or 'none recorded'}) can delete Organization {organization}; "
        "ask them to delete it, or to transfer ownership to you first"
    )


def owner_membership_delete_refusal(email: str, owner: str | None) -> str | None:
    if not same_email(email, owner):
        return None
    return (
        f"{email} is the Owner of this organization, so their Membership can't be deleted; "
        "transfer ownership to another organization-admin first"
    )


def owner_team_removal_refusal(email: str, teams: Collection[str], owner: str | None) -> str | None:
    if not same_email(email, owner) or OWNER_TEAM in teams:
        return None
    return (
        f"{email} is the Owner and always holds organization-admin; transfer ownership first, "
        "then remove the team"
    )


def duplicate_email_refusal(email: str, name: str, members: Sequence[Member]) -> str | None:
    other = next((m for m in members if m.name != name and same_email(m.email, email)), None)
    if other is None:
        return None
    return (
        f"{email} already has Membership {other.name} in this organization; edit that one's "
        "teams instead of creating another"
    )


def locked_email_refusal(owner: str, locking_organizations: Collection[str]) -> str | None:
    if not locking_organizations:
        return None
    orgs = ", ".join(sorted(locking_organizations))
    return (
        f"the e-mail {owner} is locked by deactivated organization {orgs}; set "
        "spec.unlockOwnerEmail: true on it to release the e-mail, or use another owner"
    )
