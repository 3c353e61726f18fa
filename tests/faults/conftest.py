"""The fault suite's own control plane and operator, so it can kill and restart them freely.

The session `cluster` and `operator` of tests/integration are never touched: this package
starts a second LocalCluster (torn down when the package is done) and runs `orgkeeper run`
processes of its own against it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orgkeeper_dev.localcluster import LocalCluster, install_orgkeeper
from support.kube import AsUser, Kube, api_client

from .operators import Operators
from .report import REPORT_PATH, TALLY, TRIALS

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# No Pod ever runs on these control planes (no nodes) and the suite reads no Deployment's
# status: without the Deployment and ReplicaSet controllers, the suite's Deployments (2,000 in
# the stranger bench) make no ReplicaSets and no status writes, CPU the two cores need.
LEAN = {"kube-controller-manager": ["--controllers=-deployment-controller,-replicaset-controller"]}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.cluster)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY.rows:
        return
    # `make test` runs the suite in three lanes (tests/conftest.py), each with its own tally.
    lane = terminalreporter.config.getoption("lane")
    path = TALLY.write(REPORT_PATH.with_name(f"report-{lane}.md") if lane else REPORT_PATH)
    terminalreporter.section(f"fault suite ({TRIALS} trial(s) per fault)")
    terminalreporter.write_line(TALLY.table())
    terminalreporter.write_line(f"written to {path.relative_to(REPO)}")


@pytest.fixture(scope="package")
def fault_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane of the fault suite's own, with orgkeeper installed as `make install` does."""
    local = LocalCluster(tmp_path_factory.mktemp("fault-cluster"), extra_args=LEAN)
    local.start()
    try:
        install_orgkeeper(local)
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="package")
def fault_admin(fault_cluster: LocalCluster) -> Kube:
    return Kube(api_client(fault_cluster.kubeconfig))


@pytest.fixture(scope="package")
def operators(
    fault_cluster: LocalCluster, fault_admin: Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operators]:
    """The suite's operator (one at a time): killed, restarted or replaced by the tests."""
    running = Operators(fault_cluster, fault_admin, tmp_path_factory.mktemp("fault-operator"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def as_user(fault_cluster: LocalCluster) -> AsUser:
    """The fault cluster as a given user sees it (impersonation)."""
    return lambda user: Kube(api_client(fault_cluster.kubeconfig, user=user))
