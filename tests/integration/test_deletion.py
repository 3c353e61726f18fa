"""Deleting an Organization removes everything orgkeeper made for it, and nothing else."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kubernetes import client

from orgkeeper import names
from support.kube import Kube, wait_for
from support.licenses import secret_body, secret_document
from support.orgs import membership, organization, wait_members_bound, wait_org
from support.workloads import create, read, workload

pytestmark = pytest.mark.usefixtures("operator")


def test_deleting_an_org_removes_what_it_made_and_nothing_else(
    admin: Kube, as_user: Callable[[str], Kube], unique: str
) -> None:
    name, owner = f"gone-{unique}", f"owner@gone-{unique}.test"
    edge = f"edge-{unique}"
    as_user(owner).create("organizations", organization(name, owner, plan="Plus"))
    wait_org(admin, name)
    admin.create(
        "memberships", membership("alice", f"alice@{name}.test", "portal-admin"), f"org-{name}"
    )
    wait_members_bound(admin, name, {f"alice@{name}.test": ["portal-admin"]})
    # A namespace the admin gives to the org: its data planes there get the license.
    labels = {names.LABEL_ORGANIZATION: name}
    admin.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=edge, labels=labels))
    )
    create(admin, edge, workload("Deployment", "gateway", name, "data-plane", "mesh"))
    admin.core.create_namespaced_secret(edge, secret_body("customer-config", b"keep me"))
    wait_for("the license copy", lambda: secret_document(admin, edge, "orgkeeper-license-mesh"))

    as_user(owner).delete("organizations", name)
    wait_for(
        "the org to be gone",
        lambda: not [o for o in admin.list("organizations") if o["metadata"]["name"] == name],
        timeout=60,
    )
    wait_for(
        "its namespace to be gone",
        lambda: not admin.core.list_namespace(field_selector=f"metadata.name=org-{name}").items,
        timeout=60,
    )
    wait_for(
        "its license copy to be gone",
        lambda: secret_document(admin, edge, "orgkeeper-license-mesh") is None,
    )
    # Garbage collection deletes the ClusterRole and its binding in no particular order.
    wait_for(
        "the Owner's cluster RBAC to be gone",
        lambda: (
            not admin.rbac.list_cluster_role(
                label_selector=f"{names.LABEL_ORGANIZATION}={name}"
            ).items
            and not admin.rbac.list_cluster_role_binding(
                label_selector=f"{names.LABEL_ORGANIZATION}={name}"
            ).items
        ),
    )

    # What the platform team made stays: the workload (without orgkeeper's annotations) and
    # their own Secret beside it.
    gateway = read(admin, "Deployment", edge, "gateway")
    assert gateway is not None
    assert names.ANNOTATION_LICENSE_FINGERPRINT not in (gateway.metadata.annotations or {})
    assert secret_document(admin, edge, "customer-config") == b"keep me"
