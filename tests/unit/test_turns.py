"""The wake table (controllers/turns.py) and the one scheduler over it (take_turns): every org
served gets its turns without a task of its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import kopf
import pytest
from kubernetes import client

from orgkeeper.controllers.runtime import Runtime
from orgkeeper.controllers.turns import MAX_BACKOFF, Turns
from orgkeeper.handlers import organization, register_always_on, register_leader_only
from orgkeeper.kube import KubeApi
from orgkeeper.settings import Settings


def test_woken_orgs_take_turns_first_come_first_served() -> None:
    turns = Turns()
    for org in ("b", "a", "c", "a"):
        turns.wake(org)
    assert [turns.take(0.0), turns.take(0.0), turns.take(0.0), turns.take(0.0)] == [
        "b",
        "a",
        "c",
        None,
    ]


def test_an_org_has_one_turn_at_a_time_and_a_poke_meanwhile_queues_it_behind_the_others() -> None:
    turns = Turns()
    turns.wake("a")
    assert turns.take(0.0) == "a"
    turns.wake("a")  # poked during its turn: nothing queued yet
    turns.wake("b")
    assert turns.take(0.0) == "b"
    assert turns.take(0.0) is None
    turns.done("a", again=True, now=0.0)  # the turn saw the poke
    assert turns.take(0.0) == "a"


def test_timed_wakes_come_at_their_moment_and_a_poke_replaces_them() -> None:
    turns = Turns()
    turns.wake_at("a", 10.0)
    turns.wake_at("b", 5.0)
    assert turns.next_moment() == 5.0
    assert turns.take(4.9) is None
    assert turns.take(5.0) == "b"
    turns.wake("a")  # poked before its moment: one turn now, none at 10
    assert turns.take(5.0) == "a"
    turns.done("a", now=5.0)  # not timed again: waits for a poke
    assert turns.take(100.0) is None
    turns.done("b", wait=60.0, now=5.0)  # its check interval
    assert turns.take(64.0) is None and turns.take(65.0) == "b"


def test_a_later_moment_replaces_an_earlier_one() -> None:
    turns = Turns()
    turns.wake_at("a", 5.0)
    turns.wake_at("a", 8.0)
    assert turns.take(6.0) is None and turns.take(8.0) == "a"


def test_failures_back_off_doubling_up_to_the_maximum_and_success_resets() -> None:
    turns = Turns()
    waits = []
    now = 0.0
    for _ in range(9):
        turns.wake("a")
        assert turns.take(now) == "a"
        waits.append(turns.failed("a", now=now))
        now += waits[-1]
        turns.wake("a")  # the retry (or a poke), at once
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF]
    assert turns.take(now) == "a"
    turns.succeeded("a")
    assert turns.failed("a", now=now) == 1.0


def test_a_dropped_org_has_no_turn_left_and_the_table_holds_nothing_of_it() -> None:
    turns = Turns()
    turns.wake("a")
    turns.wake_at("b", 1.0)
    turns.drop("a")
    turns.drop("b")
    assert turns.take(2.0) is None and len(turns) == 0


def test_skipped_timer_entries_do_not_pile_up() -> None:
    turns = Turns()
    for i in range(1000):
        turns.wake_at("a", float(i))  # each replaces the one before
    turns.take(0.0)
    assert len(turns._timers) <= 2 * len(turns._at) + 64


# --- the scheduler ----------------------------------------------------------------------------


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def served(names: list[str]) -> Runtime:
    runtime = Runtime(kube=KubeApi(client.ApiClient()), settings=Settings())
    for name in names:
        runtime.wakes.trigger(name)
        runtime.wakes.bodies[name] = json.dumps({"metadata": {"name": name}})
    for informer in runtime.caches.informers():
        informer.synced.set()
    return runtime


def test_one_scheduler_serves_every_org_within_the_reconcile_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """200 orgs poked at once: each reconciles once, never more than the slots at once, and a
    poke during an org's turn gives it exactly one more turn."""
    runtime = served([f"o{i}" for i in range(200)])
    seen: list[str] = []
    at_once = [0, 0]

    async def reconcile(_: Runtime, body: Any, *__: Any, **___: Any) -> list[Any]:
        name = body["metadata"]["name"]
        at_once[0] += 1
        at_once[1] = max(at_once)
        seen.append(name)
        if name == "o7" and seen.count("o7") == 1:
            runtime.wakes.poke("o7")  # something changed while it reconciled
        await asyncio.sleep(0.001)
        at_once[0] -= 1
        return []

    monkeypatch.setattr(organization, "reconcile_organization", reconcile)
    monkeypatch.setattr(organization, "_observed", lambda *_: None)

    async def scenario() -> None:
        scheduler = asyncio.create_task(organization.take_turns(runtime))
        for i in range(200):
            runtime.wakes.poke(f"o{i}")
        await asyncio.wait_for(_until(lambda: len(seen) >= 201), timeout=10)
        await asyncio.sleep(0.05)  # nothing more comes
        scheduler.cancel()

    asyncio.run(scenario())
    assert sorted(seen) == sorted([f"o{i}" for i in range(200)] + ["o7"])
    assert seen.index("o7", seen.index("o7") + 1) > seen.index("o9")  # behind those waiting
    assert at_once[1] <= 8


def test_a_term_that_ends_starts_no_turn_and_ends_the_running_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the leader's term ends, the scheduler takes no more turns, a turn still running
    gets TURN_EXIT_SECONDS and is then cancelled, and the term's bodies go."""
    runtime = served(["slow", "next"])
    seen: list[str] = []
    cancelled: list[str] = []

    async def reconcile(_: Runtime, body: Any, *__: Any, **___: Any) -> list[Any]:
        name = body["metadata"]["name"]
        seen.append(name)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        return []

    monkeypatch.setattr(organization, "reconcile_organization", reconcile)
    monkeypatch.setattr(organization, "_observed", lambda *_: None)
    monkeypatch.setattr(organization, "TURN_EXIT_SECONDS", 0.05)

    async def scenario() -> None:
        scheduler = asyncio.create_task(organization.take_turns(runtime))
        runtime.wakes.poke("slow")
        await asyncio.wait_for(_until(lambda: bool(seen)), timeout=10)
        scheduler.cancel()  # the term ends
        await asyncio.wait_for(asyncio.gather(scheduler, return_exceptions=True), timeout=5)
        runtime.wakes.poke("next")  # after the term: no scheduler takes it
        await asyncio.sleep(0.05)
        runtime.wakes.end_term()

    asyncio.run(scenario())
    assert (seen, cancelled) == (["slow"], ["slow"])
    assert runtime.wakes.bodies == {} and runtime.wakes.indexes == {}


def test_no_kopf_daemon_or_timer_runs_per_object() -> None:
    """Per-org cost stays a table entry: kopf spawns nothing per Organization (or any kind),
    in either part."""
    always_on, leader_only = kopf.OperatorRegistry(), kopf.OperatorRegistry()
    register_always_on(always_on, Settings())
    register_leader_only(leader_only)
    for registry in (always_on, leader_only):
        assert registry._spawning.get_all_handlers() == []
