"""`orgkeeper run`: the operator process, in two parts (controller-runtime's runnable groups).

- **Always on**, on every replica: kopf's admission webhooks, the caches (the Runtime's
  informers), the people API, /metrics, /healthz and /readyz. One kopf operator over the
  registry of `handlers.register_always_on`.
- **Leader only**, while this replica holds the Lease (`--leader-elect`; at once without it):
  the scheduler of reconciles, kopf's event handlers and indexes. A second kopf operator over the
  registry of `handlers.register_leader_only`, spawned on taking the Lease and stopped, by its
  stop flag, on losing it; the next term spawns it anew (fresh watches, indexes, handlers).

Both run in one event loop with kopf's public API (`kopf.spawn_tasks`, `kopf.run_tasks`), which
assumes kopf owns the loop: once its root tasks end, `run_tasks` stops every task it was not
told to ignore. So each part's tasks are told apart (`PartTasks`), and each part ignores every
task but its own: stopping the leader-only part leaves admission, the caches and the election
running.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
import time
import weakref
from collections.abc import Callable, Collection, Iterator
from typing import Any

import kopf

# The one private kopf name left: admission's per-object memories (AdmissionForgets). kopf's
# public API takes `memories=` but exposes no class to make them with.
from kopf._core.reactor.inventory import ResourceMemories

from .controllers.runtime import Runtime
from .controllers.shards import with_shard_map
from .controllers.signing import load_or_create_signing_key
from .domain.guardrails import Guardrails
from .handlers import register_always_on, register_leader_only
from .handlers.startup import WORKERS_EXIT_SECONDS
from .kube import KubeApi, load_client
from .leader import (
    Elector,
    LeaseConfig,
    check_one_installation,
    check_sharing,
    other_generation,
)
from .leases import Leases
from .preflight import Listeners
from .registrations import Registrations
from .settings import Settings
from .webhook_server import check_webhook_configurations

logger = logging.getLogger(__name__)

# How long a resigning leader waits for its writes in flight before it releases the Lease
# (kopf's workers are given as long to finish theirs: handlers/startup.py).
DRAIN_SECONDS = WORKERS_EXIT_SECONDS


class AdmissionForgets(ResourceMemories):
    """kopf's per-object memories, except that an admission review remembers nothing.

    kopf keeps a memory for each object an UPDATE or DELETE review is about, and forgets it only
    when its own watch sees the object deleted. The always-on part, which answers admission,
    watches none of the kinds it reviews (the leader-only part watches some, with memories of
    its own): every object ever reviewed would stay in memory, the creep of a soak (16 MiB an
    hour). The webhooks need no memory of their own (they read the Runtime's caches through the
    memo).
    """

    async def recall_memo(
        self, raw_body: kopf.RawBody, *, memobase: Any = None, ephemeral: bool = False
    ) -> Any:
        return await super().recall_memo(raw_body, memobase=memobase, ephemeral=True)


# Which part of the process a task was created in: set in each part's own task, and copied,
# like every context variable, into each task created from there on.
_PART: contextvars.ContextVar[str | None] = contextvars.ContextVar("orgkeeper_part", default=None)


class PartTasks:
    """The tasks each part created, told apart by the event loop's task factory (asyncio's
    public hook): kopf's `run_tasks` is told to ignore every task but its part's."""

    def __init__(self) -> None:
        self.tasks: dict[str, weakref.WeakSet[asyncio.Task[Any]]] = {}

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            task = asyncio.Task(coro, loop=loop, **kwargs)
            context = kwargs.get("context")
            part = context.get(_PART) if context is not None else _PART.get()
            if part is not None:
                self.tasks.setdefault(part, weakref.WeakSet()).add(task)
            return task

        loop.set_task_factory(factory)

    def of(self, part: str) -> set[asyncio.Task[Any]]:
        return {task for task in self.tasks.get(part, ()) if not task.done()}

    def all_but(self, part: str) -> NotOf:
        return NotOf(self, part)


class NotOf(Collection[asyncio.Task[Any]]):
    """Every task of the loop but one part's (a live view): `kopf.run_tasks(ignored=...)`."""

    def __init__(self, parts: PartTasks, part: str) -> None:
        self.parts, self.part = parts, part

    def __contains__(self, task: object) -> bool:
        return task not in self.parts.tasks.get(self.part, ())

    def _members(self) -> set[asyncio.Task[Any]]:
        return asyncio.all_tasks() - self.parts.of(self.part)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(self._members())

    def __len__(self) -> int:
        return len(self._members())


class Part:
    """One kopf operator of the process over its own registry, run until its stop flag is set;
    each start is a new term (kopf's memories, indexes and watches are its own)."""

    def __init__(
        self,
        name: str,
        options: dict[str, Any],
        parts: PartTasks,
        after_spawn: Callable[[], None],
        ended: Callable[[Part, BaseException | None], None],
    ) -> None:
        self.name, self.options, self.parts = name, options, parts
        self.after_spawn = after_spawn  # kopf's spawn_tasks takes SIGTERM and SIGINT over
        self.ended = ended  # called when a term ends without being told to
        self.stop_flag = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self, memories: Callable[[], ResourceMemories] = ResourceMemories) -> None:
        """A new term, once the last one has ended (a part never runs twice at once)."""
        previous, self.stop_flag = self.task, asyncio.Event()
        self.task = asyncio.create_task(
            self._term(previous, self.stop_flag, memories()), name=f"kopf: {self.name}"
        )

    def stop(self) -> None:
        """Tells the term to stop: no new work starts; kopf's workers finish theirs (at most
        WORKERS_EXIT_SECONDS), the part's tasks are stopped, watches closed."""
        self.stop_flag.set()

    async def stopped(self) -> None:
        """Returns once the term told to stop has ended (its errors are logged, not raised)."""
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)

    async def _term(
        self, previous: asyncio.Task[None] | None, stop: asyncio.Event, memories: ResourceMemories
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        if stop.is_set():
            return
        _PART.set(self.name)  # this task's context: every task kopf spawns from here is the part's
        # The term's own memo (a copy: what the handlers keep in it is the term's).
        options = {**self.options, "memo": kopf.Memo(self.options["memo"])}
        failure: BaseException | None = None
        try:
            roots = await kopf.spawn_tasks(stop_flag=stop, memories=memories, **options)
            self.after_spawn()
            await kopf.run_tasks(roots, ignored=self.parts.all_but(self.name))
        except Exception as error:
            failure = error
        if failure is not None or not stop.is_set():
            self.ended(self, failure)


def run_operator(settings: Settings, *, listeners: Listeners) -> int:
    kopf.configure(
        verbose=settings.verbose,
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    always_on, leader_only = kopf.OperatorRegistry(), kopf.OperatorRegistry()
    register_always_on(always_on, settings)
    register_leader_only(leader_only)
    api_client = load_client(settings.identity)
    kube = KubeApi(
        api_client,
        Guardrails(settings.pod_security, settings.membership_quota),
        whole_pools=True,
    )
    try:
        settings = with_shard_map(kube, settings)  # --shard: which slots are this shard's
    except BaseException:
        listeners.close()
        raise
    runtime = Runtime(kube=kube, settings=settings)
    # Shared by both parts; the health and metrics servers start on `listeners`
    # (handlers/startup.py).
    memo = kopf.Memo(runtime=runtime, listeners=listeners)
    common: dict[str, Any] = {"memo": memo, "clusterwide": True, "standalone": True}
    try:
        # Another operator it can't run beside (SettingError): `orgkeeper run` exits with 2.
        leases = Leases(kube)
        check_sharing(leases, settings)
        check_one_installation(leases, settings)
        for warning in check_webhook_configurations(Registrations(kube), settings):
            logger.warning(warning)
        if settings.leader_elect:
            # Where the Lease lives (manifests/ create it).
            kube.ensure_namespace.blocking(settings.namespace)
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(
                _operate(
                    runtime,
                    {"registry": always_on, **common},
                    {"registry": leader_only, **common},
                )
            )
    finally:
        listeners.close()
    return 0


async def _operate(
    runtime: Runtime, always_options: dict[str, Any], leader_options: dict[str, Any]
) -> None:
    """The always-on part from start to exit; the leader-only part while this replica leads
    (with --leader-elect: while it holds the Lease; else from start to exit)."""
    loop = asyncio.get_running_loop()
    parts = PartTasks()
    parts.install(loop)
    kube, settings = runtime.kube, runtime.settings
    gauge = runtime.metrics.leader
    stepping_down: list[asyncio.Task[None]] = []  # held, so the loop doesn't drop them
    failures: list[BaseException] = []

    outside = contextvars.copy_context()  # of no part: stopping a part can't cancel it

    def step_down(why: str, *, release: bool = True) -> None:
        if not stepping_down:  # once: a second signal changes nothing
            stopping = shut_down(why, release=release)
            stepping_down.append(asyncio.create_task(stopping, context=outside.copy()))

    def on_signal(signum: signal.Signals) -> None:
        step_down(f"Signal {signum.name}")

    def own_signals() -> None:  # replaces the handlers kopf's spawn_tasks installs
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)

    def ended(part: Part, failure: BaseException | None) -> None:
        # A part that ends without being told to (a kopf root task failed) stops the
        # operator, as kopf.run would: its error is raised once both have ended.
        if failure is not None:
            failures.append(failure)
        step_down(f"kopf's {part.name} part ended")

    always = Part("always on", always_options, parts, own_signals, ended)
    leading = Part("leader only", leader_options, parts, own_signals, ended)
    elector: Elector | None = None

    async def start_leading() -> None:
        if runtime.signing_key is None:  # created, if absent, by a leader only
            # Several blocking calls (each through kube's gated client) and the key's making.
            runtime.signing_key = await asyncio.to_thread(
                load_or_create_signing_key, kube, settings.namespace
            )
        if stepping_down or (elector is not None and elector.resigned):  # stopping meanwhile
            return
        gauge.set(1)
        leading.start()  # watches list, the scheduler of reconciles starts

    async def stop_leading() -> None:
        gauge.set(0)
        leading.stop()  # watches close, the scheduler stops; writes are refused already (the gate)

    async def shut_down(why: str, *, release: bool) -> None:
        # Stop writing, let writes in flight land, then hand the Lease over: the next leader
        # starts at its next retry instead of after the lease duration.
        logger.info("%s: stepping down.", why)
        if elector is None:
            await stop_leading()
        else:
            await elector.resign()
            if release:
                await hand_over(elector, kube)
        await leading.stopped()
        always.stop()

    async def campaign(elector: Elector) -> None:
        try:
            await elector.run()
        except Exception:  # a replica that can't campaign exits; its Deployment restarts it
            logger.exception("Leader election failed; the operator stops.")
            step_down("Leader election failed", release=False)

    own_signals()
    always.start(memories=AdmissionForgets)
    campaigning: asyncio.Task[None] | None = None
    if settings.leader_elect:
        leases = Leases(kube)

        async def fence() -> str | None:
            return await other_generation(leases, settings)

        elector = Elector(
            leases,
            LeaseConfig.of(settings),
            on_started_leading=start_leading,
            on_stopped_leading=stop_leading,
            fence=fence,
        )
        kube.write_gate = elector.holds_lease
        gauge.set(0)
        campaigning = asyncio.create_task(campaign(elector), name="leader election")
    else:
        await start_leading()  # the only replica leads
    try:
        await always.stopped()
        await asyncio.gather(*stepping_down)
        await leading.stopped()
    finally:
        if campaigning is not None:
            campaigning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await campaigning
    if failures:
        raise failures[0]


async def hand_over(elector: Elector, kube: KubeApi) -> None:
    """Releases the Lease once the writes in flight were answered; if some still are after
    DRAIN_SECONDS, one could still land: the Lease then runs out by itself instead."""
    if await drained(kube, DRAIN_SECONDS):
        await elector.release()  # only if it is still this replica's
    else:
        logger.warning(
            "%d writes still in flight after %gs: the Lease is not released, it expires.",
            kube.writes_in_flight,
            DRAIN_SECONDS,
        )


async def drained(kube: KubeApi, timeout: float) -> bool:
    """Waits, at most `timeout` seconds, until no write passed the gate without its answer
    (kube.py's and kopf's: both count in `writes_in_flight`); True if none is left."""
    deadline = time.monotonic() + timeout
    while kube.writes_in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return not kube.writes_in_flight
