"""An org is its UID (API.md, "Identity: an org is its UID"; the security review's H1 and L4).

Deleting an Organization releases, visibly, what it served without owning; a new Organization
that reuses the name inherits nothing (namespaces, Memberships, rights, licenses, workloads);
only support hands a released namespace to a new Organization, in one documented step. The
same before an org exists: a name squatted by sign-up never gets a namespace made ahead for
someone else. Attackers act through impersonation; each refusal has a positive control.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client

from orgkeeper import names
from orgkeeper.domain.license.evaluation import evaluate
from orgkeeper.domain.namespaces import hand_back_command
from support.kube import AsUser, Kube, rejection, wait_for
from support.licenses import public_key, secret_document
from support.orgs import (
    allowed,
    condition,
    membership,
    new_org,
    wait_allowed,
    wait_members_bound,
    wait_org,
    wait_owner_rights,
)
from support.workloads import create, read, workload

pytestmark = pytest.mark.usefixtures("operator")

LABEL, UID, RELEASED = (
    names.LABEL_ORGANIZATION,
    names.LABEL_ORGANIZATION_UID,
    names.LABEL_RELEASED_FROM,
)
NAMESPACE_POLICY = "ValidatingAdmissionPolicy 'orgkeeper-namespace-organization-label'"
RBAC_GROUP = "rbac.authorization.k8s.io"


def cluster_grant(admin: Kube, user: str, name: str, rules: list[client.V1PolicyRule]) -> None:
    admin.rbac.create_cluster_role(
        client.V1ClusterRole(metadata=client.V1ObjectMeta(name=name), rules=rules)
    )
    admin.rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=name),
            role_ref=client.V1RoleRef(api_group=RBAC_GROUP, kind="ClusterRole", name=name),
            subjects=[client.RbacV1Subject(kind="User", name=user, api_group=RBAC_GROUP)],
        )
    )


@pytest.fixture(scope="module")
def support_user(admin: Kube) -> str:
    """A person of the support team: the shipped orgkeeper-support, and the stock right to
    label namespaces (a platform team's support staff would have it)."""
    user = "support@identity.test"
    admin.rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name="test-identity-support"),
            role_ref=client.V1RoleRef(
                api_group=RBAC_GROUP, kind="ClusterRole", name="orgkeeper-support"
            ),
            subjects=[client.RbacV1Subject(kind="User", name=user, api_group=RBAC_GROUP)],
        )
    )
    rule = client.V1PolicyRule(api_groups=[""], resources=["namespaces"], verbs=["get", "patch"])
    cluster_grant(admin, user, "test-identity-support-namespaces", [rule])
    wait_allowed(admin, user, "support", "organizations")
    wait_allowed(admin, user, "patch", "namespaces", group="")
    return user


def made_ahead(admin: Kube, namespace: str, org: str, owner: str | None) -> None:
    """A namespace support or GitOps makes ahead for `org` (and for its Owner, if named)."""
    labels = {LABEL: org}
    if owner is not None:
        labels[names.LABEL_EMAIL_HASH] = names.email_hash(owner)
    admin.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels=labels))
    )


def labels_of(admin: Kube, namespace: str) -> dict[str, str]:
    return dict(admin.core.read_namespace(namespace).metadata.labels or {})


def uid_of(admin: Kube, org: str) -> str:
    return str(admin.get("organizations", org)["metadata"]["uid"])


def gone(admin: Kube, org: str) -> None:
    wait_for(
        f"Organization {org} gone",
        lambda: all(o["metadata"]["name"] != org for o in admin.list("organizations")),
        timeout=60,
    )


def refused(call: Any, *expected: str) -> str:
    code, message = rejection(call)
    assert code == 403, message
    for text in expected:
        assert text in message, message
    return message


def relabel(kube: Kube, namespace: str, labels: dict[str, str | None]) -> Any:
    return lambda: kube.core.patch_namespace(namespace, {"metadata": {"labels": labels}})


def verifies_for(admin: Kube, document: bytes, org: str, uid: str, product: str) -> str:
    """The reason orgkeeper's license check gives for `document` in the org of that UID."""
    return evaluate(
        product,
        product,
        "SecretRef",
        "",
        document,
        organization=org,
        organization_uid=uid,
        public_key=public_key(admin),
        now=datetime.now(UTC),
    ).reason


def test_a_deleted_orgs_name_signed_up_by_a_stranger_inherits_nothing(
    admin: Kube, as_user: AsUser, support_user: str, unique: str
) -> None:
    """H1, end to end: beta (made-ahead org-beta, a labelled edge namespace with a control
    plane, member bob, an app Secret) is deleted; a stranger signs up `beta`: nothing is
    inherited and nothing decommissioned. Support then hands the namespace to a legitimate
    re-creation in one step, which the new Owner can't take by themselves; it converges."""
    name = f"beta-{unique}"
    owner, bob = f"owner@{name}.test", f"bob@{name}.test"
    stranger = f"mallory@evil-{unique}.test"
    namespace, edge = f"org-{name}", f"edge-{unique}"
    made_ahead(admin, namespace, name, owner)
    made_ahead(admin, edge, name, None)  # a namespace support gives to beta

    new_org(as_user, name, owner)
    wait_org(admin, name, timeout=60)
    wait_owner_rights(admin, name, owner)
    first = uid_of(admin, name)
    as_user(owner).create("memberships", membership("bob", bob, "control-plane-admin"), namespace)
    wait_members_bound(admin, name, {bob: ["control-plane-admin"]})
    wait_allowed(admin, bob, "create", "deployments", group="apps", namespace=namespace)
    admin.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "app-db"}, "stringData": {"password": "s3cret"}}
    )
    create(admin, edge, workload("Deployment", "cp", name, "control-plane"))
    wait_for(
        "the control plane in edge counted, edge recorded for beta's UID",
        lambda: (
            (admin.get("organizations", name).get("status") or {}).get("controlPlanes") == 1
            and labels_of(admin, edge).get(UID) == first
        ),
    )
    assert labels_of(admin, namespace)[UID] == first
    provisioned = wait_for(
        "beta's mesh license",
        lambda: secret_document(admin, namespace, names.provisioned_license_secret("mesh")),
    )
    assert verifies_for(admin, provisioned, name, first, "mesh") == "Verified"  # control
    license_secret = admin.core.read_namespaced_secret("license-mesh", namespace).metadata
    assert [ref.uid for ref in license_secret.owner_references or []] == [first]

    # beta leaves: what it served without owning is released, visibly; what it owned goes.
    as_user(owner).delete("organizations", name)
    gone(admin, name)
    for released in (namespace, edge):
        labels = labels_of(admin, released)
        assert LABEL not in labels, released
        assert (labels[RELEASED], labels[UID]) == (name, first), released
    wait_for(
        "beta's Licenses and license Secrets gone with it",
        lambda: (
            admin.list("licenses", namespace) == []
            and secret_document(admin, namespace, "license-mesh") is None
        ),
        timeout=60,
    )

    # mallory signs up the name.
    new_org(as_user, name, stranger, plan="Free")
    squat = wait_org(admin, name, "Ready", "False", "NamespaceConflict", timeout=60)
    second = uid_of(admin, name)
    message = (condition(squat, "Ready") or {})["message"]
    assert f"was released when Organization {name} (UID {first}) was deleted" in message
    assert hand_back_command(namespace, name, second) in message
    assert "have support (orgkeeper-support) hand it to this organization" in message
    # While the namespace isn't the org's, nothing is set up for it: not even its Owner's RBAC.
    assert not allowed(admin, stranger, "patch", "organizations", name=name)
    # Nothing of beta's: its members, Secrets, workloads; bob has no rights in mallory's org.
    mallory = as_user(stranger)
    refused(lambda: mallory.list("memberships", namespace))
    refused(
        lambda: mallory.patch(
            "memberships", "bob", {"spec": {"teams": ["organization-admin"]}}, namespace
        )
    )
    refused(lambda: mallory.core.read_namespaced_secret("app-db", namespace))
    assert not allowed(admin, stranger, "list", "deployments", group="apps", namespace=edge)
    # The operator takes bob's roles away once beta is gone (its Memberships turn Pending),
    # and the API server's authorizer takes that in from its watch: waited for, not assumed.
    wait_for(
        "bob's rights in the released namespace gone",
        lambda: not allowed(admin, bob, "create", "deployments", group="apps", namespace=namespace),
    )
    wait_for(
        "beta's member RoleBindings gone, its Memberships Pending",
        lambda: (
            not admin.rbac.list_namespaced_role_binding(namespace).items
            and all(
                (m.get("status") or {}).get("state") == "Pending"
                for m in admin.list("memberships", namespace)
            )
        ),
    )
    # beta's license is not mallory's.
    assert verifies_for(admin, provisioned, name, second, "mesh") == "WrongOrganization"
    # mallory's org is deactivated (support, or inactivity): the control plane in edge, never
    # hers, survives.
    refused(lambda: mallory.patch("organizations", name, {"spec": {"state": "Deactivated"}}))
    admin.patch("organizations", name, {"spec": {"state": "Deactivated"}})
    wait_org(admin, name, "Deactivated", "True", "Requested", timeout=60)
    assert read(admin, "Deployment", edge, "cp") is not None
    assert (admin.get("organizations", name)["status"] or {}).get("controlPlanes", 0) == 0

    # Support deletes mallory's org: what it never served stays released from beta.
    admin.delete("organizations", name)
    gone(admin, name)
    assert labels_of(admin, namespace)[RELEASED] == name
    assert labels_of(admin, namespace)[UID] == first

    # beta's Owner re-creates it (an accidental delete): a conflict until support hands it back.
    new_org(as_user, name, owner)
    wait_org(admin, name, "Ready", "False", "NamespaceConflict", timeout=60)
    third = uid_of(admin, name)
    rule = client.V1PolicyRule(
        api_groups=[""], resources=["namespaces"], resource_names=[namespace], verbs=["patch"]
    )
    cluster_grant(admin, owner, f"test-identity-ns-{unique}", [rule])
    wait_allowed(admin, owner, "patch", "namespaces", group="", name=namespace)
    owner_kube = as_user(owner)
    hand_back = {LABEL: name, UID: third, RELEASED: None}
    # The Owner can't hand it to their new org by themselves, in one step or by the org label.
    refused(
        relabel(owner_kube, namespace, hand_back),
        NAMESPACE_POLICY,
        f"metadata.labels[{UID}]: {owner} may not set, change or remove this label",
        "only support (orgkeeper-support) or the orgkeeper operator may change it",
    )
    refused(
        relabel(owner_kube, namespace, {LABEL: name}),
        NAMESPACE_POLICY,
        f"metadata.labels[{LABEL}]: namespace {namespace} was released when Organization "
        f"{name} was deleted",
        "only support (orgkeeper-support) may",
    )
    # Positive control: the Owner may write other labels of that namespace.
    relabel(owner_kube, namespace, {"team": "platform"})()
    # Support's documented step: the new org is served, and beta's members are bound again.
    relabel(as_user(support_user), namespace, hand_back)()
    wait_org(admin, name, timeout=60)
    wait_members_bound(admin, name, {owner: ["organization-admin"], bob: ["control-plane-admin"]})
    assert admin.core.read_namespaced_secret("app-db", namespace) is not None
    reissued = wait_for(
        "the re-created org's mesh license",
        lambda: secret_document(admin, namespace, "license-mesh"),
    )
    assert verifies_for(admin, reissued, name, third, "mesh") == "Verified"


def test_a_name_squatted_before_the_org_exists_never_gets_what_was_made_for_its_owner(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """Support made org-<name> and a labelled namespace ahead for owner@<name>; a stranger who
    signs up the name first gets neither, and the real Owner's org adopts both afterwards."""
    name = f"ahead-{unique}"
    owner, stranger = f"owner@{name}.test", f"squatter@evil-{unique}.test"
    namespace, edge = f"org-{name}", f"ahead-edge-{unique}"
    made_ahead(admin, namespace, name, owner)
    made_ahead(admin, edge, name, owner)
    create(admin, edge, workload("Deployment", "cp", name, "control-plane"))

    new_org(as_user, name, stranger, plan="Free")
    squat = wait_org(admin, name, "Ready", "False", "NamespaceConflict", timeout=60)
    message = (condition(squat, "Ready") or {})["message"]
    assert f"was made ahead for another Owner ({names.LABEL_EMAIL_HASH}=" in message
    assert hand_back_command(namespace, name, uid_of(admin, name)) in message
    assert not allowed(admin, stranger, "patch", "organizations", name=name)
    assert not allowed(admin, stranger, "list", "memberships", namespace=namespace)
    assert admin.list("memberships", namespace) == []
    assert (admin.get("organizations", name)["status"] or {}).get("controlPlanes", 0) == 0
    for ahead in (namespace, edge):
        assert UID not in labels_of(admin, ahead), ahead
    admin.patch("organizations", name, {"spec": {"state": "Deactivated"}})
    wait_org(admin, name, "Deactivated", "True", "Requested", timeout=60)
    assert read(admin, "Deployment", edge, "cp") is not None

    # Deleting the squatter's org releases nothing it never served.
    admin.delete("organizations", name)
    gone(admin, name)
    for ahead in (namespace, edge):
        labels = labels_of(admin, ahead)
        assert (labels.get(LABEL), labels.get(RELEASED)) == (name, None), ahead

    # The Owner it was made for signs up: both are its own, recorded for its UID.
    new_org(as_user, name, owner)
    wait_org(admin, name, timeout=60)
    uid = uid_of(admin, name)
    wait_for(
        "both namespaces recorded for the org's UID, the control plane counted",
        lambda: (
            labels_of(admin, namespace).get(UID) == uid
            and labels_of(admin, edge).get(UID) == uid
            and (admin.get("organizations", name).get("status") or {}).get("controlPlanes") == 1
        ),
    )


def test_the_status_and_finalize_subresources_cant_change_the_org_labels(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """L4: a holder of namespaces/status or namespaces/finalize can't relabel a namespace."""
    attacker, edge = f"finalizer@evil-{unique}.test", f"l4-{unique}"
    admin.core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=edge, labels={LABEL: f"victim-{unique}"})
        )
    )
    rules = [
        client.V1PolicyRule(api_groups=[""], resources=["namespaces"], verbs=["get"]),
        client.V1PolicyRule(
            api_groups=[""],
            resources=["namespaces/status", "namespaces/finalize"],
            verbs=["update"],
        ),
    ]
    cluster_grant(admin, attacker, f"test-identity-l4-{unique}", rules)
    wait_allowed(admin, attacker, "get", "namespaces", group="", name=edge)
    kube = as_user(attacker)

    def write(call: Any, labels: dict[str, str]) -> Any:
        def attempt() -> Any:
            found = kube.core.read_namespace(edge)
            found.metadata.labels = labels
            return call(edge, found)

        return attempt

    for call in (kube.core.replace_namespace_status, kube.core.replace_namespace_finalize):
        refused(
            write(call, {LABEL: f"mine-{unique}"}), NAMESPACE_POLICY, f"metadata.labels[{LABEL}]"
        )
        refused(write(call, {}), NAMESPACE_POLICY, "may not take namespace")
        forged = {LABEL: f"victim-{unique}", UID: "forged"}
        refused(write(call, forged), NAMESPACE_POLICY, f"metadata.labels[{UID}]")
        # Positive control: the same subresource write that leaves the labels alone is let in.
        write(call, {LABEL: f"victim-{unique}"})()
    assert labels_of(admin, edge).get(LABEL) == f"victim-{unique}"
    assert UID not in labels_of(admin, edge)


def test_the_owners_cluster_rbac_records_the_orgs_uid(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    name = f"rbac-{unique}"
    new_org(as_user, name, f"owner@{name}.test")
    wait_org(admin, name, timeout=60)
    uid = uid_of(admin, name)
    role = admin.rbac.read_cluster_role(names.owner_role(name)).metadata
    binding = admin.rbac.read_cluster_role_binding(names.owner_role(name)).metadata
    for found in (role, binding):
        assert found.labels[UID] == uid
        assert [ref.uid for ref in found.owner_references] == [uid]
    licenses = admin.list("licenses", f"org-{name}")
    assert len(licenses) == 3
    for found_license in licenses:
        meta = found_license["metadata"]
        assert meta["labels"][UID] == uid
        assert [ref["uid"] for ref in meta["ownerReferences"]] == [uid]
    document = wait_for(
        "the mesh license", lambda: secret_document(admin, f"org-{name}", "license-mesh")
    )
    assert verifies_for(admin, document, name, uid, "mesh") == "Verified"
