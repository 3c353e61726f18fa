"""A newcomer's first hour, as the README tells it, on a control plane of its own, as a
kubeadm-style admin (a user in `kubeadm:cluster-admins`, bound to `cluster-admin` through RBAC,
as kind's and kubeadm's admin is since 1.29; not `system:masters`): `make install`, `make run`,
the sign-up binding and a stranger's sign-up with `kubectl create`, the samples applied in one
go, a look around with kubectl and the CLI, and one mistake of each kind, each answered with a
message that says what to do.

Not walked here: the quick start's `docker build`, `kind load` and `kubectl apply -k manifests/`
with its rollout. The local control plane has no container engine and no kubelet (Pods never
run), so the operator runs from the checkout (`make run`), the README's path without an image.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orgkeeper.names import WEBHOOK_CONFIGURATION
from orgkeeper_dev.localcluster import LocalCluster, free_port, healthy, install_kubectl, kubectl
from support.cli import orgkeeper
from support.kube import Kube, api_client, rejection, wait_for
from support.orgs import condition, membership, organization, wait_org

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples"


ADMIN_GROUP = "kubeadm:cluster-admins"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane with nothing installed: the README's starting point."""
    local = LocalCluster(tmp_path_factory.mktemp("first-hour"))
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def admin_kubeconfig(fresh: LocalCluster) -> Path:
    """The newcomer's kubeconfig: kubeadm's bootstrap binds its admin group to cluster-admin."""
    kubectl(
        fresh,
        "create",
        "clusterrolebinding",
        ADMIN_GROUP,
        "--clusterrole=cluster-admin",
        f"--group={ADMIN_GROUP}",
    )
    return fresh.user_kubeconfig(
        fresh.state_dir / "admin.kubeconfig", "kubernetes-admin", ADMIN_GROUP
    )


def as_admin(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`kubectl ARGS` as the newcomer: the `kubectl` on PATH, else the one built here."""
    return run_kubectl(kubeconfig, *args, check=check)


def run_kubectl(
    kubeconfig: Path, *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [install_kubectl(), *args],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert not check or done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done


def make(kubeconfig: Path, target: str, **environ: str) -> subprocess.Popen[str]:
    """`make <target>` in the checkout, the current cluster being the test's (an exported
    KUBECONFIG, as a kind or k3d user would have)."""
    return subprocess.Popen(
        ["make", "-s", "-C", str(REPO), target],
        env={**os.environ, "KUBECONFIG": str(kubeconfig), **environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: stopped as a whole below
    )


def registered(local: LocalCluster, kind: str) -> list[dict[str, Any]]:
    """The webhooks `make run` registered in the `kind` (validating, mutating) configuration."""
    got = kubectl(
        local, "get", f"{kind}webhookconfiguration", WEBHOOK_CONFIGURATION, "-o=yaml", check=False
    )
    if got.returncode != 0:
        return []
    return list((yaml.safe_load(got.stdout) or {}).get("webhooks") or [])


@pytest.fixture(scope="module")
def running(fresh: LocalCluster, admin_kubeconfig: Path) -> Iterator[Kube]:
    """`make install`, then `make run` (managed webhooks), on free ports as the README says."""
    installed = make(admin_kubeconfig, "install")
    out, _ = installed.communicate(timeout=300)
    assert installed.returncode == 0, out
    assert "customresourcedefinition.apiextensions.k8s.io/organizations.orgkeeper.dev" in out
    assert "validatingadmissionpolicy.admissionregistration.k8s.io/" in out
    assert "condition met" in out  # it waited for the CRDs to be Established

    health = free_port()
    ports = {
        "ORGKEEPER_HEALTH_PORT": str(health),
        "ORGKEEPER_METRICS_PORT": str(free_port()),
        "ORGKEEPER_WEBHOOK_PORT": str(free_port()),
    }
    operator = make(admin_kubeconfig, "run", **ports)
    try:
        wait_for(
            "`make run` to serve /healthz",
            lambda: operator.poll() is None and healthy(health),
            timeout=90,
            details=lambda: f"exit code {operator.poll()}",
        )
        yield Kube(api_client(admin_kubeconfig))
    finally:
        os.killpg(operator.pid, signal.SIGTERM)  # the group `make run` started: make and orgkeeper
        log, _ = operator.communicate(timeout=30)
        assert "Traceback" not in log, log[-3000:]
        assert " DEBUG " not in log and "[DEBUG" not in log, "make run is not verbose"
    # A clean stop: the validating webhooks stay (failing closed), the mutating one goes.
    assert registered(fresh, "validating")
    assert not registered(fresh, "mutating")


def test_the_first_hour(
    fresh: LocalCluster, admin_kubeconfig: Path, running: Kube, tmp_path: Path
) -> None:
    admin, kubeconfig = running, admin_kubeconfig
    assert not any(
        group == "system:masters"
        for group in yaml.safe_load(as_admin(kubeconfig, "auth", "whoami", "-o", "yaml").stdout)[
            "status"
        ]["userInfo"].get("groups", [])
    )

    # What managed mode registered (the README's `make run` paragraph says the same).
    hooks = wait_for(
        "make run to register its webhooks",
        lambda: registered(fresh, "validating") and registered(fresh, "mutating"),
    )
    assert {h["failurePolicy"] for h in hooks} == {"Fail"}
    assert {h["timeoutSeconds"] for h in hooks} == {30}
    assert all(h["clientConfig"]["url"].startswith("https://0.0.0.0:") for h in hooks)
    # New Memberships, Licenses and Organizations get their labels (the shard slot among them).
    mutating = registered(fresh, "mutating")
    assert {(h["failurePolicy"], h["timeoutSeconds"]) for h in mutating} == {("Fail", 30)}
    assert len(mutating) == 3

    # Sign-up: the README's binding, then a stranger signs up with `kubectl create`; `kubectl
    # apply` needs `get` or `patch`, which the creator role doesn't grant.
    as_admin(
        kubeconfig,
        "create",
        "clusterrolebinding",
        "orgkeeper-sign-up",
        "--clusterrole=orgkeeper-organization-creator",
        "--group=system:authenticated",
    )
    newcomer = "newcomer@first.example"
    theirs = fresh.user_kubeconfig(tmp_path / "newcomer.kubeconfig", newcomer)
    org_yaml = tmp_path / "org.yaml"
    org_yaml.write_text(yaml.safe_dump(organization("first", newcomer, plan="Free")))
    applied = run_kubectl(theirs, "apply", "-f", str(org_yaml), check=False)
    assert applied.returncode != 0 and "forbidden" in applied.stderr, applied.stderr
    created = run_kubectl(theirs, "create", "-f", str(org_yaml))
    assert "organization.orgkeeper.dev/first created" in created.stdout
    wait_org(admin, "first", timeout=120)
    assert run_kubectl(theirs, "get", "org", "first").returncode == 0  # the Owner sees theirs

    # The samples, in one go, on a fresh cluster.
    as_admin(kubeconfig, "apply", "-f", str(SAMPLES))
    # The sample's namespace, made for the org (labelled), is served as its own, and stays
    # the applier's: no ownerReference.
    org = wait_org(admin, "acme", timeout=120)
    assert org["status"]["owner"] == "owner@acme.example"
    assert org["status"]["namespace"] == "org-acme"
    assert not admin.core.read_namespace("org-acme").metadata.owner_references
    wait_for(
        "alice bound",
        lambda: (
            (admin.get("memberships", "alice", "org-acme").get("status") or {}).get(
                "effectiveTeams"
            )
            == ["organization-admin", "analytics-viewer"]
        ),
    )

    described = as_admin(kubeconfig, "describe", "org", "acme")
    assert "Ready" in described.stdout and "owner@acme.example" in described.stdout

    listed = as_admin(kubeconfig, "get", "orgkeeper", "-A")
    for shown in ("organization.orgkeeper.dev/acme", "membership.orgkeeper.dev/alice"):
        assert shown in listed.stdout, listed.stdout
    assert "license.orgkeeper.dev/gateway-contract-2026" in listed.stdout

    members = as_admin(kubeconfig, "get", "mem", "-n", "org-acme")
    (header, *rows) = members.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "EMAIL", "TEAMS", "STATE"], header
    (alice,) = [row for row in rows if row.startswith("alice ")]
    assert '["organization-admin","analytics-viewer"]' in alice, alice  # spec.teams
    wide = as_admin(kubeconfig, "get", "org", "-o", "wide").stdout.splitlines()[0]
    assert "CONTROL PLANES" in wide and "BILLING" in wide, wide
    assert "EFFECTIVE TEAMS" in as_admin(kubeconfig, "get", "mem", "-A", "-o", "wide").stdout

    # The CLI as kubectl: --kubeconfig and --context pick the cluster (KUBECONFIG points nowhere).
    chosen = ("--kubeconfig", str(kubeconfig), "--context", "orgkeeper-local")
    nowhere = tmp_path / "absent"
    switcher = orgkeeper(
        fresh, "orgs", "--email", "alice@acme.example", *chosen, kubeconfig=nowhere
    )
    assert switcher.returncode == 0, switcher.stderr
    assert "acme" in switcher.stdout and "eu" in switcher.stdout
    status = orgkeeper(fresh, "status", "acme", *chosen, kubeconfig=nowhere)
    assert status.returncode == 0, status.stderr
    assert "owner@acme.example" in status.stdout


def test_a_bad_field_is_refused_naming_it(
    admin_kubeconfig: Path, running: Kube, tmp_path: Path
) -> None:
    bad = tmp_path / "org.yaml"
    bad.write_text(yaml.safe_dump(organization("typo", "owner-at-typo.example")))
    refused = as_admin(admin_kubeconfig, "apply", "-f", str(bad), check=False)
    assert refused.returncode != 0
    assert "spec.owner" in refused.stderr
    assert "must be an e-mail address such as owner@example.com" in refused.stderr, refused.stderr
    # The positive control: the same with a real e-mail goes in.
    bad.write_text(yaml.safe_dump(organization("typo", "owner@typo.example")))
    as_admin(admin_kubeconfig, "apply", "-f", str(bad))


def test_a_membership_outside_an_org_namespace_is_refused(running: Kube) -> None:
    admin = running
    status, message = rejection(
        lambda: admin.create("memberships", membership("bob", "bob@acme.example"), "default")
    )
    assert status == 422
    assert "denied request: metadata.namespace: a Membership belongs in the namespace" in message
    assert "default is not one; create it in org-<name>" in message


def test_a_membership_for_an_org_not_yet_created_is_pending(running: Kube) -> None:
    admin = running
    admin.core.create_namespace({"metadata": {"name": "org-later"}})
    admin.create(
        "memberships", membership("carol", "carol@later.example", "portal-admin"), "org-later"
    )
    found = wait_for(
        "carol Pending",
        lambda: (
            (m := admin.get("memberships", "carol", "org-later"))
            and (m.get("status") or {}).get("state") == "Pending"
            and m
        ),
    )
    ready = condition(found, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "OrganizationNotFound")
    assert "takes effect once that Organization is created" in ready["message"]


def test_an_unknown_org_in_the_cli_is_one_line_and_exit_1(
    fresh: LocalCluster, admin_kubeconfig: Path, running: Kube
) -> None:
    result = orgkeeper(fresh, "status", "nosuch", kubeconfig=admin_kubeconfig)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "nosuch" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
