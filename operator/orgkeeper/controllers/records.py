"""What the caches (kopf's indexes, the Runtime's informers) keep of each watched object:
small, immutable records."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import names
from ..api.v1alpha1 import GROUP, ORGANIZATION, TEAMS
from ..api.v1alpha1.common import Team
from ..domain.membership import Member
from ..domain.namespaces import Claim

MEMBER_LABELS = (names.LABEL_ORGANIZATION, names.LABEL_EMAIL_HASH, names.LABEL_SHARD_SLOT)
BINDING_LABELS = (
    names.LABEL_MANAGED_BY,
    names.LABEL_ORGANIZATION,
    names.LABEL_MEMBERSHIP,
    names.LABEL_EMAIL_HASH,
    names.LABEL_TEAM,
    names.LABEL_SHARD_SLOT,
)
WORKLOAD_ANNOTATIONS = (
    names.ANNOTATION_FROZEN,
    names.ANNOTATION_LICENSE_FINGERPRINT,
    names.ANNOTATION_DECOMMISSIONED,
)


@dataclass(frozen=True)
class OrgRecord:
    """What admission needs of an Organization (one per org, held by the Runtime's informer)."""

    name: str
    region: str | None
    owner: str | None  # the effective Owner (status), else the one asked for (spec)
    owner_email_locked: bool
    deleting: bool
    reconciled: bool  # an operator of its region has written its status

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> OrgRecord:
        spec, status, meta = body.get("spec", {}), body.get("status") or {}, body["metadata"]
        return cls(
            name=meta["name"],
            region=spec.get("region"),
            owner=status.get("owner") or spec.get("owner"),
            owner_email_locked=bool(status.get("ownerEmailLocked")),
            deleting=bool(meta.get("deletionTimestamp")),
            reconciled=bool(status.get("phase") or status.get("conditions")),
        )


@dataclass(frozen=True)
class MemberRecord:
    name: str
    namespace: str
    uid: str
    generation: int
    email: str
    teams: tuple[Team, ...]
    labels: Mapping[str, str]
    status: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> MemberRecord:
        meta, spec = body["metadata"], body.get("spec", {})
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation", 0)),
            email=str(spec.get("email", "")),
            teams=tuple(t for t in TEAMS if t in (spec.get("teams") or [])),
            labels=_only(meta.get("labels"), MEMBER_LABELS),
            status=dict(body.get("status") or {}),
        )

    def member(self) -> Member:
        return Member(self.name, self.email, self.teams)

    @property
    def last_login(self) -> datetime | None:
        """status.lastLoginTime (set by `orgkeeper activity login`)."""
        stamp = self.status.get("lastLoginTime")
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


# orgkeeper writes exactly one subject (and one owner) per member RoleBinding: a record keeps at
# most two of each, enough to see that a binding holds more than it wrote, and never a stranger's
# thousands. Names are cut to what an e-mail and the SSO prefix can be.
KEPT_SUBJECTS = 2
KEPT_NAME = 320
# Label values are at most 63 characters; the annotations read (a fingerprint, `true`) are short,
# and one a tenant makes long is kept no longer than this.
KEPT_VALUE = 128


@dataclass(frozen=True)
class BindingRecord:
    name: str
    namespace: str
    users: tuple[str, ...]
    role: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    owners: tuple[str, ...] = ()  # ownerReference UIDs

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> BindingRecord:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            users=tuple(
                str(s.get("name", ""))[:KEPT_NAME]
                for s in (body.get("subjects") or [])[:KEPT_SUBJECTS]
            ),
            role=body.get("roleRef", {}).get("name", ""),
            labels=_only(meta.get("labels"), BINDING_LABELS),
            owners=tuple(
                str(ref.get("uid", ""))[:KEPT_NAME]
                for ref in (meta.get("ownerReferences") or [])[:KEPT_SUBJECTS]
            ),
        )


@dataclass(frozen=True)
class LicenseRecord:
    name: str
    namespace: str
    uid: str
    generation: int
    created: str
    product: str
    source: str
    secret_name: str | None
    secret_key: str
    status: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> LicenseRecord:
        meta, spec = body["metadata"], body.get("spec", {})
        ref = spec.get("secretRef") or {}
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation", 0)),
            created=meta.get("creationTimestamp", ""),
            product=spec.get("product", ""),
            source=spec.get("source", ""),
            secret_name=ref.get("name"),
            secret_key=ref.get("key", names.LICENSE_DATA_KEY),
            status=dict(body.get("status") or {}),
        )


@dataclass(frozen=True)
class WorkloadRecord:
    """A Deployment, StatefulSet or DaemonSet labelled with an organization."""

    kind: str
    namespace: str
    name: str
    uid: str
    organization: str
    component: str
    product: str
    annotations: Mapping[str, str]

    @classmethod
    def from_body(cls, kind: str, body: Mapping[str, Any]) -> WorkloadRecord:
        meta = body["metadata"]
        labels = meta.get("labels") or {}
        return cls(
            kind=kind,
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta.get("uid", ""),
            organization=labels.get(names.LABEL_ORGANIZATION, ""),
            component=labels.get(names.LABEL_COMPONENT, ""),
            product=labels.get(names.LABEL_PRODUCT, ""),
            annotations=_only(meta.get("annotations"), WORKLOAD_ANNOTATIONS),
        )

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def frozen(self) -> bool:
        return self.annotations.get(names.ANNOTATION_FROZEN) == "true"

    @property
    def decommissioned(self) -> bool:
        return names.ANNOTATION_DECOMMISSIONED in self.annotations


NAMESPACE_LABELS = (
    names.LABEL_ORGANIZATION,
    names.LABEL_ORGANIZATION_UID,
    names.LABEL_RELEASED_FROM,
    names.LABEL_EMAIL_HASH,
)


@dataclass(frozen=True)
class NamespaceRecord:
    """A Namespace labelled orgkeeper.dev/organization: the org it claims, the orgs owning it,
    and its identity labels (the UID it is held for, released-from, the Owner's e-mail hash)."""

    name: str
    organization: str
    owners: tuple[tuple[str, str], ...]  # (name, uid) of each owning Organization
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NamespaceRecord:
        meta = body["metadata"]
        labels = _only(meta.get("labels"), NAMESPACE_LABELS)
        return cls(
            name=meta["name"],
            organization=labels.get(names.LABEL_ORGANIZATION, ""),
            owners=tuple(
                (ref.get("name", ""), ref.get("uid", ""))
                for ref in meta.get("ownerReferences") or []
                if ref.get("kind") == ORGANIZATION.kind
                and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/")
            ),
            labels=labels,
        )

    def claim(self) -> Claim:
        return Claim.of(self.name, self.labels, self.owners)


def _only(found: Mapping[str, str] | None, keys: Iterable[str]) -> dict[str, str]:
    """The few keys orgkeeper reads; a cache holding every label or annotation grows with them."""
    found = found or {}
    return {key: str(found[key])[:KEPT_VALUE] for key in keys if key in found}


def values(index: Mapping[str, Iterable[Any]], key: str) -> list[Any]:
    """All values a kopf index holds under a key (none when the key is absent)."""
    return list(index.get(key, ()))
