"""Which namespaces an org owns, and isolation: a namespace the org doesn't own never gets its
license nor affects it; a failing target in one it owns is reported and stops nothing else.

Attackers act through impersonation: a stranger with the stock `admin` ClusterRole in their own
namespace, and a tenant (control-plane-admin) of another org; the API server refuses their
workloads labelled for an org (orgkeeper-workload-organization-label). Each refusal has a positive
control beside it. "Nothing appears" is asserted once the org has provably reconciled past the
change (a Warning Event it posts, a status field that moved).
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

import pytest
from kubernetes import client

from orgkeeper import licensing, names
from support.kube import AsUser, Kube, rejection, wait_for
from support.licenses import public_key, secret_document
from support.orgs import (
    condition,
    membership,
    new_ready_org,
    organization,
    unique_suffix,
    wait_allowed,
    wait_members_bound,
    wait_org,
)
from support.workloads import create, workload

pytestmark = pytest.mark.usefixtures("operator")

LABEL = names.LABEL_ORGANIZATION


def namespace(admin: Kube, name: str, org: str | None = None) -> str:
    """A namespace; with `org`, the admin gives it to that org (the namespace label)."""
    labels = {LABEL: org} if org else None
    admin.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    return name


def stranger(admin: Kube, ns: str, user: str) -> None:
    """`user` holds the stock `admin` ClusterRole in `ns`, as any namespace owner would."""
    admin.rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "namespace-admin"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "admin",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )
    wait_allowed(admin, user, "create", "secrets", group="", namespace=ns)


def events(kube: Kube, ns: str, name: str, reason: str) -> list[Any]:
    return [
        e
        for e in kube.core.list_namespaced_event(
            ns, field_selector=f"involvedObject.name={name}"
        ).items
        if e.reason == reason
    ]


def copies(kube: Kube, ns: str) -> list[str]:
    return sorted(
        s.metadata.name
        for s in kube.core.list_namespaced_secret(ns).items
        if s.metadata.name.startswith("orgkeeper-license-")
    )


def lic(admin: Kube, org: str, product: str) -> dict[str, Any]:
    found: dict[str, Any] = admin.get("licenses", product, f"org-{org}")
    return found


def propagated(admin: Kube, org: str, product: str) -> dict[str, Any]:
    return dict((lic(admin, org, product).get("status") or {}).get("propagatedTo") or {})


def reconciled_past(
    admin: Kube, as_user: AsUser, org: str, *, owner: bool = True
) -> dict[str, Any]:
    """Bumps the org's generation (as its Owner, or the admin) and waits until a reconcile has
    seen it."""
    found = (as_user(f"owner@{org}.test") if owner else admin).patch(
        "organizations", org, {"spec": {"displayName": f"{org} renamed {unique_suffix()}"}}
    )
    generation = found["metadata"]["generation"]
    result: dict[str, Any] = wait_for(
        f"{org} to reconcile generation {generation}",
        lambda: (
            (o := admin.get("organizations", org))
            and (o.get("status") or {}).get("observedGeneration") == generation
            and o
        ),
    )
    return result


def forged_secret(name: str, org: str, *, immutable: bool = False) -> dict[str, Any]:
    """A Secret dressed as orgkeeper's copy: its labels, not its owner."""
    return {
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "orgkeeper", LABEL: org},
        },
        "data": {"license": base64.b64encode(b"mine").decode()},
        "immutable": immutable,
    }


def fat(name: str, org: str, product: str) -> dict[str, Any]:
    """A data plane whose annotations leave no room for orgkeeper's (262,144 bytes at most)."""
    body = workload("Deployment", name, org, "data-plane", product)
    body["spec"]["replicas"] = 0
    # 1 + 262,099 bytes, plus the Deployment controller's revision annotation (34): any
    # annotation orgkeeper adds (frozen: 24 bytes, fingerprint: 104) goes over the limit.
    body["metadata"]["annotations"] = {"x": "a" * 262_099}
    return body


def test_a_strangers_namespace_never_gets_an_orgs_license(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """H1: anyone who can create a Deployment in their own namespace, labelled for acme: the
    API server refuses it (orgkeeper-workload-organization-label). A workload whose namespace
    leaves the org later is ignored, and told so once."""
    org, mallory = f"acme-{unique}", f"mallory@evil-{unique}.test"
    new_ready_org(admin, as_user, org)
    theirs = namespace(admin, f"mallory-{unique}")
    stranger(admin, theirs, mallory)
    stolen = workload("Deployment", "stolen", org, "data-plane", "mesh")
    status, message = rejection(functools.partial(create, as_user(mallory), theirs, stolen))
    assert status in (403, 422), message
    assert f"a workload counts for Organization {org} only in a namespace of that" in message
    # Positive control: a namespace the admin gives to acme gets the copy.
    edge = namespace(admin, f"edge-{unique}", org)
    create(admin, edge, workload("Deployment", "gateway", org, "data-plane", "mesh"))
    wait_for(
        "the copy in acme's namespace",
        lambda: secret_document(admin, edge, "orgkeeper-license-mesh"),
    )
    org_status = reconciled_past(admin, as_user, org)["status"]
    assert copies(admin, theirs) == []
    assert org_status["dataPlanes"] == 1
    assert propagated(admin, org, "mesh")["refs"] == [f"{edge}/gateway"]

    # The namespace is taken back (support removes its label): its data plane is ignored now.
    admin.core.patch_namespace(edge, {"metadata": {"labels": {LABEL: None}}})
    (told,) = wait_for(
        "the left-behind workload to be told why it is ignored",
        lambda: events(admin, edge, "gateway", "NamespaceNotOwned"),
    )
    assert told.type == "Warning"
    assert told.message == (
        f"namespace {edge} does not belong to Organization {org}: this workload is ignored "
        f"(no license, not counted); its Owner can label the namespace {LABEL}={org}"
    )
    wait_for(
        "its copy to go", lambda: secret_document(admin, edge, "orgkeeper-license-mesh") is None
    )
    # Told once, not at every reconcile. A reconcile posts its Events after its status: the
    # next one's status proves the last one's Events are in.
    assert reconciled_past(admin, as_user, org)["status"]["dataPlanes"] == 0
    reconciled_past(admin, as_user, org)
    assert len(events(admin, edge, "gateway", "NamespaceNotOwned")) == 1


def test_a_tenant_of_another_org_never_gets_an_orgs_license(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """H1, tenant variant: a control-plane-admin of beta labels a data plane in org-beta for
    acme: refused by the API server."""
    acme, beta = f"acme-{unique}", f"beta-{unique}"
    tenant = f"cpa@{beta}.test"
    for org in (acme, beta):
        new_ready_org(admin, as_user, org)
    admin.create("memberships", membership("cpa", tenant, "control-plane-admin"), f"org-{beta}")
    wait_members_bound(admin, beta, {tenant: ["control-plane-admin"]})
    wait_allowed(admin, tenant, "create", "deployments", group="apps", namespace=f"org-{beta}")
    stolen = workload("Deployment", "stolen", acme, "data-plane", "gateway-enterprise")
    _, message = rejection(functools.partial(create, as_user(tenant), f"org-{beta}", stolen))
    assert f"Organization {acme} only in a namespace of that" in message, message
    assert f"org-{beta} is neither" in message, message
    # Positive control: beta's own data plane there gets beta's license.
    create(
        as_user(tenant),
        f"org-{beta}",
        workload("Deployment", "own", beta, "data-plane", "gateway-enterprise"),
    )
    own = wait_for(
        "beta's copy in org-beta",
        lambda: secret_document(admin, f"org-{beta}", "orgkeeper-license-gateway-enterprise"),
    )
    assert licensing.verify(own, public_key(admin)).payload.organization == beta
    assert reconciled_past(admin, as_user, acme)["status"]["dataPlanes"] == 0
    assert propagated(admin, acme, "gateway-enterprise").get("refs", []) == []


def test_failing_targets_are_reported_and_the_org_still_converges(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """H2: a forged immutable copy and an annotation-stuffed data plane. In a namespace the org
    doesn't own they are ignored; in one it owns they are reported, and stop nothing else."""
    org, mallory = f"victim-{unique}", f"mallory@evil-{unique}.test"
    new_ready_org(admin, as_user, org)

    # Foreign: simply ignored; the org stays Ready.
    theirs = namespace(admin, f"mallory-{unique}")
    stranger(admin, theirs, mallory)
    attacker = as_user(mallory)
    attacker.core.create_namespaced_secret(
        theirs, forged_secret("orgkeeper-license-mesh", org, immutable=True)
    )
    for body in (
        workload("Deployment", "dp-mesh", org, "data-plane", "mesh"),
        fat("fat", org, "gateway-enterprise"),
    ):
        status, message = rejection(functools.partial(create, attacker, theirs, body))
        assert status in (403, 422) and "metadata.labels" in message, message
    found = reconciled_past(admin, as_user, org)
    assert (condition(found, "Ready") or {}).get("status") == "True", found["status"]
    assert secret_document(admin, theirs, "orgkeeper-license-mesh") == b"mine"

    # Owned: the admin gives a namespace to the org, with the same traps in it.
    edge = namespace(admin, f"edge-{unique}", org)
    admin.core.create_namespaced_secret(
        edge, forged_secret("orgkeeper-license-mesh", org, immutable=True)
    )
    create(admin, edge, workload("Deployment", "dp-mesh", org, "data-plane", "mesh"))
    create(admin, edge, fat("fat", org, "gateway-enterprise"))
    admin.create(
        "memberships", membership("late", f"late@{org}.test", "portal-admin"), f"org-{org}"
    )

    renamed = as_user(f"owner@{org}.test").patch(
        "organizations", org, {"spec": {"displayName": "renamed again"}}
    )

    def converged() -> dict[str, Any] | None:
        o = admin.get("organizations", org)
        status = o.get("status") or {}
        ready = condition(o, "Ready") or {}
        done = (
            status.get("observedGeneration") == renamed["metadata"]["generation"]
            and status.get("members") == 2
            and ready.get("reason") == "PartiallyApplied"
            and f"Deployment {edge}/fat" in ready.get("message", "")
            and f"Secret {edge}/orgkeeper-license-mesh" in ready.get("message", "")
        )
        return o if done else None

    found = wait_for(
        "the org to converge and report its failing targets",
        converged,
        details=lambda: json.dumps(admin.get("organizations", org).get("status")),
    )
    ready = condition(found, "Ready")
    assert ready is not None and ready["status"] == "False"
    assert len(ready["message"]) < 1000
    assert found["status"]["dataPlanes"] == 2
    wait_members_bound(admin, org, {f"late@{org}.test": ["portal-admin"]})
    # Reported on the targets themselves, with a short message (no raw API answer).
    (stuffed,) = wait_for(
        "the stuffed data plane's Warning", lambda: events(admin, edge, "fat", "ApplyFailed")
    )
    assert "Invalid" in stuffed.message and "HTTP response headers" not in stuffed.message
    wait_for("the conflict's Warning", lambda: events(admin, edge, "dp-mesh", "SecretConflict"))
    # The forged Secret is neither overwritten nor deleted; the other product still arrives.
    assert secret_document(admin, edge, "orgkeeper-license-mesh") == b"mine"
    wait_for(
        "the gateway copy beside the stuffed workload",
        lambda: secret_document(admin, edge, "orgkeeper-license-gateway-enterprise"),
    )
    mesh = lic(admin, org, "mesh")
    assert (condition(mesh, "Ready") or {}).get("reason") == "SecretConflict"


def test_copies_go_when_their_data_plane_or_namespace_goes(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """M2: relabelled data plane, detached namespace, and while deactivated."""
    org = f"tidy-{unique}"
    new_ready_org(admin, as_user, org)
    relabelled, detached, frozen = (
        namespace(admin, f"{what}-{unique}", org) for what in ("relabel", "detach", "frozen")
    )
    for ns in (relabelled, detached, frozen):
        create(admin, ns, workload("Deployment", "gw", org, "data-plane", "mesh"))
    wait_for(
        "the three copies recorded",
        lambda: (
            propagated(admin, org, "mesh").get("namespaces")
            == sorted([relabelled, detached, frozen])
        ),
    )
    for ns in (relabelled, detached, frozen):
        assert secret_document(admin, ns, "orgkeeper-license-mesh") is not None, ns

    # The data plane loses the org label (it isn't deleted): the copy goes.
    admin.apps.patch_namespaced_deployment(
        "gw", relabelled, {"metadata": {"labels": {LABEL: None}}}
    )
    wait_for(
        "the relabelled data plane's copy to go",
        lambda: secret_document(admin, relabelled, "orgkeeper-license-mesh") is None,
    )
    # The namespace is taken back from the org: the copy goes, the workload is ignored.
    admin.core.patch_namespace(detached, {"metadata": {"labels": {LABEL: None}}})
    wait_for(
        "the detached namespace's copy to go",
        lambda: secret_document(admin, detached, "orgkeeper-license-mesh") is None,
    )
    wait_for(
        "the record to follow",
        lambda: propagated(admin, org, "mesh").get("namespaces") == [frozen],
    )
    # Positive control: the copy where a data plane still runs stays.
    assert secret_document(admin, frozen, "orgkeeper-license-mesh") is not None

    # Deactivated: data planes keep their copy while they run; once gone, the copy goes too.
    as_user(f"owner@{org}.test").patch("organizations", org, {"spec": {"state": "Deactivated"}})
    wait_org(admin, org, "Deactivated", "True", "Requested", timeout=60)
    assert secret_document(admin, frozen, "orgkeeper-license-mesh") is not None
    admin.apps.delete_namespaced_deployment("gw", frozen)
    wait_for(
        "the frozen namespace's copy to go once its data plane did",
        lambda: secret_document(admin, frozen, "orgkeeper-license-mesh") is None,
    )


def test_a_secret_orgkeeper_does_not_own_is_never_touched(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """M5: labels don't make a Secret orgkeeper's; only the Organization's ownership does."""
    org = f"forged-{unique}"
    new_ready_org(admin, as_user, org)
    edge = namespace(admin, f"edge-{unique}", org)
    admin.core.create_namespaced_secret(edge, forged_secret("orgkeeper-license-mesh", org))
    create(admin, edge, workload("Deployment", "gw", org, "data-plane", "mesh"))
    found = wait_for(
        "the conflict to be reported",
        lambda: (
            (c := condition(lic(admin, org, "mesh"), "Propagated"))
            and c["reason"] == "SecretConflict"
            and c
        ),
    )
    assert edge in found["message"]
    assert secret_document(admin, edge, "orgkeeper-license-mesh") == b"mine"

    # No data plane needs it any more: still not deleted (it was never orgkeeper's).
    admin.apps.delete_namespaced_deployment("gw", edge)
    wait_for(
        "the License to be Ready again",
        lambda: (condition(lic(admin, org, "mesh"), "Ready") or {}).get("reason") == "Active",
    )
    reconciled_past(admin, as_user, org)
    assert secret_document(admin, edge, "orgkeeper-license-mesh") == b"mine"


def test_a_squatted_org_namespace_is_reported_and_never_written_into(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """L1: someone created org-<name> first; the org doesn't adopt it."""
    squatted, control = f"squat-{unique}", f"fine-{unique}"
    namespace(admin, f"org-{squatted}")
    owner = f"owner@{squatted}.test"
    as_user(owner).create("organizations", organization(squatted, owner, plan="Plus"))
    found = wait_org(admin, squatted, "Ready", "False", "NamespaceConflict")
    ready = condition(found, "Ready")
    assert ready is not None
    assert f"namespace org-{squatted} belongs to something else" in ready["message"]
    # Positive control: an org whose namespace is free gets everything.
    new_ready_org(admin, as_user, control)
    assert len(admin.list("memberships", f"org-{control}")) == 1
    assert len(admin.list("licenses", f"org-{control}")) == 3

    # Its Owner got no RBAC either (nothing is set up until the namespace is the org's).
    reconciled_past(admin, as_user, squatted, owner=False)
    assert admin.list("memberships", f"org-{squatted}") == []
    assert admin.list("licenses", f"org-{squatted}") == []
    assert [
        s.metadata.name
        for s in admin.core.list_namespaced_secret(f"org-{squatted}").items
        if "license" in s.metadata.name
    ] == []
    assert not admin.rbac.list_namespaced_role_binding(f"org-{squatted}").items
    # The problem is the namespace, not the Owner: nothing claims the Owner left.
    owner_valid = condition(admin.get("organizations", squatted), "OwnerValid")
    assert owner_valid is not None and owner_valid["status"] == "True", owner_valid


def orgs(admin: Kube) -> list[dict[str, Any]]:
    return admin.list("organizations")


def test_an_org_namespace_made_ahead_and_labelled_for_the_org_is_served_as_its_own(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """GitOps or `kubectl apply -f manifests/samples/` make org-<name> before the org: labelled
    orgkeeper.dev/organization=<name> and with the e-mail hash of the Owner it is made for
    (only support may set that), it is the org's, and deleting the org releases it."""
    early, late = f"early-{unique}", f"late-{unique}"
    made_ahead = {LABEL: early, names.LABEL_EMAIL_HASH: names.email_hash(f"owner@{early}.test")}
    admin.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=f"org-{early}", labels=made_ahead))
    )
    new_ready_org(admin, as_user, early)
    uid = admin.get("organizations", early)["metadata"]["uid"]
    # Still its maker's: no ownerReference (that would need `delete` on namespaces); it records
    # the UID of the org that adopted it.
    found = admin.core.read_namespace(f"org-{early}").metadata
    assert not found.owner_references
    assert found.labels[names.LABEL_ORGANIZATION_UID] == uid
    assert len(admin.list("memberships", f"org-{early}")) == 1
    assert len(admin.list("licenses", f"org-{early}")) == 3

    # Deleting the org releases the namespace and leaves it; its Memberships lose their roles
    # and wait; the Licenses it provisioned go with it (owned by the Organization).
    admin.delete("organizations", early)
    wait_for("the org gone", lambda: all(o["metadata"]["name"] != early for o in orgs(admin)))
    labels = admin.core.read_namespace(f"org-{early}").metadata.labels
    assert LABEL not in labels
    assert labels[names.LABEL_RELEASED_FROM] == early
    assert labels[names.LABEL_ORGANIZATION_UID] == uid
    wait_for(
        "the Owner's Membership Pending, without RoleBindings",
        lambda: (
            all(
                (m.get("status") or {}).get("state") == "Pending"
                for m in admin.list("memberships", f"org-{early}")
            )
            and not admin.rbac.list_namespaced_role_binding(f"org-{early}").items
        ),
    )
    wait_for("its Licenses gone", lambda: admin.list("licenses", f"org-{early}") == [])

    # A conflict support resolves in the documented step (the condition gives it): served.
    namespace(admin, f"org-{late}")
    owner = f"owner@{late}.test"
    as_user(owner).create("organizations", organization(late, owner, plan="Plus"))
    conflict = condition(wait_org(admin, late, "Ready", "False", "NamespaceConflict"), "Ready")
    late_uid = admin.get("organizations", late)["metadata"]["uid"]
    assert conflict is not None
    assert f"{names.LABEL_ORGANIZATION_UID}={late_uid}" in conflict["message"]
    admin.core.patch_namespace(
        f"org-{late}",
        {"metadata": {"labels": {LABEL: late, names.LABEL_ORGANIZATION_UID: late_uid}}},
    )
    wait_org(admin, late, timeout=60)
    assert len(admin.list("memberships", f"org-{late}")) == 1


def test_a_plan_change_reissues_the_license_at_once(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """L7: data planes don't keep a license naming the old plan until the next rotation."""
    org = f"replan-{unique}"
    new_ready_org(admin, as_user, org)
    edge = namespace(admin, f"edge-{unique}", org)
    create(admin, edge, workload("Deployment", "gw", org, "data-plane", "mesh"))

    def copy_of() -> licensing.VerifiedLicense | None:
        document = secret_document(admin, edge, "orgkeeper-license-mesh")
        return licensing.verify(document, public_key(admin)) if document else None

    first = wait_for("the first copy", copy_of)
    assert first.payload.plan == "Plus"
    as_user(f"owner@{org}.test").patch("organizations", org, {"spec": {"plan": "Free"}})
    reissued = wait_for(
        "a copy naming the new plan",
        lambda: (c := copy_of()) is not None and c.payload.plan == "Free" and c,
    )
    # The session operator rotates only after 182 days: the plan change did it, at once.
    assert (reissued.payload.issued_at - first.payload.issued_at).total_seconds() < 30
