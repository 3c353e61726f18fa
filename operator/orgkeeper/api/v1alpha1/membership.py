"""Membership: one person's place in an Organization (namespaced, in org-<name>)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from ...names import MEMBERSHIPS
from .common import (
    ApiModel,
    Conditions,
    Email,
    Kind,
    PrinterColumn,
    Team,
    age_column,
    email_validations,
    immutable_rule,
    ready_column,
)

MembershipState = Literal["Active", "Removed", "Pending"]


class MembershipSpec(ApiModel):
    """Who the member is and which teams they belong to."""

    email: Email = Field(
        description="The member's e-mail, which is also their Kubernetes user name; can't be "
        "changed.",
        json_schema_extra=email_validations(
            immutable_rule("email", "delete this Membership and create a new one")
        ),
    )
    teams: list[Team] = Field(
        default_factory=list,
        max_length=5,
        description="Predefined teams; each grants the ClusterRole of the same name in the "
        "organization's namespace.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class MembershipStatus(ApiModel):
    """What the member holds right now."""

    state: MembershipState | None = Field(
        default=None, description="Active, Removed (organization deactivated) or Pending."
    )
    effective_teams: list[Team] = Field(
        default_factory=list,
        max_length=5,
        description="Teams whose roles are bound; the Owner always has organization-admin.",
    )
    last_login_time: datetime | None = Field(default=None, description="The member's last login.")
    conditions: Conditions = Field(default_factory=list)
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation last reconciled."
    )


MEMBERSHIP = Kind(
    kind="Membership",
    plural=MEMBERSHIPS,
    short_names=("mem",),
    scope="Namespaced",
    spec=MembershipSpec,
    status=MembershipStatus,
    description="A person's membership of an Organization and their teams there.",
    printer_columns=(
        PrinterColumn("Email", ".spec.email"),
        # What was asked for (set at once, unlike the status); -o wide adds the teams whose
        # roles are bound (the Owner's include organization-admin; none while Pending or
        # Removed). A column shows a list as JSON: `[*]` would show its first item only.
        PrinterColumn("Teams", ".spec.teams"),
        PrinterColumn("State", ".status.state"),
        ready_column(),
        age_column(),
        PrinterColumn("Effective Teams", ".status.effectiveTeams", priority=1),
        PrinterColumn("Last Login", ".status.lastLoginTime", priority=1),
    ),
)
