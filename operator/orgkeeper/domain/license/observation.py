"""What the reconcile of one org's Licenses looked at: the Licenses with their documents, the
org's data planes, and the copies found."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ...api.v1alpha1.organization import OrganizationSpec
from ..workloads import Workload

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
