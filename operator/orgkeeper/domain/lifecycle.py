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


# A reactivation request stamped a little ahead of the operator's clock still counts.
CLOCK_SKEW = timedelta(minutes=5)


def last_activity(
    created: datetime,
    logins: Iterable[datetime | None],
    *,
    reactivated_at: datetime | None,
) -> datetime:
    """The latest of creation, any member's login, and the last reactivation.

    A new org isn't idle, and neither is one just reactivated: its members could not log in
    while it was deactivated. spec.reactivationRequestedAt counts only through the
    reactivation it causes (reactivated_at): as such it could be set ahead, to keep an
    Active org from ever going inactive.
    """
    moments = [created, *(t for t in logins if t is not None)]
    if reactivated_at is not None:
        moments.append(reactivated_at)
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


def assess(
    spec: OrganizationSpec,
    status: OrganizationStatus,
    *,
    created: datetime,
    logins: Iterable[datetime | None],
    activity: Activity,
    now: datetime,
    window: timedelta,
) -> Lifecycle:
    """Where the org should be now, from everything the inactivity rule counts: its creation,
    its members' logins, its last reactivation and its API requests (`activity`, with the
    counters of the current billing cycle)."""
    last_active = last_activity(created, logins, reactivated_at=reactivated_at(status))
    idle = inactive(spec, activity, last_active, now=now, window=window)
    return decide(spec, status, idle=idle, now=now)


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
    if reactivation_requested(spec, current, now):
        return Lifecycle("Active", None, reactivated=True)
    return Lifecycle("Deactivated", current)


def reactivation_requested(
    spec: OrganizationSpec, deactivation: Deactivation, now: datetime
) -> bool:
    """A requested deactivation ends with spec.state Active; one for inactivity with a
    reactivationRequestedAt after it began. A request dated in the future is not made yet:
    else a stale future time would undo every later deactivation for inactivity."""
    if deactivation.reason == "Requested":
        return spec.state == "Active"
    due = reactivation_due(spec, deactivation)
    return due is not None and due <= now


def reactivation_due(spec: OrganizationSpec, deactivation: Deactivation | None) -> datetime | None:
    """The moment an inactivity deactivation's reactivation request counts from: its time less
    the clock skew, so one dated a little ahead counts at once and one far ahead waits (see
    reactivation_requested). None without such a request."""
    requested = spec.reactivation_requested_at
    if (
        deactivation is None
        or deactivation.reason != "Inactive"
        or spec.state != "Active"
        or requested is None
        or requested <= deactivation.at
    ):
        return None
    return requested - CLOCK_SKEW


# Which lifecycle Event may follow which. A reconcile may read an org a moment older than its
# own last status write (another change woke it first), and would tell the same transition
# again; a transition is told only if it can follow the one told last.
LIFECYCLE_EVENTS: dict[str | None, frozenset[str]] = {
    None: frozenset({"Deactivating", "Deactivated", "Reactivated"}),
    "Deactivating": frozenset({"Deactivated", "Reactivated"}),
    "Deactivated": frozenset({"Reactivated"}),
    "Reactivated": frozenset({"Deactivating", "Deactivated"}),
}


def untold_transitions(last: str | None, reasons: Iterable[str]) -> tuple[list[bool], str | None]:
    """For each Event reason, whether to post it; and the lifecycle transition told last after
    them. Reasons that are no lifecycle transition are always posted."""
    keep = []
    for reason in reasons:
        if reason not in LIFECYCLE_EVENTS[None]:
            keep.append(True)
            continue
        new = reason in LIFECYCLE_EVENTS[last]
        keep.append(new)
        if new:
            last = reason
    return keep, last
