"""Requested deactivation with every effect, reactivation, the e-mail lock (deactivation for
inactivity is a time rule: test_time_rules.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client

from orgkeeper import names
from orgkeeper_dev.localcluster import LocalCluster
from support.cli import orgkeeper
from support.kube import AsUser, Kube, rejection, wait_for
from support.orgs import (
    allowed,
    membership,
    organization,
    wait_allowed,
    wait_members_bound,
    wait_org,
)
from support.workloads import create, read, workload

pytestmark = pytest.mark.usefixtures("operator")


def member_bindings(admin: Kube, namespace: str) -> list[Any]:
    bindings = admin.rbac.list_namespaced_role_binding(
        namespace, label_selector=names.LABEL_MEMBERSHIP
    )
    return cast("list[Any]", bindings.items)


def test_requested_deactivation_applies_every_effect_and_reactivation_restores(
    admin: Kube, as_user: AsUser, cluster: LocalCluster, unique: str, tmp_path: Path
) -> None:
    name, other = f"deact-{unique}", f"other-{unique}"
    owner, alice, bob = (f"{who}@{name}.test" for who in ("owner", "alice", "bob"))
    namespace, edge = f"org-{name}", f"edge-{unique}"
    for org_name in (name, other):
        org_owner = f"owner@{org_name}.test" if org_name == other else owner
        # Enterprise (a contract, no inactivity rule): support creates it for its Owner.
        admin.create("organizations", organization(org_name, org_owner))
        wait_org(admin, org_name)
    admin.create("memberships", membership("alice", alice, "organization-admin"), namespace)
    admin.create("memberships", membership("bob", bob, "analytics-viewer"), namespace)
    admin.create("memberships", membership("alice", alice, "portal-admin"), f"org-{other}")
    wait_members_bound(admin, name, {alice: ["organization-admin"], bob: ["analytics-viewer"]})
    wait_members_bound(admin, other, {alice: ["portal-admin"]})

    labels = {names.LABEL_ORGANIZATION: name}  # the admin gives the namespace to the org
    admin.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=edge, labels=labels))
    )
    control_planes = [
        ("Deployment", namespace, "cp-gateway"),
        ("StatefulSet", namespace, "cp-mesh"),
    ]
    data_planes = [
        ("Deployment", namespace, "dp-a"),
        ("StatefulSet", edge, "dp-b"),
        ("DaemonSet", edge, "dp-c"),
    ]
    for kind, ns, workload_name in control_planes:
        create(admin, ns, workload(kind, workload_name, name, "control-plane"))
    for kind, ns, workload_name in data_planes:
        create(admin, ns, workload(kind, workload_name, name, "data-plane"))
    wait_for(
        "the planes to be counted",
        lambda: (
            (
                admin.get("organizations", name)["status"].get("controlPlanes"),
                admin.get("organizations", name)["status"].get("dataPlanes"),
            )
            == (2, 3)
        ),
    )

    as_user(owner).patch("organizations", name, {"spec": {"state": "Deactivated"}})
    org = wait_org(admin, name, "Deactivated", "True", "Requested", timeout=60)
    status = org["status"]
    assert status["phase"] == "Deactivated"
    assert status["deactivation"]["reason"] == "Requested"
    assert (
        status["billing"]["state"] == "Stopped" and status["billing"].get("subscriptions", []) == []
    )
    assert status["ownerEmailLocked"] is True
    assert all(read(admin, *plane) is None for plane in control_planes)
    for plane in data_planes:
        found = read(admin, *plane)
        assert found is not None, plane
        assert found.metadata.annotations[names.ANNOTATION_FROZEN] == "true", plane
    # While deactivated: a control plane made again (as Argo CD or Flux self-heal would) is
    # parked once, scaled to 0 and annotated, not deleted again; and a data plane that loses
    # its frozen annotation gets it back.
    create(admin, namespace, workload("Deployment", "cp-again", name, "control-plane"))

    def parked() -> Any:
        found = read(admin, "Deployment", namespace, "cp-again")
        assert found is not None, "a control plane made again is not deleted again"
        annotations = found.metadata.annotations or {}
        return found.spec.replicas == 0 and annotations.get(names.ANNOTATION_DECOMMISSIONED)

    assert wait_for("the control plane made again to be parked", parked) == "true"
    told = wait_for(
        "the ControlPlaneParked Event on it",
        lambda: [
            e
            for e in admin.core.list_namespaced_event(
                namespace, field_selector="involvedObject.name=cp-again"
            ).items
            if e.reason == "ControlPlaneParked"
        ],
    )
    assert f"organization {name} is deactivated" in told[0].message
    # Git scales it back: orgkeeper leaves it alone now (no fight, no loop).
    admin.apps.patch_namespaced_deployment("cp-again", namespace, {"spec": {"replicas": 1}})
    admin.apps.patch_namespaced_stateful_set(
        "dp-b", edge, {"metadata": {"annotations": {names.ANNOTATION_FROZEN: None}}}
    )
    wait_for(
        "the data plane to be frozen again",
        lambda: (
            (found := read(admin, "StatefulSet", edge, "dp-b")) is not None
            and (found.metadata.annotations or {}).get(names.ANNOTATION_FROZEN) == "true"
        ),
    )
    again = read(admin, "Deployment", namespace, "cp-again")
    assert again is not None and again.spec.replicas == 1, "a parked control plane is left alone"
    admin.apps.delete_namespaced_deployment("cp-again", namespace)
    assert member_bindings(admin, namespace) == []
    for member in admin.list("memberships", namespace):
        assert (
            member["status"]["state"] == "Removed"
            and member["status"].get("effectiveTeams", []) == []
        )
    # The bindings are gone; the API server's authorizer takes that in from its watch.
    wait_for(
        "RBAC to revoke the members' and the Owner's rights",
        lambda: (
            not allowed(admin, alice, "create", "memberships", namespace=namespace)
            and not allowed(admin, owner, "delete", "organizations", name=name)
        ),
    )
    # The Owner still sees their org, and that it is deactivated, with their own rights only.
    assert as_user(owner).get("organizations", name)["status"]["phase"] == "Deactivated"
    for verb in ("update", "patch", "delete"):
        assert not allowed(admin, owner, verb, "organizations", name=name), verb
    assert not allowed(admin, alice, "get", "organizations", name=name), "a member sees nothing"
    seen = orgkeeper(
        cluster, "status", name, kubeconfig=cluster.user_kubeconfig(tmp_path / "owner", owner)
    )
    assert seen.returncode == 0, seen.stderr
    assert "Phase:    Deactivated" in seen.stdout and "Deactivated: Requested at" in seen.stdout
    assert "Licenses: not readable with your rights" in seen.stdout  # roles in org-<name> gone
    # The same person elsewhere is untouched.
    (elsewhere,) = [
        m for m in admin.list("memberships", f"org-{other}") if m["spec"]["email"] == alice
    ]
    assert elsewhere["status"]["state"] == "Active"
    assert allowed(admin, alice, "create", "configmaps", group="", namespace=f"org-{other}")
    events = admin.core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={name}"
    ).items
    assert any(e.reason == "Deactivated" for e in events)

    # The owner e-mail is locked until support unlocks it.
    again = organization(f"again-{unique}", owner, plan="Plus")
    status_code, message = rejection(lambda: as_user(owner).create("organizations", again))
    assert status_code == 403
    assert f"the e-mail {owner} is locked by deactivated organization {name}" in message, message
    assert "spec.unlockOwnerEmail: true" in message
    admin.patch("organizations", name, {"spec": {"unlockOwnerEmail": True}})
    wait_for(
        "the e-mail to be unlocked",
        lambda: admin.get("organizations", name)["status"]["ownerEmailLocked"] is False,
    )
    # The webhook reads the lock from the operator's cache, which the unlock reaches by a watch.
    wait_for(
        "the Owner's sign-up to be admitted", lambda: as_user(owner).create("organizations", again)
    )
    wait_org(admin, f"again-{unique}")

    # Reactivation restores roles and billing and unfreezes; control planes stay gone.
    # The unlock belongs to this deactivation: support clears it as it reactivates.
    admin.patch("organizations", name, {"spec": {"state": "Active", "unlockOwnerEmail": False}})
    org = wait_org(admin, name, timeout=60)
    assert org["status"]["phase"] == "Active"
    assert (
        org["status"]["billing"]["state"] == "Active"
        and len(org["status"]["billing"]["subscriptions"]) == 3
    )
    assert "deactivation" not in org["status"]
    wait_members_bound(
        admin,
        name,
        {alice: ["organization-admin"], bob: ["analytics-viewer"], owner: ["organization-admin"]},
    )
    wait_allowed(admin, alice, "create", "memberships", namespace=namespace)

    def unfrozen() -> bool:
        for plane in data_planes:
            found = read(admin, *plane)
            assert found is not None, f"data plane {plane} is gone"
            if names.ANNOTATION_FROZEN in (found.metadata.annotations or {}):
                return False
        return True

    wait_for("data planes to be unfrozen", unfrozen)
    assert all(read(admin, *plane) is None for plane in control_planes)
