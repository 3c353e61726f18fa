"""Status conditions follow the Kubernetes API conventions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orgkeeper.api.v1alpha1.common import Condition, ConditionStatus
from orgkeeper.domain import conditions

EARLIER = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
NOW = EARLIER + timedelta(hours=5)


def condition(type_: str, status: ConditionStatus = "True", *, generation: int = 1) -> Condition:
    return Condition(
        type=type_,
        status=status,
        reason="Before",
        message="before",
        last_transition_time=EARLIER,
        observed_generation=generation,
    )


def test_put_keeps_last_transition_time_when_the_status_is_unchanged() -> None:
    (updated,) = conditions.put(
        [condition("Ready", "True")], "Ready", True, "Reconciled", "fine", generation=2, now=NOW
    )
    assert updated.last_transition_time == EARLIER


def test_put_updates_reason_message_and_generation_when_the_status_is_unchanged() -> None:
    (updated,) = conditions.put(
        [condition("Ready", "True")], "Ready", True, "Reconciled", "fine", generation=2, now=NOW
    )
    assert (updated.reason, updated.message, updated.observed_generation) == (
        "Reconciled",
        "fine",
        2,
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [("True", False), ("False", True), ("Unknown", True), ("True", "Unknown")],
)
def test_put_moves_last_transition_time_when_the_status_changes(
    before: ConditionStatus, after: bool | ConditionStatus
) -> None:
    (updated,) = conditions.put(
        [condition("Ready", before)], "Ready", after, "Changed", "changed", generation=2, now=NOW
    )
    assert updated.last_transition_time == NOW


@pytest.mark.parametrize(
    ("status", "wire"), [(True, "True"), (False, "False"), ("Unknown", "Unknown")]
)
def test_put_writes_the_status_as_true_false_or_unknown(
    status: bool | ConditionStatus, wire: str
) -> None:
    (updated,) = conditions.put([], "Ready", status, "Some", "some", generation=1, now=NOW)
    assert updated.status == wire


def test_put_appends_a_new_type_at_the_end_with_now_as_transition_time() -> None:
    existing = [condition("OwnerValid"), condition("LicensesProvisioned")]
    updated = conditions.put(existing, "Ready", False, "Waiting", "waiting", generation=4, now=NOW)
    assert [c.type for c in updated] == ["OwnerValid", "LicensesProvisioned", "Ready"]
    assert updated[-1] == Condition(
        type="Ready",
        status="False",
        reason="Waiting",
        message="waiting",
        last_transition_time=NOW,
        observed_generation=4,
    )


def test_put_keeps_the_order_of_the_list_when_updating_a_middle_condition() -> None:
    existing = [condition("OwnerValid"), condition("Ready"), condition("Deactivated")]
    updated = conditions.put(existing, "Ready", False, "Broken", "broken", generation=2, now=NOW)
    assert [c.type for c in updated] == ["OwnerValid", "Ready", "Deactivated"]


def test_put_leaves_the_other_conditions_untouched() -> None:
    existing = [condition("OwnerValid"), condition("Ready"), condition("Deactivated", "False")]
    updated = conditions.put(existing, "Ready", False, "Broken", "broken", generation=2, now=NOW)
    assert (updated[0], updated[2]) == (existing[0], existing[2])


def test_put_does_not_modify_the_list_it_was_given() -> None:
    existing = [condition("Ready", "True")]
    conditions.put(existing, "Ready", False, "Broken", "broken", generation=2, now=NOW)
    assert existing == [condition("Ready", "True")]


def test_find_returns_the_condition_of_that_type_or_none() -> None:
    ready = condition("Ready")
    assert conditions.find([condition("OwnerValid"), ready], "Ready") is ready
    assert conditions.find([condition("OwnerValid")], "Ready") is None


def test_a_condition_set_puts_each_condition_at_its_generation_and_time() -> None:
    found = conditions.ConditionSet([condition("Ready", "True")], generation=3, now=NOW)
    found.put("Valid", True, "Verified", "verified")
    found.put("Ready", False, "Broken", "broken")
    assert found.conditions == conditions.put(
        conditions.put(
            [condition("Ready", "True")],
            "Valid",
            True,
            "Verified",
            "verified",
            generation=3,
            now=NOW,
        ),
        "Ready",
        False,
        "Broken",
        "broken",
        generation=3,
        now=NOW,
    )
