"""Fixtures: a real control plane for the session, CRDs installed, identities by impersonation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException

from orgkeeper_dev.localcluster import LocalCluster, free_port, install_orgkeeper
from support import identity
from support.identity import ServiceAccountIdentity, webhooks_answer
from support.kube import AsUser, Kube, api_client, wait_for
from support.metrics import READER_ROLE, service_account_token
from support.operator import FAST_CLOCK, OperatorProcess
from support.orgs import unique_suffix

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO / "crds"


# `make test` runs one pytest process per lane, all at once: most of their time is waiting (for
# control planes, operators, fault windows, the operator's heap trim), not CPU (README
# "Testing", measured with --durations and CPU seconds). `main`: the unit tests and the session
# cluster's tests. `clusters`: the integration tests that start a control plane of their own
# (they don't take the session `cluster`), the demo among them. The fault suite in three lanes,
# each with a fault cluster and a tally of its own: `faults` (kills, restarts, conflicts, bad
# input, the API failing, the webhooks down, the memory soak), `leader` (the faults of two
# replicas and the port flood) and `memory` (the stranger bench, the cost per org and
# Membership). A test marked `lane(NAME)` runs in that lane. Without --lane, pytest runs every
# lane, one after the other.
LANES = ("main", "clusters", "faults", "leader", "memory")
FAULT_LANES = {  # by file, or file::test; the rest of tests/faults is `faults`
    "test_flood.py": "leader",
    "test_leader_kill.py": "leader",
    "test_leader_stepdown.py": "leader",
    "test_memory.py": "memory",
    "test_memory.py::test_memory_at_rest_stays_flat_under_churn": "faults",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--lane",
        choices=LANES,
        help="run one lane of `make test`: main (unit tests, the session cluster's tests), "
        "clusters (integration tests with a control plane of their own), or a third of the "
        "fault suite: faults, leader or memory (tests/conftest.py says which)",
    )


def lane(item: pytest.Item) -> str:
    marked = item.get_closest_marker("lane")
    if marked is not None:
        return str(marked.args[0])
    if "faults" in item.path.parts:
        name = item.path.name
        return FAULT_LANES.get(f"{name}::{item.name}", FAULT_LANES.get(name, "faults"))
    if "integration" in item.path.parts and "cluster" not in getattr(item, "fixturenames", ()):
        return "clusters"
    return "main"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.cluster)
    chosen = config.getoption("lane")
    if chosen is None:
        return
    kept = [item for item in items if lane(item) == chosen]
    deselected = [item for item in items if lane(item) != chosen]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


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
        people_api_port=free_port(),  # the people API, behind the APIService of manifests/
        # Far beyond any test: what a test waits for must come from an event, never from the
        # periodic check (as in tests that start their own). Its time rules are the quiet
        # defaults (30-day billing cycle and inactivity, rotation after 182 days), so nothing
        # wakes an org on a timer either; the time-rule tests take `fast_clock`.
        check_interval="10m",
    )
    identity.apply(cluster, identity.loopback_webhooks(identity.render(), process.webhook_port))
    assert process.people_api_port is not None
    identity.apply(
        cluster, identity.loopback_people_api(identity.render(), process.people_api_port)
    )
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
        identity.remove_people_api(cluster)


@pytest.fixture(scope="module")
def fast_clock(operator: OperatorProcess, admin: Kube) -> Iterator[OperatorProcess]:
    """The session operator, restarted for one module with the short test time rules
    (FAST_CLOCK: 20 s billing cycle and inactivity window, rotation after 30 s), and restarted
    quiet again after it. Same ports, identity and webhooks: the module's tests see one operator."""

    def restart(**settings: str) -> None:
        operator.restart(**settings)
        # Its webhook CA is new: wait until the API server trusts it.
        wait_for("the restarted operator's webhooks to answer", lambda: webhooks_answer(admin))

    quiet = {key: getattr(operator, key) for key in FAST_CLOCK}
    restart(**FAST_CLOCK)
    try:
        yield operator
    finally:
        restart(**quiet)


@pytest.fixture(autouse=True)
def _delete_created_organizations(request: pytest.FixtureRequest) -> Iterator[None]:
    """Deletes the Organizations a test on the session cluster created, without waiting (the
    operator and garbage collection take the rest away): the cluster stays as small as the
    test at hand, and no test's orgs keep the operator busy during the next."""
    if "cluster" not in request.fixturenames:
        yield
        return
    admin: Kube = request.getfixturevalue("admin")
    before = {org["metadata"]["name"] for org in admin.list("organizations")}
    yield
    for org in admin.list("organizations"):
        name = org["metadata"]["name"]
        if name not in before and not org["metadata"].get("deletionTimestamp"):
            with contextlib.suppress(ApiException):
                admin.delete("organizations", name)


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
