"""The admission rules: each returns None to allow, or one sentence saying what to do instead."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from .membership import OWNER_TEAM, Member, is_user, same_email

SUPPORT = "support (orgkeeper-support)"


def signup_limit_refusal(
    owner: str, owned: Collection[str], limit: int, *, support: bool = False
) -> str | None:
    """Self-service sign-up is bounded per owner e-mail; support creates orgs beyond it."""
    if len(owned) < limit or support:
        return None
    return (
        f"spec.owner: {owner} already owns {len(owned)} Organizations, the limit per owner "
        f"e-mail for sign-up (--orgs-per-owner, ORGKEEPER_ORGS_PER_OWNER: {limit}); delete one "
        f"first, or ask {SUPPORT}, who may create more"
    )


def owner_left(owner: str | None, members: Sequence[Member]) -> bool:
    """The Owner has no Membership any more (they left without a transfer)."""
    return owner is not None and not any(same_email(m.email, owner) for m in members)


def transfer_refusal(
    new_owner: str,
    old_owner: str | None,
    members: Sequence[Member],
    *,
    locking_organizations: Collection[str] = (),
    support: bool = False,
) -> str | None:
    """Ownership moves to an organization-admin; support may move it anywhere once the Owner
    left. Never to an e-mail a deactivated org locks, as for a new org."""
    if old_owner is None or same_email(new_owner, old_owner):
        return None
    if locking_organizations:
        orgs = ", ".join(sorted(locking_organizations))
        return (
            f"spec.owner: ownership can't be transferred to {new_owner}: the e-mail is locked by "
            f"deactivated organization {orgs}; only {SUPPORT} releases it, with "
            "spec.unlockOwnerEmail: true on that organization; or pick another Owner"
        )
    candidate = next((m for m in members if same_email(m.email, new_owner)), None)
    if candidate is not None and OWNER_TEAM in candidate.teams:
        return None
    left = owner_left(old_owner, members)
    if left and support:
        return None
    who = (
        f"the Owner {old_owner} left, so {SUPPORT} may also transfer it to any e-mail"
        if left
        else "the Owner may transfer ownership only to an organization-admin"
    )
    if candidate is None:
        return (
            f"spec.owner: ownership can't be transferred to {new_owner}: they have no Membership "
            "in this organization; create a Membership for them with the team "
            f"organization-admin first, then transfer ({who})"
        )
    return (
        f"spec.owner: ownership can't be transferred to {new_owner}: they are not a member of "
        f"the organization-admin team; add organization-admin to their Membership first ({who})"
    )


def delete_organization_refusal(
    organization: str,
    owner: str | None,
    user: str,
    sso_prefix: str,
    *,
    support: bool,
    sso_only: bool = False,
) -> str | None:
    """The Owner deletes, under a user name the org binds them as (membership.user_names: only
    through the identity provider in an SSO-only org), and support: whoever holds the verb
    `support` on the org (asked by SubjectAccessReview, so RBAC cluster-admins and a GitOps
    controller granted it count). No group is trusted by name."""
    if support or is_user(user, owner, sso_only=sso_only, sso_prefix=sso_prefix):
        return None
    if owner is not None and is_user(user, owner, sso_only=False, sso_prefix=sso_prefix):
        return (
            f"Organization {organization} is SSO-only (spec.ssoOnly): its Owner {owner} deletes "
            f"it through the identity provider, signed in as {sso_prefix}{owner.lower()}, "
            f"not as {user}"
        )
    return (
        f"only the Owner of Organization {organization} or {SUPPORT} can delete it: ask the "
        "Owner to delete it or to transfer ownership to you first, or ask support; "
        "cluster-admins and GitOps controllers count as support once they hold the verb "
        "support on organizations"
    )


def owner_membership_delete_refusal(email: str, owner: str | None) -> str | None:
    if not same_email(email, owner):
        return None
    return (
        f"{email} is the Owner of this organization, so their Membership can't be deleted; "
        "transfer ownership to another organization-admin first (the Owner, or support, sets "
        "spec.owner on the Organization)"
    )


def owner_team_removal_refusal(email: str, teams: Collection[str], owner: str | None) -> str | None:
    if not same_email(email, owner) or OWNER_TEAM in teams:
        return None
    return (
        f"spec.teams: {email} is the Owner and always holds organization-admin; transfer "
        "ownership first (the Owner sets spec.owner on the Organization), then remove the team"
    )


def duplicate_email_refusal(email: str, name: str, members: Sequence[Member]) -> str | None:
    other = next((m for m in members if m.name != name and same_email(m.email, email)), None)
    if other is None:
        return None
    return (
        f"spec.email: {email} already has Membership {other.name} in this organization; edit "
        "that one's teams instead of creating another (organization-admins may)"
    )


def locked_email_refusal(owner: str, locking_organizations: Collection[str]) -> str | None:
    if not locking_organizations:
        return None
    orgs = ", ".join(sorted(locking_organizations))
    return (
        f"spec.owner: the e-mail {owner} is locked by deactivated organization {orgs}; only "
        f"{SUPPORT} releases it, by setting spec.unlockOwnerEmail: true on that organization; "
        "or use another owner"
    )


def unserved_region_warning(
    region: str, *, own_region: str | None, live_leases: Collection[str], leases: Sequence[str]
) -> str | None:
    """A warning (not a refusal) for a new Organization no running operator will serve.

    Served: by this operator (no --region, or the org's), else by whoever holds one of `leases`
    (the all-regions Lease and the region's) live now (`live_leases`). Operators without
    --leader-elect hold no Lease, so one of those elsewhere goes unseen."""
    if own_region is None or own_region == region or set(leases) & set(live_leases):
        return None
    return (
        f"spec.region: no orgkeeper operator serves region {region} now (no live Lease "
        f"{' or '.join(leases)}); the Organization is kept but gets no namespace, roles or "
        f"status until an operator with --region={region} (or without --region) runs"
    )
