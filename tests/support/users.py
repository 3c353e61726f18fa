"""People as the cluster knows them: a kubeconfig with a client certificate the cluster's CA
signed, so a command (the `orgkeeper` CLI, kubectl) runs with that user's own rights only; a
namespace admin elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orgkeeper.pki import certificate, pem_key, subject_name
from orgkeeper_dev.localcluster import LocalCluster, kubeconfig_for
from support.kube import Kube
from support.orgs import wait_allowed


def user_kubeconfig(
    cluster: LocalCluster, directory: Path, user: str, group: str | None = None
) -> Path:
    """A kubeconfig for `user` (the certificate's common name; `group`, its organization)."""
    pki = cluster.pki
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    issued = certificate(
        subject_name(user, group), key, (ca, cast(ec.EllipticCurvePrivateKey, ca_key)), client=True
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "user.crt").write_bytes(issued.public_bytes(serialization.Encoding.PEM))
    (directory / "user.key").write_bytes(pem_key(key))
    (directory / "user.key").chmod(0o600)
    credentials = {
        "client-certificate": str(directory / "user.crt"),
        "client-key": str(directory / "user.key"),
    }
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig_for(cluster.server, pki / "ca.crt", credentials)))
    path.chmod(0o600)
    return path


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
