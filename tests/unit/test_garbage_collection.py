"""Garbage in reference cycles never piles up in CPython's oldest generation between the
operator's trims (memory.collect_and_trim): a cause of the soak's creep (README, Footprint).

CPython looks at its oldest generation only once a quarter more objects have been promoted
there since it last did; until then, cycles that died there stay, and with them the pymalloc
arenas they are spread over.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Iterator

import pytest

from orgkeeper.memory import collect_and_trim, malloc_trim, trim_periodically


class Node:
    """Stands for what the operator drops in cycles (an API answer, a task, an exception)."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collector_off() -> Iterator[None]:
    """Only explicit collections: what this test does is all that happens."""
    was = gc.isenabled()
    gc.disable()
    gc.collect()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _garbage_in_the_oldest_generation(count: int) -> list[weakref.ref[Node]]:
    nodes = [Node() for _ in range(count)]
    gc.collect(1)  # they live through the young collections: promoted to the oldest
    refs = [weakref.ref(node) for node in nodes]
    del nodes  # now garbage, held by their own cycles only
    return refs


def _alive(refs: list[weakref.ref[Node]]) -> int:
    return sum(ref() is not None for ref in refs)


def test_cycles_that_die_in_the_oldest_generation_outlive_young_collections(
    collector_off: None,
) -> None:
    """The mechanism, as CPython does it on its own."""
    refs = _garbage_in_the_oldest_generation(1000)
    for _ in range(20):
        gc.collect(1)  # what runs hundreds of times a second in a busy operator
    assert _alive(refs) == 1000


def test_a_trim_collects_them_first(collector_off: None) -> None:
    refs = _garbage_in_the_oldest_generation(1000)
    assert collect_and_trim(malloc_trim()) >= 1000
    assert _alive(refs) == 0


async def _left_after_collection(refs: list[weakref.ref[Node]], timeout: float = 5.0) -> int:
    """How many are still alive once the trim loop collected them, or after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while _alive(refs) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    return _alive(refs)


def test_the_operators_trim_loop_collects_every_interval(collector_off: None) -> None:
    async def two_intervals() -> tuple[int, int]:
        loop = asyncio.create_task(trim_periodically(interval=0.05))
        try:
            first = _garbage_in_the_oldest_generation(100)
            first_left = await _left_after_collection(first)
            second = _garbage_in_the_oldest_generation(100)
            return first_left, await _left_after_collection(second)
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    assert asyncio.run(two_intervals()) == (0, 0)


def test_without_malloc_trim_it_still_collects(collector_off: None) -> None:
    refs = _garbage_in_the_oldest_generation(10)
    collect_and_trim(None)
    assert _alive(refs) == 0
