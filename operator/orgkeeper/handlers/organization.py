"""Organizations: one reconcile loop per org, woken by anything that concerns it."""

from __future__ import annotations

import asyncio
import contextlib
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
from ..domain.events import Event
from ..domain.lifecycle import untold_transitions
from ..domain.namespaces import Claim, ignored_message, owned_namespaces, release_labels, to_release
from ..domain.regions import marks_pending_here
from ..kube import NotLeaderError
from ..resources import SHARED_INSTANCE, PostedEvent, owner_of
from .admission import unserved_region
from .indexes import LICENSES, ORGANIZATIONS, WORKLOADS, workload_index

MAX_BACKOFF = 60.0
# How often a follower looks whether it leads now, and a failed Pending write is retried.
PENDING_RECHECK = 2.0

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
    keep, runtime.transitions[name] = untold_transitions(
        runtime.transitions.get(name), (event.reason for event in events)
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
    await _label_slot(runtime, name, body)
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
        if name in runtime.unfinished:
            trigger.set()  # its turn is over: the rest once the orgs waiting had theirs
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
    claims = [record.claim() for record in runtime.claimed(name)]
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
    `Pending` within seconds (no org loop would ever write them). Only the leader writes: a
    follower keeps the namespaces it was told about until it leads (checked every few seconds).
    An Organization in another region is served by that region's operator, so it is left alone;
    a regional operator acts only on namespaces it knows are of its region (_pending_here)."""
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
            if not runtime.settings.shard.serves(organization):
                continue  # another shard's (--shard): it marks its own
            held = runtime.organizations.get("", organization)
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
                runtime.unserved.add(namespace)
            else:
                runtime.released.discard(namespace)
        if runtime.unserved:
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
    served_here = namespace in runtime.released
    if not marks_pending_here(runtime.settings.region, labels, served_here):
        return False
    return await kube.read_organization(organization) is None


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


async def tell_unserved_regions(runtime: Runtime) -> None:
    """An org of another region that no operator has reconciled, while no operator serves its
    region (no live Lease): its status says so (Ready=False, RegionNotServed), once. Fed by the
    Organizations informer (every region's; kopf watches this region's only). Only the leader
    writes: a follower keeps the orgs it was told about until it leads (checked every few
    seconds). The first operator of the region to reconcile the org writes its whole status
    over this."""
    await runtime.caches_synced()
    while True:
        leading = runtime.kube.write_gate is None or runtime.kube.write_gate()
        if not (leading and runtime.unreconciled_elsewhere):
            recheck = PENDING_RECHECK if runtime.unreconciled_elsewhere else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    runtime.unreconciled_elsewhere_changed.wait(), timeout=recheck
                )
            runtime.unreconciled_elsewhere_changed.clear()
            continue
        taken, runtime.unreconciled_elsewhere = runtime.unreconciled_elsewhere, set()
        await tell_unserved(runtime, taken)


async def tell_unserved(runtime: Runtime, organizations: Iterable[str]) -> None:
    """One pass of tell_unserved_regions over the orgs it was told about."""
    for name in sorted(organizations):
        record = runtime.organizations.get("", name)
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
    runtime.poke(organization)
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
    return bool(labels.get(names.LABEL_ORGANIZATION)) or uid in runtime.counted_by


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
    concerned reconciles (counts, freeze, licenses); see Runtime.workload_wakes.

    A label naming no org served here wakes nothing and is remembered nowhere. A workload in a
    namespace the org can't own is told why it is ignored (tell_ignored), whether or not the
    org exists, and wakes no org: patching it over and over can't keep reconciles busy.
    """
    runtime: Runtime = memo.runtime
    organization = labels.get(names.LABEL_ORGANIZATION) or None
    deleted = type == "DELETED"
    wakes = runtime.workload_wakes(uid or "", namespace or "", organization, deleted=deleted)
    for woken in wakes:
        runtime.poke(woken)
    foreign = organization and not runtime.may_own(organization, namespace or "")
    foreign = foreign and runtime.settings.shard.serves(str(organization))  # told by its shard
    if foreign and body is not None and not deleted:
        await tell_ignored(runtime, str(organization), body)


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
