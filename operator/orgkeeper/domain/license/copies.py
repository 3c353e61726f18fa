"""Copies: the active license of each product, delivered as orgkeeper-license-<product> to
every namespace with a data plane of it, and withdrawn where none needs it any more."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic

from ... import names
from ...api.v1alpha1 import ORGANIZATION, PRODUCTS
from ..namespaces import summary
from .evaluation import Evaluated, active_by_product, evaluate_seen
from .issuing import Issuing, Refused
from .observation import Copy, LicenseObservation, Owner, W

CONFLICT = (
    "a Secret of that name that orgkeeper does not own is in the way; "
    "rename or delete it so the license can be delivered"
)


def is_ours(copy: Copy, organization_uid: str) -> bool:
    """A copy is orgkeeper's when its Organization owns it: decided by the owner's UID, which a
    tenant can't take over as it can labels."""
    return any(owner.uid == organization_uid for owner in copy.owners)


def data_planes(workloads: Sequence[W], product: str) -> dict[str, list[W]]:
    """The namespaces with a data plane of the product, and those data planes."""
    found: dict[str, list[W]] = {}
    for workload in workloads:
        if workload.component == names.COMPONENT_DATA_PLANE and workload.product == product:
            found.setdefault(workload.namespace, []).append(workload)
    return found


def copies_to_read(
    workloads: Sequence[W],
    recorded: Mapping[str, Collection[str]],
    licensed: Collection[str],
    *,
    deactivated: bool,
) -> dict[str, list[str]]:
    """By product, the namespaces whose copy the plan looks at: where one is recorded (it may
    have to go), and, unless the org is deactivated, where a data plane of a licensed product
    is."""
    wanted: dict[str, list[str]] = {}
    for product in PRODUCTS:
        namespaces = set(recorded.get(product, ()))
        if not deactivated and product in licensed:
            namespaces |= data_planes(workloads, product).keys()
        wanted[product] = sorted(namespaces)
    return wanted


@dataclass(frozen=True)
class Notice:
    """A Normal Event on a License."""

    license: str
    reason: str
    message: str


@dataclass(frozen=True)
class CopyWrite:
    namespace: str
    exists: bool  # replace the copy read (else create one)
    resource_version: str | None  # only that copy is replaced: one swapped in meanwhile is not


@dataclass(frozen=True)
class Delivery:
    """What happened to the copies of the active license of one product."""

    refs: Sequence[str] = ()
    conflicts: Sequence[str] = ()  # namespaces where a Secret of that name isn't orgkeeper's
    failed: Sequence[str] = ()  # targets a write to failed, each with a short reason
    frozen: bool = False
    namespaces: Sequence[str] = ()  # where a copy of this license now is


@dataclass(frozen=True)
class CopyPlan(Generic[W]):
    """Keeps orgkeeper-license-<product> in every namespace with a data plane of the product.

    Copies where no data plane needs one any more go (also while the org is deactivated), from
    the record of where copies are, so a relabelled or deleted data plane, or a detached
    namespace, leaves nothing behind. While the org is deactivated nothing new reaches the data
    planes (frozen); without a valid license the copies delivered stay as they are.
    """

    product: str
    secret: str  # the copy's name
    targets: Mapping[str, Sequence[W]]  # namespace: its data planes of the product
    withdraw: Sequence[tuple[str, str]] = ()  # (namespace, uid) of the org's copies to delete
    held: frozenset[str] = frozenset()  # where a copy is, before anything is written
    frozen: bool = False
    license: str | None = None  # the active License, whose payload the copies carry
    fingerprint: str = ""
    data: Mapping[str, bytes] = dataclasses.field(default_factory=dict)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    writes: Sequence[CopyWrite] = ()
    current: frozenset[str] = frozenset()  # namespaces whose copy is already this license's
    conflicts: Sequence[str] = ()  # namespaces where a Secret of that name isn't the org's

    def annotations(self, written: Collection[str]) -> list[W]:
        """The data planes to annotate with the fingerprint, once the copies are written."""
        if self.license is None:
            return []
        return [
            workload
            for namespace in sorted(self.current | set(written))
            for workload in self.targets[namespace]
            if workload.annotations.get(names.ANNOTATION_LICENSE_FINGERPRINT) != self.fingerprint
        ]

    def notice(self, written: Collection[str]) -> Notice | None:
        if self.license is None or not written:
            return None
        return Notice(
            self.license,
            "LicensePropagated",
            f"{self.product} license {self.fingerprint[:19]} delivered to "
            f"{summary(sorted(written))}",
        )

    def delivery(
        self, *, written: Collection[str], undeleted: Collection[str], failed: Sequence[str]
    ) -> Delivery:
        """What was delivered, given the copies written, those that could not be withdrawn,
        and every step that failed."""
        held = sorted(self.held | set(written) | set(undeleted))
        if self.frozen:
            refs = [w.ref for group in self.targets.values() for w in group]
            return Delivery(refs=refs, frozen=True, failed=failed, namespaces=held)
        if self.license is None:
            return Delivery(failed=failed, namespaces=held)
        current = sorted(self.current | set(written))
        return Delivery(
            refs=[w.ref for namespace in current for w in self.targets[namespace]],
            conflicts=self.conflicts,
            failed=failed,
            namespaces=held,
        )


@dataclass(frozen=True)
class LicensePlan(Generic[W]):
    evaluated: Mapping[str, Evaluated]  # by License name
    active: Mapping[str, Evaluated]  # by product
    notices: Sequence[Notice]  # of the documents issued
    copies: Sequence[CopyPlan[W]]  # one per product


def plan_licenses(
    observation: LicenseObservation[W],
    issuing: Issuing,
    issued: Mapping[str, bytes | Refused],
) -> LicensePlan[W]:
    """Given what was issued (by License name: the document written, or the refusal), each
    License's validity, the active one of each product, and what their copies need."""
    evaluated = dict(issuing.evaluated)
    documents = {s.name: s.document for s in observation.licenses if s.document is not None}
    by_name = {seen.name: seen for seen in observation.licenses}
    notices: list[Notice] = []
    for issue in issuing.issues:
        outcome, seen = issued[issue.license], by_name[issue.license]
        if isinstance(outcome, Refused):
            # RBAC lets orgkeeper patch only the Secrets it names itself.
            own = names.provisioned_license_secret(seen.product)
            evaluated[seen.name] = dataclasses.replace(
                evaluated[seen.name],
                reason="SecretNotWritable",
                message=f"orgkeeper may not write Secret {issue.secret_name} "
                f"(HTTP {outcome.status}); name the Secret {own} in "
                "spec.secretRef for a Provisioned license",
            )
            continue
        documents[seen.name] = outcome
        item = evaluated[seen.name] = evaluate_seen(seen, observation, outcome)
        if issue.why != "issued" and item.verified is not None:
            notices.append(
                Notice(
                    seen.name,
                    "LicenseRotated" if issue.why == "rotated" else "LicenseReissued",
                    f"{issue.why} the {seen.product} license: {item.verified.fingerprint}",
                )
            )
    active = active_by_product(list(evaluated.values()))
    copies = [
        _copy_plan(observation, product, active.get(product), documents) for product in PRODUCTS
    ]
    return LicensePlan(evaluated, active, notices, copies)


def _copy_plan(
    observation: LicenseObservation[W],
    product: str,
    active: Evaluated | None,
    documents: Mapping[str, bytes],
) -> CopyPlan[W]:
    uid, copies = observation.organization_uid, observation.copies
    targets = data_planes(observation.workloads, product)
    recorded = set(observation.recorded.get(product, ()))
    stale = sorted(recorded - targets.keys())
    found = {
        namespace: copies[(product, namespace)]
        for namespace in stale
        if (product, namespace) in copies
    }
    plan: CopyPlan[W] = CopyPlan(
        product,
        names.propagated_license_secret(product),
        targets,
        withdraw=tuple(
            (namespace, copy.uid)
            for namespace, copy in found.items()
            if copy is not None and is_ours(copy, uid)
        ),
        # A copy not read stays on the record until it is.
        held=frozenset((recorded & targets.keys()) | (set(stale) - found.keys())),
        frozen=observation.deactivated,
    )
    if observation.deactivated or active is None or active.verified is None:
        return plan
    document = documents[active.name]
    labels = observation.labels[product]
    owners = [Owner(ORGANIZATION.kind, observation.organization, uid, True)]
    held, current = set(plan.held), set()
    writes: list[CopyWrite] = []
    conflicts: list[str] = []
    for namespace in sorted(targets):
        if (product, namespace) not in copies:
            continue  # not read: its failure is told, and the next check tries again
        copy = copies[(product, namespace)]
        if copy is None:
            writes.append(CopyWrite(namespace, exists=False, resource_version=None))
            continue
        if not is_ours(copy, uid):
            conflicts.append(namespace)
            continue
        held.add(namespace)
        if (
            copy.document == document
            and list(copy.owners) == owners
            and all(copy.labels.get(k) == v for k, v in labels.items())
        ):
            current.add(namespace)
        else:
            writes.append(CopyWrite(namespace, exists=True, resource_version=copy.resource_version))
    return dataclasses.replace(
        plan,
        held=frozenset(held),
        license=active.name,
        fingerprint=active.verified.fingerprint,
        data={names.LICENSE_DATA_KEY: document},
        labels=labels,
        writes=tuple(writes),
        current=frozenset(current),
        conflicts=tuple(conflicts),
    )
