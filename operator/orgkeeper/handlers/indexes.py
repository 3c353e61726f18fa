"""kopf indexes: in-memory views of the watched objects, so reconciles and webhooks don't list.

kopf hands each index to handlers as a keyword argument named after its function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from .. import names
from ..controllers.records import BindingRecord, LicenseRecord, MemberRecord, OrgRecord

ORGANIZATIONS = ("orgkeeper.dev", "v1alpha1", "organizations")
MEMBERSHIPS = ("orgkeeper.dev", "v1alpha1", "memberships")
LICENSES = ("orgkeeper.dev", "v1alpha1", "licenses")
ROLE_BINDINGS = ("rbac.authorization.k8s.io", "v1", "rolebindings")
MEMBER_BINDING_LABELS: Mapping[str, Any] = {
    names.LABEL_MANAGED_BY: names.MANAGED_BY,
    names.LABEL_MEMBERSHIP: kopf.PRESENT,
}


def organizations_by_name(body: kopf.Body, name: str, **_: Any) -> dict[str, OrgRecord]:
    return {name: OrgRecord.from_body(body)}


def memberships_by_namespace(
    body: kopf.Body, namespace: str | None, **_: Any
) -> dict[str, MemberRecord]:
    return {namespace or "": MemberRecord.from_body(body)}


def licenses_by_namespace(
    body: kopf.Body, namespace: str | None, **_: Any
) -> dict[str, LicenseRecord]:
    return {namespace or "": LicenseRecord.from_body(body)}


def member_bindings_by_namespace(
    body: kopf.Body, namespace: str | None, **_: Any
) -> dict[str, BindingRecord]:
    return {namespace or "": BindingRecord.from_body(body)}


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.index(*ORGANIZATIONS, registry=registry)(organizations_by_name)
    kopf.index(*MEMBERSHIPS, registry=registry)(memberships_by_namespace)
    kopf.index(*LICENSES, registry=registry)(licenses_by_namespace)
    kopf.index(*ROLE_BINDINGS, labels=MEMBER_BINDING_LABELS, registry=registry)(
        member_bindings_by_namespace
    )
