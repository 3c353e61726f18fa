"""Who may delete an Organization, as the policy and Kubernetes both mean it: its Owner, and
support, which is whoever holds the verb `support` on organizations by SubjectAccessReview: an
RBAC cluster-admin (kubeadm's and kind's admin: a group bound to `cluster-admin`, never
system:masters), a user bound to orgkeeper-support, a GitOps controller's ServiceAccount
granted it (Argo CD or Flux pruning an Organization removed from Git). Everyone else is refused,
and the refusal says who may. Each acts through the API server with its own rights only."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from orgkeeper import names
from orgkeeper.api.v1alpha1 import VERSION
from orgkeeper_dev.localcluster import LocalCluster
from support.kube import AsUser, Kube, api_client, rejection, wait_for
from support.metrics import service_account_token
from support.orgs import (
    membership,
    new_ready_org,
    wait_allowed,
    wait_members_bound,
)

pytestmark = pytest.mark.usefixtures("operator")

REFUSAL = (
    "only the Owner of Organization {org} or support (orgkeeper-support) can delete it: ask the "
    "Owner to delete it or to transfer ownership to you first, or ask support; cluster-admins "
    "and GitOps controllers count as support once they hold the verb support on organizations"
)
# kubeadm (since 1.29) binds this group to cluster-admin and puts its admin.conf user in it;
# kind does the same.
KUBEADM_ADMINS = "kubeadm:cluster-admins"


def bind(admin: Kube, name: str, role: str, subject: dict[str, str]) -> None:
    """A ClusterRoleBinding of `role` to `subject` (kept if it exists: several tests share it)."""
    body = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [subject],
    }
    try:
        admin.rbac.create_cluster_role_binding(body)
    except client.ApiException as error:
        if error.status != 409:
            raise


def user(name: str) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}


def gone(admin: Kube, org: str) -> None:
    wait_for(
        f"Organization {org} to be gone",
        lambda: (
            not admin.custom.list_cluster_custom_object(
                names.GROUP, VERSION, "organizations", field_selector=f"metadata.name={org}"
            )["items"]
        ),
        timeout=60,
    )


def delete(kube: Kube, org: str, propagation: str | None = None) -> None:
    options = client.V1DeleteOptions(propagation_policy=propagation) if propagation else None
    kube.custom.delete_cluster_custom_object(
        names.GROUP, VERSION, "organizations", org, body=options
    )


def may_i(kube: Kube, verb: str, org: str) -> bool:
    """`kubectl auth can-i VERB organizations/ORG` as that identity itself."""
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                group=names.GROUP, resource="organizations", verb=verb, name=org
            )
        )
    )
    answer = client.AuthorizationV1Api(kube.api).create_self_subject_access_review(review)
    return bool(answer.status.allowed)


def test_a_kubeadm_style_cluster_admin_deletes_an_org(
    admin: Kube, as_user: AsUser, cluster: LocalCluster, unique: str
) -> None:
    org, person = f"kadm-{unique}", f"kubernetes-admin-{unique}"
    new_ready_org(admin, as_user, org)
    group = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": KUBEADM_ADMINS}
    bind(admin, "kubeadm:cluster-admins", "cluster-admin", group)
    kubeadm_admin = Kube(api_client(cluster.kubeconfig, user=person, groups=(KUBEADM_ADMINS,)))
    wait_for("RBAC to take in the binding", lambda: may_i(kubeadm_admin, "support", org))
    # Control: the same person outside the group holds nothing.
    assert not may_i(as_user(person), "support", org)
    status, _ = rejection(lambda: delete(as_user(person), org))
    assert status == 403

    delete(kubeadm_admin, org)
    gone(admin, org)


def test_support_deletes_an_org(admin: Kube, as_user: AsUser, unique: str) -> None:
    org, person = f"supdel-{unique}", f"support-{unique}@platform.test"
    new_ready_org(admin, as_user, org)
    # Control: before they are support, RBAC refuses them.
    status, message = rejection(lambda: delete(as_user(person), org))
    assert status == 403 and "cannot delete resource" in message, message

    bind(admin, f"support-{unique}", "orgkeeper-support", user(person))
    wait_allowed(admin, person, "delete", "organizations", name=org)
    delete(as_user(person), org)
    gone(admin, org)


def test_a_gitops_service_account_granted_support_prunes_an_org(
    admin: Kube, as_user: AsUser, cluster: LocalCluster, tmp_path: Path, unique: str
) -> None:
    """Argo CD prunes with foreground propagation by default; a real ServiceAccount token."""
    org, spare = f"pruned-{unique}", f"kept-{unique}"
    for name in (org, spare):
        new_ready_org(admin, as_user, name)
    gitops = f"gitops-{unique}"
    admin.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=gitops)))
    controller = Kube(
        api_client(
            cluster.token_kubeconfig(
                tmp_path / "controller",
                service_account_token(admin, gitops, "application-controller", "orgkeeper-support"),
            )
        )
    )
    # Control: another ServiceAccount of that namespace, without the role, can't.
    other = Kube(
        api_client(
            cluster.token_kubeconfig(
                tmp_path / "other", service_account_token(admin, gitops, "image-updater")
            )
        )
    )
    status, _ = rejection(lambda: delete(other, spare, "Foreground"))
    assert status == 403
    assert admin.get("organizations", spare)["metadata"].get("deletionTimestamp") is None

    delete(controller, org, "Foreground")
    gone(admin, org)


def test_an_org_admin_who_is_not_the_owner_is_refused_and_the_owner_deletes(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    org = f"notyours-{unique}"
    owner, org_admin = f"owner@{org}.test", f"admin@{org}.test"
    new_ready_org(admin, as_user, org)
    admin.create("memberships", membership("admin", org_admin, "organization-admin"), f"org-{org}")
    wait_members_bound(admin, org, {org_admin: ["organization-admin"]})
    # RBAC refuses an org-admin first: the team role has no right on the Organization.
    status, message = rejection(lambda: delete(as_user(org_admin), org))
    assert status == 403 and "cannot delete resource" in message, message
    # Given `delete` on it anyway (a platform's own role, say), the webhook refuses, and says
    # who may.
    admin.rbac.create_cluster_role(
        client.V1ClusterRole(
            metadata=client.V1ObjectMeta(name=f"org-editor-{unique}"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[names.GROUP],
                    resources=["organizations"],
                    resource_names=[org],
                    verbs=["get", "delete"],
                )
            ],
        )
    )
    bind(admin, f"org-editor-{unique}", f"org-editor-{unique}", user(org_admin))
    wait_allowed(admin, org_admin, "delete", "organizations", name=org)
    status, message = rejection(lambda: delete(as_user(org_admin), org))
    assert status == 403
    assert REFUSAL.format(org=org) in message, message
    assert "@" not in message.replace(org_admin, "")  # the Owner's e-mail isn't told

    # Positive control: the Owner deletes, by their own rights.
    delete(as_user(owner), org)
    gone(admin, org)
