"""The wake-ups of the orgs: which are served here, the state the wake rules read, and whose
turn it is (domain/wakes.py says which event wakes which org; this keeps the bookkeeping and
pokes; turns.py queues the woken for the scheduler, handlers/organization.py: take_turns)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .. import names
from ..domain import wakes
from ..domain.wakes import Wake
from .turns import Turns


class Wakeups:
    def __init__(self) -> None:
        # One wake-up per Organization served: anything that touches an org sets it and
        # queues the org's turn; the scheduler reconciles it. An org with a trigger is served.
        self.triggers: dict[str, asyncio.Event] = {}
        self.turns = Turns()
        # Each served org as its last event showed it, compact JSON without managedFields
        # (parsed at its turn): a reconcile's input, a few KB per org instead of kopf's whole
        # body. With kopf's live indexes (licenses, workloads), they are the leader's term's.
        self.bodies: dict[str, str] = {}
        self.indexes: dict[str, Any] = {}
        # When the oldest change not yet reconciled arrived, per org (for propagation lag).
        self.changed_at: dict[str, float] = {}
        # Per org, the next moment a time rule may change what its reconcile decides
        # (wakes.earliest): it is woken then, not at the check.
        self.due: dict[str, datetime] = {}
        # Per org, the uids of the workloads its last reconcile counted, and the org of each
        # uid: a workload that leaves (label removed or changed, or deleted) wakes the org it
        # left, which kopf's label filter and index (both on the new body only) can't tell.
        self.counted: dict[str, frozenset[str]] = {}
        self.counted_by: dict[str, str] = {}
        # Orgs whose last turn left writes for the next (domain/fairness.py): they queue
        # again at once, behind the orgs already waiting for a slot.
        self.unfinished: set[str] = set()
        # org-<name> namespaces whose Memberships changed while no <name> is served here:
        # the pending loop (handlers/organization.py) marks them Pending if no such org exists.
        self.unserved: set[str] = set()
        self.unserved_changed = asyncio.Event()
        # The org-<name> namespaces of orgs served here until they were deleted: known
        # to be of this operator's region (domain/regions.py), until the pending loop has
        # served them.
        self.released: set[str] = set()
        # Organizations of regions this operator doesn't serve that no operator has reconciled
        # yet (the Organizations informer holds every region's; kopf watches this region's
        # only): the leader tells them whether their region is served.
        self.unreconciled_elsewhere: set[str] = set()
        self.unreconciled_elsewhere_changed = asyncio.Event()

    def trigger(self, organization: str) -> asyncio.Event:
        """The org is served here: its wake-up."""
        self.released.discard(names.org_namespace(organization))  # served again
        return self.triggers.setdefault(organization, asyncio.Event())

    def poke(self, organization: str) -> None:
        """Wakes the org (queues its turn); a name not served here (no such org) is ignored, so
        labels naming orgs that don't exist leave nothing behind."""
        trigger = self.triggers.get(organization)
        if trigger is None:
            return
        self.changed_at.setdefault(organization, time.monotonic())
        trigger.set()
        self.turns.wake(organization)

    def apply(self, wake: Wake) -> None:
        """What a rule said, but forgetting (Runtime.forget does that, with the rest)."""
        for namespace in wake.unserved:
            self.mark_unserved(namespace)
        for organization in wake.orgs:
            self.poke(organization)

    def mark_unserved(self, namespace: str) -> None:
        self.unserved.add(namespace)
        self.unserved_changed.set()

    def tell_region_unserved(self, organization: str) -> None:
        self.unreconciled_elsewhere.add(organization)
        self.unreconciled_elsewhere_changed.set()

    def take_change_time(self, organization: str) -> float:
        """The moment of the oldest change this reconcile answers (now, for a timed check)."""
        return self.changed_at.pop(organization, time.monotonic())

    def schedule(self, organization: str, moments: Iterable[datetime | None]) -> None:
        """The moments the org's last reconcile found due next; the earliest wakes it."""
        due = wakes.earliest(moments)
        if due is not None:
            self.due[organization] = due
        else:
            self.due.pop(organization, None)

    def take_wait(self, organization: str, interval: float, now: datetime) -> float:
        """How long the org sleeps without a poke (wakes.next_wait). The moment is
        taken: only a reconcile that ends schedules another (one that fails retries, a stalled
        spec waits for a change or the check)."""
        return wakes.next_wait(self.due.pop(organization, None), interval, now)

    def count_workloads(self, organization: str, uids: Iterable[str]) -> None:
        """The workloads the org's reconcile found labelled for it now (see workload_wakes)."""
        now = frozenset(uids)
        for uid in self.counted.get(organization, frozenset()) - now:
            if self.counted_by.get(uid) == organization:
                del self.counted_by[uid]
        for uid in now:
            self.counted_by[uid] = organization
        if now:
            self.counted[organization] = now
        else:
            self.counted.pop(organization, None)

    def workload_wakes(
        self,
        uid: str,
        namespace: str,
        organization: str | None,
        *,
        deleted: bool,
        claims: dict[str, str],
    ) -> Wake:
        """The orgs a workload's event wakes (wakes.workload_event); one that left the org
        that counted it is forgotten by the count, so its later events wake nothing."""
        wake, leaves = wakes.workload_event(
            uid,
            namespace,
            organization,
            deleted=deleted,
            counted_by=self.counted_by,
            claims=claims,
        )
        if leaves:
            del self.counted_by[uid]  # its next reconcile counts it no more
        return wake

    def end_term(self) -> None:
        """The leader's term ended: the bodies and kopf's indexes were its (the next term's
        kopf lists every org again, and each is woken then)."""
        self.bodies.clear()
        self.indexes.clear()

    def forget(self, organization: str) -> None:
        """The org is served here no more (deleted, or gone from the cache)."""
        if self.triggers.pop(organization, None) is not None:  # served here until now
            namespace = names.org_namespace(organization)
            self.released.add(namespace)
            self.mark_unserved(namespace)
        self.turns.drop(organization)
        self.bodies.pop(organization, None)
        self.changed_at.pop(organization, None)
        self.due.pop(organization, None)
        self.unfinished.discard(organization)
        self.count_workloads(organization, ())
