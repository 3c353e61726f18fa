"""What went wrong in a reconcile, told as Warning Events once while it lasts (not at every
check), and the status of a spec the policy can't act on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...api.v1alpha1.common import Condition
from ..conditions import ConditionSet
from ..events import Event


@dataclass(frozen=True)
class Trouble:
    """One thing wrong, told by its Events while `key` was not told at the reconcile before."""

    key: str
    events: tuple[Event, ...]


def ignored_key(uid: str | None) -> str:
    """How a workload told it is ignored is remembered."""
    return f"ignored:{uid}"


def ignored_workload(uid: str | None, message: str, ref: Mapping[str, Any]) -> Trouble:
    """A workload labelled for the org in a namespace the org doesn't own
    (`namespaces.ignored_message` says why and what to do)."""
    return Trouble(ignored_key(uid), (Event("Warning", "NamespaceNotOwned", message, ref),))


def failed_write(
    organization: str,
    what: str,
    reason: str,
    described: str,
    involved: Sequence[Mapping[str, Any]],
) -> Trouble:
    """A write the API server refused; told on the objects it was for (else the org). A
    Secret in the way of a license copy keeps its own reason, every other failure is
    ApplyFailed."""
    told_as = reason if reason == "SecretConflict" else "ApplyFailed"
    message = f"orgkeeper could not apply {organization}'s policy: {described}"
    events = tuple(Event("Warning", told_as, message, ref) for ref in involved or (None,))
    return Trouble(f"failed:{what}:{reason}", events)


def tell_once(
    told: frozenset[str], troubles: Iterable[Trouble]
) -> tuple[list[Event], frozenset[str]]:
    """The Events of the troubles not told before, and the keys told now (what lasts is
    remembered, what ended is forgotten, so it is told again if it comes back)."""
    now_told: set[str] = set()
    events: list[Event] = []
    for trouble in troubles:
        if trouble.key in now_told:
            continue
        now_told.add(trouble.key)
        if trouble.key not in told:
            events += trouble.events
    return events, frozenset(now_told)


def invalid_spec(
    problems: Iterable[tuple[Sequence[str | int], str]],
    previous: Sequence[Condition],
    *,
    generation: int,
    now: datetime,
) -> tuple[list[Condition], Event]:
    """A spec the API server let in but the policy can't act on (`problems`: each field's path
    under spec and what is wrong): Ready=False naming the fields, and a Warning once per
    reconcile; nothing is retried until the spec changes."""
    listed = "; ".join(f"spec.{'.'.join(str(p) for p in path)}: {what}" for path, what in problems)
    message = f"the spec can't be reconciled ({listed}); correct it and apply again"
    found = ConditionSet(previous, generation=generation, now=now)
    found.put("Ready", False, "InvalidSpec", message)
    return found.conditions, Event("Warning", "InvalidSpec", message)
