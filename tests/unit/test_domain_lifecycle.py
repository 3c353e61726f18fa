"""Deactivation and reactivation: last activity, the inactivity rule and the lifecycle decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orgkeeper.api.v1alpha1.organization import (
    Activity,
    ApiRequests,
    Deactivation,
    OrganizationSpec,
    OrganizationStatus,
    OrgState,
    Plan,
)
from orgkeeper.domain.lifecycle import (
    Lifecycle,
    decide,
    inactive,
    last_activity,
    reactivated_at,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(days=30)
CREATED = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
DEACTIVATED_AT = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)


def spec(
    plan: Plan = "Free",
    *,
    state: OrgState = "Active",
    reactivation_requested_at: datetime | None = None,
) -> OrganizationSpec:
    return OrganizationSpec(
        display_name="Acme",
        plan=plan,
        region="eu",
        owner="owner@example.com",
        state=state,
        reactivation_requested_at=reactivation_requested_at,
    )


def requests(current: int = 0, previous: int = 0) -> Activity:
    return Activity(api_requests=ApiRequests(current_cycle=current, previous_cycle=previous))


def deactivated(reason: str, at: datetime = DEACTIVATED_AT) -> OrganizationStatus:
    return OrganizationStatus.model_validate(
        {"phase": "Deactivated", "deactivation": {"at": at, "reason": reason}}
    )


ACTIVE_STATUS = OrganizationStatus(phase="Active")


def reactivated(at: datetime) -> OrganizationStatus:
    """The status a reconcile writes when it reactivates: Deactivated turns False at `at`."""
    condition = {
        "type": "Deactivated",
        "status": "False",
        "reason": "Active",
        "lastTransitionTime": at,
    }
    return OrganizationStatus.model_validate({"phase": "Active", "conditions": [condition]})


# last_activity


def test_last_activity_of_an_org_without_logins_is_its_creation() -> None:
    assert last_activity(CREATED, [], reactivated_at=None) == CREATED


def test_last_activity_is_the_latest_login() -> None:
    logins = [
        CREATED + timedelta(days=3),
        CREATED + timedelta(days=40),
        CREATED + timedelta(days=9),
    ]
    assert last_activity(CREATED, logins, reactivated_at=None) == CREATED + timedelta(days=40)


def test_last_activity_ignores_members_that_never_logged_in() -> None:
    login = CREATED + timedelta(days=5)
    assert last_activity(CREATED, [None, login, None], reactivated_at=None) == login


def test_last_activity_with_only_never_logged_in_members_is_the_creation() -> None:
    assert last_activity(CREATED, [None, None], reactivated_at=None) == CREATED


def test_last_activity_counts_a_reactivation_after_the_last_login() -> None:
    login = CREATED + timedelta(days=5)
    reactivation = CREATED + timedelta(days=200)
    assert last_activity(CREATED, [login], reactivated_at=reactivation) == reactivation


def test_last_activity_keeps_a_login_later_than_the_reactivation() -> None:
    reactivation = CREATED + timedelta(days=200)
    login = reactivation + timedelta(hours=2)
    assert last_activity(CREATED, [login, None], reactivated_at=reactivation) == login


def test_a_future_reactivation_request_does_not_keep_an_active_org_from_going_inactive() -> None:
    """M1: reactivationRequestedAt a year ahead on an Active org is no activity."""
    org_spec = spec(reactivation_requested_at=NOW + timedelta(days=365))
    plan = reconcile(org_spec, ACTIVE_STATUS, now=NOW)
    assert plan.target == "Deactivated" and plan.started
    assert plan.deactivation == Deactivation(at=NOW, reason="Inactive")


def test_a_future_reactivation_request_does_not_undo_the_next_inactivity() -> None:
    """Nor does it reactivate the deactivation that follows, until its time has come."""
    org_spec = spec(reactivation_requested_at=NOW + timedelta(days=365))
    plan = decide(org_spec, deactivated("Inactive", at=NOW), idle=True, now=NOW)
    assert (plan.target, plan.reactivated) == ("Deactivated", False)


def test_a_reactivation_request_a_little_ahead_of_the_clock_counts() -> None:
    org_spec = spec(reactivation_requested_at=NOW + timedelta(minutes=2))
    plan = decide(org_spec, deactivated("Inactive"), idle=False, now=NOW)
    assert plan.reactivated


def test_last_activity_is_never_before_creation() -> None:
    """Clock skew or a stale login must not make an org look older than it is."""
    before = CREATED - timedelta(days=10)
    assert last_activity(CREATED, [before], reactivated_at=before) == CREATED


# inactive


def test_free_org_without_login_or_requests_past_the_window_is_inactive() -> None:
    assert inactive(
        spec("Free"), requests(), NOW - WINDOW - timedelta(days=1), now=NOW, window=WINDOW
    )


def test_exactly_at_the_window_boundary_counts_as_inactive() -> None:
    assert inactive(spec("Free"), requests(), NOW - WINDOW, now=NOW, window=WINDOW)


def test_a_login_just_inside_the_window_keeps_the_org_active() -> None:
    last = NOW - WINDOW + timedelta(seconds=1)
    assert not inactive(spec("Free"), requests(), last, now=NOW, window=WINDOW)


def test_a_recent_login_keeps_the_org_active() -> None:
    assert not inactive(spec("Free"), requests(), NOW - timedelta(days=2), now=NOW, window=WINDOW)


@pytest.mark.parametrize("plan", ["Plus", "Enterprise"])
def test_paid_plans_are_never_inactive(plan: Plan) -> None:
    long_ago = NOW - 10 * WINDOW
    assert not inactive(spec(plan), requests(), long_ago, now=NOW, window=WINDOW)


@pytest.mark.parametrize(
    ("current", "previous"),
    [(1, 0), (0, 1), (250, 0), (0, 250), (3, 4)],
    ids=["one-current", "one-previous", "current-only", "previous-only", "both"],
)
def test_api_requests_in_the_current_or_previous_cycle_keep_the_org_active(
    current: int, previous: int
) -> None:
    long_ago = NOW - 3 * WINDOW
    assert not inactive(spec("Free"), requests(current, previous), long_ago, now=NOW, window=WINDOW)


def test_the_window_is_configurable() -> None:
    window = timedelta(minutes=5)
    assert inactive(spec("Free"), requests(), NOW - window, now=NOW, window=window)
    assert not inactive(
        spec("Free"), requests(), NOW - window + timedelta(seconds=1), now=NOW, window=window
    )


def test_last_login_time_recorded_in_activity_does_not_override_last_active() -> None:
    """Only `last_active` decides the window; the activity counts only for its requests."""
    activity = Activity(last_login_time=NOW, api_requests=ApiRequests())
    assert inactive(spec("Free"), activity, NOW - WINDOW, now=NOW, window=WINDOW)


# decide: an active org


def test_active_org_that_is_used_stays_active() -> None:
    assert decide(spec(), ACTIVE_STATUS, idle=False, now=NOW) == Lifecycle("Active", None)


def test_requested_deactivation_starts_deactivating_now() -> None:
    plan = decide(spec(state="Deactivated"), ACTIVE_STATUS, idle=False, now=NOW)
    assert plan == Lifecycle(
        "Deactivated", Deactivation(at=NOW, reason="Requested"), started=True, reactivated=False
    )


def test_idle_org_starts_deactivating_for_inactivity() -> None:
    plan = decide(spec(), ACTIVE_STATUS, idle=True, now=NOW)
    assert plan == Lifecycle(
        "Deactivated", Deactivation(at=NOW, reason="Inactive"), started=True, reactivated=False
    )


def test_a_request_wins_over_inactivity_as_the_reason() -> None:
    plan = decide(spec(state="Deactivated"), ACTIVE_STATUS, idle=True, now=NOW)
    assert plan.deactivation == Deactivation(at=NOW, reason="Requested")


def test_new_org_without_a_status_is_active() -> None:
    assert decide(spec(), OrganizationStatus(), idle=False, now=NOW) == Lifecycle("Active", None)


# decide: a deactivated org


def test_requested_deactivation_is_reactivated_by_setting_state_back_to_active() -> None:
    plan = decide(spec(state="Active"), deactivated("Requested"), idle=False, now=NOW)
    assert plan == Lifecycle("Active", None, started=False, reactivated=True)


def test_requested_deactivation_stays_while_state_is_deactivated() -> None:
    plan = decide(spec(state="Deactivated"), deactivated("Requested"), idle=False, now=NOW)
    assert plan == Lifecycle(
        "Deactivated",
        Deactivation(at=DEACTIVATED_AT, reason="Requested"),
        started=False,
        reactivated=False,
    )


@pytest.mark.parametrize("reason", ["Requested", "Inactive"])
def test_deactivation_in_progress_keeps_its_original_time(reason: str) -> None:
    """A later reconcile (crash, resume) doesn't restart the clock or the effects."""
    plan = decide(
        spec(state="Deactivated"), deactivated(reason), idle=True, now=NOW + timedelta(days=90)
    )
    assert (plan.target, plan.started, plan.reactivated) == ("Deactivated", False, False)
    assert plan.deactivation is not None
    assert (plan.deactivation.at, plan.deactivation.reason) == (DEACTIVATED_AT, reason)


@pytest.mark.parametrize(
    "requested_at",
    [DEACTIVATED_AT + timedelta(seconds=1), DEACTIVATED_AT + timedelta(days=20)],
    ids=["just-after", "weeks-after"],
)
def test_inactive_deactivation_is_reactivated_by_a_later_reactivation_request(
    requested_at: datetime,
) -> None:
    plan = decide(
        spec(reactivation_requested_at=requested_at), deactivated("Inactive"), idle=False, now=NOW
    )
    assert plan == Lifecycle("Active", None, started=False, reactivated=True)


@pytest.mark.parametrize(
    "requested_at",
    [None, DEACTIVATED_AT, DEACTIVATED_AT - timedelta(seconds=1), CREATED],
    ids=["none", "equal", "just-before", "long-before"],
)
def test_inactive_deactivation_stays_without_a_later_reactivation_request(
    requested_at: datetime | None,
) -> None:
    plan = decide(
        spec(reactivation_requested_at=requested_at), deactivated("Inactive"), idle=False, now=NOW
    )
    assert plan == Lifecycle(
        "Deactivated",
        Deactivation(at=DEACTIVATED_AT, reason="Inactive"),
        started=False,
        reactivated=False,
    )


def test_inactive_deactivation_is_not_reactivated_by_state_active_alone() -> None:
    """spec.state is Active by default, so it can't be the signal for an Inactive org."""
    plan = decide(spec(state="Active"), deactivated("Inactive"), idle=False, now=NOW)
    assert (plan.target, plan.reactivated) == ("Deactivated", False)


def test_requested_deactivation_ignores_the_reactivation_timestamp() -> None:
    later = DEACTIVATED_AT + timedelta(days=1)
    plan = decide(
        spec(state="Deactivated", reactivation_requested_at=later),
        deactivated("Requested"),
        idle=False,
        now=NOW,
    )
    assert (plan.target, plan.reactivated) == ("Deactivated", False)


@pytest.mark.parametrize(
    ("org_spec", "status"),
    [
        (spec(state="Active"), deactivated("Requested")),
        (
            spec(reactivation_requested_at=DEACTIVATED_AT + timedelta(days=1)),
            deactivated("Inactive"),
        ),
    ],
    ids=["requested", "inactive"],
)
def test_idle_is_ignored_when_reactivating(
    org_spec: OrganizationSpec, status: OrganizationStatus
) -> None:
    plan = decide(org_spec, status, idle=True, now=NOW)
    assert plan == Lifecycle("Active", None, started=False, reactivated=True)


@pytest.mark.parametrize(
    ("org_spec", "status"),
    [
        (spec(state="Deactivated"), deactivated("Requested")),
        (spec(), deactivated("Inactive")),
    ],
    ids=["requested", "inactive"],
)
def test_idle_does_not_restart_an_existing_deactivation(
    org_spec: OrganizationSpec, status: OrganizationStatus
) -> None:
    plan = decide(org_spec, status, idle=True, now=NOW)
    assert (plan.target, plan.deactivation, plan.started) == (
        "Deactivated",
        status.deactivation,
        False,
    )


def test_reactivated_at_is_when_the_deactivated_condition_turned_false() -> None:
    assert reactivated_at(reactivated(NOW)) == NOW
    assert reactivated_at(ACTIVE_STATUS) is None
    still = deactivated("Requested").model_copy(
        update={"conditions": reactivated(NOW).conditions[:0]}
    )
    assert reactivated_at(still) is None


# the rules together, the way one reconcile after another uses them


def reconcile(
    org_spec: OrganizationSpec, status: OrganizationStatus, *, now: datetime
) -> Lifecycle:
    """What the controller does: idle from last activity and requests, then decide."""
    last = last_activity(CREATED, [None], reactivated_at=reactivated_at(status))
    idle = inactive(org_spec, requests(), last, now=now, window=WINDOW)
    return decide(org_spec, status, idle=idle, now=now)


def test_support_reactivation_of_an_inactive_org_lasts_past_the_next_reconcile() -> None:
    requested_at = NOW - timedelta(minutes=1)
    org_spec = spec(reactivation_requested_at=requested_at)
    first = reconcile(org_spec, deactivated("Inactive"), now=NOW)
    assert first.reactivated
    second = reconcile(org_spec, reactivated(NOW), now=NOW + timedelta(minutes=1))
    assert second == Lifecycle("Active", None)


def test_requested_reactivation_of_an_idle_free_org_lasts_past_the_next_reconcile() -> None:
    """Members can't log in while deactivated, so a Free org is idle when it comes back.

    Setting spec.state back to Active reactivates it (contract); the next reconcile must not
    deactivate it again for inactivity straight away.
    """
    org_spec = spec(state="Active")
    first = reconcile(org_spec, deactivated("Requested"), now=NOW)
    assert first.reactivated
    second = reconcile(org_spec, reactivated(NOW), now=NOW + timedelta(minutes=1))
    assert second.deactivation is None, (
        "reactivated by spec.state=Active, then deactivated again for inactivity at once: "
        f"{second.deactivation}"
    )
