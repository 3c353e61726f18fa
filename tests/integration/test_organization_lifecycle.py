"""Organizations end to end: provisioning, RBAC from memberships, the single Owner, deletion.

Every test acts as real users through impersonation; RBAC answers come from the API server.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest
from kubernetes import client

from orgkeeper import names
from support.kube import AsUser, Kube, rejection, wait_for
from support.orgs import (
    allowed,
    membership,
    new_org,
    wait_allowed,
    wait_members_bound,
    wait_org,
    wait_owner_rights,
)

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def org_name(unique: str) -> str:
    return f"acme-{unique}"


def add_member(kube: Kube, org: str, name: str, email: str, *teams: str) -> None:
    kube.create("memberships", membership(name, email, *teams), f"org-{org}")


def test_a_user_creates_an_org_and_owns_it(admin: Kube, as_user: AsUser, org_name: str) -> None:
    owner = f"owner@{org_name}.test"
    new_org(as_user, org_name, owner, plan="Plus")

    org = wait_org(admin, org_name)
    status = org["status"]
    assert status["owner"] == owner
    assert status["phase"] == "Active"
    assert status["namespace"] == f"org-{org_name}"
    assert status["billing"]["state"] == "Trial"
    created = datetime.fromisoformat(org["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    ends = datetime.fromisoformat(status["trial"]["endsAt"].replace("Z", "+00:00"))
    assert ends - created == timedelta(days=30)
    assert (status["members"], status["admins"]) == (1, 1)

    namespace = admin.core.read_namespace(f"org-{org_name}")
    (ref,) = namespace.metadata.owner_references
    assert (ref.kind, ref.name, ref.uid) == ("Organization", org_name, org["metadata"]["uid"])

    (owner_membership,) = admin.list("memberships", f"org-{org_name}")
    assert owner_membership["spec"] == {"email": owner, "teams": ["organization-admin"]}
    assert owner_membership["metadata"]["labels"][names.LABEL_ORGANIZATION] == org_name
    assert len(owner_membership["metadata"]["labels"][names.LABEL_EMAIL_HASH]) == 16
    assert owner_membership["status"]["state"] == "Active"

    products = sorted(lic["spec"]["product"] for lic in admin.list("licenses", f"org-{org_name}"))
    assert products == ["gateway-enterprise", "ingress-controller", "mesh"]

    # Bound before Ready; the API server's authorizer takes the bindings in from its watch.
    wait_allowed(admin, owner, "delete", "organizations", name=org_name)
    wait_allowed(admin, owner, "create", "memberships", namespace=f"org-{org_name}")
    assert not allowed(admin, owner, "delete", "organizations", name="someone-elses")


def test_only_the_owner_can_delete_the_org(
    admin: Kube, as_user: AsUser, org_name: str, unique: str
) -> None:
    owner, alice, victor, mallory = (
        f"{who}@{org_name}.test" for who in ("owner", "alice", "victor", "mallory")
    )
    new_org(as_user, org_name, owner)
    wait_org(admin, org_name)
    wait_owner_rights(admin, org_name, owner)
    add_member(as_user(owner), org_name, "alice", alice, "organization-admin")
    add_member(as_user(owner), org_name, "victor", victor, "analytics-viewer")
    wait_members_bound(
        admin, org_name, {alice: ["organization-admin"], victor: ["analytics-viewer"]}
    )

    status, message = rejection(lambda: as_user(alice).delete("organizations", org_name))
    assert status == 403 and "forbidden" in message, message

    wait_allowed(admin, victor, "list", "memberships", namespace=f"org-{org_name}")
    assert as_user(victor).list("memberships", f"org-{org_name}")
    status, message = rejection(
        lambda: as_user(victor).patch(
            "memberships", "alice", {"spec": {"teams": []}}, f"org-{org_name}"
        )
    )
    assert status == 403 and "forbidden" in message, message

    # Someone whom RBAC lets delete any Organization is still refused by admission.
    admin.rbac.create_cluster_role(
        client.V1ClusterRole(
            metadata=client.V1ObjectMeta(name=f"org-deleter-{unique}"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[names.GROUP], resources=["organizations"], verbs=["delete"]
                )
            ],
        )
    )
    admin.rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=f"org-deleter-{unique}"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io",
                kind="ClusterRole",
                name=f"org-deleter-{unique}",
            ),
            subjects=[
                client.RbacV1Subject(
                    kind="User", name=mallory, api_group="rbac.authorization.k8s.io"
                )
            ],
        )
    )
    wait_allowed(admin, mallory, "delete", "organizations", name=org_name)
    status, message = rejection(lambda: as_user(mallory).delete("organizations", org_name))
    assert status == 403
    assert f"only the Owner of Organization {org_name} or support" in message, message

    as_user(owner).delete("organizations", org_name)
    wait_for(
        f"namespace org-{org_name} to be gone",
        lambda: (
            admin.core.list_namespace(field_selector=f"metadata.name=org-{org_name}").items == []
        ),
        timeout=60,
    )
    wait_for(
        "the Owner's ClusterRoleBinding to be gone",
        lambda: (
            admin.rbac.list_cluster_role_binding(
                label_selector=f"{names.LABEL_ORGANIZATION}={org_name}"
            ).items
            == []
        ),
        timeout=60,
    )


def test_ownership_transfer_to_an_admin_only(admin: Kube, as_user: AsUser, org_name: str) -> None:
    owner, alice, victor = (f"{who}@{org_name}.test" for who in ("owner", "alice", "victor"))
    new_org(as_user, org_name, owner)
    wait_org(admin, org_name)
    wait_owner_rights(admin, org_name, owner)
    add_member(as_user(owner), org_name, "alice", alice, "organization-admin")
    add_member(as_user(owner), org_name, "victor", victor, "analytics-viewer")
    wait_members_bound(
        admin, org_name, {alice: ["organization-admin"], victor: ["analytics-viewer"]}
    )

    status, message = rejection(
        lambda: as_user(owner).patch("organizations", org_name, {"spec": {"owner": victor}})
    )
    assert status == 403
    assert f"ownership can't be transferred to {victor}" in message, message
    assert "add organization-admin to their Membership first" in message, message

    as_user(owner).patch("organizations", org_name, {"spec": {"owner": alice}})
    wait_for(
        "the transfer to take effect",
        lambda: admin.get("organizations", org_name)["status"]["owner"] == alice,
    )
    wait_org(admin, org_name, "OwnerValid", "True")
    wait_for(
        "RBAC to follow the transfer",
        lambda: (
            allowed(admin, alice, "delete", "organizations", name=org_name)
            and not allowed(admin, owner, "delete", "organizations", name=org_name)
        ),
    )
    # The previous Owner stays an Organization Admin.
    wait_members_bound(
        admin, org_name, {owner: ["organization-admin"], alice: ["organization-admin"]}
    )
    assert allowed(admin, owner, "create", "memberships", namespace=f"org-{org_name}")
    # Events are posted once the reconcile has written the status.
    wait_for(
        "the OwnershipTransferred Event",
        lambda: any(
            e.reason == "OwnershipTransferred" and "@" not in e.message
            for e in admin.core.list_namespaced_event(
                "default", field_selector=f"involvedObject.name={org_name}"
            ).items
        ),
    )


def test_rbac_follows_memberships_and_repairs_drift(
    admin: Kube, as_user: AsUser, org_name: str
) -> None:
    owner, alice = f"owner@{org_name}.test", f"alice@{org_name}.test"
    namespace = f"org-{org_name}"
    new_org(as_user, org_name, owner)
    wait_org(admin, org_name)
    wait_owner_rights(admin, org_name, owner)
    add_member(as_user(owner), org_name, "alice", alice, "control-plane-admin", "analytics-viewer")
    wait_members_bound(admin, org_name, {alice: ["control-plane-admin", "analytics-viewer"]})
    wait_allowed(admin, alice, "create", "deployments", group="apps", namespace=namespace)

    (binding,) = admin.rbac.list_namespaced_role_binding(
        namespace,
        label_selector=f"{names.LABEL_TEAM}=control-plane-admin,{names.LABEL_MEMBERSHIP}=alice",
    ).items
    assert [s.name for s in binding.subjects] == [alice, f"oidc:{alice}"]  # an ordinary org
    admin.rbac.delete_namespaced_role_binding(binding.metadata.name, namespace)
    wait_for(
        "the deleted RoleBinding to come back",
        lambda: admin.rbac.read_namespaced_role_binding(binding.metadata.name, namespace),
    )
    # Labels and owner stripped (the binding leaves the operator's label-selected cache, and
    # would outlive its Membership): both are put back.
    admin.rbac.patch_namespaced_role_binding(
        binding.metadata.name,
        namespace,
        [
            {"op": "remove", "path": "/metadata/labels"},
            {"op": "remove", "path": "/metadata/ownerReferences"},
        ],
    )

    def repaired() -> bool:
        found = admin.rbac.read_namespaced_role_binding(binding.metadata.name, namespace)
        labels = found.metadata.labels or {}
        return (
            labels.get(names.LABEL_MEMBERSHIP) == "alice"
            and labels.get(names.LABEL_TEAM) == "control-plane-admin"
            and [(r.kind, r.name) for r in found.metadata.owner_references or []]
            == [("Membership", "alice")]
        )

    wait_for("the stripped RoleBinding to be labelled and owned again", repaired)

    as_user(owner).patch(
        "memberships", "alice", {"spec": {"teams": ["analytics-viewer"]}}, namespace
    )
    wait_for(
        "the team's role to be revoked",
        lambda: (
            not allowed(admin, alice, "create", "deployments", group="apps", namespace=namespace)
        ),
    )
    wait_members_bound(admin, org_name, {alice: ["analytics-viewer"]})


def test_one_person_in_two_orgs_is_bound_independently(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    carol = f"carol@{unique}.test"
    orgs = [f"one-{unique}", f"two-{unique}"]
    for name in orgs:
        new_org(as_user, name, f"owner@{name}.test")
        wait_org(admin, name)
        wait_owner_rights(admin, name, f"owner@{name}.test")
        add_member(as_user(f"owner@{name}.test"), name, "carol", carol, "portal-admin")
        wait_members_bound(admin, name, {carol: ["portal-admin"]})

    as_user(f"owner@{orgs[0]}.test").delete("memberships", "carol", f"org-{orgs[0]}")
    wait_for(
        "carol's role in the first org to go",
        lambda: (
            not allowed(admin, carol, "create", "configmaps", group="", namespace=f"org-{orgs[0]}")
        ),
    )
    assert allowed(admin, carol, "create", "configmaps", group="", namespace=f"org-{orgs[1]}")
    (other,) = [
        m for m in admin.list("memberships", f"org-{orgs[1]}") if m["spec"]["email"] == carol
    ]
    assert other["status"]["state"] == "Active"


def test_a_membership_is_labelled_as_it_is_created(
    admin: Kube, as_user: AsUser, org_name: str
) -> None:
    owner = f"owner@{org_name}.test"
    new_org(as_user, org_name, owner)
    wait_org(admin, org_name)
    wait_owner_rights(admin, org_name, owner)
    created = as_user(owner).create(
        "memberships", membership("dora", "Dora@Example.test", "portal-admin"), f"org-{org_name}"
    )
    labels = created["metadata"]["labels"]
    assert labels[names.LABEL_ORGANIZATION] == org_name
    assert labels[names.LABEL_EMAIL_HASH] == hashlib.sha256(b"dora@example.test").hexdigest()[:16]


def test_membership_admission_rules(admin: Kube, as_user: AsUser, org_name: str) -> None:
    owner, alice = f"owner@{org_name}.test", f"alice@{org_name}.test"
    namespace = f"org-{org_name}"
    new_org(as_user, org_name, owner)
    wait_org(admin, org_name)
    wait_owner_rights(admin, org_name, owner)
    add_member(as_user(owner), org_name, "alice", alice, "portal-admin")
    # The webhook reads the operator's cache: alice is in it once the operator bound her.
    wait_members_bound(admin, org_name, {alice: ["portal-admin"]})

    status, message = rejection(
        lambda: add_member(
            as_user(owner), org_name, "alice-again", alice.upper(), "analytics-viewer"
        )
    )
    assert status == 403
    assert "already has Membership alice in this organization; edit that one's teams" in message, (
        message
    )

    (owner_membership,) = [
        m for m in admin.list("memberships", namespace) if m["spec"]["email"] == owner
    ]
    name = owner_membership["metadata"]["name"]
    status, message = rejection(lambda: as_user(owner).delete("memberships", name, namespace))
    assert status == 403
    assert "is the Owner of this organization, so their Membership can't be deleted" in message, (
        message
    )

    status, message = rejection(
        lambda: as_user(owner).patch(
            "memberships", name, {"spec": {"teams": ["portal-admin"]}}, namespace
        )
    )
    assert status == 403
    assert "always holds organization-admin; transfer ownership first" in message, message


def test_sso_only_orgs_bind_the_identity_provider_user(
    admin: Kube, as_user: AsUser, org_name: str
) -> None:
    owner, alice = f"owner@{org_name}.test", f"alice@{org_name}.test"
    namespace = f"org-{org_name}"
    new_org(as_user, org_name, owner, ssoOnly=True)
    wait_org(admin, org_name)
    add_member(admin, org_name, "alice", alice, "control-plane-admin")
    wait_members_bound(admin, org_name, {alice: ["control-plane-admin"]})

    wait_allowed(admin, f"oidc:{alice}", "create", "deployments", group="apps", namespace=namespace)
    assert not allowed(admin, alice, "create", "deployments", group="apps", namespace=namespace)
    wait_allowed(admin, f"oidc:{owner}", "delete", "organizations", name=org_name)
    assert not allowed(admin, owner, "delete", "organizations", name=org_name)

    admin.patch("organizations", org_name, {"spec": {"ssoOnly": False}})
    # An ordinary org binds both logins (test_identities.py acts with them).
    wait_for(
        "everyone to be bound under their e-mail too",
        lambda: (
            allowed(admin, alice, "create", "deployments", group="apps", namespace=namespace)
            and allowed(admin, owner, "delete", "organizations", name=org_name)
            and allowed(
                admin, f"oidc:{alice}", "create", "deployments", group="apps", namespace=namespace
            )
        ),
    )
