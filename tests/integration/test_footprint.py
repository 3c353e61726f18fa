"""Footprint: what the operator lists and watches is selected by the API server to what it serves,
the labels it selects on are reserved, and Organization and Membership metadata is bounded.

The audit log says what the operator's ServiceAccount asked for. Attackers act by impersonation:
a namespace admin elsewhere (the stock `admin` ClusterRole in their own namespace), a tenant of
another org, and a stranger signing up; each refusal has a positive control beside it.
"""

from __future__ import annotations

import functools
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from orgkeeper import names
from orgkeeper_dev.localcluster import LocalCluster
from support import identity
from support.kube import AsUser, Kube, rejection, wait_for
from support.orgs import (
    membership,
    new_ready_org,
    organization,
    wait_allowed,
    wait_members_bound,
    wait_org,
)
from support.workloads import create, workload

pytestmark = pytest.mark.usefixtures("operator")

LABEL = names.LABEL_ORGANIZATION
RBAC = "rbac.authorization.k8s.io"
# Kinds the operator serves every object of, so no selector could narrow them (with reasons):
UNSELECTED = {
    # every Organization, for admission on every replica (and kopf's, serving all regions;
    # under --region kopf's watch selects spec.region): bounded by orgkeeper-metadata-size
    "organizations": "all of them are served",
    # only in org-<name> namespaces (orgkeeper-org-namespace-only), each an org's own
    "memberships": "only in org namespaces",
    "licenses": "only in org namespaces",
}


def selected(entry: dict[str, Any]) -> bool:
    query = parse_qs(urlsplit(entry["requestURI"]).query)
    return bool(query.get("labelSelector") or query.get("fieldSelector"))


def operator_reads(cluster: LocalCluster) -> list[dict[str, Any]]:
    """The operator's lists and watches, one entry per request: a watch is logged when its
    response starts (it completes only when the server ends it, minutes later)."""
    found: dict[str, dict[str, Any]] = {}
    for line in cluster.audit_log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line the API server is writing right now
        if (
            entry.get("stage") in ("ResponseStarted", "ResponseComplete")
            and entry["user"]["username"] == identity.USER
            # The operator's own requests: test_cli borrows its token for the CLI.
            and str(entry.get("userAgent", "")).startswith("orgkeeper/")
            and entry["verb"] in ("list", "watch")
        ):
            found.setdefault(entry["auditID"], entry)
    return list(found.values())


def test_every_list_and_watch_of_the_operator_carries_a_selector(cluster: LocalCluster) -> None:
    reads = operator_reads(cluster)
    resources = {(e.get("objectRef") or {}).get("resource") for e in reads}
    # Positive control: the operator's lists and watches are in the log, selected by the server.
    wanted = {
        "deployments",
        "statefulsets",
        "daemonsets",
        "rolebindings",
        "namespaces",
        "customresourcedefinitions",
    }
    assert wanted <= resources, sorted(r for r in resources if r)
    for resource in wanted:
        found = [e for e in reads if e["objectRef"]["resource"] == resource]
        assert {e["verb"] for e in found} == {"list", "watch"}, resource
    unselected = sorted(
        f"{e['verb']} {e['requestURI']}"
        for e in reads
        if not selected(e) and e["objectRef"]["resource"] not in UNSELECTED
    )
    assert unselected == [], "lists and watches without a selector:\n" + "\n".join(unselected)
    # Lists come in pages (kopf's chunks and the informers' pages).
    lists = [e for e in reads if e["verb"] == "list"]
    assert all("limit=" in e["requestURI"] for e in lists), [
        e["requestURI"] for e in lists if "limit=" not in e["requestURI"]
    ]


def namespace(admin: Kube, name: str, org: str | None = None) -> str:
    labels = {LABEL: org} if org else None
    admin.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    return name


def namespace_admin(admin: Kube, ns: str, user: str) -> None:
    """`user` holds the stock `admin` ClusterRole in `ns`, as any namespace owner would."""
    admin.rbac.create_namespaced_role_binding(ns, role_binding("namespace-admin", "admin", [user]))
    wait_allowed(admin, user, "create", "rolebindings", group=RBAC, namespace=ns)


def role_binding(
    name: str, role: str, users: list[str], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": user} for user in users],
    }


def test_a_namespace_admin_may_not_forge_member_role_bindings(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """H2: RoleBindings labelled as orgkeeper's fill no cache: the API server refuses them."""
    mallory = f"mallory@evil-{unique}.test"
    theirs = namespace(admin, f"mallory-{unique}")
    namespace_admin(admin, theirs, mallory)
    attacker = as_user(mallory)
    forged = [
        {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_MEMBERSHIP: "x"},
        {names.LABEL_MEMBERSHIP: "x"},
        {names.LABEL_MANAGED_BY: names.MANAGED_BY},
    ]
    fat = [f"u{i:05d}-" + "x" * 200 + "@e.example" for i in range(2000)]
    for i, labels in enumerate(forged):
        body = role_binding(f"fat-{i}", "view", fat, labels)
        status, message = rejection(
            functools.partial(attacker.rbac.create_namespaced_role_binding, theirs, body)
        )
        assert status in (403, 422), message
        assert "metadata.labels" in message and mallory in message, message
        assert "reserved for the orgkeeper operator (its ServiceAccount" in message, message
    # Nor by relabelling one already there.
    attacker.rbac.create_namespaced_role_binding(theirs, role_binding("plain", "view", fat[:1]))
    status, message = rejection(
        lambda: attacker.rbac.patch_namespaced_role_binding(
            "plain", theirs, {"metadata": {"labels": forged[0]}}
        )
    )
    assert "orgkeeper.dev/membership" in message, message
    # Positive controls: a RoleBinding without those labels is the namespace admin's to make,
    # and the operator still binds members with them.
    attacker.rbac.create_namespaced_role_binding(theirs, role_binding("fat-ok", "view", fat))
    org = f"bound-{unique}"
    new_ready_org(admin, as_user, org)
    email = f"bob@{org}.test"
    admin.create("memberships", membership("bob", email, "analytics-viewer"), f"org-{org}")
    wait_members_bound(
        admin, org, {f"owner@{org}.test": ["organization-admin"], email: ["analytics-viewer"]}
    )
    bound = admin.rbac.read_namespaced_role_binding(
        names.member_binding(email, "analytics-viewer"), f"org-{org}"
    )
    assert bound.metadata.labels[names.LABEL_MEMBERSHIP] == "bob"


def test_workloads_carry_an_orgs_label_only_in_its_namespaces(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """M1 (c), H1 of 2026-12: a labelled workload anywhere else is refused, not watched."""
    acme, beta = f"acme-{unique}", f"beta-{unique}"
    for org in (acme, beta):
        new_ready_org(admin, as_user, org)
    mallory = f"mallory@evil-{unique}.test"
    theirs = namespace(admin, f"mallory-{unique}")
    namespace_admin(admin, theirs, mallory)
    status, message = rejection(
        lambda: create(
            as_user(mallory), theirs, workload("Deployment", "stolen", acme, "data-plane", "mesh")
        )
    )
    assert status in (403, 422), message
    # The API server's own policy (it holds while the operator is stopped), not a webhook.
    assert "ValidatingAdmissionPolicy 'orgkeeper-workload-organization-label'" in message
    assert f"metadata.labels[{LABEL}]: a workload counts for Organization {acme} only" in message
    assert f"and {theirs} is neither" in message
    assert "Owner or support (orgkeeper-support)" in message
    # A tenant of beta may not label a workload in org-beta for acme either.
    tenant = f"cpa@{beta}.test"
    admin.create("memberships", membership("cpa", tenant, "control-plane-admin"), f"org-{beta}")
    wait_allowed(admin, tenant, "create", "deployments", group="apps", namespace=f"org-{beta}")
    for kind in ("Deployment", "StatefulSet", "DaemonSet"):
        stolen = workload(kind, "stolen", acme, "control-plane")
        status, message = rejection(
            functools.partial(create, as_user(tenant), f"org-{beta}", stolen)
        )
        assert f"org-{beta} is neither" in message, message
    # Nor relabel one of its own for acme.
    create(as_user(tenant), f"org-{beta}", workload("Deployment", "own", beta, "control-plane"))
    status, message = rejection(
        lambda: as_user(tenant).apps.patch_namespaced_deployment(
            "own", f"org-{beta}", {"metadata": {"labels": {LABEL: acme}}}
        )
    )
    assert f"Organization {acme} only" in message, message
    # Positive controls: unlabelled workloads are anyone's; a namespace the admin gives to acme
    # takes acme's; the stranger may remove the label from a workload (it leaves the watch).
    plain = workload("Deployment", "plain", acme, "data-plane")
    del plain["metadata"]["labels"][LABEL]
    create(as_user(mallory), theirs, plain)
    edge = namespace(admin, f"edge-{unique}", acme)
    create(admin, edge, workload("Deployment", "gateway", acme, "data-plane", "mesh"))
    create(as_user(tenant), f"org-{beta}", workload("StatefulSet", "kic", beta, "data-plane"))
    as_user(tenant).apps.patch_namespaced_deployment(
        "own", f"org-{beta}", {"metadata": {"labels": {LABEL: None}}}
    )


def test_a_fat_organization_or_membership_is_refused_naming_the_limit(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """M1 (a, b): 0.5 MB of labels on a sign-up, or on a Membership, never reaches the operator."""
    mallory = f"mallory@evil-{unique}.test"
    fat_labels = {f"k{i}.fat.example/" + "k" * 50: "v" * 63 for i in range(5000)}
    body = organization(f"fat-{unique}", mallory, plan="Free")
    body["metadata"]["labels"] = fat_labels
    status, message = rejection(lambda: as_user(mallory).create("organizations", body))
    assert status == 422, message
    assert "metadata.labels: at most 64 labels, and there are 5000" in message, message
    assert "orgkeeper-metadata-size" in message

    # Under the count, over the size: 62 labels of 135 bytes (8,370); one annotation of 40 KB.
    body["metadata"]["labels"] = {f"k{i:02d}.example/" + "k" * 60: "v" * 63 for i in range(62)}
    _, message = rejection(lambda: as_user(mallory).create("organizations", body))
    assert "metadata.labels: at most 8 KiB of label keys and values" in message, message
    assert "there are 8370 bytes" in message, message
    body["metadata"] = {"name": body["metadata"]["name"], "annotations": {"blob": "a" * 40_000}}
    _, message = rejection(lambda: as_user(mallory).create("organizations", body))
    assert "metadata.annotations: at most 32 KiB of annotation keys and values" in message

    # Positive control: what kubectl, Argo CD and Flux put on an object fits, and the org is
    # served (kopf's own annotations beside them).
    org, owner = f"gitops-{unique}", f"owner@gitops-{unique}.test"
    fits = organization(org, owner, plan="Plus")
    applied = json.dumps({"apiVersion": names.API_VERSION, "kind": "Organization", **fits})
    fits["metadata"]["labels"] = {
        "app.kubernetes.io/instance": "tenants",
        "kustomize.toolkit.fluxcd.io/name": "tenants",
        "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
        **{f"team{i}.example.com/cost-center": f"cc-{i:04d}" for i in range(40)},
    }
    fits["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": applied * 8,
        "argocd.argoproj.io/tracking-id": f"tenants:orgkeeper.dev/Organization:/{org}",
        "argocd.argoproj.io/sync-options": "Prune=false,ServerSideApply=true",
        "kustomize.toolkit.fluxcd.io/checksum": "f" * 40,
        "notes": "n" * 8000,
    }
    as_user(owner).create("organizations", fits)
    found = wait_org(admin, org)
    # kopf's diff base holds the spec only: it never grows with the metadata.
    base = found["metadata"]["annotations"][f"{names.GROUP}/last-handled-configuration"]
    assert json.loads(base).keys() == {"spec"}

    # A Membership, by the org's Owner (an org-admin): bounded the same way.
    fat_member = membership("fat", f"fat@{org}.test", "analytics-viewer")
    fat_member["metadata"]["annotations"] = {f"a{i}": "x" * 1000 for i in range(40)}
    status, message = rejection(
        lambda: as_user(owner).create("memberships", fat_member, f"org-{org}")
    )
    assert "metadata.annotations: at most 32 KiB" in message, message
    fat_member["metadata"]["annotations"] = {f"a{i}": "x" * 100 for i in range(40)}
    as_user(owner).create("memberships", fat_member, f"org-{org}")
    wait_members_bound(
        admin, org, {owner: ["organization-admin"], f"fat@{org}.test": ["analytics-viewer"]}
    )


def test_an_organization_over_the_limits_from_before_is_still_served_without_a_loop(
    admin: Kube, unique: str
) -> None:
    """M1 (a), the loop: an Organization already over the limits (made before the policy, here
    by a cluster-admin, who holds every verb) is reconciled once and for all: kopf's own
    annotations land on it (the operator isn't held to the tenants' allowance) and hold its spec
    only, far under the API server's 256 KB."""
    org = f"heavy-{unique}"
    body = organization(org, f"owner@{org}.test", plan="Plus")
    body["metadata"]["labels"] = {f"k{i:03d}.example/" + "k" * 50: "v" * 63 for i in range(300)}
    body["metadata"]["annotations"] = {"blob": "a" * 200_000}
    admin.create("organizations", body)
    found = wait_org(admin, org, timeout=60)
    base = found["metadata"]["annotations"][f"{names.GROUP}/last-handled-configuration"]
    assert json.loads(base).keys() == {"spec"} and len(base) < 1024
    # Converged: a change is reconciled at once, not after a run of failed patches.
    renamed = admin.patch("organizations", org, {"spec": {"displayName": "Heavy, renamed"}})
    wait_for(
        "the rename to be reconciled",
        lambda: (
            admin.get("organizations", org)["status"].get("observedGeneration")
            == renamed["metadata"]["generation"]
        ),
    )
