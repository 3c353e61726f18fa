"""One reconcile of an Organization: namespace, Owner, memberships and their RBAC, status."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from .. import names
from ..api.v1alpha1 import PRODUCTS
from ..api.v1alpha1.common import Condition
from ..api.v1alpha1.membership import MembershipStatus
from ..api.v1alpha1.organization import OrganizationSpec, OrganizationStatus
from ..domain import conditions
from ..domain import membership as membership_domain
from ..domain import organization as org_domain
from ..domain.membership import Binding, OrgContext
from ..kube import OwnerRef, owner_of
from .records import BindingRecord, LicenseRecord, MemberRecord
from .runtime import Event, Runtime

WRITE_CONCURRENCY = 16


async def bounded(calls: Sequence[Awaitable[Any]], limit: int = WRITE_CONCURRENCY) -> None:
    """Runs the calls concurrently, at most `limit` at a time; the first error is raised."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[Any]) -> None:
        async with gate:
            await call

    await asyncio.gather(*(one(call) for call in calls))


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def status_wire(
    status: OrganizationStatus | MembershipStatus, *, omit: Sequence[str] = ()
) -> dict[str, Any]:
    """Status as a merge patch: unset top-level fields become null (removed)."""
    wire = status.model_dump(mode="json", by_alias=True)
    return {key: value for key, value in wire.items() if key not in omit}


def differs(desired: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    return any(current.get(key) != value for key, value in desired.items())


async def reconcile_organization(
    runtime: Runtime,
    body: Mapping[str, Any],
    members: Sequence[MemberRecord],
    bindings: Sequence[BindingRecord],
    licenses: Sequence[LicenseRecord],
) -> list[Event]:
    """Converges one Organization; returns the Events worth posting."""
    kube, settings = runtime.kube, runtime.settings
    meta = body["metadata"]
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
    member_list = [record.member() for record in members]
    if (
        namespace_ready
        and status.owner is None
        and org_domain.find_member(member_list, spec.owner) is None
    ):
        await kube.run(
            kube.create_custom, "memberships", namespace, _owner_membership(name, spec.owner)
        )
        member_list.append(
            membership_domain.Member(
                names.owner_membership(spec.owner), spec.owner, ("organization-admin",)
            )
        )
        events.append(
            Event(
                "Normal",
                "OwnerMembershipCreated",
                f"created the Membership of the Owner {spec.owner}",
            )
        )

    decision = org_domain.decide_owner(spec.owner, status.owner, member_list)
    if decision.transferred_from:
        events.append(Event("Normal", "OwnershipTransferred", decision.message))
    elif not decision.valid:
        previous = conditions.find(status.conditions, "OwnerValid")
        if previous is None or previous.reason != decision.reason:
            events.append(Event("Warning", decision.reason, decision.message))

    effective = status.model_copy(update={"owner": decision.effective})
    org = org_domain.context(name, spec, effective)
    if namespace_ready:
        user = membership_domain.user_name(decision.effective, org, settings.sso_username_prefix)
        await kube.run(kube.ensure_owner_rbac, name, user, owner_ref)
        await sync_members(runtime, org, namespace, members, bindings, now)
        await ensure_licenses(runtime, namespace, name, licenses)

    observed = org_domain.OrgObservation(
        name=name,
        generation=generation,
        created=_created(meta, now),
        spec=spec,
        status=status,
        members=member_list,
        namespace_ready=namespace_ready,
        namespace_conflict=namespace_conflict,
        licenses=frozenset(record.product for record in licenses if record.product in PRODUCTS),
    )
    desired = org_domain.organization_status(
        observed, decision, namespace=namespace, now=now, billing_cycle=settings.billing_cycle
    )
    await _write_status(runtime, name, desired, current_status)
    return events


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
    # Activity counters are written by `orgkeeper activity`; the operator sets them up and rolls
    # them over at the end of a billing cycle, and otherwise leaves them alone.
    current_requests = (current.get("activity") or {}).get("apiRequests")
    desired_requests = desired.activity.api_requests if desired.activity else None
    rolled = desired_requests is not None and (
        current_requests is None or desired_requests.model_dump(by_alias=True) != current_requests
    )
    wire = status_wire(desired, omit=() if rolled else ("activity",))
    if differs(wire, current):
        await runtime.kube.run(runtime.kube.patch_status, "organizations", name, wire)


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
            writes.append(kube.run(kube.create_member_binding, namespace, org.name, binding, owner))
    for binding_name in existing.keys() - desired.keys():
        writes.append(kube.run(kube.delete_role_binding, namespace, binding_name))

    for record in members:
        labels = {
            names.LABEL_ORGANIZATION: org.name,
            names.LABEL_EMAIL_HASH: names.email_hash(record.email),
        }
        if any(record.labels.get(k) != v for k, v in labels.items()):
            writes.append(
                kube.run(kube.patch_labels, "memberships", namespace, record.name, labels)
            )
        previous = MembershipStatus.model_validate(record.status)
        status = membership_domain.membership_status(
            record.member(), org, previous, generation=record.generation, now=now
        )
        wire = status_wire(status, omit=("lastLoginTime",))
        if differs(wire, record.status):
            writes.append(kube.run(kube.patch_status, "memberships", record.name, wire, namespace))
    await bounded(writes)


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
                    "spec": {"product": product, "source": "Provisioned"},
                },
            )
            for product in PRODUCTS
            if product not in present
        ]
    )
