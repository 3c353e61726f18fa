"""One reconcile of an Organization: namespace, Owner, memberships and their RBAC, status."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from .. import names
from ..api.v1alpha1 import PRODUCTS
from ..api.v1alpha1.common import Condition
from ..api.v1alpha1.membership import MembershipStatus
from ..api.v1alpha1.organization import Activity, OrganizationSpec, OrganizationStatus
from ..domain import conditions, lifecycle
from ..domain import membership as membership_domain
from ..domain import namespaces as namespace_domain
from ..domain import organization as org_domain
from ..domain.membership import Binding, Member, OrgContext
from ..domain.namespaces import Claim
from ..domain.organization import deactivation_message
from ..kube import OwnerRef, owner_of
from . import guardrails
from .informer import Informer
from .license import reconcile_licenses
from .records import BindingRecord, LicenseRecord, MemberRecord, NamespaceRecord, WorkloadRecord
from .runtime import Event, Runtime, ignored_key
from .writes import (
    Failure,
    Target,
    annotate,
    attempt,
    differs,
    now_utc,
    status_wire,
    workload_ref,
)

ROLLOVER_ATTEMPTS = 5


@dataclass(frozen=True)
class Indexed:
    """What the caches hold for one org: its namespace's objects and its workloads."""

    members: Sequence[MemberRecord] = ()
    bindings: Sequence[BindingRecord] = ()
    licenses: Sequence[LicenseRecord] = ()
    workloads: Sequence[WorkloadRecord] = ()  # labelled with the org, wherever they are
    claims: Sequence[NamespaceRecord] = ()  # Namespaces labelled with the org


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
    version: str | None = meta.get("resourceVersion")
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
        # Someone may create it between the read and the create: only one the org owns counts.
        namespace_ready = await kube.run(kube.create_namespace, namespace, name, owner_ref)
    else:
        refs = namespace_object.metadata.owner_references or []
        label = (namespace_object.metadata.labels or {}).get(names.LABEL_ORGANIZATION)
        namespace_ready = any(
            ref.uid == owner_ref.uid for ref in refs
        ) or namespace_domain.made_for(name, len(refs), label)
    namespace_conflict = not namespace_ready
    # While org-<name> isn't the org's, no Membership there is the Owner's and none was made
    # for them: once it is the org's (the conflict resolved), the Owner gets theirs as at
    # creation, rather than being taken for an Owner who left.
    previous_ready = conditions.find(status.conditions, "Ready")
    conflicted = namespace_conflict or (
        previous_ready is not None and previous_ready.reason == "NamespaceConflict"
    )
    known_owner = None if conflicted else status.owner

    # Only workloads in namespaces the org owns are its own; labelled ones elsewhere are told
    # why they are ignored, and never served.
    claims = [Claim(c.name, c.organization, c.owners) for c in indexed.claims]
    owned = namespace_domain.owned_namespaces(
        name, owner_ref.uid, claims, org_namespace_owned=namespace_ready
    )
    workloads = [w for w in indexed.workloads if w.namespace in owned]
    ignored = [w for w in indexed.workloads if w.namespace not in owned]
    failures: list[Failure] = []

    events: list[Event] = []
    members = [record.member() for record in indexed.members]
    if namespace_ready and org_domain.owner_membership_needed(spec.owner, known_owner, members):
        created = await attempt(
            [
                (
                    Target(f"Membership {namespace}/{names.owner_membership(spec.owner)}"),
                    kube.run(
                        kube.create_custom,
                        "memberships",
                        namespace,
                        _owner_membership(name, spec.owner),
                    ),
                )
            ],
            failures,
        )
        if all(created):
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

    decision = org_domain.decide_owner(spec.owner, known_owner, members)
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
            reactivated_at=lifecycle.reactivated_at(status),
        ),
        now=now,
        window=settings.inactivity_window,
    )
    plan = lifecycle.decide(spec, status, idle=idle, now=now)
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
            dataclasses.replace(observed, failed=tuple(f.describe() for f in failures)),
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
        await _write_status(
            runtime, name, status_for(False), current_status, version=version, now=now
        )
        version = None  # changed by that write: a rollover reads the org again
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
        owner_rbac: Awaitable[Any]
        if org.deactivated:
            owner_rbac = kube.run(kube.remove_owner_binding, name)
        else:
            user = membership_domain.user_name(
                decision.effective, org, settings.sso_username_prefix
            )
            owner_rbac = kube.run(
                kube.ensure_owner_rbac, name, user, owner_ref, org_domain.owner_rules(name)
            )
        await attempt(
            [(Target(f"ClusterRoleBinding {names.owner_role(name)}"), owner_rbac)], failures
        )
        await sync_members(
            runtime, org, namespace, indexed.members, indexed.bindings, now, failures
        )
        await ensure_licenses(runtime, namespace, name, indexed.licenses, failures)
    await sync_workloads(runtime, workloads, failures, deactivated=org.deactivated)
    if namespace_ready:
        # Never in a namespace the org doesn't own: nothing is written into a squatted one.
        licensed = await reconcile_licenses(
            runtime,
            owner=owner_ref,
            spec=spec,
            deactivated=org.deactivated,
            licenses=indexed.licenses,
            workloads=workloads,
            now=now,
            changed_at=changed_at,
        )
        events += licensed.events
        failures += licensed.failures
        observed = dataclasses.replace(observed, licenses=frozenset(licensed.active_products))
    events += _warnings(runtime, name, ignored, failures)

    desired = status_for(not failures)
    await _write_status(runtime, name, desired, current_status, version=version, now=now)
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
    runtime: Runtime,
    workloads: Sequence[WorkloadRecord],
    failures: list[Failure],
    *,
    deactivated: bool,
) -> None:
    """Deactivated: control planes decommissioned (again, if one reappears), data planes
    frozen (again, if the annotation was removed). Active: unfrozen.

    `workloads` are the org's, in namespaces it owns."""
    kube = runtime.kube
    writes: list[tuple[Target, Awaitable[Any]]] = []
    for workload in workloads:
        target = Target(f"{workload.kind} {workload.ref}", (workload_ref(workload),))
        if deactivated and workload.component == names.COMPONENT_CONTROL_PLANE:
            writes.append(
                (
                    target,
                    kube.run(
                        kube.delete_workload, workload.kind, workload.namespace, workload.name
                    ),
                )
            )
        elif workload.component == names.COMPONENT_DATA_PLANE and workload.frozen != deactivated:
            value = "true" if deactivated else None
            writes.append((target, annotate(runtime, workload, {names.ANNOTATION_FROZEN: value})))
    await attempt(writes, failures)


def _holder(runtime: Runtime, namespace: str) -> str | None:
    """The org a labelled namespace belongs to (its owner, else its label), if any."""
    record = runtime.namespaces.get("", namespace)
    if record is None:
        return None
    return record.owners[0][0] if record.owners else record.organization


def _warnings(
    runtime: Runtime,
    organization: str,
    ignored: Sequence[WorkloadRecord],
    failures: Sequence[Failure],
) -> list[Event]:
    """Warning Events for what newly went wrong: each once while it lasts (not every check)."""
    told = runtime.told.get(organization, frozenset())
    now_told: set[str] = set()
    events: list[Event] = []
    for workload in ignored:
        key = ignored_key(workload.uid)
        now_told.add(key)
        if key not in told:
            message = namespace_domain.ignored_message(
                workload.namespace, organization, _holder(runtime, workload.namespace)
            )
            events.append(Event("Warning", "NamespaceNotOwned", message, workload_ref(workload)))
    for failure in failures:
        key = f"failed:{failure.target.what}:{failure.reason}"
        if key in now_told:
            continue
        now_told.add(key)
        if key not in told:
            reason = failure.reason if failure.reason == "SecretConflict" else "ApplyFailed"
            message = f"orgkeeper could not apply {organization}'s policy: {failure.describe()}"
            events += [
                Event("Warning", reason, message, involved)
                for involved in failure.target.involved or (None,)
            ]
    if now_told:
        runtime.told[organization] = frozenset(now_told)
    else:
        runtime.told.pop(organization, None)
    return events


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
            await kube.run(kube.patch_status, "organizations", name, wire)
        return
    for _ in range(ROLLOVER_ATTEMPTS):
        if version is None:
            live = await kube.run(kube.read_organization, name)
            if live is None:
                return
            version = str(live["metadata"]["resourceVersion"])
            held = OrganizationStatus.model_validate(live.get("status") or {})
            rolled = held.activity or Activity()
            if held.billing is not None:
                _, rolled = org_domain.roll_billing_cycle(
                    held.billing, rolled, runtime.settings.billing_cycle, now
                )
            wire["activity"]["apiRequests"] = rolled.api_requests.model_dump(
                mode="json", by_alias=True
            )
        try:
            await kube.run(kube.patch_status, "organizations", name, wire, resource_version=version)
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
    failures: list[Failure],
) -> None:
    """Labels, RoleBindings and status of every Membership of the org; writes only differences.

    A write that fails is added to `failures`; the others go on."""
    kube, prefix = runtime.kube, runtime.settings.sso_username_prefix
    desired: dict[str, tuple[Binding, MemberRecord]] = {}
    for record in members:
        for binding in membership_domain.desired_bindings(record.member(), org, prefix):
            desired[binding.name] = (binding, record)
    existing = {b.name: b for b in bindings}

    # RoleBindings first: a Membership's status says its teams are bound only once they are.
    rbac: list[tuple[Target, Awaitable[Any]]] = []
    rbac_of: list[str] = []  # the Membership each RBAC write is for ("" for a removal)
    for binding_name, (binding, record) in desired.items():
        found = existing.get(binding_name)
        if found is None or _drifted(found, binding, org.name, record.uid):
            owner = OwnerRef("orgkeeper.dev/v1alpha1", "Membership", record.name, record.uid)
            create = kube.run(kube.create_member_binding, namespace, org.name, binding, owner)
            target = Target(f"RoleBinding {namespace}/{binding_name}", (_membership(record),))
            rbac.append((target, _taken_in(runtime.bindings, create)))
            rbac_of.append(record.name)
    for binding_name in existing.keys() - desired.keys():
        target = Target(f"RoleBinding {namespace}/{binding_name}")
        rbac.append((target, _deleted_binding(runtime, namespace, binding_name)))
        rbac_of.append("")
    done = await attempt(rbac, failures)
    unbound = {name for name, ok in zip(rbac_of, done, strict=True) if name and not ok}

    writes: list[tuple[Target, Awaitable[Any]]] = []
    for record in members:
        target = Target(f"Membership {namespace}/{record.name}", (_membership(record),))
        labels = {
            names.LABEL_ORGANIZATION: org.name,
            names.LABEL_EMAIL_HASH: names.email_hash(record.email),
        }
        if any(record.labels.get(k) != v for k, v in labels.items()):
            label = kube.run(kube.patch_labels, "memberships", namespace, record.name, labels)
            writes.append((target, _taken_in(runtime.members, label)))
        if record.name in unbound:
            continue  # its status waits until its RoleBindings are written (the org says why)
        status_write = _status_write(runtime, record, org, now)
        if status_write is not None:
            writes.append((target, status_write))
    await attempt(writes, failures)


def _status_write(
    runtime: Runtime, record: MemberRecord, org: OrgContext | None, now: datetime
) -> Awaitable[None] | None:
    """The patch of a Membership's status in `org` (None: no org), if it differs."""
    previous = MembershipStatus.model_validate(record.status)
    status = membership_domain.membership_status(
        record.member(), org, previous, generation=record.generation, now=now
    )
    wire = status_wire(status, omit=("lastLoginTime",))
    if not differs(wire, record.status):
        return None
    kube = runtime.kube
    patch = kube.run(kube.patch_status, "memberships", record.name, wire, record.namespace)
    return _taken_in(runtime.members, patch)


async def mark_pending(runtime: Runtime, namespace: str, now: datetime) -> list[Failure]:
    """The Memberships of org-<name> while no Organization <name> exists: `Pending`, with a
    Ready=False condition saying why, and no member RoleBinding (left in a namespace made for
    an org that was then deleted). Once the org exists, its own reconcile takes over."""
    writes: list[tuple[Target, Awaitable[Any]]] = [
        (
            Target(f"RoleBinding {namespace}/{binding.name}"),
            _deleted_binding(runtime, namespace, binding.name),
        )
        for binding in runtime.bindings.in_namespace(namespace)
    ]
    for record in runtime.members.in_namespace(namespace):
        status_write = _status_write(runtime, record, None, now)
        if status_write is not None:
            target = Target(f"Membership {namespace}/{record.name}", (_membership(record),))
            writes.append((target, status_write))
    failures: list[Failure] = []
    await attempt(writes, failures)
    return failures


def _drifted(found: BindingRecord, binding: Binding, organization: str, owner_uid: str) -> bool:
    """Subjects, role, labels or owner differ from what the Membership asks for."""
    labels = {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_ORGANIZATION: organization,
        names.LABEL_MEMBERSHIP: binding.membership,
        names.LABEL_EMAIL_HASH: names.email_hash(binding.email),
        names.LABEL_TEAM: binding.team,
    }
    return (
        found.users != (binding.user,)
        or found.role != binding.cluster_role
        or dict(found.labels) != labels
        or owner_uid not in found.owners
    )


def _membership(record: MemberRecord) -> dict[str, Any]:
    return {
        "apiVersion": "orgkeeper.dev/v1alpha1",
        "kind": "Membership",
        "metadata": {"name": record.name, "namespace": record.namespace, "uid": record.uid},
    }


async def _deleted_binding(runtime: Runtime, namespace: str, name: str) -> None:
    await runtime.kube.run(runtime.kube.delete_role_binding, namespace, name)
    runtime.bindings.forget(namespace, name)


async def _taken_in(informer: Informer[Any], write: Awaitable[Mapping[str, Any] | None]) -> None:
    """Awaits a write and puts its answer in the cache, so the next reconcile doesn't redo it."""
    written = await write
    if written is not None:
        informer.observe(written)


async def ensure_licenses(
    runtime: Runtime,
    namespace: str,
    organization: str,
    licenses: Sequence[LicenseRecord],
    failures: list[Failure],
) -> None:
    """One Provisioned License per product; the license controller issues and signs them."""
    kube = runtime.kube
    present = {record.product for record in licenses if record.source == "Provisioned"}
    await attempt(
        [
            (
                Target(f"License {namespace}/{product}"),
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
                ),
            )
            for product in PRODUCTS
            if product not in present
        ],
        failures,
    )
