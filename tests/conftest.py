"""Fixtures: a real control plane for the session, CRDs installed, identities by impersonation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orgkeeper_dev.localcluster import LocalCluster, install_orgkeeper
from support import identity
from support.identity import ServiceAccountIdentity
from support.kube import AsUser, Kube, api_client, wait_for
from support.metrics import READER_ROLE, service_account_token
from support.operator import OperatorProcess
from support.orgs import unique_suffix

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


@pytest.fixture(scope="session")
def admin(cluster: LocalCluster) -> Kube:
    """The cluster admin (system:masters)."""
    return Kube(api_client(cluster.kubeconfig))


@pytest.fixture(scope="session")
def operator_identity(
    cluster: LocalCluster, admin: Kube, tmp_path_factory: pytest.TempPathFactory
) -> ServiceAccountIdentity:
    """The operator's ServiceAccount, bound by exactly the RBAC of manifests/, and its token."""
    identity.apply(cluster, identity.of_kinds(identity.render(), identity.IDENTITY_KINDS))
    kubeconfig = tmp_path_factory.mktemp("operator-identity") / "kubeconfig"
    return identity.issue_token(cluster, admin, kubeconfig)


@pytest.fixture(scope="session")
def operator(
    cluster: LocalCluster,
    operator_identity: ServiceAccountIdentity,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """`orgkeeper run` as its ServiceAccount, serving the webhooks of manifests/ (on loopback).

    As in a cluster: `--webhook-mode serve`, the ValidatingWebhookConfiguration of manifests/,
    and the operator's own CA patched into it; only the Service is replaced by a URL.
    """
    process = OperatorProcess(
        cluster,
        tmp_path_factory.mktemp("operator") / "operator.log",
        webhook_mode="serve",
        kubeconfig=operator_identity.kubeconfig,
        extra_args=("--webhook-host=127.0.0.1",),
        # Far beyond any test: what a test waits for must come from an event or a time rule's
        # own wake, never from the periodic check (tests that start their own keep 2s). The
        # short test billing cycle (20s) and rotation (30s) still wake every org that often,
        # so a missing event wake shows only where a test waits less than that.
        check_interval="10m",
    )
    identity.apply(cluster, identity.loopback_webhooks(identity.render(), process.webhook_port))
    admin = Kube(api_client(cluster.kubeconfig))
    try:
        process.start()
        wait_for(
            "the operator to put its CA into its webhook configurations",
            lambda: all(all(hooks) for hooks in identity.ca_bundles(admin).values()),
        )
        yield process
    finally:
        process.stop()
        identity.remove_webhooks(cluster)


@pytest.fixture(scope="session")
def metrics_reader(admin: Kube, operator_identity: ServiceAccountIdentity) -> str:
    """A token of a ServiceAccount bound to orgkeeper-metrics-reader (manifests/rbac/)."""
    return service_account_token(admin, identity.NAMESPACE, "metrics-scraper", READER_ROLE)


@pytest.fixture
def as_user(cluster: LocalCluster) -> AsUser:
    """The cluster as a given user sees it (impersonation, with system:authenticated)."""
    return lambda user: Kube(api_client(cluster.kubeconfig, user=user))


@pytest.fixture
def unique() -> str:
    """A short suffix that keeps this test's object names apart from every other test's."""
    return unique_suffix()
