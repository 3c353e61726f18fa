"""Licenses: validity, which one issues into a Secret and which one is active per product,
rotation, and where copies go.

A reconcile asks three questions in turn, each answered from data alone: which Licenses get a
fresh document (`plan_issuing`); once those are written, which License is active per product
and what its copies need (`plan_licenses`); once that is applied, each License's status
(`license_status`, with the `Delivery` its `CopyPlan` says was made).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .. import names
from ..api.v1alpha1 import ORGANIZATION, PRODUCTS
from ..api.v1alpha1.license import MAX_COPY_NAMESPACES, LicenseStatus, PropagatedTo
from ..api.v1alpha1.organization import OrganizationSpec
from ..licensing import LicenseError, LicensePayload, VerifiedLicense, verify
from .conditions import ConditionSet
from .namespaces import summary
from .workloads import Workload

MAX_REFS = 16
# A license issued a little ahead of the operator's clock is valid already.
ISSUE_SKEW = timedelta(minutes=5)
PROVISIONED = "Provisioned"
CONFLICT = (
    "a Secret of that name that orgkeeper does not own is in the way; "
    "rename or delete it so the license can be delivered"
)


W = TypeVar("W", bound=Workload)


@dataclass(frozen=True)
class LicenseSeen:
    """A License and the document its Secret holds (None: `missing` says why there is none)."""

    name: str
    product: str
    source: str
    created: str
    secret_name: str | None
    secret_key: str
    document: bytes | None
    missing: str = ""
    secret_exists: bool = False  # the Secret may exist without the document (then it is patched)


@dataclass(frozen=True)
class Owner:
    """One ownerReference of a copy."""

    kind: str
    name: str
    uid: str
    controller: bool


@dataclass(frozen=True)
class Copy:
    """A Secret orgkeeper-license-<product> found in a namespace."""

    uid: str
    resource_version: str
    document: bytes  # its data[names.LICENSE_DATA_KEY]
    labels: Mapping[str, str]
    owners: Sequence[Owner]


def is_ours(copy: Copy, organization_uid: str) -> bool:
    """A copy is orgkeeper's when its Organization owns it: decided by the owner's UID, which a
    tenant can't take over as it can labels."""
    return any(owner.uid == organization_uid for owner in copy.owners)


@dataclass(frozen=True)
class LicenseObservation(Generic[W]):
    """What the reconcile of one org's Licenses looked at."""

    organization: str
    organization_uid: str
    spec: OrganizationSpec
    deactivated: bool
    now: datetime
    rotate_after: timedelta
    validity: timedelta
    public_key: Ed25519PublicKey
    licenses: Sequence[LicenseSeen]
    workloads: Sequence[W]  # the org's, in the namespaces it owns (the only ones served)
    recorded: Mapping[str, Collection[str]]  # product: namespaces said to hold a copy
    copies: Mapping[tuple[str, str], Copy | None]  # (product, namespace): None, no Secret there
    labels: Mapping[str, Mapping[str, str]]  # product: the labels of orgkeeper's Secrets of it


@dataclass(frozen=True)
class Evaluated:
    """One License after its Secret was read and its signature checked."""

    name: str
    product: str
    source: str
    created: str
    verified: VerifiedLicense | None
    reason: str
    message: str
    valid_from: datetime | None = None  # NotYetValid: when it becomes valid

    @property
    def valid(self) -> bool:
        return self.verified is not None


def evaluate(
    name: str,
    product: str,
    source: str,
    created: str,
    document: bytes | None,
    *,
    organization: str,
    organization_uid: str,
    public_key: Ed25519PublicKey,
    now: datetime,
    missing: str = "",
) -> Evaluated:
    def invalid(reason: str, message: str, valid_from: datetime | None = None) -> Evaluated:
        return Evaluated(name, product, source, created, None, reason, message, valid_from)

    if document is None:
        return invalid("SecretMissing", missing or "the license Secret was not found")
    try:
        verified = verify(document, public_key)
    except LicenseError as error:
        return invalid(error.reason, str(error))
    payload = verified.payload
    if payload.organization != organization:
        return invalid(
            "WrongOrganization", f"the license is for organization {payload.organization}"
        )
    if payload.organization_uid != organization_uid:
        return invalid("WrongOrganization", wrong_uid(payload, organization_uid))
    if payload.product != product:
        return invalid("WrongProduct", f"the license is for {payload.product}, not {product}")
    if now >= payload.expires_at:
        return invalid("Expired", f"the license expired at {payload.expires_at.isoformat()}")
    valid_from = payload.issued_at - ISSUE_SKEW
    if now < valid_from:
        message = f"the license is issued for {payload.issued_at.isoformat()}"
        return invalid("NotYetValid", message, valid_from)
    expires = payload.expires_at.isoformat().replace("+00:00", "Z")
    return Evaluated(
        name,
        product,
        source,
        created,
        verified,
        "Verified",
        f"signature verified; valid until {expires}",
    )


def wrong_uid(payload: LicensePayload, organization_uid: str) -> str:
    """Why a license for the org's name is not this org's: an org is its UID, and a document
    issued to an earlier Organization of the same name (or before documents carried the UID)
    is not valid for it."""
    issued_to = (
        f"organization {payload.organization} with UID {payload.organization_uid}"
        if payload.organization_uid
        else f"organization {payload.organization} without an organization UID"
    )
    return (
        f"the license is issued to {issued_to}, not to this Organization (UID "
        f"{organization_uid}); a license must name the UID of the Organization it is for "
        "(kubectl get org -o jsonpath='{.metadata.uid}'): have it issued again for this one"
    )


def active_by_product(evaluated: Sequence[Evaluated]) -> dict[str, Evaluated]:
    """The newest valid license of each product (ties: the newer object, then the name)."""
    chosen: dict[str, Evaluated] = {}
    for candidate in evaluated:
        if candidate.verified is None:
            continue
        current = chosen.get(candidate.product)
        if current is None or _newer(candidate, current):
            chosen[candidate.product] = candidate
    return chosen


def _newer(a: Evaluated, b: Evaluated) -> bool:
    assert a.verified is not None and b.verified is not None
    return (a.verified.payload.issued_at, a.created, a.name) > (
        b.verified.payload.issued_at,
        b.created,
        b.name,
    )


def needs_issuing(
    current: Evaluated,
    *,
    now: datetime,
    rotate_after: timedelta,
    plan: str | None = None,
    region: str | None = None,
) -> str | None:
    """Why a Provisioned license needs a fresh payload (None: it doesn't).

    A payload naming another plan or region than the org's spec is reissued at once: data
    planes must not run on a stale plan until the next rotation.
    """
    if current.verified is None:
        return "issued" if current.reason == "SecretMissing" else "reissued"
    payload = current.verified.payload
    if (plan is not None and payload.plan != plan) or (
        region is not None and payload.region != region
    ):
        return "reissued"
    if now - payload.issued_at >= rotate_after:
        return "rotated"
    return None


def next_due(
    evaluated: Iterable[Evaluated], *, now: datetime, rotate_after: timedelta
) -> datetime | None:
    """The next moment a valid license expires, a Provisioned one is due for rotation, or a
    license issued ahead becomes valid."""
    moments = []
    for item in evaluated:
        if item.valid_from is not None:
            moments.append(item.valid_from)
        if item.verified is None:
            continue
        payload = item.verified.payload
        moments.append(payload.expires_at)
        if item.source == PROVISIONED:
            moments.append(payload.issued_at + rotate_after)
    return min((moment for moment in moments if moment > now), default=None)


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
class Issue:
    """Sign `payload` and write it into the License's Secret."""

    license: str
    secret_name: str
    secret_key: str
    payload: LicensePayload
    why: str  # issued, reissued or rotated
    exists: bool  # patch the Secret (else create it)


@dataclass(frozen=True)
class Issuing:
    evaluated: Mapping[str, Evaluated]  # by License name, as found
    issues: Sequence[Issue]


@dataclass(frozen=True)
class Refused:
    """The API server refused to write an issued document into the Secret."""

    status: int  # HTTP


def plan_issuing(observation: LicenseObservation[W]) -> Issuing:
    """Each License as found, and the Provisioned ones that get a fresh document.

    One Secret holds one provisioned payload. Of the Provisioned Licenses naming the same
    Secret, one issues into it: the one whose payload it holds, else the oldest (then by name).
    The others never do (each would otherwise overwrite the other's payload at every
    reconcile); while invalid they say SecretInUse.
    """
    spec, now = observation.spec, observation.now
    evaluated = {seen.name: _evaluate(seen, observation) for seen in observation.licenses}
    issuers: dict[str, LicenseSeen] = {}
    for seen in sorted(
        observation.licenses,
        key=lambda s: (not evaluated[s.name].valid, s.created, s.name),
    ):
        if seen.source == PROVISIONED and seen.secret_name:
            issuers.setdefault(seen.secret_name, seen)
    issues: list[Issue] = []
    for seen in observation.licenses:
        issuer = issuers.get(seen.secret_name or "")
        if seen.source != PROVISIONED or issuer is None or seen.secret_name is None:
            continue
        item = evaluated[seen.name]
        if issuer.name != seen.name:
            if not item.valid:
                evaluated[seen.name] = dataclasses.replace(
                    item,
                    reason="SecretInUse",
                    message=f"Secret {seen.secret_name} holds the provisioned license of License "
                    f"{issuer.name}; name a Secret of its own in spec.secretRef",
                )
            continue
        why = needs_issuing(
            item, now=now, rotate_after=observation.rotate_after, plan=spec.plan, region=spec.region
        )
        if why is None:
            continue
        payload = LicensePayload(
            organization=observation.organization,
            product=seen.product,
            plan=spec.plan,
            region=spec.region,
            issued_at=now,
            expires_at=now + observation.validity,
            organization_uid=observation.organization_uid,
        )
        issues.append(
            Issue(seen.name, seen.secret_name, seen.secret_key, payload, why, seen.secret_exists)
        )
    return Issuing(evaluated, issues)


def _evaluate(
    seen: LicenseSeen, observation: LicenseObservation[W], document: bytes | None = None
) -> Evaluated:
    return evaluate(
        seen.name,
        seen.product,
        seen.source,
        seen.created,
        seen.document if document is None else document,
        organization=observation.organization,
        organization_uid=observation.organization_uid,
        public_key=observation.public_key,
        now=observation.now,
        missing=seen.missing,
    )


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
        item = evaluated[seen.name] = _evaluate(seen, observation, outcome)
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


def license_status(
    item: Evaluated,
    active: Evaluated | None,
    delivery: Delivery,
    previous: LicenseStatus,
    *,
    generation: int,
    now: datetime,
) -> LicenseStatus:
    """`delivery`: of the License's product; its copies are on the active License's record."""
    found = ConditionSet(previous.conditions, generation=generation, now=now)
    put = found.put
    put("Valid", item.valid, item.reason, item.message)
    is_active = active is not None and active.name == item.name
    if not item.valid:
        put("Propagated", False, "NotValid", "an invalid license is never delivered")
        put("Ready", False, item.reason, item.message)
    elif not is_active:
        newer = active.name if active is not None else "another license"
        put("Propagated", False, "Superseded", f"not active: License {newer} is newer")
        put(
            "Ready",
            True,
            "Superseded",
            f"valid, but License {newer} is the active one for {item.product}",
        )
    elif delivery.conflicts:
        where = summary(sorted(delivery.conflicts))
        message = (
            f"a Secret of the same name that orgkeeper does not own exists in {where}; "
            "rename or delete it so the license can be delivered"
        )
        put("Propagated", False, "SecretConflict", message)
        put("Ready", False, "SecretConflict", message)
    elif delivery.failed:
        message = (
            f"{len(delivery.failed)} delivery step(s) failed: {summary(delivery.failed)}; "
            "retried at every check"
        )
        put("Propagated", False, "DeliveryFailed", message)
        put("Ready", False, "DeliveryFailed", message)
    elif delivery.frozen:
        put(
            "Propagated",
            False,
            "Frozen",
            "the organization is deactivated; its data planes are frozen",
        )
        put(
            "Ready", True, "Frozen", "active; delivery resumes when the organization is reactivated"
        )
    else:
        put("Propagated", True, "Propagated", f"delivered to {len(delivery.refs)} data plane(s)")
        put(
            "Ready",
            True,
            "Active",
            "the active license for its product, delivered to every data plane",
        )
    verified = item.verified
    return LicenseStatus(
        conditions=found.conditions,
        observed_generation=generation,
        issued_at=verified.payload.issued_at if verified else None,
        expires_at=verified.payload.expires_at if verified else None,
        fingerprint=verified.fingerprint if verified else None,
        propagated_to=PropagatedTo(
            count=len(delivery.refs) if is_active else 0,
            refs=sorted(delivery.refs)[:MAX_REFS] if is_active else [],
            namespaces=sorted(delivery.namespaces)[:MAX_COPY_NAMESPACES]
            if is_active or active is None
            else [],
        ),
        active=is_active,
    )
