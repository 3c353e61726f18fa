"""People as the cluster knows them: a kubeconfig with a client certificate the cluster's CA
signed, so a command (the `orgkeeper` CLI, kubectl) runs with that user's own rights only; a
namespace admin elsewhere."""

from __future__ import annotations

from pathlib import Path

from orgkeeper_dev.localcluster import LocalCluster
from support.kube import Kube
from support.orgs import wait_allowed


def user_kubeconfig(
    cluster: LocalCluster, directory: Path, user: str, group: str | None = None
) -> Path:
    """A kubeconfig for `user` (the certificate's common name; `group`, its organization)."""
    directory.mkdir(parents=True, exist_ok=True)
    return cluster.user_kubeconfig(directory / "kubeconfig", user, *([group] if group else []))


def namespace_admin(admin: Kube, namespace: str, user: str) -> None:
    """A new namespace where `user` holds the stock `admin` ClusterRole, as any namespace owner
    would (and nothing else)."""
    admin.core.create_namespace({"metadata": {"name": namespace}})
    admin.rbac.create_namespaced_role_binding(
        namespace,
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
    wait_allowed(admin, user, "create", "deployments", group="apps", namespace=namespace)
