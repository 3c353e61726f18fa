"""Licenses of one org: read what the domain's plan needs, sign and write what it says, and
write each License's status."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import licensing, names
from ..api.v1alpha1 import API_VERSION, LICENSE, PRODUCTS
from ..api.v1alpha1.license import LicenseStatus
from ..api.v1alpha1.organization import OrganizationSpec
from ..domain.events import Event
from ..domain.license.copies import (
    CONFLICT,
    CopyPlan,
    Delivery,
    LicensePlan,
    Notice,
    copies_to_read,
    data_planes,
    is_ours,
    plan_licenses,
)
from ..domain.license.evaluation import next_due
from ..domain.license.issuing import Issue, Refused, plan_issuing
from ..domain.license.observation import Copy, LicenseObservation, LicenseSeen, Owner
from ..domain.license.status import license_status
from ..kube import is_status
from ..resources import OwnerRef, managed_labels
from .records import LicenseRecord, WorkloadRecord
from .runtime import Runtime
from .writes import Failure, Target, annotate, attempt, differs, fetch, status_wire, workload_ref


@dataclass(frozen=True)
class LicenseOutcome:
    active_products: set[str]
    events: list[Event]
    failures: list[Failure]
    due: datetime | None  # the next rotation or expiry


async def reconcile_licenses(
    runtime: Runtime,
    *,
    owner: OwnerRef,
    spec: OrganizationSpec,
    deactivated: bool,
    licenses: Sequence[LicenseRecord],
    workloads: Sequence[WorkloadRecord],
    now: datetime,
    changed_at: float,
) -> LicenseOutcome:
    """`workloads`: the org's, in the namespaces it owns (the only ones served)."""
    key = runtime.signing_key
    if key is None:
        raise RuntimeError("the license signing key is not loaded")
    organization, settings = owner.name, runtime.settings
    documents = await asyncio.gather(*(_document(runtime, record) for record in licenses))
    # Where the statuses say copies are, and where the last reconcile left them.
    recorded: dict[str, set[str]] = {
        product: recorded_copies(licenses, product)
        | runtime.memory.copies.get((organization, product), frozenset())
        for product in PRODUCTS
    }
    wanted = copies_to_read(
        workloads, recorded, {r.product for r in licenses}, deactivated=deactivated
    )
    copies, read_failures = await _read_copies(runtime, workloads, wanted)
    observation = LicenseObservation(
        organization=organization,
        organization_uid=owner.uid,
        spec=spec,
        deactivated=deactivated,
        now=now,
        rotate_after=settings.license_rotate_after,
        validity=settings.license_validity,
        public_key=key.public_key(),
        licenses=[
            LicenseSeen(
                r.name, r.product, r.source, r.created, r.secret_name, r.secret_key, *document
            )
            for r, document in zip(licenses, documents, strict=True)
        ],
        workloads=workloads,
        recorded=recorded,
        copies=copies,
        labels={product: _labels(owner, product) for product in PRODUCTS},
    )
    issuing = plan_issuing(observation)
    by_name = {record.name: record for record in licenses}
    issued = await asyncio.gather(
        *(_issue(runtime, by_name[issue.license], issue, key, owner) for issue in issuing.issues)
    )
    plan = plan_licenses(
        observation,
        issuing,
        {issue.license: outcome for issue, outcome in zip(issuing.issues, issued, strict=True)},
    )

    events = [_event(notice, by_name) for notice in plan.notices]
    failures: list[Failure] = []
    deliveries: dict[str, Delivery] = {}
    for copy_plan in plan.copies:
        product = copy_plan.product
        delivered = await _deliver(runtime, owner, copy_plan, read_failures[product], changed_at)
        deliveries[product] = delivered.delivery
        failures += delivered.failures
        if delivered.notice is not None:
            events.append(_event(delivered.notice, by_name))

    runtime.metrics.license_expiry[organization] = {
        (item.name, item.product): item.verified.payload.expires_at
        for item in plan.evaluated.values()
        if item.verified is not None
    }
    runtime.metrics.reconciles.labels(LICENSE.kind, "success").inc(len(licenses))

    await attempt(_status_writes(runtime, licenses, plan, deliveries, now), failures)
    due = next_due(plan.evaluated.values(), now=now, rotate_after=settings.license_rotate_after)
    return LicenseOutcome(set(plan.active), events, failures, due)


def _status_writes(
    runtime: Runtime,
    licenses: Sequence[LicenseRecord],
    plan: LicensePlan[WorkloadRecord],
    deliveries: Mapping[str, Delivery],
    now: datetime,
) -> list[tuple[Target, Awaitable[Any]]]:
    """The status of each License the domain gives, where it differs from the one written."""
    kube = runtime.kube
    writes: list[tuple[Target, Awaitable[Any]]] = []
    for record in licenses:
        status = license_status(
            plan.evaluated[record.name],
            plan.active.get(record.product),
            deliveries.get(record.product, Delivery()),
            LicenseStatus.model_validate(record.status),
            generation=record.generation,
            now=now,
        )
        wire = status_wire(status)
        if differs(wire, record.status):
            target = Target(f"License {record.namespace}/{record.name}", (_involved(record),))
            patch = kube.patch_status(names.LICENSES, record.name, wire, record.namespace)
            writes.append((target, patch))
    return writes


async def _read_copies(
    runtime: Runtime, workloads: Sequence[WorkloadRecord], wanted: Mapping[str, Sequence[str]]
) -> tuple[dict[tuple[str, str], Copy | None], dict[str, list[Failure]]]:
    """The copies wanted (by product, namespaces), by (product, namespace); a copy that can't
    be read is left out, its failure told on its target (by product)."""
    copies: dict[tuple[str, str], Copy | None] = {}
    failures: dict[str, list[Failure]] = {}
    for product, namespaces in wanted.items():
        secret_name = names.propagated_license_secret(product)
        targets = data_planes(workloads, product)
        failures[product] = []
        found = await fetch(
            {
                namespace: (
                    _secret_target(namespace, secret_name, targets.get(namespace, ())),
                    _read_copy(runtime, namespace, secret_name),
                )
                for namespace in namespaces
            },
            failures[product],
        )
        copies |= {(product, namespace): copy for namespace, copy in found.items()}
    return copies, failures


async def _document(runtime: Runtime, record: LicenseRecord) -> tuple[bytes | None, str, bool]:
    """The License's document, or None and why there is none; and whether its Secret exists."""
    if not record.secret_name:
        return None, "spec.secretRef names no Secret", False
    secret = await runtime.kube.read_secret(record.namespace, record.secret_name)
    if secret is None:
        return None, f"Secret {record.secret_name} not found in {record.namespace}", False
    encoded = (secret.data or {}).get(record.secret_key)
    if encoded is None:
        return None, f"Secret {record.secret_name} has no key {record.secret_key}", True
    return base64.b64decode(encoded), "", True


async def _read_copy(runtime: Runtime, namespace: str, secret_name: str) -> Copy | None:
    secret = await runtime.kube.read_secret(namespace, secret_name)
    if secret is None:
        return None
    meta = secret.metadata
    return Copy(
        uid=meta.uid,
        resource_version=meta.resource_version,
        document=base64.b64decode((secret.data or {}).get(names.LICENSE_DATA_KEY, "")),
        labels=dict(meta.labels or {}),
        owners=[
            Owner(ref.kind, ref.name, ref.uid, bool(ref.controller))
            for ref in meta.owner_references or []
        ],
    )


async def _issue(
    runtime: Runtime, record: LicenseRecord, issue: Issue, key: Ed25519PrivateKey, owner: OwnerRef
) -> bytes | Refused:
    """Signs the payload and writes it into the License's Secret, owned by the Organization:
    the document, or the refusal (for this License alone, said on it while the rest of the org
    converges)."""
    kube = runtime.kube
    document = licensing.sign(issue.payload, key)
    try:
        await kube.write_secret(
            record.namespace,
            issue.secret_name,
            {issue.secret_key: document},
            _labels(owner, record.product),
            [owner.to_wire()],
            exists=issue.exists,
        )
    except Exception as error:
        if not is_status(error, 403, 422):
            raise
        return Refused(int(getattr(error, "status", 0)))
    return document


class Delivered(NamedTuple):
    delivery: Delivery
    failures: list[Failure]
    notice: Notice | None


async def _deliver(
    runtime: Runtime,
    owner: OwnerRef,
    copies: CopyPlan[WorkloadRecord],
    read_failures: Sequence[Failure],
    changed_at: float,
) -> Delivered:
    """Applies the plan of one product's copies; a failure in one namespace is reported and
    never stops the others."""
    kube = runtime.kube
    failures = list(read_failures)

    def target(namespace: str) -> Target:
        return _secret_target(namespace, copies.secret, copies.targets.get(namespace, ()))

    withdrawals = [
        (target(namespace), kube.delete_secret(namespace, copies.secret, uid))
        for namespace, uid in copies.withdraw
    ]
    writes = [
        (
            target(write.namespace),
            kube.write_secret(
                write.namespace,
                copies.secret,
                copies.data,
                copies.labels,
                [owner.to_wire()],
                exists=write.exists,
                resource_version=write.resource_version,
            ),
        )
        for write in copies.writes
    ]
    done = await attempt(withdrawals + writes, failures)
    withdrawn, stored = done[: len(withdrawals)], done[len(withdrawals) :]
    undeleted = [ns for (ns, _), ok in zip(copies.withdraw, withdrawn, strict=True) if not ok]
    written = [w.namespace for w, ok in zip(copies.writes, stored, strict=True) if ok]
    failures += [
        Failure(target(namespace), "SecretConflict", CONFLICT) for namespace in copies.conflicts
    ]
    fingerprint = {names.ANNOTATION_LICENSE_FINGERPRINT: copies.fingerprint}
    await attempt(
        [
            (Target(f"{w.kind} {w.ref}", (workload_ref(w),)), annotate(runtime, w, fingerprint))
            for w in copies.annotations(written)
        ],
        failures,
    )
    notice = copies.notice(written)
    if notice is not None:
        runtime.metrics.propagation_lag.labels(copies.product).observe(
            time.monotonic() - changed_at
        )
    delivery = copies.delivery(
        written=written, undeleted=undeleted, failed=tuple(f.describe() for f in failures)
    )
    held = (owner.name, copies.product)
    if delivery.namespaces:
        runtime.memory.copies[held] = frozenset(delivery.namespaces)
    else:
        runtime.memory.copies.pop(held, None)
    return Delivered(delivery, failures, notice)


def _labels(owner: OwnerRef, product: str) -> dict[str, str]:
    """The labels of orgkeeper's Secrets of a product's license."""
    extra = {names.LABEL_PRODUCT: product, names.LABEL_ORGANIZATION_UID: owner.uid}
    return managed_labels(owner.name, **extra)


def _secret_target(
    namespace: str, secret_name: str, data_planes: Iterable[WorkloadRecord]
) -> Target:
    """A copy, its failures told on the data planes there."""
    return Target(f"Secret {namespace}/{secret_name}", tuple(workload_ref(w) for w in data_planes))


def _involved(record: LicenseRecord) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": LICENSE.kind,
        "metadata": {"name": record.name, "namespace": record.namespace, "uid": record.uid},
    }


def _event(notice: Notice, licenses: Mapping[str, LicenseRecord]) -> Event:
    return Event("Normal", notice.reason, notice.message, _involved(licenses[notice.license]))


def recorded_copies(licenses: Sequence[LicenseRecord], product: str) -> set[str]:
    """Where the product's License statuses say a copy was delivered (survives a restart)."""
    return {
        namespace
        for record in licenses
        if record.product == product
        for namespace in (record.status.get("propagatedTo") or {}).get("namespaces") or []
    }


async def _withdraw(runtime: Runtime, namespace: str, secret_name: str, uid: str) -> None:
    """Deletes the copy there if it is the org's; anything else of that name is left alone."""
    kube = runtime.kube
    copy = await _read_copy(runtime, namespace, secret_name)
    if copy is not None and is_ours(copy, uid):
        await kube.delete_secret(namespace, secret_name, copy.uid)


async def withdraw_copies(
    runtime: Runtime,
    owner: OwnerRef,
    recorded: Iterable[str],
    workloads: Sequence[WorkloadRecord],
) -> list[Failure]:
    """When the org goes: its license copies and annotations leave the namespaces it owned.

    Best effort: the copies are owned by the Organization, so garbage collection removes any
    left behind (even with the operator down).
    """
    failures: list[Failure] = []
    namespaces = sorted(set(recorded) | {w.namespace for w in workloads})
    calls: list[tuple[Target, Awaitable[Any]]] = []
    for namespace in namespaces:
        for product in PRODUCTS:
            secret_name = names.propagated_license_secret(product)
            calls.append(
                (
                    Target(f"Secret {namespace}/{secret_name}"),
                    _withdraw(runtime, namespace, secret_name, owner.uid),
                )
            )
    ours_keys = (names.ANNOTATION_LICENSE_FINGERPRINT, names.ANNOTATION_FROZEN)
    for workload in workloads:
        if any(key in workload.annotations for key in ours_keys):
            calls.append(
                (
                    Target(f"{workload.kind} {workload.ref}"),
                    annotate(runtime, workload, dict.fromkeys(ours_keys)),
                )
            )
    await attempt(calls, failures)
    return failures
