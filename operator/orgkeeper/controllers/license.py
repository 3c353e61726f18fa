"""Licenses of one org: issue and rotate Provisioned ones, validate all, deliver the active ones."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections import defaultdict
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import licensing, names
from ..api.v1alpha1 import API_VERSION, PRODUCTS
from ..api.v1alpha1.license import LicenseStatus
from ..api.v1alpha1.organization import OrganizationSpec
from ..domain import license as license_domain
from ..domain.license import Delivery, Evaluated
from ..kube import is_status, managed_labels
from .records import LicenseRecord, WorkloadRecord
from .runtime import Event, Runtime
from .writes import annotate, bounded, differs, status_wire


@dataclass
class LicenseOutcome:
    active_products: set[str] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)


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
    organization: str,
    spec: OrganizationSpec,
    deactivated: bool,
    licenses: Sequence[LicenseRecord],
    workloads: Sequence[WorkloadRecord],
    now: datetime,
    changed_at: float,
) -> LicenseOutcome:
    kube, settings, key = runtime.kube, runtime.settings, runtime.signing_key
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
            license_domain.needs_issuing(item, now=now, rotate_after=settings.license_rotate_after)
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
    deliveries: dict[str, Delivery] = {
        product: await _deliver(
            runtime,
            organization,
            product,
            active.get(product),
            documents=documents,
            workloads=workloads,
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

    writes: list[Awaitable[Any]] = []
    for record in licenses:
        item = evaluated[record.name]
        previous = LicenseStatus.model_validate(record.status)
        status = license_domain.license_status(
            item,
            active.get(record.product),
            deliveries.get(record.product, Delivery()),
            previous,
            generation=record.generation,
            now=now,
        )
        wire = status_wire(status)
        if differs(wire, record.status):
            writes.append(
                kube.run(kube.patch_status, "licenses", record.name, wire, record.namespace)
            )
    await bounded(writes)
    return outcome


def _owned_by_us(secret: Any, organization: str) -> bool:
    labels = secret.metadata.labels or {}
    return (
        labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY
        and labels.get(names.LABEL_ORGANIZATION) == organization
    )


async def _deliver(
    runtime: Runtime,
    organization: str,
    product: str,
    active: Evaluated | None,
    *,
    documents: Mapping[str, bytes],
    workloads: Sequence[WorkloadRecord],
    deactivated: bool,
    outcome: LicenseOutcome,
    changed_at: float,
) -> Delivery:
    """Keeps orgkeeper-license-<product> in every namespace with a data plane of the product."""
    kube = runtime.kube
    secret_name = names.propagated_license_secret(product)
    targets: dict[str, list[WorkloadRecord]] = defaultdict(list)
    for workload in workloads:
        if workload.component == names.COMPONENT_DATA_PLANE and workload.product == product:
            targets[workload.namespace].append(workload)
    refs = [w.ref for group in targets.values() for w in group]
    if deactivated:
        return Delivery(refs=refs, frozen=True)  # frozen: nothing new reaches them
    if active is None or active.verified is None:
        return Delivery()  # no valid license: the copies already delivered stay as they are

    document = documents[active.name]
    fingerprint = active.verified.fingerprint
    conflicts: list[str] = []
    delivered: list[str] = []
    writes: list[Awaitable[Any]] = []
    for namespace, group in sorted(targets.items()):
        secret = await kube.run(kube.read_secret, namespace, secret_name)
        if secret is not None and not _owned_by_us(secret, organization):
            conflicts.append(namespace)
            continue
        owners = [
            {"apiVersion": "apps/v1", "kind": w.kind, "name": w.name, "uid": w.uid}
            for w in sorted(group, key=lambda w: (w.kind, w.name))
        ]
        labels = managed_labels(organization, **{names.LABEL_PRODUCT: product})
        current_owners = (
            [
                {"apiVersion": r.api_version, "kind": r.kind, "name": r.name, "uid": r.uid}
                for r in (secret.metadata.owner_references or [])
            ]
            if secret is not None
            else []
        )
        current = (
            base64.b64decode((secret.data or {}).get("license", "")) if secret is not None else None
        )
        if secret is None or current != document or current_owners != owners:
            writes.append(
                kube.run(
                    kube.write_secret,
                    namespace,
                    secret_name,
                    {"license": document},
                    labels,
                    owners,
                    exists=secret is not None,
                )
            )
            delivered.append(namespace)
        for workload in group:
            if workload.annotations.get(names.ANNOTATION_LICENSE_FINGERPRINT) != fingerprint:
                writes.append(
                    annotate(runtime, workload, {names.ANNOTATION_LICENSE_FINGERPRINT: fingerprint})
                )

    # Namespaces where the org still runs something but no data plane needs this product.
    for namespace in sorted({w.namespace for w in workloads} - targets.keys()):
        secret = await kube.run(kube.read_secret, namespace, secret_name)
        if secret is not None and _owned_by_us(secret, organization):
            writes.append(kube.run(kube.delete_secret, namespace, secret_name))
    await bounded(writes)
    if delivered:
        runtime.metrics.propagation_lag.labels(product).observe(time.monotonic() - changed_at)
        outcome.events.append(
            Event(
                "Normal",
                "LicensePropagated",
                f"{product} license {fingerprint[:19]} delivered to {', '.join(delivered)}",
            )
        )
    return Delivery(
        refs=[w.ref for ns, group in targets.items() if ns not in conflicts for w in group],
        conflicts=conflicts,
    )


async def withdraw_copies(
    runtime: Runtime, organization: str, workloads: Sequence[WorkloadRecord]
) -> None:
    """When the org goes: its license copies and annotations leave the workloads' namespaces."""
    kube = runtime.kube
    writes: list[Awaitable[Any]] = []
    for namespace in sorted({w.namespace for w in workloads}):
        for product in PRODUCTS:
            secret_name = names.propagated_license_secret(product)
            secret = await kube.run(kube.read_secret, namespace, secret_name)
            if secret is not None and _owned_by_us(secret, organization):
                writes.append(kube.run(kube.delete_secret, namespace, secret_name))
    ours = (names.ANNOTATION_LICENSE_FINGERPRINT, names.ANNOTATION_FROZEN)
    for workload in workloads:
        if any(key in workload.annotations for key in ours):
            removal = dict.fromkeys(ours)
            writes.append(
                kube.run(
                    kube.annotate_workload,
                    workload.kind,
                    workload.namespace,
                    workload.name,
                    removal,
                )
            )
    await bounded(writes)
