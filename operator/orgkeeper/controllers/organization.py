"""One reconcile of an Organization: observe, ask the domain for the plan, perform it, and
write the status."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from .. import names
from ..api.v1alpha1 import API_VERSION, LICENSE, MEMBERSHIP, ORGANIZATION
from ..api.v1alpha1.common import Condition
from ..api.v1alpha1.organization import Activity, OrganizationSpec, OrganizationStatus
from ..domain import namespaces as namespace_domain
from ..domain.events import Event, recorded_in
from ..domain.namespaces import Claim
from ..domain.organization.billing import roll_billing_cycle
from ..domain.organization.plan import (
    Applied,
    NamespacePlan,
    OrganizationPlan,
    OrgObservation,
    WorkloadAction,
    next_due,
    parked_message,
    plan_organization,
)
from ..domain.organization.status import closing_events, organization_status
from ..domain.organization.warnings import failed_write, ignored_workload, invalid_spec, tell_once
from ..kube import Outcome
from ..resources import OwnerRef, owner_of
from . import guardrails
from .license import reconcile_licenses
from .membership import create_owner_membership, sync_memberships
from .records import BindingRecord, LicenseRecord, MemberRecord, NamespaceRecord, WorkloadRecord
from .runtime import Runtime
from .writes import Failure, Target, annotate, attempt, differs, now_utc, status_wire, workload_ref

ROLLOVER_ATTEMPTS = 5


@dataclass(frozen=True)
class Cached:
    """What the caches hold for one org: its namespace's objects and its workloads."""

    members: Sequence[MemberRecord] = ()
    bindings: Sequence[BindingRecord] = ()
    licenses: Sequence[LicenseRecord] = ()
    workloads: Sequence[WorkloadRecord] = ()  # labelled with the org, wherever they are
    claims: Sequence[NamespaceRecord] = ()  # Namespaces labelled with the org


async def reconcile_organization(
    runtime: Runtime, body: Mapping[str, Any], cached: Cached, *, changed_at: float
) -> list[Event]:
    """Converges one Organization: observes, asks the domain for the plan, performs it in
    order, and writes the status; returns the Events worth posting.

    `changed_at` is when the change this reconcile answers arrived (time.monotonic()).
    """
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return []  # going away: the delete handler withdraws, garbage collection does the rest
    name, generation = meta["name"], int(meta.get("generation", 0))
    runtime.wakes.unfinished.discard(name)  # this turn says again whether work is left
    version: str | None = meta.get("resourceVersion")
    current_status = dict(body.get("status") or {})
    now = now_utc()
    try:
        spec = OrganizationSpec.model_validate(body.get("spec") or {})
        status = OrganizationStatus.model_validate(current_status)
    except ValidationError as error:
        return await _stalled(runtime, name, generation, current_status, error, now)

    owner_ref = owner_of(ORGANIZATION.kind, body)
    namespace = names.org_namespace(name)
    namespace_object, namespace_ready, found_claim = await _org_namespace(
        runtime, namespace, name, owner_ref, spec.owner, served=status.phase == "Active"
    )
    # Off the event loop: planning thousands of Memberships (pydantic) would hold up the
    # admission answers served on it.
    plan = await asyncio.to_thread(
        plan_organization,
        OrgObservation(
            name=name,
            uid=owner_ref.uid,
            generation=generation,
            created=_created(meta, now),
            spec=spec,
            status=status,
            now=now,
            billing_cycle=runtime.settings.billing_cycle,
            inactivity_window=runtime.settings.inactivity_window,
            sso_prefix=runtime.settings.sso_username_prefix,
            namespace_ready=namespace_ready,
            org_namespace=found_claim,
            claims=[c.claim() for c in cached.claims],
            memberships=cached.members,
            bindings=cached.bindings,
            provisioned=frozenset(
                record.product for record in cached.licenses if record.source == "Provisioned"
            ),
            workloads=cached.workloads,
        ),
    )

    failures: list[Failure] = []
    events: list[Event] = []
    owner_membership_created = False
    if plan.owner_membership is not None:
        owner_membership_created = await create_owner_membership(
            runtime, namespace, plan.owner_membership, failures
        )
        if owner_membership_created:
            events.append(plan.owner_membership.created)
    events += plan.events
    if plan.records_deactivation_first:
        first = Applied(
            owner_membership_created=owner_membership_created,
            failed=tuple(f.describe() for f in failures),
        )
        recorded = organization_status(plan, first)
        await _write_status(runtime, name, recorded, current_status, version=version, now=now)
        version = None  # changed by that write: a rollover reads the org again

    told, licensed, licenses_due = await _apply(
        runtime, plan, cached, owner_ref, namespace_object, failures, changed_at=changed_at
    )
    runtime.wakes.schedule(name, (next_due(plan), licenses_due))
    events += told
    ignored = [w for w in cached.workloads if w.namespace not in plan.owned_namespaces]
    events += _warnings(runtime, name, owner_ref.uid, ignored, failures)

    applied = Applied(
        owner_membership_created=owner_membership_created,
        failed=tuple(f.describe() for f in failures),
        licenses=licensed,
        complete=name not in runtime.wakes.unfinished,
    )
    desired = organization_status(plan, applied)
    await _write_status(runtime, name, desired, current_status, version=version, now=now)
    runtime.metrics.phases[name] = desired.phase or "Provisioning"
    runtime.metrics.reconciles.labels(MEMBERSHIP.kind, "success").inc(len(cached.members))
    told = events + closing_events(plan, desired)
    # The org's history is recorded in org-<name> for its Owner and admins, once it is the org's
    # (never in a namespace someone else made: NamespaceConflict).
    return recorded_in(told, namespace) if namespace_ready else told


async def _apply(
    runtime: Runtime,
    plan: OrganizationPlan,
    cached: Cached,
    owner: OwnerRef,
    namespace_object: client.V1Namespace | None,
    failures: list[Failure],
    *,
    changed_at: float,
) -> tuple[list[Event], frozenset[str], datetime | None]:
    """The plan's effects in org-<name> and on the workloads, then the licenses; returns the
    Events the licenses tell, the products licensed and when a license is due next (rotation,
    expiry). Failures go to `failures`."""
    name, namespace = plan.observed.name, names.org_namespace(plan.observed.name)
    served = [w for w in cached.workloads if w.namespace in plan.owned_namespaces]
    await _stamp(runtime, plan, cached.claims, failures)
    if plan.namespace is not None:
        await guardrails.ensure_guardrails(runtime, namespace, name, owner, namespace_object)
        await _owner_rbac(runtime, name, plan.namespace, owner, failures)
        if await sync_memberships(
            runtime,
            namespace,
            plan.namespace.memberships,
            cached.members,
            failures,
            budget=runtime.settings.writes_per_turn,
        ):
            runtime.wakes.unfinished.add(name)  # the rest at its next turn, behind waiting orgs
        await create_licenses(runtime, namespace, owner, plan.namespace.licenses, failures)
    await sync_workloads(runtime, served, plan.workloads, failures)
    failed = {failure.target.what for failure in failures}
    parked = [
        Event("Warning", "ControlPlaneParked", parked_message(name), workload_ref(w))
        for w in served
        if plan.workloads.get(w.uid) == "Park" and f"{w.kind} {w.ref}" not in failed
    ]
    if plan.namespace is None:
        return parked, frozenset(), None  # nothing is written into a namespace the org doesn't own
    reconciled = await reconcile_licenses(
        runtime,
        owner=owner,
        spec=plan.observed.spec,
        deactivated=plan.org.deactivated,
        licenses=cached.licenses,
        workloads=served,
        now=plan.observed.now,
        changed_at=changed_at,
    )
    failures += reconciled.failures
    return parked + reconciled.events, frozenset(reconciled.active_products), reconciled.due


async def _org_namespace(
    runtime: Runtime,
    namespace: str,
    organization: str,
    owner: OwnerRef,
    spec_owner: str,
    *,
    served: bool,
) -> tuple[client.V1Namespace | None, bool, Claim | None]:
    """org-<name> as found (None: this reconcile created it), whether it is the org's, and what
    it claims (None: not found). One the org serves is stamped with its UID the first time.
    `served`: the org's status says it served its namespace already (see made_for)."""
    kube = runtime.kube
    found = await kube.read_namespace(namespace)
    if found is None:
        # Someone may create it between the read and the create: only one the org owns counts.
        made = await kube.create_namespace(namespace, organization, owner)
        return None, made is not Outcome.TAKEN, None
    owners = [(ref.name, ref.uid) for ref in found.metadata.owner_references or []]
    claim = Claim.of(namespace, found.metadata.labels or {}, owners)
    ready = namespace_domain.org_namespace_ready(
        claim, organization, owner.uid, spec_owner, served=served
    )
    if ready and claim.uid != owner.uid:
        await kube.label_namespace(namespace, {names.LABEL_ORGANIZATION_UID: owner.uid})
    return found, ready, claim


async def _stamp(
    runtime: Runtime,
    plan: OrganizationPlan,
    claims: Sequence[NamespaceRecord],
    failures: list[Failure],
) -> None:
    """The labelled namespaces the org serves and that don't record its UID yet: stamped."""
    observed, kube = plan.observed, runtime.kube
    uid_label = {names.LABEL_ORGANIZATION_UID: observed.uid}
    await attempt(
        [
            (
                Target(f"Namespace {record.name}"),
                kube.label_namespace(record.name, uid_label),
            )
            for record in claims
            if record.name != names.org_namespace(observed.name)
            and namespace_domain.to_stamp(
                record.claim(), observed.name, observed.uid, observed.spec.owner
            )
        ],
        failures,
    )


async def _owner_rbac(
    runtime: Runtime,
    organization: str,
    planned: NamespacePlan,
    owner: OwnerRef,
    failures: list[Failure],
) -> None:
    """The Owner's rights on the org (read-only while it is deactivated), granted to every user
    name the org binds them as (membership.user_names)."""
    kube = runtime.kube
    write: Awaitable[Any] = kube.ensure_owner_rbac(
        organization, planned.owner_users, owner, planned.owner_rules
    )
    await attempt(
        [(Target(f"ClusterRoleBinding {names.owner_role(organization)}"), write)], failures
    )


async def sync_workloads(
    runtime: Runtime,
    workloads: Sequence[WorkloadRecord],
    actions: Mapping[str, WorkloadAction],
    failures: list[Failure],
) -> None:
    """Performs the plan's action for each workload (by uid); `workloads` are the org's, in
    namespaces it owns."""
    kube = runtime.kube
    writes: list[tuple[Target, Awaitable[Any]]] = []
    for workload in workloads:
        action = actions.get(workload.uid)
        if action is None:
            continue
        target = Target(f"{workload.kind} {workload.ref}", (workload_ref(workload),))
        if action == "Decommission":
            delete = kube.delete_workload(workload.kind, workload.namespace, workload.name)
            writes.append((target, delete))
        elif action == "Park":
            park = kube.park_workload(workload.kind, workload.namespace, workload.name)
            writes.append((target, park))
        else:
            value = "true" if action == "Freeze" else None
            writes.append((target, annotate(runtime, workload, {names.ANNOTATION_FROZEN: value})))
    await attempt(writes, failures)


def namespace_holder(runtime: Runtime, namespace: str) -> str | None:
    """The org a labelled namespace belongs to (its owner, else its label), if any."""
    record = runtime.caches.namespaces.get("", namespace)
    if record is None:
        return None
    return record.owners[0][0] if record.owners else record.organization


def _warnings(
    runtime: Runtime,
    organization: str,
    uid: str,
    ignored: Sequence[WorkloadRecord],
    failures: Sequence[Failure],
) -> list[Event]:
    """Warning Events for what newly went wrong (the domain tells each once while it lasts)."""
    troubles = []
    for workload in ignored:
        holder = namespace_holder(runtime, workload.namespace)
        message = namespace_domain.ignored_message(
            workload.namespace, organization, holder, uid if holder == organization else None
        )
        troubles.append(ignored_workload(workload.uid, message, workload_ref(workload)))
    troubles += [
        failed_write(organization, f.target.what, f.reason, f.describe(), f.target.involved)
        for f in failures
    ]
    events, now_told = tell_once(runtime.memory.told.get(organization, frozenset()), troubles)
    if now_told:
        runtime.memory.told[organization] = now_told
    else:
        runtime.memory.told.pop(organization, None)
    return events


def _created(meta: Mapping[str, Any], fallback: datetime) -> datetime:
    stamp = meta.get("creationTimestamp")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else fallback


async def _write_status(
    runtime: Runtime,
    name: str,
    desired: OrganizationStatus,
    current: Mapping[str, Any],
    *,
    version: str | None,
    now: datetime,
) -> None:
    """Writes the status if it changed. The request counters belong to `orgkeeper activity`:
    the operator sets them up and rolls them over at the end of a billing cycle, and otherwise
    leaves them alone; the rollover is compare-and-swap, so no request recorded meanwhile is
    lost (a 409 rolls over again from what the server holds)."""
    kube = runtime.kube
    wire = status_wire(desired)
    current_requests = (current.get("activity") or {}).get("apiRequests")
    wanted = (wire.get("activity") or {}).get("apiRequests")
    if current_requests is None or wanted is None or not _rolled(current, wire):
        if current_requests is not None and wanted is not None:
            wire["activity"] = {k: v for k, v in wire["activity"].items() if k != "apiRequests"}
        if differs(wire, current):
            await kube.patch_status(ORGANIZATION.plural, name, wire)
        return
    for _ in range(ROLLOVER_ATTEMPTS):
        if version is None:
            live = await kube.read_organization(name)
            if live is None:
                return
            version = str(live["metadata"]["resourceVersion"])
            held = OrganizationStatus.model_validate(live.get("status") or {})
            rolled = held.activity or Activity()
            if held.billing is not None:
                _, rolled = roll_billing_cycle(
                    held.billing, rolled, runtime.settings.billing_cycle, now
                )
            wire["activity"]["apiRequests"] = rolled.api_requests.model_dump(
                mode="json", by_alias=True
            )
        try:
            await kube.patch_status(ORGANIZATION.plural, name, wire, resource_version=version)
            return
        except ApiException as error:
            if error.status != 409:
                raise
            version = None
    raise RuntimeError(f"Organization {name} kept changing during the billing-cycle rollover")


def _rolled(current: Mapping[str, Any], wire: Mapping[str, Any]) -> bool:
    before = (current.get("billing") or {}).get("cycleStart")
    after = (wire.get("billing") or {}).get("cycleStart")
    return before != after


async def _stalled(
    runtime: Runtime,
    name: str,
    generation: int,
    current: Mapping[str, Any],
    error: ValidationError,
    now: datetime,
) -> list[Event]:
    """A spec the API server let in but the policy can't act on: Ready=False, no retry storm."""
    found, told = invalid_spec(
        ((issue["loc"], issue["msg"]) for issue in error.errors()),
        [Condition.model_validate(c) for c in current.get("conditions") or []],
        generation=generation,
        now=now,
    )
    wire = {
        "conditions": [c.model_dump(mode="json", by_alias=True) for c in found],
        "observedGeneration": generation,
    }
    if differs(wire, current):
        await runtime.kube.patch_status(ORGANIZATION.plural, name, wire)
    return [told]


async def create_licenses(
    runtime: Runtime,
    namespace: str,
    owner: OwnerRef,
    products: Sequence[str],
    failures: list[Failure],
) -> None:
    """The Provisioned Licenses the plan asks for, owned by the Organization (garbage collection
    takes them with it, even from a namespace it doesn't own); the license controller issues
    and signs them."""
    kube = runtime.kube
    await attempt(
        [
            (
                Target(f"License {namespace}/{product}"),
                kube.create_custom(
                    LICENSE.plural,
                    namespace,
                    {
                        "apiVersion": API_VERSION,
                        "kind": LICENSE.kind,
                        "metadata": {
                            "name": product,
                            "labels": {
                                names.LABEL_ORGANIZATION: owner.name,
                                names.LABEL_ORGANIZATION_UID: owner.uid,
                                names.LABEL_PRODUCT: product,
                                **names.shard_slot_label(owner.name),
                            },
                            "ownerReferences": [owner.to_wire()],
                        },
                        "spec": {
                            "product": product,
                            "source": "Provisioned",
                            "secretRef": {
                                "name": names.provisioned_license_secret(product),
                                "key": names.LICENSE_DATA_KEY,
                            },
                        },
                    },
                ),
            )
            for product in products
        ],
        failures,
    )
