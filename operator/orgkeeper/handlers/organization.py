"""Organizations: one scheduler reconciles them, a turn at a time, each woken by anything that
concerns it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from .. import names
from ..api.v1alpha1 import ORGANIZATION, PRODUCTS
from ..controllers.license import recorded_copies, withdraw_copies
from ..controllers.membership import mark_pending
from ..controllers.organization import Cached, namespace_holder, reconcile_organization
from ..controllers.records import WorkloadRecord, values
from ..controllers.runtime import Runtime
from ..controllers.writes import Failure, Target, attempt, explain, now_utc
from ..domain import wakes
from ..domain.events import Event
from ..domain.lifecycle import untold_transitions
from ..domain.namespaces import Claim, ignored_message, owned_namespaces, release_labels, to_release
from ..domain.regions import marks_pending_here
from ..kube import NotLeaderError
from ..resources import SHARED_INSTANCE, PostedEvent, owner_of
from .admission import unserved_region
from .indexes import LICENSES, ORGANIZATIONS, WORKLOADS, workload_index

# How often a follower looks whether it leads now, and a failed Pending write is retried.
PENDING_RECHECK = 2.0
# How long the turns running when a term ends may take to end before they are cancelled.
TURN_EXIT_SECONDS = 1.0

log = logging.getLogger(__name__)


def _posted(runtime: Runtime, event: Event) -> PostedEvent:
    """NamespaceNotOwned is told to whoever labelled the workload, maybe an outsider: the same
    Event whether or not the org exists and whichever operator serves it (a fixed name, so the
    first post wins and the others get 409; a reportingInstance that names no replica or
    region). The others name the replica that posts them."""
    if event.reason == "NamespaceNotOwned" and event.involved is not None:
        meta = event.involved["metadata"]
        name = names.once_event_name(meta["name"], meta.get("uid") or "", event.reason)
        return PostedEvent(
            event.type, event.reason, event.message, event.action, SHARED_INSTANCE, name
        )
    identity = runtime.settings.identity
    return PostedEvent(event.type, event.reason, event.message, event.action, identity)


def _recorded_in(body: kopf.Body, namespace: str) -> dict[str, Any]:
    """The Organization as the object of an Event recorded in its own namespace: the API server
    keeps Events about a cluster-scoped object only in `default` (or kube-system), where the
    Owner can't read them, unless the Event names a namespace, which must be its own."""
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": meta["name"], "uid": meta.get("uid"), "namespace": namespace},
    }


async def post(runtime: Runtime, body: kopf.Body, events: list[Event]) -> None:
    """Posts the Events on the objects they concern (the org by default; those about the org
    also in org-<name> once it is the org's), each lifecycle transition once. Posting is a
    write (the leader's); one that fails is logged, never retried."""
    name = body["metadata"]["name"]
    keep, runtime.memory.transitions[name] = untold_transitions(
        runtime.memory.transitions.get(name), (event.reason for event in events)
    )
    kube = runtime.kube
    for event, new in zip(events, keep, strict=True):
        if not new:
            continue
        posted = _posted(runtime, event)
        involved = [event.involved or body]
        if event.also_in:
            involved.append(_recorded_in(body, event.also_in))
        for about in involved:
            try:
                await kube.post_event(about, posted)
            except Exception as error:
                log.warning("Event %s on %s not posted: %s", event.reason, name, explain(error)[1])


async def tell_ignored(runtime: Runtime, organization: str, workload: Mapping[str, Any]) -> None:
    """NamespaceNotOwned on a workload labelled for an org in a namespace the org can't own,
    told here rather than by the org's reconcile: the same answer whether or not the org exists
    (or is served here), and the org isn't woken by what a stranger labels. Followers leave it
    to the leader; nothing is remembered (a second post of the named Event gets 409)."""
    meta = workload["metadata"]
    namespace = meta["namespace"]
    ref = {
        "apiVersion": workload.get("apiVersion"),
        "kind": workload.get("kind"),
        "metadata": {"name": meta["name"], "namespace": namespace, "uid": meta.get("uid")},
    }
    holder = namespace_holder(runtime, namespace)
    message = ignored_message(namespace, organization, holder)
    posted = _posted(runtime, Event("Warning", "NamespaceNotOwned", message, ref))
    try:
        await runtime.kube.post_event(ref, posted)
    except NotLeaderError:
        pass  # the leader tells it
    except Exception as error:
        log.warning("Event NamespaceNotOwned on %s not posted: %s", meta["name"], explain(error)[1])


def in_region(spec: kopf.Spec, name: str, memo: kopf.Memo, **_: Any) -> bool:
    """Of this operator's region and shard (the API server selects both; this holds even if a
    slot label were wrong)."""
    runtime: Runtime = memo.runtime
    return runtime.serves_region(spec.get("region")) and runtime.settings.shard.serves(name)


INDEXES = ("licenses_by_namespace", *(workload_index(kind) for kind in WORKLOADS))


async def take_turns(runtime: Runtime) -> None:
    """Reconciles the orgs served here, one turn at a time each, at most RECONCILE_CONCURRENCY
    at once: an org whenever it is poked, when a time rule is due, every check interval to
    repair drift, and again after a failure, backing off (what wakes an org: domain/wakes.py;
    whose turn it is: controllers/turns.py). One task for every org, run by the leader-only
    part for its term (handlers/startup.py) and cancelled when the term ends: no turn starts
    then, and those running have TURN_EXIT_SECONDS to end."""
    await runtime.caches.synced()  # an empty cache would look like members gone
    wakeups, loop = runtime.wakes, asyncio.get_running_loop()
    interval = runtime.settings.check_interval.total_seconds()
    running: set[asyncio.Task[None]] = set()
    try:
        while True:
            await runtime.reconcile_slots.acquire()
            wakeups.turns.changed.clear()
            name = wakeups.turns.take(loop.time())
            if name is not None:
                task = asyncio.create_task(_turn(runtime, name, interval), name=f"turn of {name}")
                running.add(task)
                task.add_done_callback(running.discard)
                continue
            runtime.reconcile_slots.release()
            moment = wakeups.turns.next_moment()
            timeout = None if moment is None else max(0.0, moment - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeups.turns.changed.wait(), timeout)
    finally:
        if running:
            _, late = await asyncio.wait(running, timeout=TURN_EXIT_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


async def _turn(runtime: Runtime, name: str, interval: float) -> None:
    """One reconcile of the org (its slot taken by take_turns, released here), then its next
    wake: at once if poked meanwhile or work is left, after a backoff if it failed, else at its
    check interval or the time rule due first."""
    wakeups, loop = runtime.wakes, asyncio.get_running_loop()
    turns = wakeups.turns
    trigger, raw = wakeups.triggers.get(name), wakeups.bodies.get(name)
    events: list[Event] = []
    succeeded, started = False, time.monotonic()
    body = kopf.Body(json.loads(raw)) if raw is not None else None
    try:
        if trigger is None or body is None:
            turns.done(name, now=loop.time())  # not served here (now), or kopf lists it again
            return
        trigger.clear()
        changed_at = wakeups.take_change_time(name)
        try:
            observed = _observed(runtime, wakeups.indexes, name)
            events = await reconcile_organization(runtime, body, observed, changed_at=changed_at)
            succeeded = True
        except NotLeaderError:  # stepped down meanwhile: its turn comes when this one leads
            turns.done(name, again=True, now=loop.time())
            return
        except Exception as error:  # the scheduler must outlive any single failure
            runtime.metrics.reconciles.labels(ORGANIZATION.kind, "error").inc()
            backoff = turns.failed(name, now=loop.time())
            # Details go to the log only: kopf would post a WARNING from its own logger as
            # an Event, raw API answers (headers, bodies) included.
            log.warning(
                "Organization %s: reconcile failed, again in %.0fs: %s", name, backoff, error
            )
            if backoff == 1.0:  # the first of a run of failures, not every retry
                reason, detail = explain(error)
                message = f"reconcile failed ({reason}: {detail}); retrying with backoff"
                events = [Event("Warning", "ReconcileFailed", message)]
    finally:
        runtime.reconcile_slots.release()
    if name not in wakeups.triggers:
        # Deleted while it reconciled: what it recorded after the deletion was forgotten
        # (Events told, times due, counts, metrics) is forgotten now, or the operator would
        # keep something of every org it ever served (the table's entry included).
        turns.done(name, now=loop.time())
        runtime.forget(name)
        return
    if succeeded:
        turns.succeeded(name)
        runtime.metrics.reconciles.labels(ORGANIZATION.kind, "success").inc()
        runtime.metrics.reconcile_seconds.labels(ORGANIZATION.kind).observe(
            time.monotonic() - started
        )
        # Poked meanwhile, or writes left: again at once, behind the orgs waiting for a slot.
        unfinished = trigger.is_set() or name in wakeups.unfinished
        turn = wakes.after_turn(failed=False, unfinished=unfinished, backoff=1.0, max_backoff=1.0)
        wait = wakeups.take_wait(name, interval, now_utc())
        turns.done(name, again=turn.again, wait=wait, now=loop.time())
    if events:
        await post(runtime, body, events)  # after the slot: Events never hold up a reconcile


def _slim(body: kopf.Body) -> str:
    """The Organization as a reconcile reads it, without managedFields, as compact JSON."""
    meta = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
    return json.dumps({**body, "metadata": meta}, separators=(",", ":"))


async def _label_slot(runtime: Runtime, name: str, body: kopf.Body) -> None:
    """An Organization made before shards (or with webhooks off) gets its slot label from the
    operator that serves it (unsharded, that is every one: run it once before sharding)."""
    wanted = names.shard_slot_label(name)
    labels = body.get("metadata", {}).get("labels") or {}
    if all(labels.get(key) == value for key, value in wanted.items()):
        return
    kube = runtime.kube
    try:
        await kube.label_organization(name, wanted)
    except Exception as error:  # the next start tries again; the reconcile doesn't need it
        log.warning("Organization %s: its shard slot label not written: %s", name, error)


async def organization_deleted(name: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """License copies and orgkeeper's annotations leave the namespaces the org owned (copies
    are owned by the Organization too: garbage collection takes any left behind), and the
    namespaces it served without owning them (made ahead, labelled) are released."""
    runtime: Runtime = memo.runtime
    owner = owner_of(ORGANIZATION.kind, body)
    spec_owner = str((body.get("spec") or {}).get("owner") or "")
    namespace = names.org_namespace(name)
    claims = [record.claim() for record in runtime.caches.claimed(name)]
    owned = owned_namespaces(name, owner.uid, spec_owner, claims, org_namespace_owned=True)
    licenses = values(kwargs["licenses_by_namespace"], namespace)
    recorded = {ns for product in PRODUCTS for ns in recorded_copies(licenses, product)}
    workloads = [w for w in _workloads(kwargs, name) if w.namespace in owned]
    failures = await withdraw_copies(runtime, owner, recorded, workloads)
    for failure in failures:
        log.warning("Organization %s: cleanup left %s", name, failure.describe())
    await _release(runtime, name, owner.uid, spec_owner, claims)
    # A finalizer of the operator that served the org before this one (all regions, or
    # regional) would hold the deletion forever: that operator isn't running beside this one.
    found = list(body["metadata"].get("finalizers") or [])
    stale = names.stale_finalizers(found, runtime.settings.region)
    if stale:
        await runtime.kube.drop_organization_finalizers(name, stale)


async def _release(runtime: Runtime, name: str, uid: str, owner: str, claims: list[Claim]) -> None:
    """Releases, visibly, what the org served without owning it: the org label goes and
    orgkeeper.dev/released-from=<name> comes (the UID stays). Garbage collection takes what it
    owns. Not done is retried (the finalizer holds the deletion): nothing released, nothing
    handed to the next Organization of the name."""
    kube = runtime.kube
    namespace = names.org_namespace(name)
    found = await kube.read_namespace(namespace)
    if found is not None and found.metadata.deletion_timestamp is None:
        owners = [(ref.name, ref.uid) for ref in found.metadata.owner_references or []]
        claims = [Claim.of(namespace, found.metadata.labels or {}, owners)] + [
            claim for claim in claims if claim.namespace != namespace
        ]
    labels = release_labels(name, uid)
    released = [claim.namespace for claim in claims if to_release(claim, name, uid, owner)]
    failures: list[Failure] = []
    await attempt(
        [(Target(f"Namespace {ns}"), kube.label_namespace(ns, labels)) for ns in released],
        failures,
    )
    if failures:
        detail = "; ".join(failure.describe() for failure in failures)
        raise kopf.TemporaryError(f"namespaces not released yet: {detail}", delay=5)
    if released:
        log.info("Organization %s: released namespaces %s", name, ", ".join(released))


async def pending_memberships(runtime: Runtime) -> None:
    """Memberships in an org-<name> namespace while no Organization <name> exists show
    `Pending` within seconds (no org's turn would ever write them). It runs in the leader-only
    part (manager.py): the namespaces told while this replica followed wait for it (and while
    the write gate is closed, it keeps them, checking every few seconds).
    An Organization in another region is served by that region's operator, so it is left alone;
    a regional operator acts only on namespaces it knows are of its region (_pending_here)."""
    await runtime.caches.synced()
    while True:
        leading = runtime.kube.write_gate is None or runtime.kube.write_gate()
        if not (leading and runtime.wakes.unserved):
            recheck = PENDING_RECHECK if runtime.wakes.unserved else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.wakes.unserved_changed.wait(), timeout=recheck)
            runtime.wakes.unserved_changed.clear()
            continue
        namespaces, runtime.wakes.unserved = runtime.wakes.unserved, set()
        for namespace in sorted(namespaces):
            organization = names.organization_of_namespace(namespace) or ""
            if not runtime.settings.shard.serves(organization):
                continue  # another shard's (--shard): it marks its own
            held = runtime.caches.organizations.get("", organization)
            if held is not None and not runtime.serves_region(held.region):
                continue  # its region's operator serves it
            retry = False
            try:
                if await _pending_here(runtime, namespace, organization, held is not None):
                    retry = bool(await mark_pending(runtime, namespace, now_utc()))
            except Exception as error:  # the loop must outlive any single failure
                log.warning("Memberships in %s: marking them Pending failed: %s", namespace, error)
                retry = True
            if retry:
                runtime.wakes.unserved.add(namespace)
            else:
                runtime.wakes.released.discard(namespace)
        if runtime.wakes.unserved:
            await asyncio.sleep(PENDING_RECHECK)  # what failed is tried again, not at once


async def _pending_here(runtime: Runtime, namespace: str, organization: str, held: bool) -> bool:
    """Whether this operator marks the namespace's Memberships Pending now: the namespace stays
    (not gone, terminating, or owned by an Organization: garbage collection takes those), and
    either an Organization <name> of this operator's region is held but the namespace was
    released by an earlier one (not served until support hands it over, so its Memberships
    wait without RoleBindings), or none exists (the API server says so: the cache may lag) and
    the namespace is positively of this operator's region (domain/regions.py)."""
    kube = runtime.kube
    found = await kube.read_namespace(namespace)
    if found is None or found.metadata.deletion_timestamp is not None:
        return False
    if any(ref.kind == ORGANIZATION.kind for ref in found.metadata.owner_references or []):
        return False
    labels = found.metadata.labels or {}
    if held:
        return bool(labels.get(names.LABEL_RELEASED_FROM))
    served_here = namespace in runtime.wakes.released
    if not marks_pending_here(runtime.settings.region, labels, served_here):
        return False
    return await kube.read_organization(organization) is None


def _observed(runtime: Runtime, indexes: dict[str, Any], organization: str) -> Cached:
    """What the caches hold for the org now (taken once it has a reconcile slot); the workloads
    are counted as the org's, so that one leaving wakes it."""
    namespace = names.org_namespace(organization)
    workloads = _workloads(indexes, organization)
    runtime.wakes.count_workloads(organization, (w.uid for w in workloads))
    return Cached(
        members=runtime.caches.members.in_namespace(namespace),
        bindings=runtime.caches.bindings.in_namespace(namespace),
        licenses=values(indexes["licenses_by_namespace"], namespace),
        workloads=workloads,
        claims=runtime.caches.claimed(organization),
    )


def _workloads(indexes: dict[str, Any], organization: str) -> list[WorkloadRecord]:
    return [
        record
        for kind in WORKLOADS
        for record in values(indexes[workload_index(kind)], organization)
    ]


# Event handlers and indexes are async: kopf runs sync ones in worker threads, and a poke
# sets an asyncio.Event, which only the event loop's own thread may do.
async def organization_changed(
    name: str, type: str, body: kopf.Body, spec: kopf.Spec, memo: kopf.Memo, **kwargs: Any
) -> None:
    """An Organization of this operator's region and shard is served: its body is kept for its
    turns, and it is woken (turns.py). Any other org's event wakes nothing."""
    runtime: Runtime = memo.runtime
    if type == "DELETED":
        runtime.wake(wakes.organization_event(name, deleted=True))
        return
    if in_region(spec=spec, name=name, memo=memo):
        wakeups = runtime.wakes
        if not wakeups.indexes:  # kopf's live indexes of this term, the same for every handler
            wakeups.indexes.update((key, kwargs[key]) for key in INDEXES)
        wakeups.trigger(name)
        wakeups.bodies[name] = _slim(body)
        await _label_slot(runtime, name, body)
    runtime.wake(wakes.organization_event(name, deleted=False))


async def tell_unserved_regions(runtime: Runtime) -> None:
    """An org of another region that no operator has reconciled, while no operator serves its
    region (no live Lease): its status says so (Ready=False, RegionNotServed), once. Fed by the
    Organizations informer (every region's; kopf watches this region's only). It runs in the
    leader-only part (manager.py), as pending_memberships does: the orgs told while this
    replica followed wait for it. The first operator of the region to reconcile the org writes
    its whole status over this."""
    await runtime.caches.synced()
    while True:
        leading = runtime.kube.write_gate is None or runtime.kube.write_gate()
        if not (leading and runtime.wakes.unreconciled_elsewhere):
            recheck = PENDING_RECHECK if runtime.wakes.unreconciled_elsewhere else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    runtime.wakes.unreconciled_elsewhere_changed.wait(), timeout=recheck
                )
            runtime.wakes.unreconciled_elsewhere_changed.clear()
            continue
        taken, runtime.wakes.unreconciled_elsewhere = runtime.wakes.unreconciled_elsewhere, set()
        await tell_unserved(runtime, taken)


async def tell_unserved(runtime: Runtime, organizations: Iterable[str]) -> None:
    """One pass of tell_unserved_regions over the orgs it was told about."""
    for name in sorted(organizations):
        record = runtime.caches.organizations.get("", name)
        if record is None or record.reconciled:
            continue
        try:
            await _tell_unserved(runtime, name, record.region or "")
        except Exception as error:  # the loop must outlive any single failure
            reason = explain(error)[1]
            log.info("Organization %s: RegionNotServed not written: %s", name, reason)


async def _tell_unserved(runtime: Runtime, name: str, region: str) -> None:
    message = await unserved_region(runtime, region)
    kube = runtime.kube
    body = await kube.read_organization(name) if message is not None else None
    if body is None or body.get("status"):
        return  # served, gone, or reconciled meanwhile
    ready = {
        "type": "Ready",
        "status": "False",
        "reason": "RegionNotServed",
        "message": message,
        "lastTransitionTime": now_utc().isoformat().replace("+00:00", "Z"),
        "observedGeneration": body["metadata"].get("generation"),
    }
    # Conditional on what was read: an operator of the region that wrote meanwhile wins (409).
    await kube.patch_status(
        names.ORGANIZATIONS,
        name,
        {"conditions": [ready]},
        resource_version=body["metadata"]["resourceVersion"],
    )


async def license_changed(
    namespace: str | None,
    name: str,
    labels: kopf.Labels,
    type: str | None,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A License in org-<name> was created, changed or deleted: the org judges it, picks the
    active one of its product and delivers it. (Its Secret isn't watched: see README.)

    One made before shards (or with webhooks off) gets its org's slot label here, from the
    operator that sees it (unsharded: every one; run it once before sharding)."""
    organization = names.organization_of_namespace(namespace)
    if not organization:
        return
    runtime: Runtime = memo.runtime
    runtime.wake(wakes.license_event(namespace))
    wanted = names.shard_slot_label(organization)
    if type == "DELETED" or all(labels.get(k) == v for k, v in wanted.items()):
        return
    kube = runtime.kube
    try:
        await kube.patch_labels(names.LICENSES, str(namespace), name, wanted)
    except Exception as error:  # told again at its next event; the reconcile doesn't need it
        log.warning("License %s/%s: its shard slot label not written: %s", namespace, name, error)


def labelled_or_counted(labels: kopf.Labels, uid: str | None, memo: kopf.Memo, **_: Any) -> bool:
    """kopf filters labels on the new body only: a workload whose org label went must still
    reach workload_changed if an org counted it."""
    runtime: Runtime = memo.runtime
    return bool(labels.get(names.LABEL_ORGANIZATION)) or uid in runtime.wakes.counted_by


async def workload_changed(
    labels: kopf.Labels,
    namespace: str | None,
    uid: str | None,
    type: str | None,
    memo: kopf.Memo,
    body: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    """A workload labelled with an org changed, or left the org that counted it: each org
    concerned reconciles (counts, freeze, licenses); see domain/wakes.py: workload_event.

    A label naming no org served here wakes nothing and is remembered nowhere. A workload in a
    namespace the org can't own is told why it is ignored (tell_ignored), whether or not the
    org exists, and wakes no org: patching it over and over can't keep reconciles busy.
    """
    runtime: Runtime = memo.runtime
    organization = labels.get(names.LABEL_ORGANIZATION) or None
    deleted = type == "DELETED"
    claims = runtime.caches.claims
    runtime.wake(
        runtime.wakes.workload_wakes(
            uid or "", namespace or "", organization, deleted=deleted, claims=claims
        )
    )
    foreign = organization and not runtime.caches.may_own(organization, namespace or "")
    foreign = foreign and runtime.settings.shard.serves(str(organization))  # told by its shard
    if foreign and body is not None and not deleted:
        await tell_ignored(runtime, str(organization), body)


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event(*ORGANIZATIONS, registry=registry)(organization_changed)
    kopf.on.delete(*ORGANIZATIONS, when=in_region, registry=registry)(organization_deleted)
    kopf.on.event(*LICENSES, registry=registry)(license_changed)
    for kind, resource in WORKLOADS.items():
        on_workload = kopf.on.event(
            *resource, when=labelled_or_counted, id=f"{kind.lower()}_changed", registry=registry
        )
        on_workload(workload_changed)
