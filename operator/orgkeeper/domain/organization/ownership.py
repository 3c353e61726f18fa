"""Ownership: exactly one Owner, who may take over, the Owner's Membership and rights, and
the Events a transfer or a problem with the Owner tells."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ...api.v1alpha1 import GROUP
from ...api.v1alpha1.organization import (
    OrganizationStatus,
)
from .. import conditions
from ..events import Event
from ..membership import (
    OWNER_TEAM,
    Member,
    same_email,
)


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
