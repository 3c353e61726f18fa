"""The operator's two kopf parts in one event loop (manager.py): stopping the leader-only part
stops its own tasks and none of the others (admission, caches, the election)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

import kopf

from orgkeeper.manager import _PART, NotOf, PartTasks


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    def run(*args: Any) -> None:
        asyncio.run(test(*args))

    run.__name__ = test.__name__
    return run


async def forever() -> None:
    await asyncio.Event().wait()


def in_part(part: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task made as the part's own code makes them: from a context where the part is set."""
    context = contextvars.copy_context()
    context.run(_PART.set, part)
    return context.run(asyncio.create_task, coro)


@run_async
async def test_each_task_belongs_to_the_part_it_was_made_in_and_its_children_too() -> None:
    parts = PartTasks()
    parts.install(asyncio.get_running_loop())
    child: list[asyncio.Task[None]] = []

    async def spawning() -> None:
        child.append(asyncio.create_task(forever()))
        await forever()

    leader = in_part("leader only", spawning())
    admission = in_part("always on", forever())
    bystander = asyncio.create_task(forever())  # the election, say: no part's
    await asyncio.sleep(0)
    try:
        assert parts.of("leader only") == {leader, child[0]}
        assert parts.of("always on") == {admission}
        others = parts.all_but("leader only")
        assert isinstance(others, NotOf)
        assert admission in others and bystander in others
        assert leader not in others and child[0] not in others
        assert set(others) == asyncio.all_tasks() - {leader, child[0]}
        assert len(others) == len(asyncio.all_tasks()) - 2
    finally:
        for task in (leader, admission, bystander, *child):
            task.cancel()
        await asyncio.gather(leader, admission, bystander, *child, return_exceptions=True)


@run_async
async def test_kopf_run_tasks_stops_only_the_tasks_of_its_part() -> None:
    """kopf.run_tasks, once a root task ends, stops every task it doesn't ignore: told to
    ignore all but its part's, it leaves a task made later elsewhere running (kopf is pinned;
    this checks its `ignored` still means that)."""
    parts = PartTasks()
    parts.install(asyncio.get_running_loop())
    stop, started = asyncio.Event(), asyncio.Event()
    hung: list[asyncio.Task[None]] = []

    async def root() -> None:
        hung.append(asyncio.create_task(forever(), name="spawned by the part"))
        started.set()
        await stop.wait()

    async def term() -> None:
        _PART.set("leader only")
        roots = [asyncio.create_task(root()), asyncio.create_task(forever())]
        await kopf.run_tasks(roots, ignored=parts.all_but("leader only"))

    running = asyncio.create_task(term())
    await asyncio.wait_for(started.wait(), timeout=10)
    webhook = in_part("always on", forever())  # made after the part started
    bystander = asyncio.create_task(forever())
    stop.set()
    await asyncio.wait_for(running, timeout=10)
    try:
        assert hung[0].cancelled()
        assert not webhook.done() and not bystander.done()
    finally:
        webhook.cancel()
        bystander.cancel()
        await asyncio.gather(webhook, bystander, return_exceptions=True)
