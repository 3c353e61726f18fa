"""Fixtures: a real control plane for the session, CRDs installed, identities by impersonation."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from orgkeeper.localcluster import LocalCluster, binaries
from support.kube import Kube, api_client, load_yaml_documents, wait_for
from support.operator import OperatorProcess

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO / "crds"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """etcd, kube-apiserver and kube-controller-manager on loopback, for the whole session."""
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    local.start()
    try:
        install_orgkeeper(local)
        yield local
    finally:
        local.stop()


def install_orgkeeper(local: LocalCluster) -> None:
    """CRDs, team ClusterRoles, and the right of every signed-in user to create an org."""
    _apply_crds(local, Kube(api_client(local.kubeconfig)))
    kubectl(local, "apply", "--server-side", "-f", str(REPO / "manifests" / "rbac" / "teams.yaml"))
    kubectl(
        local,
        "create",
        "clusterrolebinding",
        "orgkeeper-organization-creators",
        "--clusterrole=orgkeeper-organization-creator",
        "--group=system:authenticated",
    )


def _apply_crds(local: LocalCluster, admin: Kube) -> None:
    kubectl(local, "apply", "--server-side", "-f", str(CRD_DIR))
    extensions = client.ApiextensionsV1Api(admin.api)
    for path in sorted(CRD_DIR.glob("*.yaml")):
        (crd,) = load_yaml_documents(path)
        name = crd["metadata"]["name"]
        wait_for(
            f"CRD {name} to be Established",
            lambda name=name: any(
                c.type == "Established" and c.status == "True"
                for c in (extensions.read_custom_resource_definition(name).status.conditions or [])
            ),
        )


def kubectl(
    local: LocalCluster, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries(build=False)["kubectl"]), *args],
        env={**os.environ, "KUBECONFIG": str(local.kubeconfig)},
        capture_output=True,
        text=True,
        check=check,
    )


@pytest.fixture(scope="session")
def admin(cluster: LocalCluster) -> Kube:
    """The cluster admin (system:masters)."""
    return Kube(api_client(cluster.kubeconfig))


@pytest.fixture(scope="session")
def operator(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """`orgkeeper run` with test settings and its admission webhooks registered."""
    process = OperatorProcess(cluster, tmp_path_factory.mktemp("operator") / "operator.log").start()
    admission = client.AdmissionregistrationV1Api(api_client(cluster.kubeconfig))
    wait_for(
        "the operator's webhooks to be registered",
        lambda: any(
            f":{process.webhook_port}/" in (hook.client_config.url or "")
            for config in admission.list_validating_webhook_configuration().items
            for hook in config.webhooks or []
        ),
    )
    try:
        yield process
    finally:
        process.stop()
        # Without the operator its webhooks would refuse every write (failurePolicy: Fail).
        kubectl(
            cluster,
            "delete",
            "validatingwebhookconfiguration",
            "orgkeeper.dev",
            "--ignore-not-found",
        )


@pytest.fixture
def as_user(cluster: LocalCluster) -> Callable[[str], Kube]:
    """The cluster as a given user sees it (impersonation, with system:authenticated)."""
    return lambda user: Kube(api_client(cluster.kubeconfig, user=user))


@pytest.fixture
def unique() -> str:
    """A short suffix that keeps this test's object names apart from every other test's."""
    return uuid.uuid4().hex[:6]
