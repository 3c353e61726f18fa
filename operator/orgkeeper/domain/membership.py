"""Memberships: which RoleBindings a member should hold and what their status says."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

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
    organization: str
    membership: str
    email: str
    team: Team
    users: tuple[str, ...]  # the subjects: user_names of the member's e-mail

    @property
    def cluster_role(self) -> str:
        return names.team_cluster_role(self.team)

    @property
    def labels(self) -> dict[str, str]:
        """What finds it again: the member RoleBinding informer selects on these."""
        return {
            names.LABEL_MANAGED_BY: names.MANAGED_BY,
            names.LABEL_ORGANIZATION: self.organization,
            names.LABEL_MEMBERSHIP: self.membership,
            names.LABEL_EMAIL_HASH: names.email_hash(self.email),
            names.LABEL_TEAM: self.team,
            **names.shard_slot_label(self.organization),
        }


class FoundMembership(Protocol):
    """A Membership as the cache holds it: what its reconcile reads."""

    @property
    def name(self) -> str: ...
    @property
    def uid(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def status(self) -> Mapping[str, Any]: ...
    @property
    def last_login(self) -> datetime | None: ...
    def member(self) -> Member: ...


class FoundBinding(Protocol):
    """A member RoleBinding as the cache holds it."""

    @property
    def name(self) -> str: ...
    @property
    def users(self) -> tuple[str, ...]: ...
    @property
    def role(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def owners(self) -> tuple[str, ...]: ...  # ownerReference UIDs


@dataclass(frozen=True)
class MembershipsPlan:
    """What the Memberships of one org namespace and their RoleBindings need written."""

    bindings: tuple[Binding, ...] = ()  # missing or drifted: created, or repaired
    stale_bindings: tuple[str, ...] = ()  # RoleBindings no Membership asks for: deleted
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # by Membership
    # By Membership: its status once its RoleBindings are written.
    statuses: Mapping[str, MembershipStatus] = field(default_factory=dict)


def user_names(email: str, *, sso_only: bool, sso_prefix: str) -> tuple[str, ...]:
    """The Kubernetes users a person is bound as (members' RoleBindings, the Owner's rights):
    in an ordinary org every login the cluster offers, the bare e-mail and the identity
    provider's `<sso_prefix><e-mail>`; in an SSO-only org only the identity provider's.

    Always the lower-cased e-mail: RBAC compares user names exactly, so the cluster's
    authenticators are expected to present e-mails lower-cased (the README's SSO section).
    """
    address = email.strip().lower()
    sso = f"{sso_prefix}{address}"
    return (sso,) if sso_only else (address, sso)


def is_user(user: str, email: str | None, *, sso_only: bool, sso_prefix: str) -> bool:
    """Whether `user` is one of the names `email` is bound as (case ignored)."""
    if email is None:
        return False
    candidates = user_names(email, sso_only=sso_only, sso_prefix=sso_prefix)
    return user.strip().lower() in {candidate.lower() for candidate in candidates}


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
    users = user_names(member.email, sso_only=org.sso_only, sso_prefix=sso_prefix)
    return [
        Binding(
            name=names.member_binding(member.email, team),
            organization=org.name,
            membership=member.name,
            email=member.email,
            team=team,
            users=users,
        )
        for team in effective_teams(member, org)
    ]


def membership_labels(organization: str, email: str) -> dict[str, str]:
    """The labels a Membership carries: its org, its e-mail's hash (for lookups by e-mail),
    and its org's shard slot (a shard selects its Memberships by it)."""
    return {
        names.LABEL_ORGANIZATION: organization,
        names.LABEL_EMAIL_HASH: names.email_hash(email),
        **names.shard_slot_label(organization),
    }


def drifted(found: FoundBinding, binding: Binding, membership_uid: str) -> bool:
    """Subjects, role, labels or owner differ from what the Membership asks for."""
    return (
        found.users != binding.users
        or found.role != binding.cluster_role
        or dict(found.labels) != binding.labels
        or membership_uid not in found.owners
    )


def plan_memberships(
    org: OrgContext | None,
    memberships: Sequence[FoundMembership],
    bindings: Sequence[FoundBinding],
    *,
    sso_prefix: str,
    now: datetime,
) -> MembershipsPlan:
    """Labels, RoleBindings and status of every Membership of a namespace (None: no org there,
    its Memberships wait as Pending and hold no RoleBinding); only differences are written."""
    members = [(found, found.member()) for found in memberships]
    desired: dict[str, tuple[Binding, FoundMembership]] = {}
    for found, member in members:
        for binding in desired_bindings(member, org, sso_prefix):
            desired[binding.name] = (binding, found)
    existing = {b.name: b for b in bindings}
    labels: dict[str, Mapping[str, str]] = {}
    for found, member in members:
        wanted = membership_labels(org.name, member.email) if org is not None else {}
        if any(found.labels.get(key) != value for key, value in wanted.items()):
            labels[found.name] = wanted
    return MembershipsPlan(
        bindings=tuple(
            binding
            for name, (binding, found) in desired.items()
            if name not in existing or drifted(existing[name], binding, found.uid)
        ),
        stale_bindings=tuple(sorted(existing.keys() - desired.keys())),
        labels=labels,
        statuses={
            found.name: membership_status(
                member,
                org,
                MembershipStatus.model_validate(found.status),
                generation=found.generation,
                now=now,
            )
            for found, member in members
        },
    )


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
