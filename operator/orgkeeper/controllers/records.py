"""What the caches (kopf's indexes, the Runtime's informers) keep of each watched object:
small, immutable records."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from .. import names
from ..api.v1alpha1 import GROUP, ORGANIZATION, TEAMS
from ..api.v1alpha1.common import Team
from ..domain.membership import Member
from ..domain.namespaces import Claim
from ..domain.people import MemberFacts, OrgFacts

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
    # What the org switcher (the people API) shows of it.
    display_name: str = ""
    plan: str | None = None
    phase: str | None = None
    sso_only: bool = False

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
            display_name=str(spec.get("displayName") or "")[:KEPT_VALUE],
            plan=spec.get("plan"),
            phase=status.get("phase"),
            sso_only=bool(spec.get("ssoOnly")),
        )

    def owner_key(self) -> str:
        """Its key in the index of Organizations by Owner: the e-mail as names.same_email
        compares it (case and surrounding spaces ignored)."""
        return (self.owner or "").strip().lower()

    def facts(self) -> OrgFacts:
        return OrgFacts(
            name=self.name,
            display_name=self.display_name,
            region=self.region,
            plan=self.plan,
            phase=self.phase,
            sso_only=self.sso_only,
            owner=self.owner,
        )


def shared(value: str) -> str:
    """One string object for every record holding this text: a Membership's name, e-mail,
    e-mail hash and UID are held once for the Membership and its RoleBindings, and a namespace,
    team or status once for all the records that hold it. (Interned strings are freed with their
    last holder.)"""
    return sys.intern(str(value))


def _compact(status: Mapping[str, Any]) -> str:
    """A status as canonical compact JSON, shared: Memberships reconciled alike in the same
    second hold one string."""
    return shared(json.dumps(status, separators=(",", ":"), sort_keys=True)) if status else ""


class _Frozen:
    """Immutable slotted records: no per-record __dict__ (a dict per record is most of a
    small record's size), compared and hashed by their slots."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def _set(self, **fields: Any) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def _slots(self) -> tuple[str, ...]:
        slots: tuple[str, ...] = type(self).__slots__
        return slots

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._slots())

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Frozen)
            and type(other) is type(self)
            and (self._fields() == other._fields())
        )

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._slots())
        return f"{type(self).__name__}({fields})"


class MemberRecord(_Frozen):
    """A Membership as the informer holds it: its identity, spec, two labels and its status
    (kept as shared compact JSON and parsed when read, at most once per reconcile)."""

    __slots__ = ("_labels", "_status", "email", "generation", "name", "namespace", "teams", "uid")
    name: str
    namespace: str
    uid: str
    generation: int
    email: str
    teams: tuple[Team, ...]
    _labels: tuple[str | None, ...]  # the values of MEMBER_LABELS, in order (None: absent)
    _status: str

    def __init__(
        self,
        name: str,
        namespace: str,
        uid: str,
        generation: int,
        email: str,
        teams: Iterable[Team],
        labels: Mapping[str, str],
        status: Mapping[str, Any],
    ) -> None:
        kept = _only(labels, MEMBER_LABELS)
        self._set(
            name=shared(name),
            namespace=shared(namespace),
            uid=shared(uid),
            generation=generation,
            email=shared(email),
            teams=_teams(teams),
            _labels=_values(kept, MEMBER_LABELS),
            _status=_compact(status),
        )

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
            labels=meta.get("labels") or {},
            status=body.get("status") or {},
        )

    @property
    def labels(self) -> Mapping[str, str]:
        return _mapping(self._labels, MEMBER_LABELS)

    @property
    def status(self) -> Mapping[str, Any]:
        parsed: dict[str, Any] = json.loads(self._status) if self._status else {}
        return parsed

    @property
    def has_status(self) -> bool:
        return bool(self._status)

    def member(self) -> Member:
        return Member(self.name, self.email, self.teams)

    def facts(self) -> MemberFacts:
        return MemberFacts(self.namespace, self.name, self.email, self.teams, self.status)

    @property
    def email_key(self) -> str:
        """Its key in the index of Memberships by e-mail (the people API's lookup)."""
        return names.email_hash(self.email)

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


class BindingRecord(_Frozen):
    """A member RoleBinding as the informer holds it. Its subjects, labels and owner are the
    strings its Membership's record holds too (shared), so a binding costs little more than
    its name."""

    __slots__ = ("_labels", "_owners", "_users", "name", "namespace", "role")
    name: str
    namespace: str
    role: str
    _users: str | tuple[str, ...]  # one subject (as orgkeeper writes them) held bare
    _labels: tuple[str | None, ...]  # the values of BINDING_LABELS, in order (None: absent)
    _owners: str | tuple[str, ...]  # ownerReference UIDs; one held bare

    def __init__(
        self,
        name: str,
        namespace: str,
        users: Iterable[str],
        role: str,
        labels: Mapping[str, str] | None = None,
        owners: Iterable[str] = (),
    ) -> None:
        kept = _only(labels, BINDING_LABELS)
        self._set(
            name=str(name),  # its own: no other record holds it
            namespace=shared(namespace),
            _users=_bare(shared(user[:KEPT_NAME]) for user in list(users)[:KEPT_SUBJECTS]),
            role=shared(role),
            _labels=_values(kept, BINDING_LABELS),
            _owners=_bare(shared(uid[:KEPT_NAME]) for uid in list(owners)[:KEPT_SUBJECTS]),
        )

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> BindingRecord:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            users=[str(s.get("name", "")) for s in (body.get("subjects") or [])[:KEPT_SUBJECTS]],
            role=body.get("roleRef", {}).get("name", ""),
            labels=meta.get("labels") or {},
            owners=[
                str(ref.get("uid", ""))
                for ref in (meta.get("ownerReferences") or [])[:KEPT_SUBJECTS]
            ],
        )

    @property
    def labels(self) -> Mapping[str, str]:
        return _mapping(self._labels, BINDING_LABELS)

    @property
    def users(self) -> tuple[str, ...]:
        return (self._users,) if isinstance(self._users, str) else self._users

    @property
    def owners(self) -> tuple[str, ...]:
        return (self._owners,) if isinstance(self._owners, str) else self._owners


def _bare(values: Iterable[str]) -> str | tuple[str, ...]:
    """One value as itself (a tuple of one costs 48 bytes more), else a tuple."""
    found = tuple(values)
    return found[0] if len(found) == 1 else found


_TEAM_SETS: dict[tuple[Team, ...], tuple[Team, ...]] = {}  # at most 2^len(TEAMS) entries


def _teams(teams: Iterable[Team]) -> tuple[Team, ...]:
    """One shared tuple per set of teams (there are few)."""
    key = tuple(cast(Team, shared(team)) for team in teams if team in TEAMS)
    return _TEAM_SETS.setdefault(key, key)


_ABSENT: tuple[None, ...] = ()


def _values(found: Mapping[str, str], keys: Sequence[str]) -> tuple[str | None, ...]:
    values = tuple(shared(found[key]) if key in found else None for key in keys)
    return _ABSENT if all(v is None for v in values) else values


def _mapping(values: tuple[str | None, ...], keys: Sequence[str]) -> dict[str, str]:
    if not values:
        return {}
    return {key: value for key, value in zip(keys, values, strict=True) if value is not None}


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
