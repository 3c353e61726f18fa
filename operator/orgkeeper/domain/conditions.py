"""Status conditions in the Kubernetes API conventions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..api.v1alpha1.common import Condition, ConditionStatus


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def put(
    conditions: Sequence[Condition],
    type_: str,
    status: bool | ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """The conditions with `type_` set; lastTransitionTime moves only when the status does."""
    wire_status: ConditionStatus = (
        ("True" if status else "False") if isinstance(status, bool) else status
    )
    previous = find(conditions, type_)
    transition = (
        previous.last_transition_time
        if previous is not None and previous.status == wire_status
        else now
    )
    updated = Condition(
        type=type_,
        status=wire_status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=generation,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == type_ else c for c in conditions]


class ConditionSet:
    """The conditions a status builder sets one `put` at a time, at one generation and time."""

    def __init__(self, previous: Sequence[Condition], *, generation: int, now: datetime) -> None:
        self.conditions: list[Condition] = list(previous)
        self._generation = generation
        self._now = now

    def put(self, type_: str, status: bool | ConditionStatus, reason: str, message: str) -> None:
        self.conditions = put(
            self.conditions,
            type_,
            status,
            reason,
            message,
            generation=self._generation,
            now=self._now,
        )
