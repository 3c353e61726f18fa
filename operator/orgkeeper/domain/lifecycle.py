"""Deactivation and reactivation: whether an org should be active, and why."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from ..api.v1alpha1.organization import Activity, Deactivation, OrganizationSpec, OrganizationStatus
from . import conditions

Target = Literal["Active", "Deactivated"]


@dataclass(frozen=True)
class Lifecycle:
    """Where the org should be; `deactivation` is what status.deactivation should say."""

    target: Target
    deactivation: Deactivation | None
    started: bool = False  # deactivation begins with this reconcile
    reactivated: bool = False  # reactivation begins with this reconcile


def last_activity(
    created: datetime,
    logins: Iterable[datetime | None],
    reactivation_requested_at: datetime | None,
    *,
    reactivated_at: datetime | None,
) -> datetime:
    """The latest of creation, any member's login, and a reactivation requested or done.

    A new org isn't idle, and neither is one just reactivated: its members could not log in
    while it was deactivated.
    """
    moments = [created, *(t for t in logins if t is not None)]
    moments += [t for t in (reactivation_requested_at, reactivated_at) if t is not None]
    return max(moments)


def reactivated_at(status: OrganizationStatus) -> datetime | None:
    """When the org last became active again (the Deactivated condition turning False)."""
    found = conditions.find(status.conditions, "Deactivated")
    return found.last_transition_time if found is not None and found.status == "False" else None


def inactive(
    spec: OrganizationSpec,
    activity: Activity,
    last_active: datetime,
    *,
    now: datetime,
    window: timedelta,
) -> bool:
    """A Free org with no login in the window and no API request this or last billing cycle."""
    requests = activity.api_requests
    return (
        spec.plan == "Free"
        and now - last_active >= window
        and requests.current_cycle == 0
        and requests.previous_cycle == 0
    )


def decide(
    spec: OrganizationSpec,
    status: OrganizationStatus,
    *,
    idle: bool,
    now: datetime,
) -> Lifecycle:
    current = status.deactivation
    if current is None:
        if spec.state == "Deactivated":
            return Lifecycle("Deactivated", Deactivation(at=now, reason="Requested"), started=True)
        if idle:
            return Lifecycle("Deactivated", Deactivation(at=now, reason="Inactive"), started=True)
        return Lifecycle("Active", None)
    if reactivation_requested(spec, current):
        return Lifecycle("Active", None, reactivated=True)
    return Lifecycle("Deactivated", current)


def reactivation_requested(spec: OrganizationSpec, deactivation: Deactivation) -> bool:
    if deactivation.reason == "Requested":
        return spec.state == "Active"
    requested = spec.reactivation_requested_at
    return spec.state == "Active" and requested is not None and requested > deactivation.at
