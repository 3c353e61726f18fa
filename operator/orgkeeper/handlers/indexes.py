"""kopf indexes: in-memory views of the watched objects, so reconciles and webhooks don't list.

kopf hands each index to handlers as a keyword argument named after its function. The kinds
that come by the thousand (Memberships, member RoleBindings), and the Organizations that
admission reads on every replica, live in the Runtime's informers instead (see
controllers/informer.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from .. import names
from ..api.v1alpha1 import LICENSE, MEMBERSHIP, ORGANIZATION
from ..controllers.records import LicenseRecord, WorkloadRecord

ORGANIZATIONS = ORGANIZATION.resource
MEMBERSHIPS = MEMBERSHIP.resource
LICENSES = LICENSE.resource
WORKLOADS = {
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
}
ORGANIZATION_LABELLED: Mapping[str, Any] = {names.LABEL_ORGANIZATION: kopf.PRESENT}


async def licenses_by_namespace(
    body: kopf.Body, namespace: str | None, **_: Any
) -> dict[str, LicenseRecord]:
    return {namespace or "": LicenseRecord.from_body(body)}


def workload_index(kind: str) -> str:
    """The name of the index of one workload kind, the keyword handlers receive it as."""
    return f"{kind.lower()}s_by_organization"


def workloads_by_organization(kind: str) -> Any:
    async def index(body: kopf.Body, **_: Any) -> dict[str, WorkloadRecord]:
        record = WorkloadRecord.from_body(kind, body)
        return {record.organization: record}

    return index


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.index(*LICENSES, registry=registry)(licenses_by_namespace)
    # One index per workload kind; reconciles read them together (organization._workloads).
    for kind, resource in WORKLOADS.items():
        kopf.index(
            *resource,
            labels=ORGANIZATION_LABELLED,
            id=workload_index(kind),
            registry=registry,
        )(workloads_by_organization(kind))
