"""`orgkeeper run`: the operator process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

import kopf
from kopf._cogs.aiokits.aiotoggles import ToggleSet
from kopf._cogs.structs import bodies, ephemera
from kopf._core.reactor.inventory import ResourceMemories

from .controllers.runtime import Runtime
from .controllers.shards import with_shard_map
from .controllers.signing import load_or_create_signing_key
from .domain.guardrails import Guardrails
from .handlers import register
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

# How long a resigning leader waits for its writes in flight before it releases the Lease.
DRAIN_SECONDS = 5.0


class AdmissionForgets(ResourceMemories):
    """kopf's per-object memories, except that an admission review remembers nothing.

    kopf keeps a memory for each object an UPDATE or DELETE review is about, and forgets it only
    when its own watch sees the object deleted. Memberships are reviewed but never watched by
    kopf (an informer follows them), nor are other regions' Organizations under --region: every
    Membership ever updated stayed in memory, the creep of a soak (16 MiB an hour). The
    webhooks need no memory of their own (they read the Runtime's caches through the memo).
    """

    async def recall_memo(
        self,
        raw_body: bodies.RawBody,
        *,
        memobase: ephemera.AnyMemo | None = None,
        ephemeral: bool = False,
    ) -> ephemera.AnyMemo:
        return await super().recall_memo(raw_body, memobase=memobase, ephemeral=True)


def run_operator(settings: Settings, *, listeners: Listeners) -> int:
    kopf.configure(
        verbose=settings.verbose,
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    registry = kopf.OperatorRegistry()
    register(registry, settings)
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
    options: dict[str, Any] = {
        "registry": registry,
        # The health and metrics servers start on `listeners` (handlers/startup.py).
        "memo": kopf.Memo(runtime=runtime, listeners=listeners),
        "memories": AdmissionForgets(),
        "clusterwide": True,
        "standalone": True,
    }
    try:
        # Another operator it can't run beside (SettingError): `orgkeeper run` exits with 2.
        leases = Leases(kube)
        check_sharing(leases, settings)
        check_one_installation(leases, settings)
        for warning in check_webhook_configurations(Registrations(kube), settings):
            logger.warning(warning)
        if not settings.leader_elect:
            runtime.metrics.leader.set(1)  # the only replica leads
            kopf.run(**options)
            return 0
        kube.ensure_namespace.blocking(
            settings.namespace
        )  # where the Lease lives (manifests/ create it)
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(_operate_elected(runtime, options))
    finally:
        listeners.close()
    return 0


async def _operate_elected(runtime: Runtime, options: dict[str, Any]) -> None:
    """kopf's tasks, paused until this replica leads; the admission server runs regardless."""
    existing = set(asyncio.all_tasks())
    stop = asyncio.Event()
    tasks = list(await kopf.spawn_tasks(stop_flag=stop, **options))
    # Before kopf's startup handlers finish (they gate every watch), so nothing is handled yet.
    follower = await operator_paused(tasks).make_toggle(True, name="not the leader")
    kube, settings = runtime.kube, runtime.settings
    gauge = runtime.metrics.leader

    async def started_leading() -> None:
        if runtime.signing_key is None:  # created, if absent, by a leader only
            # Several blocking calls (each through kube's gated client) and the key's making.
            runtime.signing_key = await asyncio.to_thread(
                load_or_create_signing_key, kube, settings.namespace
            )
        if elector.resigned:  # SIGTERM came while the key was loading
            return
        gauge.set(1)
        await follower.turn_to(False)  # watches re-list, daemons respawn

    async def stopped_leading() -> None:
        gauge.set(0)
        await follower.turn_to(True)  # watches pause, daemons stop

    async def fence() -> str | None:
        return await other_generation(leases, settings)

    leases = Leases(kube)
    elector = Elector(
        leases,
        LeaseConfig.of(settings),
        on_started_leading=started_leading,
        on_stopped_leading=stopped_leading,
        fence=fence,
    )
    kube.write_gate = elector.holds_lease
    gauge.set(0)

    async def shut_down(signum: signal.Signals) -> None:
        # Stop writing, let writes in flight land, then hand the Lease over: the next leader
        # starts at its next retry instead of after the lease duration.
        logger.info("Signal %s: stepping down.", signum.name)
        await elector.resign()
        if await drained(kube, DRAIN_SECONDS):
            await elector.release()  # only if it is still this replica's
        else:  # a write could still land: the Lease runs out by itself instead
            logger.warning(
                "%d writes still in flight after %gs: the Lease is not released, it expires.",
                kube.writes_in_flight,
                DRAIN_SECONDS,
            )
        stop.set()

    loop = asyncio.get_running_loop()
    stepping_down: list[asyncio.Task[None]] = []  # held, so the loop doesn't drop them

    def on_signal(signum: signal.Signals) -> None:
        stepping_down.append(asyncio.create_task(shut_down(signum)))

    for signum in (signal.SIGTERM, signal.SIGINT):  # replaces kopf's own handlers
        loop.add_signal_handler(signum, on_signal, signum)

    async def campaign() -> None:
        try:
            await elector.run()
        except Exception:  # a replica that can't campaign exits; its Deployment restarts it
            logger.exception("Leader election failed; the operator stops.")
            await elector.resign()
            stop.set()

    campaigning = asyncio.create_task(campaign(), name="leader election")
    try:
        await kopf.run_tasks(tasks, ignored=existing)
    finally:
        campaigning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await campaigning


async def drained(kube: KubeApi, timeout: float) -> bool:
    """Waits, at most `timeout` seconds, until no write passed the gate without its answer
    (kube.py's and kopf's: both count in `writes_in_flight`); True if none is left."""
    deadline = time.monotonic() + timeout
    while kube.writes_in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return not kube.writes_in_flight


def operator_paused(tasks: list[asyncio.Task[Any]]) -> ToggleSet:
    """kopf's operator-wide pause (the toggle set its peering uses), found on its daemon killer.

    kopf doesn't expose it; the root task "daemon killer" was given it as an argument. A toggle
    turned on in it pauses every watch stream and stops every daemon; off, the streams re-list
    and the daemons respawn. kopf is pinned; tests/unit/test_leader.py checks this finds it.
    """
    for task in tasks:
        if task.get_name() != "daemon killer":
            continue
        guard = getattr(task.get_coro(), "cr_frame", None)
        inner = getattr(guard.f_locals.get("coro"), "cr_frame", None) if guard else None
        paused = inner.f_locals.get("operator_paused") if inner else None
        if isinstance(paused, ToggleSet):
            return paused
    raise RuntimeError("kopf's operator pause was not found: leader election can't gate kopf")
