"""A newcomer's first hour, as the README tells it, on a control plane of its own: `make
install`, `make run`, the samples applied in one go, a look around with kubectl and the CLI, and
one mistake of each kind, each answered with a message that says what to do."""

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
from orgkeeper_dev.localcluster import LocalCluster, free_port, healthy, kubectl
from support.cli import orgkeeper
from support.kube import Kube, api_client, rejection, wait_for
from support.orgs import condition, membership, organization, wait_org

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane with nothing installed: the README's starting point."""
    local = LocalCluster(tmp_path_factory.mktemp("first-hour"))
    local.start()
    try:
        yield local
    finally:
        local.stop()


def make(local: LocalCluster, target: str, **environ: str) -> subprocess.Popen[str]:
    """`make <target>` in the checkout, the current cluster being the test's (an exported
    KUBECONFIG, as a kind or k3d user would have)."""
    return subprocess.Popen(
        ["make", "-s", "-C", str(REPO), target],
        env={**os.environ, "KUBECONFIG": str(local.kubeconfig), **environ},
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
def running(fresh: LocalCluster) -> Iterator[Kube]:
    """`make install`, then `make run` (managed webhooks), on free ports as the README says."""
    installed = make(fresh, "install")
    out, _ = installed.communicate(timeout=300)
    assert installed.returncode == 0, out
    assert "customresourcedefinition.apiextensions.k8s.io/organizations.orgkeeper.dev" in out
    assert "validatingadmissionpolicy.admissionregistration.k8s.io/" in out

    health = free_port()
    ports = {
        "ORGKEEPER_HEALTH_PORT": str(health),
        "ORGKEEPER_METRICS_PORT": str(free_port()),
        "ORGKEEPER_WEBHOOK_PORT": str(free_port()),
    }
    operator = make(fresh, "run", **ports)
    try:
        wait_for(
            "`make run` to serve /healthz",
            lambda: operator.poll() is None and healthy(health),
            timeout=90,
            details=lambda: f"exit code {operator.poll()}",
        )
        yield Kube(api_client(fresh.kubeconfig))
    finally:
        os.killpg(operator.pid, signal.SIGTERM)  # the group `make run` started: make and orgkeeper
        log, _ = operator.communicate(timeout=30)
        assert "Traceback" not in log, log[-3000:]
        assert " DEBUG " not in log and "[DEBUG" not in log, "make run is not verbose"
    # A clean stop: the validating webhooks stay (failing closed), the mutating one goes.
    assert registered(fresh, "validating")
    assert not registered(fresh, "mutating")


def test_the_first_hour(fresh: LocalCluster, running: Kube) -> None:
    admin = running

    # What managed mode registered (the README's `make run` paragraph says the same).
    hooks = wait_for(
        "make run to register its webhooks",
        lambda: registered(fresh, "validating") and registered(fresh, "mutating"),
    )
    assert {h["failurePolicy"] for h in hooks} == {"Fail"}
    assert {h["timeoutSeconds"] for h in hooks} == {30}
    assert all(h["clientConfig"]["url"].startswith("https://0.0.0.0:") for h in hooks)
    (mutating,) = registered(fresh, "mutating")
    assert (mutating["failurePolicy"], mutating["timeoutSeconds"]) == ("Fail", 30)

    # The samples, in one go, on a fresh cluster.
    kubectl(fresh, "apply", "-f", str(SAMPLES))
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

    described = kubectl(fresh, "describe", "org", "acme")
    assert "Ready" in described.stdout and "owner@acme.example" in described.stdout

    listed = kubectl(fresh, "get", "orgkeeper", "-A")
    for shown in ("organization.orgkeeper.dev/acme", "membership.orgkeeper.dev/alice"):
        assert shown in listed.stdout, listed.stdout
    assert "license.orgkeeper.dev/gateway-contract-2026" in listed.stdout

    members = kubectl(fresh, "get", "mem", "-n", "org-acme")
    (header, *rows) = members.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "EMAIL", "TEAMS", "STATE"], header
    (alice,) = [row for row in rows if row.startswith("alice ")]
    assert '["organization-admin","analytics-viewer"]' in alice, alice  # spec.teams
    wide = kubectl(fresh, "get", "org", "-o", "wide").stdout.splitlines()[0]
    assert "CONTROL PLANES" in wide and "BILLING" in wide, wide
    assert "EFFECTIVE TEAMS" in kubectl(fresh, "get", "mem", "-A", "-o", "wide").stdout

    switcher = orgkeeper(fresh, "orgs", "--email", "alice@acme.example")
    assert switcher.returncode == 0, switcher.stderr
    assert "acme" in switcher.stdout and "eu" in switcher.stdout
    status = orgkeeper(fresh, "status", "acme")
    assert status.returncode == 0, status.stderr
    assert "owner@acme.example" in status.stdout


def test_a_bad_field_is_refused_naming_it(
    fresh: LocalCluster, running: Kube, tmp_path: Path
) -> None:
    bad = tmp_path / "org.yaml"
    bad.write_text(yaml.safe_dump(organization("typo", "owner-at-typo.example")))
    refused = kubectl(fresh, "apply", "-f", str(bad), check=False)
    assert refused.returncode != 0
    assert "spec.owner" in refused.stderr
    assert "must be an e-mail address such as owner@example.com" in refused.stderr, refused.stderr
    # The positive control: the same with a real e-mail goes in.
    bad.write_text(yaml.safe_dump(organization("typo", "owner@typo.example")))
    kubectl(fresh, "apply", "-f", str(bad))


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
    fresh: LocalCluster, running: Kube
) -> None:
    result = orgkeeper(fresh, "status", "nosuch")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "nosuch" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
