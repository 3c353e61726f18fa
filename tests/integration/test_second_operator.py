"""A second operator by mistake, on a control plane of its own (API.md "Sharing a cluster").

orgkeeper is installed as manifests/ install it: its ServiceAccount and RBAC, the webhook
configurations `orgkeeper.dev` calling the Service orgkeeper-system/orgkeeper-webhook, and
`orgkeeper run --leader-elect --webhook-mode serve` holding the Lease orgkeeper-system/orgkeeper.
Then an admin runs `orgkeeper run` with the wrong context: each way it refuses at start, in one
line with exit code 2, touching nothing; a replica of the installation still starts, as the
follower. Once the installation is gone, configurations a stopped `orgkeeper run` left behind
are told about at start, with the command that removes them.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from orgkeeper.names import WEBHOOK_CONFIGURATION
from orgkeeper.webhook_server import WEBHOOK_KINDS
from orgkeeper_dev.localcluster import LocalCluster, free_port, install_orgkeeper, kubectl
from support import identity
from support.cli import refused_in_one_line, run_orgkeeper
from support.kube import Kube, api_client, rejection, wait_for
from support.operator import OperatorProcess
from support.orgs import organization, wait_org
from support.replicas import LEASE, NAMESPACE

INSTALLED = "installed-a"


@dataclass
class Installed:
    cluster: LocalCluster
    admin: Kube
    account: identity.ServiceAccountIdentity
    logs: Path
    leader: OperatorProcess

    def replica(self, name: str, *extra: str, webhook_mode: str = "serve") -> OperatorProcess:
        return OperatorProcess(
            self.cluster,
            self.logs / f"{name}.log",
            webhook_mode=webhook_mode,
            kubeconfig=self.account.kubeconfig,
            extra_args=("--leader-elect", f"--identity={name}", *extra),
        )

    def holder(self) -> str:
        lease = client.CoordinationV1Api(self.admin.api).read_namespaced_lease(LEASE, NAMESPACE)
        return str(lease.spec.holder_identity or "")

    def configurations(self) -> dict[str, Any]:
        """Both `orgkeeper.dev` configurations' webhooks, without their caBundle."""
        admission = client.AdmissionregistrationV1Api(self.admin.api)
        found = {}
        for kind, read in (
            ("validating", admission.read_validating_webhook_configuration),
            ("mutating", admission.read_mutating_webhook_configuration),
        ):
            wire = self.admin.api.sanitize_for_serialization(read(WEBHOOK_CONFIGURATION))
            for hook in wire["webhooks"]:
                hook["clientConfig"].pop("caBundle", None)
            found[kind] = wire["webhooks"]
        return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    local = LocalCluster(tmp_path_factory.mktemp("second-operator-cluster"))
    local.start()
    try:
        install_orgkeeper(local)
        rendered = identity.render()
        identity.apply(local, identity.of_kinds(rendered, identity.IDENTITY_KINDS))
        # The manifests' webhook configurations as they are: calling the Service.
        identity.apply(local, identity.of_kinds(rendered, frozenset(WEBHOOK_KINDS)))
        admin = Kube(api_client(local.kubeconfig))
        logs = tmp_path_factory.mktemp("second-operator")
        account = identity.issue_token(local, admin, logs / "kubeconfig")
        found = Installed(local, admin, account, logs, leader=None)  # type: ignore[arg-type]
        found.leader = found.replica(INSTALLED).start()
        try:
            wait_for(f"{INSTALLED} to take the Lease", lambda: found.holder() == INSTALLED)
            yield found
        finally:
            found.leader.stop()
    finally:
        local.stop()


def run_elsewhere(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`orgkeeper run` on free ports of its own."""
    ports = (f"--{name}-port={free_port()}" for name in ("webhook", "health", "metrics"))
    return run_orgkeeper(kubeconfig, *ports, *args)


def test_an_operator_that_does_not_elect_refuses_beside_the_installed_one(
    installed: Installed,
) -> None:
    """`orgkeeper run` with its defaults (managed mode, no --leader-elect): M4's story."""
    before = installed.configurations()
    line = refused_in_one_line(run_elsewhere(installed.cluster.kubeconfig))
    assert line.startswith(
        f"error: --leader-elect (ORGKEEPER_LEADER_ELECT): operator '{INSTALLED}' holds Lease "
        f"{NAMESPACE}/{LEASE}"
    ), line
    assert installed.configurations() == before  # the shipped configurations untouched
    assert installed.holder() == INSTALLED


def test_managed_mode_refuses_to_replace_the_installed_configurations(
    installed: Installed,
) -> None:
    """Even as a would-be replica (--leader-elect), managed mode never takes them over."""
    before = installed.configurations()
    done = run_orgkeeper(
        installed.cluster.kubeconfig,
        "--leader-elect",
        "--identity=laptop",
        "--webhook-mode=managed",
    )
    line = refused_in_one_line(done)
    assert line.startswith(
        "error: --webhook-mode (ORGKEEPER_WEBHOOK_MODE): managed would replace "
        f"ValidatingWebhookConfiguration {WEBHOOK_CONFIGURATION}, the installed one (it calls "
        f"Service {NAMESPACE}/orgkeeper-webhook)"
    ), line
    assert installed.configurations() == before
    assert all("service" in hook["clientConfig"] for hook in before["validating"])


def test_an_installation_in_another_namespace_refuses_even_with_leader_election(
    installed: Installed,
) -> None:
    """Its own Lease and signing key: it would re-sign the installed one's licenses."""
    done = run_orgkeeper(
        installed.cluster.kubeconfig,
        "--leader-elect",
        "--identity=staging-1",
        "--namespace=orgkeeper-staging",
        "--webhook-mode=off",
    )
    line = refused_in_one_line(done)
    assert line.startswith(
        f"error: --namespace (ORGKEEPER_NAMESPACE): orgkeeper is installed in namespace "
        f"{NAMESPACE}: operator '{INSTALLED}' holds Lease {NAMESPACE}/{LEASE}"
    ), line
    # Nothing of its own was made: no Lease, no signing key.
    staging = installed.admin.core.list_namespace(field_selector="metadata.name=orgkeeper-staging")
    assert staging.items == []


def test_a_replica_of_the_installation_still_starts_as_the_follower(installed: Installed) -> None:
    """The positive control: same namespace, same ServiceAccount, --leader-elect."""
    replica = installed.replica("installed-b").start()
    try:
        wait_for("the replica ready", lambda: _ready(replica.health_port), timeout=60)
        assert installed.holder() == INSTALLED
        assert replica.process is not None and replica.process.poll() is None
    finally:
        replica.stop()


def test_configurations_left_by_a_stopped_run_are_told_with_the_command_that_removes_them(
    installed: Installed, tmp_path: Path
) -> None:
    """The issue's story: a regional `make run ARGS=--region eu` was stopped, its persistent
    `eu.orgkeeper.dev` fails closed, and a later all-regions `make run` can't create any org.
    Now that run says why at start, and the command it prints clears the way."""
    cluster, admin = installed.cluster, installed.admin
    installed.leader.stop()  # the installation is removed
    for kind in WEBHOOK_KINDS:
        kubectl(cluster, "delete", kind.lower(), WEBHOOK_CONFIGURATION, "--ignore-not-found")
    dead = _dead_port()
    left = [_left_configuration(kind, "eu.orgkeeper.dev", dead) for kind in WEBHOOK_KINDS]
    identity.apply(cluster, left)

    later = OperatorProcess(cluster, tmp_path / "make-run.log", webhook_mode="managed").start()
    try:
        line = wait_for(
            "the warning about eu.orgkeeper.dev",
            lambda: next(
                (x for x in later.log_text().splitlines() if "eu.orgkeeper.dev call" in x), None
            ),
        )
        command = line[line.index("kubectl delete ") :].split()
        assert command[2:] == [
            "validatingwebhookconfiguration/eu.orgkeeper.dev",
            "mutatingwebhookconfiguration/eu.orgkeeper.dev",
        ]
        assert f"https://127.0.0.1:{dead}/" in line and "failurePolicy Fail" in line
        # What it warns about: every new Organization is refused, whatever this run says.
        status, message = rejection(lambda: _dry_run_create(admin, "before-cleanup"))
        assert status == 500 and "validate-organization.eu.orgkeeper.dev" in message
        kubectl(cluster, *command[1:])
        admin.create("organizations", organization("after-cleanup", "owner@after.test"))
        wait_org(admin, "after-cleanup", timeout=60)
    finally:
        later.stop()


def _dry_run_create(admin: Kube, name: str) -> object:
    body = organization(name, f"owner@{name}.test")
    return admin.custom.create_cluster_custom_object(
        "orgkeeper.dev", "v1alpha1", "organizations", body, dry_run="All"
    )


def _ready(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _left_configuration(kind: str, name: str, port: int) -> dict[str, Any]:
    """What kopf's managed mode leaves registered when `orgkeeper run --region eu` stops."""
    hook = {
        "name": f"validate-organization.{name}",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "clientConfig": {"url": f"https://127.0.0.1:{port}/validate-organization"},
        "rules": [
            {
                "apiGroups": ["orgkeeper.dev"],
                "apiVersions": ["v1alpha1"],
                "resources": ["organizations"],
                "operations": ["CREATE", "UPDATE"],
            }
        ],
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [hook],
    }
