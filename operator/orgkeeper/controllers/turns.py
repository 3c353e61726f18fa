"""Whose turn it is to reconcile: one table for every Organization served, not a task per org.

An org is woken now (something concerning it changed: a poke) or at a moment (its check
interval, a time rule due, a retry after a failure). Woken orgs queue first come, first served;
an org has at most one turn at a time, and a poke during its turn queues it again once the turn
ends (behind the orgs already waiting). The scheduler (handlers/organization.py: take_turns)
takes the next org whenever a reconcile slot is free.

No kopf, no client: a table and its clock (the rule after a turn: domain/wakes.py), unit-tested
(tests/unit/test_turns.py). An org costs one entry in a few dicts, where a kopf daemon per org
cost a task, its coroutine frames, kopf's daemon records and a whole copy of the Organization
(README: Performance).
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque

from ..domain import wakes

MAX_BACKOFF = 60.0


class Turns:
    """The wake table: orgs queued now, orgs woken at a moment, orgs whose turn runs."""

    def __init__(self) -> None:
        self._ready: deque[str] = deque()
        self._queued: set[str] = set()
        self._running: set[str] = set()
        # (moment, org) by the loop's clock; an entry counts only while _at holds the same
        # moment for the org (a later wake or a drop leaves the old entry to be skipped).
        self._timers: list[tuple[float, str]] = []
        self._at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}  # orgs whose last turn failed: the next retry's wait
        self.changed = asyncio.Event()  # something was queued or timed: the scheduler looks

    def __len__(self) -> int:
        return len(self._queued | self._running | self._at.keys())

    def wake(self, org: str) -> None:
        """Queues the org now, unless queued already or in its turn (see `done`)."""
        self._at.pop(org, None)
        if org in self._queued or org in self._running:
            return
        self._queued.add(org)
        self._ready.append(org)
        self.changed.set()

    def wake_at(self, org: str, moment: float) -> None:
        """Queues the org at `moment` (the loop's clock), replacing any moment set before."""
        if org in self._queued:
            return  # it has a turn coming sooner
        self._at[org] = moment
        heapq.heappush(self._timers, (moment, org))
        self.changed.set()

    def drop(self, org: str) -> None:
        """The org is served here no more: no turn is queued or timed for it."""
        self._at.pop(org, None)
        self._backoff.pop(org, None)
        if org in self._queued:
            self._queued.discard(org)
            self._ready.remove(org)

    def _release_due(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            moment, org = heapq.heappop(self._timers)
            if self._at.get(org) == moment:
                self.wake(org)
        if len(self._timers) > 2 * len(self._at) + 64:  # skipped entries: rebuild the heap
            self._timers = [(moment, org) for org, moment in self._at.items()]
            heapq.heapify(self._timers)

    def take(self, now: float) -> str | None:
        """The next org whose turn it is (its turn starts), or None if none is due."""
        self._release_due(now)
        if not self._ready:
            return None
        org = self._ready.popleft()
        self._queued.discard(org)
        self._running.add(org)
        return org

    def next_moment(self) -> float | None:
        """The earliest moment an org is woken at, if any (skipped entries are harmless)."""
        return self._timers[0][0] if self._timers else None

    def done(self, org: str, *, again: bool = False, wait: float | None = None, now: float) -> None:
        """Its turn ended: queued again now (`again`: poked meanwhile, or work left), else woken
        after `wait` seconds (None: not timed, until something wakes it)."""
        self._running.discard(org)
        if again:
            self.wake(org)
        elif wait is not None:
            self.wake_at(org, now + wait)

    def failed(self, org: str, *, now: float) -> float:
        """Its turn failed: retried after a wait that doubles on each failure in a row, up to
        MAX_BACKOFF; returns that wait (1 s for the first failure of a run)."""
        turn = wakes.after_turn(
            failed=True,
            unfinished=False,
            backoff=self._backoff.get(org, 1.0),
            max_backoff=MAX_BACKOFF,
        )
        self._backoff[org] = turn.backoff
        self._running.discard(org)
        self.wake_at(org, now + turn.sleep)
        return turn.sleep

    def succeeded(self, org: str) -> None:
        self._backoff.pop(org, None)
