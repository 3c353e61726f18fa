"""Organizations: one reconcile loop per org, woken by anything that concerns it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import kopf

from .. import names
from ..api.v1alpha1 import ORGANIZATION, PRODUCTS
from ..controllers.license import recorded_copies, withdraw_copies
from ..controllers.membership import mark_pending
from ..controllers.organization import Cached, reconcile_organization
from ..controllers.records import WorkloadRecord, values
from ..controllers.runtime import Runtime
from ..controllers.writes import explain, now_utc
from ..domain.events import Event
from ..domain.lifecycle import untold_transitions
from ..domain.namespaces import Claim, owned_namespaces
from ..kube import PostedEvent, owner_of
from .indexes import LICENSES, ORGANIZATIONS, WORKLOADS, workload_index

MAX_BACKOFF = 60.0
# How often a follower looks whether it leads now, and a failed Pending write is retried.
PENDING_RECHECK = 2.0

log = logging.getLogger(__name__)


async def post(runtime: Runtime, body: kopf.Body, events: list[Event]) -> None:
    """Posts the Events on the objects they concern (the org by default), each lifecycle
    transition once. Posting is a write (the leader's); one that fails is logged, never retried."""
    name = body["metadata"]["name"]
    keep, runtime.transitions[name] = untold_transitions(
        runtime.transitions.get(name), (event.reason for event in events)
    )
    kube = runtime.kube
    for event, new in zip(events, keep, strict=True):
        if not new:
            continue
        posted = PostedEvent(
            event.type, event.reason, event.message, event.action, runtime.settings.identity
        )
        try:
            await kube.run(kube.post_event, event.involved or body, posted)
        except Exception as error:
            log.warning("Event %s on %s not posted: %s", event.reason, name, explain(error)[1])


def in_region(spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> bool:
    runtime: Runtime = memo.runtime
    return runtime.serves_region(spec.get("region"))


async def organization_loop(
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Reconciles whenever poked, when a time rule is due (Runtime.due), and every check
    interval to repair drift."""
    runtime: Runtime = memo.runtime
    trigger = runtime.trigger(name)
    try:
        await _serve(runtime, name, body, trigger, kwargs)
    finally:
        # Deleted while a reconcile ran: what it recorded after the deletion was forgotten
        # (Events told, times due, counts, metrics) is forgotten now, or the operator would
        # keep something of every org it ever served. (Paused as a follower, or the name
        # already taken by a new Organization: kept.)
        if name not in runtime.triggers:
            runtime.forget(name)


async def _serve(
    runtime: Runtime, name: str, body: kopf.Body, trigger: asyncio.Event, kwargs: dict[str, Any]
) -> None:
    interval = runtime.settings.check_interval.total_seconds()
    trigger.set()
    backoff = 1.0
    await runtime.caches_synced()  # an empty cache would look like members gone
    while True:
        with contextlib.suppress(TimeoutError):
            timeout = runtime.take_wait(name, interval, now_utc())
            await asyncio.wait_for(trigger.wait(), timeout=timeout)
        trigger.clear()
        async with runtime.reconcile_slots:
            changed_at = runtime.take_change_time(name)
            started = time.monotonic()
            try:
                events = await reconcile_organization(
                    runtime, body, _observed(runtime, kwargs, name), changed_at=changed_at
                )
            except Exception as error:  # the loop must outlive any single failure
                events = None
                runtime.metrics.reconciles.labels(ORGANIZATION.kind, "error").inc()
                # Details go to the log only: kopf would post a WARNING from its own logger as
                # an Event, raw API answers (headers, bodies) included.
                log.warning(
                    "Organization %s: reconcile failed, again in %.0fs: %s", name, backoff, error
                )
                if backoff == 1.0:  # the first of a run of failures, not every retry
                    reason, detail = explain(error)
                    message = f"reconcile failed ({reason}: {detail}); retrying with backoff"
                    await post(runtime, body, [Event("Warning", "ReconcileFailed", message)])
        if events is None:
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            trigger.set()
            continue
        runtime.metrics.reconciles.labels(ORGANIZATION.kind, "success").inc()
        runtime.metrics.reconcile_seconds.labels(ORGANIZATION.kind).observe(
            time.monotonic() - started
        )
        backoff = 1.0
        await post(runtime, body, events)


async def organization_deleted(name: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """License copies and orgkeeper's annotations leave the namespaces the org owned (copies
    are owned by the Organization too: garbage collection takes any left behind)."""
    runtime: Runtime = memo.runtime
    owner = owner_of(ORGANIZATION.kind, body)
    namespace = names.org_namespace(name)
    claims = [Claim(c.name, c.organization, c.owners) for c in runtime.claimed(name)]
    owned = owned_namespaces(name, owner.uid, claims, org_namespace_owned=True)
    licenses = values(kwargs["licenses_by_namespace"], namespace)
    recorded = {ns for product in PRODUCTS for ns in recorded_copies(licenses, product)}
    workloads = [w for w in _workloads(kwargs, name) if w.namespace in owned]
    failures = await withdraw_copies(runtime, owner, recorded, workloads)
    for failure in failures:
        log.warning("Organization %s: cleanup left %s", name, failure.describe())
    # A finalizer of the operator that served the org before this one (all regions, or
    # regional) would hold the deletion forever: that operator isn't running beside this one.
    found = list(body["metadata"].get("finalizers") or [])
    stale = names.stale_finalizers(found, runtime.settings.region)
    if stale:
        await runtime.kube.run(runtime.kube.drop_organization_finalizers, name, stale)


async def pending_memberships(runtime: Runtime) -> None:
    """Memberships in an org-<name> namespace while no Organization <name> exists show
    `Pending` within seconds (no org loop would ever write them). Only the leader writes: a
    follower keeps the namespaces it was told about until it leads (checked every few seconds).
    An Organization in another region is served by that region's operator, so it is left alone."""
    await runtime.caches_synced()
    while True:
        leading = runtime.kube.write_gate is None or runtime.kube.write_gate()
        if not (leading and runtime.unserved):
            recheck = PENDING_RECHECK if runtime.unserved else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.unserved_changed.wait(), timeout=recheck)
            runtime.unserved_changed.clear()
            continue
        namespaces, runtime.unserved = runtime.unserved, set()
        for namespace in sorted(namespaces):
            organization = names.organization_of_namespace(namespace) or ""
            if runtime.organizations.get("", organization) is not None:
                continue  # its own loop (here, or in its region's operator) serves it
            try:
                if await _going_away(runtime, namespace):
                    continue  # its Organization was deleted: garbage collection takes it all
                failures = await mark_pending(runtime, namespace, now_utc())
            except Exception as error:  # the loop must outlive any single failure
                failures, reason = [], str(error)
                log.warning("Memberships in %s: marking them Pending failed: %s", namespace, reason)
                runtime.unserved.add(namespace)
            if failures:
                runtime.unserved.add(namespace)
        if runtime.unserved:
            await asyncio.sleep(PENDING_RECHECK)  # what failed is tried again, not at once


async def _going_away(runtime: Runtime, namespace: str) -> bool:
    """Gone, terminating, or owned by an Organization (one that no longer exists)."""
    found = await runtime.kube.run(runtime.kube.read_namespace, namespace)
    if found is None or found.metadata.deletion_timestamp is not None:
        return True
    return any(ref.kind == ORGANIZATION.kind for ref in found.metadata.owner_references or [])


def _observed(runtime: Runtime, indexes: dict[str, Any], organization: str) -> Cached:
    """What the caches hold for the org now (taken once it has a reconcile slot); the workloads
    are counted as the org's, so that one leaving wakes it."""
    namespace = names.org_namespace(organization)
    workloads = _workloads(indexes, organization)
    runtime.count_workloads(organization, (w.uid for w in workloads))
    return Cached(
        members=runtime.members.in_namespace(namespace),
        bindings=runtime.bindings.in_namespace(namespace),
        licenses=values(indexes["licenses_by_namespace"], namespace),
        workloads=workloads,
        claims=runtime.claimed(organization),
    )


def _workloads(indexes: dict[str, Any], organization: str) -> list[WorkloadRecord]:
    return [
        record
        for kind in WORKLOADS
        for record in values(indexes[workload_index(kind)], organization)
    ]


# Event handlers and indexes are async: kopf runs sync ones in worker threads, and a poke
# sets an asyncio.Event, which only the event loop's own thread may do.
async def organization_changed(name: str, type: str, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        memo.runtime.forget(name)
    else:
        memo.runtime.poke(name)


async def license_changed(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A License in org-<name> was created, changed or deleted: the org judges it, picks the
    active one of its product and delivers it. (Its Secret isn't watched: see README.)"""
    organization = names.organization_of_namespace(namespace)
    if organization:
        memo.runtime.poke(organization)


def labelled_or_counted(labels: kopf.Labels, uid: str | None, memo: kopf.Memo, **_: Any) -> bool:
    """kopf filters labels on the new body only: a workload whose org label went must still
    reach workload_changed if an org counted it."""
    runtime: Runtime = memo.runtime
    return bool(labels.get(names.LABEL_ORGANIZATION)) or uid in runtime.counted_by


async def workload_changed(
    labels: kopf.Labels,
    namespace: str | None,
    uid: str | None,
    type: str | None,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A workload labelled with an org changed, or left the org that counted it: each org
    concerned reconciles (counts, freeze, licenses); see Runtime.workload_wakes.

    A label naming no org served here wakes nothing and is remembered nowhere. A workload in a
    namespace the org doesn't own wakes it once, to be told why it is ignored: patching it over
    and over can't keep the org's reconciles busy.
    """
    runtime: Runtime = memo.runtime
    organization = labels.get(names.LABEL_ORGANIZATION) or None
    wakes = runtime.workload_wakes(
        uid or "", namespace or "", organization, deleted=type == "DELETED"
    )
    for woken in wakes:
        runtime.poke(woken)


def register(registry: kopf.OperatorRegistry) -> None:
    # The loop keeps no state worth a graceful exit: on deletion it is cancelled after 1s.
    loop = kopf.daemon(*ORGANIZATIONS, when=in_region, cancellation_timeout=1.0, registry=registry)
    loop(organization_loop)
    kopf.on.event(*ORGANIZATIONS, registry=registry)(organization_changed)
    kopf.on.delete(*ORGANIZATIONS, when=in_region, registry=registry)(organization_deleted)
    kopf.on.event(*LICENSES, registry=registry)(license_changed)
    for kind, resource in WORKLOADS.items():
        on_workload = kopf.on.event(
            *resource, when=labelled_or_counted, id=f"{kind.lower()}_changed", registry=registry
        )
        on_workload(workload_changed)
