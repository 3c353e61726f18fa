"""Hardening: org namespaces enforce Pod Security and a Membership quota, the operator says when
it is ready, /metrics answers only authorized clients, the webhook only TLS, and `orgkeeper run`
refuses settings that can't work."""

from __future__ import annotations

import socket
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.utils.quantity import parse_quantity

from orgkeeper_dev.localcluster import LocalCluster, free_port, install_orgkeeper
from support import identity
from support.cli import refused_in_one_line, run_orgkeeper
from support.kube import AsUser, Kube, api_client, rejection, wait_for
from support.metrics import READER_ROLE, samples, scrape, service_account_token
from support.operator import OperatorProcess
from support.orgs import (
    membership,
    organization,
    wait_allowed,
    wait_members_bound,
    wait_org,
    wait_owner_rights,
)

pytestmark = pytest.mark.usefixtures("operator")

ENFORCE = "pod-security.kubernetes.io/enforce"
ENFORCE_VERSION = "pod-security.kubernetes.io/enforce-version"
MEMBERSHIPS = "count/memberships.orgkeeper.dev"
AUTHENTICATED = ("system:authenticated",)


@pytest.fixture
def org(admin: Kube, as_user: AsUser, unique: str) -> Iterator[tuple[str, str]]:
    """A new Ready org whose Owner may act: (name, owner)."""
    name, owner = f"hard-{unique}", f"owner@hard-{unique}.test"
    as_user(owner).create("organizations", organization(name, owner, plan="Plus"))
    wait_org(admin, name)
    wait_owner_rights(admin, name, owner)
    yield name, owner


def pod(name: str, *, privileged: bool) -> dict[str, Any]:
    """A Pod that passes Pod Security `restricted`, or the same Pod privileged."""
    container: dict[str, Any] = {
        "name": "c",
        "image": "registry.k8s.io/pause:3.9",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if privileged:
        container["securityContext"] = {"privileged": True}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [container]},
    }


def deployment(name: str, *, privileged: bool) -> dict[str, Any]:
    template = pod(name, privileged=privileged)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }


def pods_of(admin: Kube, namespace: str, app: str) -> list[Any]:
    return list(admin.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items)


# --- Pod Security -------------------------------------------------------------------------


def test_an_org_namespace_enforces_pod_security_restricted(
    admin: Kube, org: tuple[str, str]
) -> None:
    name, _ = org
    labels = admin.core.read_namespace(f"org-{name}").metadata.labels
    assert labels[ENFORCE] == "restricted" and labels[ENFORCE_VERSION] == "latest"

    status, message = rejection(
        lambda: admin.core.create_namespaced_pod(
            f"org-{name}", pod("root", privileged=True), dry_run="All"
        )
    )
    assert status == 403 and 'violates PodSecurity "restricted:latest"' in message
    assert "privileged" in message
    # Positive control: a Pod that follows the profile is admitted.
    admin.core.create_namespaced_pod(f"org-{name}", pod("fine", privileged=False), dry_run="All")


def test_a_control_plane_admins_privileged_deployment_gets_no_pod(
    admin: Kube, as_user: AsUser, org: tuple[str, str]
) -> None:
    name, owner = org
    namespace, cpa = f"org-{name}", f"cpa@{name}.test"
    as_user(owner).create("memberships", membership("cpa", cpa, "control-plane-admin"), namespace)
    wait_members_bound(admin, name, {owner: ["organization-admin"], cpa: ["control-plane-admin"]})
    wait_allowed(admin, cpa, "create", "deployments", group="apps", namespace=namespace)

    as_user(cpa).apps.create_namespaced_deployment(namespace, deployment("escape", privileged=True))
    as_user(cpa).apps.create_namespaced_deployment(
        namespace, deployment("compliant", privileged=False)
    )

    def refused() -> list[str]:
        events = admin.core.list_namespaced_event(
            namespace, field_selector="involvedObject.kind=ReplicaSet,reason=FailedCreate"
        ).items
        return [
            e.message
            for e in events
            if e.involved_object.name.startswith("escape-") and "violates PodSecurity" in e.message
        ]

    (message, *_) = wait_for("the ReplicaSet's FailedCreate for PodSecurity", refused)
    assert 'violates PodSecurity "restricted:latest": privileged' in message
    # Positive control: the compliant Deployment's ReplicaSet did create its Pod.
    wait_for("the compliant Pod", lambda: pods_of(admin, namespace, "compliant"))
    assert pods_of(admin, namespace, "escape") == []


# --- the Membership quota -----------------------------------------------------------------


def limit(quota: Any) -> int:
    """The quota's only limit, the Membership count (the API server writes 10000 as 10k)."""
    assert list(quota.spec.hard) == [MEMBERSHIPS]
    return int(parse_quantity(quota.spec.hard[MEMBERSHIPS]))


def quota(admin: Kube, namespace: str) -> Any:
    try:
        return admin.core.read_namespaced_resource_quota("orgkeeper", namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def test_an_org_namespace_has_a_membership_quota_that_counts(
    admin: Kube, as_user: AsUser, org: tuple[str, str]
) -> None:
    name, owner = org
    namespace = f"org-{name}"
    found = quota(admin, namespace)
    assert limit(found) == 10000
    assert found.status.used[MEMBERSHIPS] == "1"  # the Owner's, counted before the org is Ready

    # Membership creates work from the moment the org is Ready, and each one counts.
    as_user(owner).create("memberships", membership("ann", f"ann@{name}.test"), namespace)
    wait_for(
        "the quota to count the new Membership",
        lambda: quota(admin, namespace).status.used.get(MEMBERSHIPS) == "2",
    )


@pytest.fixture(scope="module")
def small_quota(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane of its own, whose operator allows 2 Memberships per org namespace."""
    local = LocalCluster(tmp_path_factory.mktemp("quota-cluster"))
    local.start()
    try:
        install_orgkeeper(local)
        log = tmp_path_factory.mktemp("quota-operator") / "operator.log"
        process = OperatorProcess(
            local, log, webhook_mode="off", extra_args=("--membership-quota=2",)
        ).start()
        try:
            yield local
        finally:
            process.stop()
    finally:
        local.stop()


def test_the_quota_refuses_a_membership_beyond_the_limit(small_quota: LocalCluster) -> None:
    admin = Kube(api_client(small_quota.kubeconfig))
    owner = "owner@tiny.test"
    as_owner = Kube(api_client(small_quota.kubeconfig, user=owner, groups=AUTHENTICATED))
    as_owner.create("organizations", organization("tiny", owner, plan="Plus"))
    wait_org(admin, "tiny", timeout=60)
    wait_owner_rights(admin, "tiny", owner)
    assert limit(quota(admin, "org-tiny")) == 2

    # The Owner's Membership is one; a second is admitted (positive control), a third is not.
    as_owner.create("memberships", membership("ann", "ann@tiny.test"), "org-tiny")
    status, message = rejection(
        lambda: as_owner.create("memberships", membership("bob", "bob@tiny.test"), "org-tiny")
    )
    assert status == 403 and "exceeded quota: orgkeeper" in message
    assert f"limited: {MEMBERSHIPS}=2" in message


def test_guardrails_removed_by_an_admin_come_back(admin: Kube, org: tuple[str, str]) -> None:
    name, _ = org
    namespace = f"org-{name}"
    admin.core.patch_namespace(
        namespace, {"metadata": {"labels": {ENFORCE: "privileged", ENFORCE_VERSION: None}}}
    )
    admin.core.delete_namespaced_resource_quota("orgkeeper", namespace)

    def restored() -> bool:
        labels = admin.core.read_namespace(namespace).metadata.labels
        found = quota(admin, namespace)
        return (
            labels.get(ENFORCE) == "restricted"
            and labels.get(ENFORCE_VERSION) == "latest"
            and found is not None
            and limit(found) == 10000
        )

    wait_for("the Pod Security labels and the quota back", restored)

    # A raised limit is set back too.
    admin.core.patch_namespaced_resource_quota(
        "orgkeeper", namespace, {"spec": {"hard": {MEMBERSHIPS: "999999"}}}
    )
    wait_for("the quota's limit back", restored)


# --- readiness and health -----------------------------------------------------------------


def test_the_operator_is_live_and_ready_once_its_caches_are_synced(
    operator: OperatorProcess,
) -> None:
    def get(path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{operator.health_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status), reply.read().decode()

    assert get("/healthz")[0] == 200
    assert wait_for("/readyz to answer 200", lambda: get("/readyz")[0] == 200)


# --- /metrics -------------------------------------------------------------------------------


def test_metrics_answer_only_authorized_clients(
    admin: Kube, operator: OperatorProcess, metrics_reader: str, unique: str
) -> None:
    port = operator.metrics_port
    status, text = scrape(port, None)
    assert status == 401 and "orgkeeper_" not in text
    status, text = scrape(port, "not-a-token")
    assert status == 401 and "orgkeeper_" not in text

    stranger = service_account_token(admin, identity.NAMESPACE, f"stranger-{unique}")
    status, text = scrape(port, stranger)
    assert status == 403 and "orgkeeper_" not in text

    status, text = scrape(port, metrics_reader)
    assert status == 200
    found = samples(text)
    assert any(key.startswith("orgkeeper_reconciles_total") for key in found)
    assert found["process_resident_memory_bytes"] > 0


def test_the_metrics_reader_role_is_the_manifests_and_grants_get_on_metrics_only(
    admin: Kube,
) -> None:
    role = admin.rbac.read_cluster_role(READER_ROLE)
    rules = admin.api.sanitize_for_serialization(role.rules)
    assert rules == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]


def test_metrics_are_not_served_over_plain_http(operator: OperatorProcess) -> None:
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with pytest.raises(OSError):  # the TLS server answers plain HTTP with no HTTP at all
        urllib.request.urlopen(url, timeout=5).read()


# --- the webhook port: TLS only --------------------------------------------------------------


REVIEW = (
    b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1",'
    b'"kind":{"group":"orgkeeper.dev","version":"v1alpha1","kind":"Membership"},'
    b'"resource":{"group":"orgkeeper.dev","version":"v1alpha1","resource":"memberships"},'
    b'"namespace":"org-acme","operation":"CREATE","userInfo":{"username":"x"},'
    b'"object":{"apiVersion":"orgkeeper.dev/v1alpha1","kind":"Membership",'
    b'"metadata":{"name":"m","namespace":"org-acme"},"spec":{"email":"a@acme.test"}}}}'
)


def post_review(port: int, *, tls: bool) -> bytes:
    """POSTs an AdmissionReview to /validate-membership; whatever comes back, raw."""
    request = (
        b"POST /validate-membership HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(REVIEW)}\r\n\r\n".encode()
        + REVIEW
    )
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock: socket.socket = raw
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        sock = context.wrap_socket(raw)
    answer = b""
    with sock:
        sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, ssl.SSLError):
            pass
    return answer


def test_the_webhook_port_gives_no_admission_answer_over_plain_http(
    operator: OperatorProcess,
) -> None:
    plain = post_review(operator.webhook_port, tls=False)
    assert b"AdmissionReview" not in plain and not plain.startswith(b"HTTP/1.1 200")
    # Positive control: the same request over TLS gets its admission answer.
    answer = post_review(operator.webhook_port, tls=True)
    assert answer.startswith(b"HTTP/1.1 200") and b"AdmissionReview" in answer


# --- `orgkeeper run` refuses what can't work ---------------------------------------------------


def test_run_refuses_a_webhook_port_that_another_operator_serves(
    cluster: LocalCluster, operator: OperatorProcess
) -> None:
    """kopf binds with SO_REUSEPORT, so the port would be shared silently; it is refused."""
    done = run_orgkeeper(
        cluster.kubeconfig,
        f"--webhook-port={operator.webhook_port}",
        f"--health-port={free_port()}",
        f"--metrics-port={free_port()}",
    )
    line = refused_in_one_line(done)
    assert line.startswith("error: --webhook-port (ORGKEEPER_WEBHOOK_PORT): can't listen on")
    assert str(operator.webhook_port) in line


def test_run_refuses_a_busy_metrics_port_from_its_variable(
    cluster: LocalCluster, operator: OperatorProcess
) -> None:
    done = run_orgkeeper(
        cluster.kubeconfig,
        f"--webhook-port={free_port()}",
        f"--health-port={free_port()}",
        env={"ORGKEEPER_METRICS_PORT": str(operator.metrics_port)},
    )
    line = refused_in_one_line(done)
    assert line.startswith("error: --metrics-port (ORGKEEPER_METRICS_PORT): can't listen on")


def test_run_refuses_to_start_without_a_reachable_cluster(tmp_path: Path) -> None:
    closed = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{closed}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    done = run_orgkeeper(
        kubeconfig,
        f"--webhook-port={free_port()}",
        f"--health-port={free_port()}",
        f"--metrics-port={free_port()}",
    )
    line = refused_in_one_line(done)
    assert line.startswith("error: KUBECONFIG: no reachable cluster")
