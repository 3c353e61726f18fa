"""Licenses of one org: issue and rotate Provisioned ones, validate all, deliver the active ones."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections import defaultdict
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import licensing, names
from ..api.v1alpha1 import API_VERSION, PRODUCTS
from ..api.v1alpha1.license import LicenseStatus
from ..api.v1alpha1.organization import OrganizationSpec
from ..domain import license as license_domain
from ..domain.license import Delivery, Evaluated
from ..domain.namespaces import summary
from ..kube import OwnerRef, is_status, managed_labels
from .records import LicenseRecord, WorkloadRecord
from .runtime import Event, Runtime
from .writes import Failure, Target, annotate, attempt, differs, status_wire, workload_ref


@dataclass
class LicenseOutcome:
    active_products: set[str] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def _involved(record: LicenseRecord) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "License",
        "metadata": {"name": record.name, "namespace": record.namespace, "uid": record.uid},
    }


async def _document(runtime: Runtime, record: LicenseRecord) -> tuple[bytes | None, str]:
    if not record.secret_name:
        return None, "spec.secretRef names no Secret"
    secret = await runtime.kube.run(runtime.kube.read_secret, record.namespace, record.secret_name)
    if secret is None:
        return None, f"Secret {record.secret_name} not found in {record.namespace}"
    encoded = (secret.data or {}).get(record.secret_key)
    if encoded is None:
        return None, f"Secret {record.secret_name} has no key {record.secret_key}"
    return base64.b64decode(encoded), ""


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
    kube, settings, key = runtime.kube, runtime.settings, runtime.signing_key
    organization = owner.name
    if key is None:
        raise RuntimeError("the license signing key is not loaded")
    outcome = LicenseOutcome()
    public = key.public_key()

    def judge(record: LicenseRecord, document: bytes | None, missing: str = "") -> Evaluated:
        return license_domain.evaluate(
            record.name,
            record.product,
            record.source,
            record.created,
            document,
            organization=organization,
            public_key=public,
            now=now,
            missing=missing,
        )

    found = {record.name: await _document(runtime, record) for record in licenses}
    # One Secret holds one provisioned payload. Of the Provisioned Licenses naming the same
    # Secret, one issues into it: the one whose payload it holds, else the oldest. The others
    # never do (each would otherwise overwrite the other's payload at every reconcile).
    issuers: dict[str, LicenseRecord] = {}
    for record in sorted(
        licenses,
        key=lambda r: (not judge(r, *found[r.name]).valid, r.created, r.name),
    ):
        if record.source == "Provisioned" and record.secret_name:
            issuers.setdefault(record.secret_name, record)

    evaluated: dict[str, Evaluated] = {}
    documents: dict[str, bytes] = {}
    for record in licenses:
        document, missing = found[record.name]
        item = judge(record, document, missing)
        issuer = issuers.get(record.secret_name or "")
        issues = record.source == "Provisioned" and issuer is not None and issuer is record
        why = (
            license_domain.needs_issuing(
                item,
                now=now,
                rotate_after=settings.license_rotate_after,
                plan=spec.plan,
                region=spec.region,
            )
            if issues
            else None
        )
        if record.source == "Provisioned" and issuer is not None and not issues and not item.valid:
            item = dataclasses.replace(
                item,
                reason="SecretInUse",
                message=f"Secret {record.secret_name} holds the provisioned license of License "
                f"{issuer.name}; name a Secret of its own in spec.secretRef",
            )
        if why is not None and record.secret_name:
            payload = licensing.LicensePayload(
                organization=organization,
                product=record.product,
                plan=spec.plan,
                region=spec.region,
                issued_at=now,
                expires_at=now + settings.license_validity,
            )
            issued = licensing.sign(payload, key)
            try:
                await kube.run(
                    kube.write_secret,
                    record.namespace,
                    record.secret_name,
                    {record.secret_key: issued},
                    managed_labels(organization, **{names.LABEL_PRODUCT: record.product}),
                    exists=item.reason != "SecretMissing",
                )
            except Exception as error:
                # Refused for this License alone (RBAC lets orgkeeper patch only the Secrets it
                # names itself): said on the License, while the rest of the org converges.
                if not is_status(error, 403, 422):
                    raise
                own = names.provisioned_license_secret(record.product)
                item = dataclasses.replace(
                    item,
                    reason="SecretNotWritable",
                    message=f"orgkeeper may not write Secret {record.secret_name} "
                    f"(HTTP {getattr(error, 'status', '?')}); name the Secret {own} in "
                    "spec.secretRef for a Provisioned license",
                )
            else:
                document = issued
                item = judge(record, document)
                if why != "issued" and item.verified is not None:
                    reason = "LicenseRotated" if why == "rotated" else "LicenseReissued"
                    message = f"{why} the {record.product} license: {item.verified.fingerprint}"
                    outcome.events.append(Event("Normal", reason, message, _involved(record)))
        evaluated[record.name] = item
        if document is not None:
            documents[record.name] = document

    active = license_domain.active_by_product(list(evaluated.values()))
    outcome.active_products = set(active)
    by_name = {record.name: record for record in licenses}
    deliveries: dict[str, Delivery] = {
        product: await _deliver(
            runtime,
            owner,
            product,
            active.get(product),
            # Its Events go on the License whose payload the copies carry.
            involved=_involved(by_name[active[product].name]) if product in active else None,
            documents=documents,
            workloads=workloads,
            recorded=recorded_copies(licenses, product)
            | runtime.copies.get((organization, product), frozenset()),
            deactivated=deactivated,
            outcome=outcome,
            changed_at=changed_at,
        )
        for product in PRODUCTS
    }
    runtime.metrics.license_expiry[organization] = {
        (item.name, item.product): item.verified.payload.expires_at
        for item in evaluated.values()
        if item.verified is not None
    }
    runtime.metrics.reconciles.labels("License", "success").inc(len(licenses))

    writes: list[tuple[Target, Awaitable[Any]]] = []
    for record in licenses:
        item = evaluated[record.name]
        previous = LicenseStatus.model_validate(record.status)
        chosen = active.get(record.product)
        delivery = deliveries.get(record.product, Delivery())
        if chosen is not None and chosen.name != record.name:
            # The copies hold the active license's payload: its status keeps their record.
            delivery = dataclasses.replace(delivery, namespaces=())
        status = license_domain.license_status(
            item, chosen, delivery, previous, generation=record.generation, now=now
        )
        wire = status_wire(status)
        if differs(wire, record.status):
            target = Target(f"License {record.namespace}/{record.name}", (_involved(record),))
            writes.append(
                (
                    target,
                    kube.run(kube.patch_status, "licenses", record.name, wire, record.namespace),
                )
            )
    await attempt(writes, outcome.failures)
    return outcome


def recorded_copies(licenses: Sequence[LicenseRecord], product: str) -> set[str]:
    """Where the product's License statuses say a copy was delivered (survives a restart)."""
    return {
        namespace
        for record in licenses
        if record.product == product
        for namespace in (record.status.get("propagatedTo") or {}).get("namespaces") or []
    }


def ours(secret: Any, organization_uid: str) -> bool:
    """A copy is orgkeeper's when its Organization owns it: decided by the owner's UID, which a
    tenant can't take over as it can labels."""
    return any(ref.uid == organization_uid for ref in secret.metadata.owner_references or [])


async def _withdraw(runtime: Runtime, namespace: str, secret_name: str, uid: str) -> None:
    """Deletes the copy there if it is the org's; anything else of that name is left alone."""
    kube = runtime.kube
    secret = await kube.run(kube.read_secret, namespace, secret_name)
    if secret is not None and ours(secret, uid):
        await kube.run(kube.delete_secret, namespace, secret_name, secret.metadata.uid)


async def _deliver(
    runtime: Runtime,
    owner: OwnerRef,
    product: str,
    active: Evaluated | None,
    *,
    involved: Mapping[str, Any] | None,
    documents: Mapping[str, bytes],
    workloads: Sequence[WorkloadRecord],
    recorded: Iterable[str],
    deactivated: bool,
    outcome: LicenseOutcome,
    changed_at: float,
) -> Delivery:
    """Keeps orgkeeper-license-<product> in every namespace with a data plane of the product.

    `workloads` are the org's, in namespaces it owns; `recorded` are the namespaces the
    License statuses say hold a copy. Copies where no data plane needs one any more go (also
    while the org is deactivated), from that record, so a relabelled or deleted data plane, or
    a detached namespace, leaves nothing behind. A failure in one namespace is reported and
    never stops the others.
    """
    kube = runtime.kube
    organization = owner.name
    secret_name = names.propagated_license_secret(product)
    targets: dict[str, list[WorkloadRecord]] = defaultdict(list)
    for workload in workloads:
        if workload.component == names.COMPONENT_DATA_PLANE and workload.product == product:
            targets[workload.namespace].append(workload)
    failures: list[Failure] = []

    def secret_target(namespace: str) -> Target:
        involved = tuple(workload_ref(w) for w in targets.get(namespace, ()))
        return Target(f"Secret {namespace}/{secret_name}", involved)

    stale = sorted(set(recorded) - targets.keys())
    removed = await attempt(
        [(secret_target(ns), _withdraw(runtime, ns, secret_name, owner.uid)) for ns in stale],
        failures,
    )
    kept = {ns for ns, done in zip(stale, removed, strict=True) if not done}
    held = (set(recorded) & targets.keys()) | kept
    refs = [w.ref for group in targets.values() for w in group]

    def finish(delivery: Delivery) -> Delivery:
        if held:
            runtime.copies[(organization, product)] = frozenset(held)
        else:
            runtime.copies.pop((organization, product), None)
        outcome.failures += failures
        failed = tuple(f.describe() for f in failures)
        return dataclasses.replace(delivery, failed=failed, namespaces=sorted(held))

    if deactivated:
        return finish(Delivery(refs=refs, frozen=True))  # frozen: nothing new reaches them
    if active is None or active.verified is None:
        return finish(Delivery())  # no valid license: the copies delivered stay as they are

    document = documents[active.name]
    fingerprint = active.verified.fingerprint
    labels = managed_labels(organization, **{names.LABEL_PRODUCT: product})
    conflicts: list[str] = []
    delivered: list[str] = []
    current_in: set[str] = set()

    async def place(namespace: str) -> None:
        secret = await kube.run(kube.read_secret, namespace, secret_name)
        if secret is not None and not ours(secret, owner.uid):
            conflicts.append(namespace)
            return
        if secret is not None:
            held.add(namespace)
            found = base64.b64decode((secret.data or {}).get("license", ""))
            found_labels = secret.metadata.labels or {}
            owners = [
                (r.kind, r.name, r.uid, bool(r.controller))
                for r in secret.metadata.owner_references or []
            ]
            if (
                found == document
                and owners == [(owner.kind, owner.name, owner.uid, True)]
                and all(found_labels.get(k) == v for k, v in labels.items())
            ):
                current_in.add(namespace)
                return
        await kube.run(
            kube.write_secret,
            namespace,
            secret_name,
            {"license": document},
            labels,
            [owner.to_wire()],
            exists=secret is not None,
            # Only the copy just read is replaced: one swapped in meanwhile is refused (409).
            resource_version=secret.metadata.resource_version if secret is not None else None,
        )
        held.add(namespace)
        current_in.add(namespace)
        delivered.append(namespace)

    await attempt([(secret_target(ns), place(ns)) for ns in sorted(targets)], failures)
    for namespace in conflicts:
        failures.append(
            Failure(
                secret_target(namespace),
                "SecretConflict",
                "a Secret of that name that orgkeeper does not own is in the way; "
                "rename or delete it so the license can be delivered",
            )
        )
    annotations = [
        (
            Target(f"{w.kind} {w.ref}", (workload_ref(w),)),
            annotate(runtime, w, {names.ANNOTATION_LICENSE_FINGERPRINT: fingerprint}),
        )
        for namespace in sorted(current_in)
        for w in targets[namespace]
        if w.annotations.get(names.ANNOTATION_LICENSE_FINGERPRINT) != fingerprint
    ]
    await attempt(annotations, failures)
    if delivered:
        runtime.metrics.propagation_lag.labels(product).observe(time.monotonic() - changed_at)
        outcome.events.append(
            Event(
                "Normal",
                "LicensePropagated",
                f"{product} license {fingerprint[:19]} delivered to {summary(sorted(delivered))}",
                involved,
            )
        )
    return finish(
        Delivery(
            refs=[w.ref for ns in sorted(current_in) for w in targets[ns]],
            conflicts=sorted(conflicts),
        )
    )


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
