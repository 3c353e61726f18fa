"""One reconcile of an Organization: namespace, Owner, memberships and their RBAC, status."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from .. import names
from ..api.v1alpha1 import PRODUCTS
from ..api.v1alpha1.common import Condition
from ..api.v1alpha1.membership import MembershipStatus
from ..api.v1alpha1.organization import Activity, OrganizationSpec, OrganizationStatus
from ..domain import conditions, lifecycle
from ..domain import membership as membership_domain
from ..domain import organization as org_domain
from ..domain.membership import Binding, Member, OrgContext
from ..domain.organization import deactivation_message
from ..kube import OwnerRef, owner_of
from . import guardrails
from .informer import Informer
from .license import reconcile_licenses
from .records import BindingRecord, LicenseRecord, MemberRecord, WorkloadRecord
from .runtime import Event, Runtime
from .writes import annotate, bounded, differs, now_utc, status_wire


@dataclass(frozen=True)
class Indexed:
    """What the caches hold for one org: its namespace's objects and its workloads."""

    members: Sequence[MemberRecord] = ()
    bindings: Sequence[BindingRecord] = ()
    licenses: Sequence[LicenseRecord] = ()
    workloads: Sequence[WorkloadRecord] = ()


async def reconcile_organization(
    runtime: Runtime, body: Mapping[str, Any], indexed: Indexed, *, changed_at: float
) -> list[Event]:
    """Converges one Organization; returns the Events worth posting.

    `changed_at` is when the change this reconcile answers arrived (time.monotonic()).
    """
    kube, settings = runtime.kube, runtime.settings
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return []  # going away: the delete handler withdraws, garbage collection does the rest
    name, generation = meta["name"], int(meta.get("generation", 0))
    current_status = dict(body.get("status") or {})
    now = now_utc()
    try:
        spec = OrganizationSpec.model_validate(body.get("spec") or {})
        status = OrganizationStatus.model_validate(current_status)
    except ValidationError as error:
        return await _stalled(runtime, name, generation, current_status, error, now)

    owner_ref = owner_of("Organization", body)
    namespace = names.org_namespace(name)
    namespace_object = await kube.run(kube.read_namespace, namespace)
    if namespace_object is None:
        await kube.run(kube.create_namespace, namespace, name, owner_ref)
        namespace_ready, namespace_conflict = True, False
    else:
        refs = namespace_object.metadata.owner_references or []
        namespace_ready = any(ref.uid == owner_ref.uid for ref in refs)
        namespace_conflict = not namespace_ready

    events: list[Event] = []
    members = [record.member() for record in indexed.members]
    if (
        namespace_ready
        and status.owner is None
        and org_domain.find_member(members, spec.owner) is None
    ):
        await kube.run(
            kube.create_custom, "memberships", namespace, _owner_membership(name, spec.owner)
        )
        members.append(
            Member(names.owner_membership(spec.owner), spec.owner, ("organization-admin",))
        )
        events.append(
            Event(
                "Normal",
                "OwnerMembershipCreated",
                f"created the Membership of the Owner {spec.owner}",
            )
        )

    decision = org_domain.decide_owner(spec.owner, status.owner, members)
    if decision.transferred_from:
        events.append(Event("Normal", "OwnershipTransferred", decision.message))
    elif not decision.valid:
        previous = conditions.find(status.conditions, "OwnerValid")
        if previous is None or previous.reason != decision.reason:
            events.append(Event("Warning", decision.reason, decision.message))

    logins = [_login_time(record) for record in indexed.members]
    last_login = max((t for t in logins if t is not None), default=None)
    activity = status.activity or Activity()
    _, rolled_activity = org_domain.roll_billing_cycle(
        status.billing or org_domain.billing(spec, None, now), activity, settings.billing_cycle, now
    )
    idle = lifecycle.inactive(
        spec,
        rolled_activity,
        lifecycle.last_activity(
            _created(meta, now),
            [last_login],
            spec.reactivation_requested_at,
            reactivated_at=lifecycle.reactivated_at(status),
        ),
        now=now,
        window=settings.inactivity_window,
    )
    plan = lifecycle.decide(spec, status, idle=idle, now=now)
    workloads = list(indexed.workloads)
    observed = org_domain.OrgObservation(
        name=name,
        generation=generation,
        created=_created(meta, now),
        spec=spec,
        status=status,
        members=members,
        namespace_ready=namespace_ready,
        namespace_conflict=namespace_conflict,
        licenses=frozenset(),  # filled in once the licenses are reconciled
        control_planes=sum(1 for w in workloads if w.component == names.COMPONENT_CONTROL_PLANE),
        data_planes=sum(1 for w in workloads if w.component == names.COMPONENT_DATA_PLANE),
    )

    def status_for(effects_applied: bool) -> OrganizationStatus:
        return org_domain.organization_status(
            observed,
            decision,
            plan,
            namespace=namespace,
            now=now,
            billing_cycle=settings.billing_cycle,
            last_login=last_login,
            effects_applied=effects_applied,
        )

    if plan.started and plan.deactivation is not None:
        # Recorded before any effect, so a crash mid-way resumes the deactivation.
        await _write_status(runtime, name, status_for(False), current_status)
        events.append(
            Event(
                "Normal",
                "Deactivating",
                f"deactivating the organization ({plan.deactivation.reason})",
            )
        )

    org = org_domain.context(name, spec, decision.effective, plan)
    if namespace_ready:
        await guardrails.ensure_guardrails(runtime, namespace, name, owner_ref, namespace_object)
        if org.deactivated:
            await kube.run(kube.remove_owner_binding, name)
        else:
            user = membership_domain.user_name(
                decision.effective, org, settings.sso_username_prefix
            )
            await kube.run(kube.ensure_owner_rbac, name, user, owner_ref)
        await sync_members(runtime, org, namespace, indexed.members, indexed.bindings, now)
        await ensure_licenses(runtime, namespace, name, indexed.licenses)
    await sync_workloads(runtime, workloads, deactivated=org.deactivated)
    licensed = await reconcile_licenses(
        runtime,
        organization=name,
        spec=spec,
        deactivated=org.deactivated,
        licenses=indexed.licenses,
        workloads=workloads,
        now=now,
        changed_at=changed_at,
    )
    events += licensed.events
    observed = dataclasses.replace(observed, licenses=frozenset(licensed.active_products))

    desired = status_for(True)
    await _write_status(runtime, name, desired, current_status)
    runtime.metrics.phases[name] = desired.phase or "Provisioning"
    runtime.metrics.reconciles.labels("Membership", "success").inc(len(indexed.members))
    if desired.phase == "Deactivated" and status.phase != "Deactivated" and plan.deactivation:
        events.append(Event("Normal", "Deactivated", deactivation_message(plan, spec)))
    if plan.reactivated:
        events.append(
            Event("Normal", "Reactivated", "billing, roles and license propagation restored")
        )
    return events


async def sync_workloads(
    runtime: Runtime, workloads: Sequence[WorkloadRecord], *, deactivated: bool
) -> None:
    """Deactivated: control planes decommissioned, data planes frozen. Active: unfrozen."""
    kube = runtime.kube
    writes: list[Awaitable[Any]] = []
    for workload in workloads:
        if deactivated and workload.component == names.COMPONENT_CONTROL_PLANE:
            writes.append(
                kube.run(kube.delete_workload, workload.kind, workload.namespace, workload.name)
            )
        elif workload.component == names.COMPONENT_DATA_PLANE and workload.frozen != deactivated:
            value = "true" if deactivated else None
            writes.append(annotate(runtime, workload, {names.ANNOTATION_FROZEN: value}))
    await bounded(writes)


def _login_time(record: MemberRecord) -> datetime | None:
    stamp = record.status.get("lastLoginTime")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def _created(meta: Mapping[str, Any], fallback: datetime) -> datetime:
    stamp = meta.get("creationTimestamp")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else fallback


def _owner_membership(organization: str, email: str) -> dict[str, Any]:
    return {
        "apiVersion": "orgkeeper.dev/v1alpha1",
        "kind": "Membership",
        "metadata": {
            "name": names.owner_membership(email),
            "labels": {
                names.LABEL_ORGANIZATION: organization,
                names.LABEL_EMAIL_HASH: names.email_hash(email),
            },
        },
        "spec": {"email": email, "teams": ["organization-admin"]},
    }


async def _write_status(
    runtime: Runtime, name: str, desired: OrganizationStatus, current: Mapping[str, Any]
) -> None:
    wire = status_wire(desired)
    # The request counters belong to `orgkeeper activity`: the operator sets them up and rolls
    # them over at the end of a billing cycle, and otherwise leaves them alone.
    current_requests = (current.get("activity") or {}).get("apiRequests")
    wanted = (wire.get("activity") or {}).get("apiRequests")
    if current_requests is not None and wanted is not None and not _rolled(current, wire):
        wire["activity"] = {k: v for k, v in wire["activity"].items() if k != "apiRequests"}
    if differs(wire, current):
        await runtime.kube.run(runtime.kube.patch_status, "organizations", name, wire)


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
    problems = "; ".join(
        f"spec.{'.'.join(str(p) for p in issue['loc'])}: {issue['msg']}" for issue in error.errors()
    )
    message = f"the spec can't be reconciled ({problems}); correct it and apply again"
    found = [Condition.model_validate(c) for c in current.get("conditions") or []]
    found = conditions.put(
        found, "Ready", False, "InvalidSpec", message, generation=generation, now=now
    )
    wire = {
        "conditions": [c.model_dump(mode="json", by_alias=True) for c in found],
        "observedGeneration": generation,
    }
    if differs(wire, current):
        await runtime.kube.run(runtime.kube.patch_status, "organizations", name, wire)
    return [Event("Warning", "InvalidSpec", message)]


async def sync_members(
    runtime: Runtime,
    org: OrgContext,
    namespace: str,
    members: Sequence[MemberRecord],
    bindings: Sequence[BindingRecord],
    now: datetime,
) -> None:
    """Labels, RoleBindings and status of every Membership of the org; writes only differences."""
    kube, prefix = runtime.kube, runtime.settings.sso_username_prefix
    desired: dict[str, tuple[Binding, MemberRecord]] = {}
    for record in members:
        for binding in membership_domain.desired_bindings(record.member(), org, prefix):
            desired[binding.name] = (binding, record)
    existing = {b.name: b for b in bindings}

    writes: list[Awaitable[Any]] = []
    for binding_name, (binding, record) in desired.items():
        found = existing.get(binding_name)
        if found is None or found.users != (binding.user,) or found.role != binding.cluster_role:
            owner = OwnerRef("orgkeeper.dev/v1alpha1", "Membership", record.name, record.uid)
            create = kube.run(kube.create_member_binding, namespace, org.name, binding, owner)
            writes.append(_taken_in(runtime.bindings, create))
    for binding_name in existing.keys() - desired.keys():
        writes.append(_deleted_binding(runtime, namespace, binding_name))

    for record in members:
        labels = {
            names.LABEL_ORGANIZATION: org.name,
            names.LABEL_EMAIL_HASH: names.email_hash(record.email),
        }
        if any(record.labels.get(k) != v for k, v in labels.items()):
            label = kube.run(kube.patch_labels, "memberships", namespace, record.name, labels)
            writes.append(_taken_in(runtime.members, label))
        previous = MembershipStatus.model_validate(record.status)
        status = membership_domain.membership_status(
            record.member(), org, previous, generation=record.generation, now=now
        )
        wire = status_wire(status, omit=("lastLoginTime",))
        if differs(wire, record.status):
            patch = kube.run(kube.patch_status, "memberships", record.name, wire, namespace)
            writes.append(_taken_in(runtime.members, patch))
    await bounded(writes)


async def _deleted_binding(runtime: Runtime, namespace: str, name: str) -> None:
    await runtime.kube.run(runtime.kube.delete_role_binding, namespace, name)
    runtime.bindings.forget(namespace, name)


async def _taken_in(informer: Informer[Any], write: Awaitable[Mapping[str, Any] | None]) -> None:
    """Awaits a write and puts its answer in the cache, so the next reconcile doesn't redo it."""
    written = await write
    if written is not None:
        informer.observe(written)


async def ensure_licenses(
    runtime: Runtime, namespace: str, organization: str, licenses: Sequence[LicenseRecord]
) -> None:
    """One Provisioned License per product; the license controller issues and signs them."""
    kube = runtime.kube
    present = {record.product for record in licenses if record.source == "Provisioned"}
    await bounded(
        [
            kube.run(
                kube.create_custom,
                "licenses",
                namespace,
                {
                    "apiVersion": "orgkeeper.dev/v1alpha1",
                    "kind": "License",
                    "metadata": {
                        "name": product,
                        "labels": {
                            names.LABEL_ORGANIZATION: organization,
                            names.LABEL_PRODUCT: product,
                        },
                    },
                    "spec": {
                        "product": product,
                        "source": "Provisioned",
                        "secretRef": {
                            "name": names.provisioned_license_secret(product),
                            "key": "license",
                        },
                    },
                },
            )
            for product in PRODUCTS
            if product not in present
        ]
    )
