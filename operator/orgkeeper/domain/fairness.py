"""Sharing the reconcile slots: one org's turn writes at most a budget, then yields its slot.

An org whose Memberships all drift at once (10,000 of them flipping `ssoOnly`) would hold one of
the few reconcile slots for as long as its writes take, and a few such orgs would hold them all.
Instead each turn writes whole items (a Membership's RoleBindings, labels and status together)
in order while they fit the budget, at least one; the rest wait for the org's next turn, which
queues behind the orgs already waiting for a slot (the slots are a FIFO semaphore).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def take_turn(costs: Sequence[tuple[K, int]], budget: int) -> tuple[list[K], bool]:
    """The items one turn writes (those with writes, in order, while their writes fit
    `budget`; the first always, so every turn makes progress), and whether any is left."""
    taken: list[K] = []
    spent = 0
    for index, (key, cost) in enumerate(costs):
        if cost <= 0:
            continue
        if taken and spent + cost > budget:
            return taken, any(rest > 0 for _, rest in costs[index:])
        taken.append(key)
        spent += cost
    return taken, False


def turn_order(items: Sequence[tuple[K, bool]]) -> list[K]:
    """New items (never written yet: a Membership with no status) before the others, each
    group in the order given: a Membership just created is bound at the org's next turn,
    however many older ones are still being rewritten."""
    return [key for key, new in items if new] + [key for key, new in items if not new]
