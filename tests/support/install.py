"""orgkeeper's cluster-wide pieces on a test control plane: what `make install` applies."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from kubernetes import client

from orgkeeper_dev.localcluster import LocalCluster, install_arguments
from support.identity import kubectl
from support.kube import (
    Kube,
    api_client,
    crd_established,
    load_yaml_documents,
    wait_for,
    wait_membership_quota_counted,
)

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


def install_orgkeeper(local: LocalCluster) -> None:
    """`make install`'s manifests, and the right of every signed-in user to sign up an org."""
    kubectl(local, *install_arguments())
    extensions = client.ApiextensionsV1Api(api_client(local.kubeconfig))
    for path in sorted(CRD_DIR.glob("*.yaml")):
        (crd,) = load_yaml_documents(path)
        name = crd["metadata"]["name"]
        wait_for(f"CRD {name} to be Established", partial(crd_established, extensions, name))
    # Org namespaces carry a Membership quota; kube-controller-manager must count Memberships.
    wait_membership_quota_counted(Kube(api_client(local.kubeconfig)))
    kubectl(
        local,
        "create",
        "clusterrolebinding",
        "orgkeeper-organization-creators",
        "--clusterrole=orgkeeper-organization-creator",
        "--group=system:authenticated",
    )
