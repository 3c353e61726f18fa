"""Memberships: which RoleBindings a member should hold and what their status says."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from .. import names
from ..api.v1alpha1 import TEAMS
from ..api.v1alpha1.common import Condition, Team
from ..api.v1alpha1.membership import MembershipStatus
from ..names import same_email as same_email  # the domain's rule, kept importable here
from . import conditions

OWNER_TEAM: Team = "organization-admin"


@dataclass(frozen=True)
class OrgContext:
    """The slice of an Organization that its memberships depend on."""

    name: str
    owner: str | None
    sso_only: bool
    deactivated: bool
    region: str


@dataclass(frozen=True)
class Member:
    """A Membership as the domain sees it."""

    name: str
    email: str
    teams: tuple[Team, ...]


@dataclass(frozen=True)
class Binding:
    """One RoleBinding in the org namespace: a member's user bound to a team's ClusterRole."""

    name: str
    membership: str
    email: str
    team: Team
    user: str

    @property
    def cluster_role(self) -> str:
        return names.team_cluster_role(self.team)


def user_name(email: str, org: OrgContext, sso_prefix: str) -> str:
    """The Kubernetes user a member is bound as: the IdP's name for SSO-only orgs."""
    return f"{sso_prefix}{email}" if org.sso_only else email


def effective_teams(member: Member, org: OrgContext | None) -> list[Team]:
    """The teams whose roles the member holds, in the canonical team order."""
    if org is None or org.deactivated:
        return []
    held = set(member.teams)
    if same_email(member.email, org.owner):
        held.add(OWNER_TEAM)
    return [team for team in TEAMS if team in held]


def desired_bindings(member: Member, org: OrgContext | None, sso_prefix: str) -> list[Binding]:
    if org is None:
        return []
    user = user_name(member.email, org, sso_prefix)
    return [
        Binding(names.member_binding(member.email, team), member.name, member.email, team, user)
        for team in effective_teams(member, org)
    ]


def membership_state(org: OrgContext | None) -> Literal["Active", "Removed", "Pending"]:
    if org is None:
        return "Pending"
    return "Removed" if org.deactivated else "Active"


def membership_status(
    member: Member,
    org: OrgContext | None,
    previous: MembershipStatus,
    *,
    generation: int,
    now: datetime,
) -> MembershipStatus:
    state = membership_state(org)
    teams = effective_teams(member, org)
    if state == "Active":
        ready, reason = True, "Bound"
        message = f"bound to {len(teams)} team role(s)" if teams else "member of no team"
    elif state == "Removed":
        ready, reason = True, "OrganizationDeactivated"
        message = f"organization {org.name if org else ''} is deactivated; teams and roles removed"
    else:
        ready, reason = False, "OrganizationNotFound"
        message = (
            "no Organization exists for this namespace yet (org-<name> is Organization <name>'s); "
            "this Membership takes effect once that Organization is created"
        )
    updated: Sequence[Condition] = conditions.put(
        previous.conditions, "Ready", ready, reason, message, generation=generation, now=now
    )
    return MembershipStatus(
        state=state,
        effective_teams=teams,
        last_login_time=previous.last_login_time,
        conditions=list(updated),
        observed_generation=generation,
    )
