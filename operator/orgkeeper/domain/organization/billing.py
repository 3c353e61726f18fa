"""Billing: one subscription per product of the plan, cycles that roll the request counters,
the Plus trial, and billing stopped while deactivated."""

from __future__ import annotations

from datetime import datetime, timedelta

from ...api.v1alpha1 import PRODUCTS
from ...api.v1alpha1.organization import (
    Activity,
    ApiRequests,
    Billing,
    OrganizationSpec,
    OrganizationStatus,
    Subscription,
    Trial,
)

PLUS_TRIAL = timedelta(days=30)


PLUS_TRIAL_CREDITS = 500


def billing(spec: OrganizationSpec, previous: Billing | None, now: datetime) -> Billing:
    """Billing for an active org: one subscription per product of its plan."""
    started = previous.cycle_start if previous and previous.cycle_start else now
    names = [f"{spec.plan.lower()}-{product}" for product in PRODUCTS]
    kept = (
        {s.name: s for s in previous.subscriptions}
        if previous and previous.state != "Stopped"
        else {}
    )
    subscriptions = [kept.get(name) or Subscription(name=name, started_at=now) for name in names]
    return Billing(state="Active", cycle_start=started, subscriptions=subscriptions)


def trial(spec: OrganizationSpec, created: datetime) -> Trial | None:
    if spec.plan != "Plus":
        return None
    return Trial(ends_at=created + PLUS_TRIAL, credits=PLUS_TRIAL_CREDITS)


def roll_billing_cycle(
    billing_state: Billing, activity: Activity, cycle: timedelta, now: datetime
) -> tuple[Billing, Activity]:
    """Moves the request counters on when one or more billing cycles have ended."""
    start = billing_state.cycle_start or now
    elapsed = int((now - start) / cycle) if now > start else 0
    if elapsed == 0:
        return billing_state, activity
    requests = activity.api_requests
    previous = requests.current_cycle if elapsed == 1 else 0
    rolled = activity.model_copy(
        update={"api_requests": ApiRequests(current_cycle=0, previous_cycle=previous)}
    )
    return billing_state.model_copy(update={"cycle_start": start + elapsed * cycle}), rolled


def current_cycle(
    status: OrganizationStatus, cycle: timedelta, now: datetime
) -> tuple[Billing | None, Activity]:
    """The billing and activity found, moved on to the cycle `now` is in (no billing yet: the
    first cycle starts now, nothing to move)."""
    activity = status.activity or Activity()
    if status.billing is None:
        return None, activity
    return roll_billing_cycle(status.billing, activity, cycle, now)


def billing_of(
    spec: OrganizationSpec,
    rolled: Billing | None,
    *,
    created: datetime,
    now: datetime,
    deactivated: bool,
) -> Billing:
    """Stopped while deactivated (the cycle kept); else a subscription per product of the plan,
    in its trial while that lasts. `rolled`: the billing found, moved on to the current cycle."""
    if deactivated:
        start = rolled.cycle_start if rolled else None
        return Billing(state="Stopped", cycle_start=start, subscriptions=[])
    billed = billing(spec, rolled, now)
    trial_state = trial(spec, created)
    if trial_state is not None and now < trial_state.ends_at:
        return billed.model_copy(update={"state": "Trial"})
    return billed
