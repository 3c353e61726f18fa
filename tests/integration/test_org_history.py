"""History where its readers are (issue 25, review 2026-12-07 L1 and L2).

Events about an Organization are kept in `default` (the API server keeps Events about a
cluster-scoped object only there or in kube-system), where whoever may read Events there reads
every org's: they name no e-mail. The operator records each of them in org-<name> too, where the
Owner and the org's admins read them with their own rights (`orgkeeper status`, `kubectl get
events -n org-<name>`); a stranger reads neither. A namespace admin elsewhere who labels
workloads for orgs learns nothing from the answer about which orgs exist. Everyone acts through
the API server with their own rights (client certificates for the CLI, impersonation else).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from orgkeeper import names
from orgkeeper_dev.localcluster import LocalCluster
from support.cli import orgkeeper
from support.kube import AsUser, Kube, rejection, wait_for
from support.orgs import (
    membership,
    new_ready_org,
    unique_suffix,
    wait_allowed,
    wait_members_bound,
)
from support.users import namespace_admin, user_kubeconfig
from support.workloads import create, read, workload

pytestmark = pytest.mark.usefixtures("operator")

OPERATOR = "orgkeeper.dev/operator"


def org_events(kube: Kube, namespace: str, org: str) -> list[Any]:
    return list(
        kube.core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.kind=Organization,involvedObject.name={org}",
        ).items
    )


def reasons(found: list[Any]) -> set[str]:
    return {e.reason for e in found}


def test_the_owner_reads_their_orgs_history_and_a_stranger_reads_nothing(
    admin: Kube, as_user: AsUser, cluster: LocalCluster, tmp_path: Path, unique: str
) -> None:
    org = f"hist-{unique}"
    owner, alice, stranger = f"owner@{org}.test", f"alice@{org}.test", f"eve@{unique}.test"
    namespace = f"org-{org}"
    new_ready_org(admin, as_user, org)
    admin.create("memberships", membership("alice", alice, "organization-admin"), namespace)
    wait_members_bound(admin, org, {alice: ["organization-admin"]})
    as_user(owner).patch("organizations", org, {"spec": {"owner": alice}})
    wait_for(
        "the transfer to be recorded in the org's namespace",
        lambda: "OwnershipTransferred" in reasons(org_events(admin, namespace, org)),
    )
    wait_allowed(admin, alice, "get", "organizations", name=org)

    # The new Owner, with their own certificate, reads the history in `orgkeeper status`.
    mine = user_kubeconfig(cluster, tmp_path / "alice", alice)
    shown = orgkeeper(cluster, "status", org, "-o", "json", kubeconfig=mine)
    assert shown.returncode == 0, shown.stderr
    history = json.loads(shown.stdout)["recentEvents"]
    told = {row["reason"]: row for row in history if row["object"] == f"organization/{org}"}
    assert {"OwnerMembershipCreated", "OwnershipTransferred"} <= set(told), history
    assert told["OwnershipTransferred"]["message"] == (
        "ownership moved to the new Owner (status.owner names them); the previous Owner stays "
        "an organization-admin"
    )
    screen = orgkeeper(cluster, "status", org, kubeconfig=mine).stdout.splitlines()
    assert f"Recent events (kubectl get events -n {namespace}):" in screen
    assert any(
        line.split()[1:4] == ["Normal", "OwnershipTransferred", f"organization/{org}"]
        for line in screen
    ), screen
    # The previous Owner, an org-admin now, reads them as `kubectl get events -n org-<name>`.
    assert "OwnershipTransferred" in reasons(org_events(as_user(owner), namespace, org))

    # A stranger reads neither the org nor its history.
    theirs = user_kubeconfig(cluster, tmp_path / "stranger", stranger)
    refused = orgkeeper(cluster, "status", org, kubeconfig=theirs)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.startswith("error: the API server refused (403): "), refused.stderr
    status, _ = rejection(lambda: as_user(stranger).core.list_namespaced_event(namespace))
    assert status == 403

    # In `default`, where cluster-wide readers (and kubectl describe org) find them: the same
    # Events, and no Event of the operator's there names anyone's e-mail.
    assert "OwnershipTransferred" in reasons(org_events(admin, "default", org))
    posted = admin.core.list_namespaced_event("default", field_selector=f"source={OPERATOR}")
    assert posted.items
    leaking = [(e.reason, e.message) for e in posted.items if "@" in (e.message or "")]
    assert leaking == []


def test_labelling_workloads_tells_a_stranger_nothing_about_which_orgs_exist(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """L2: the same answer for an org that exists and one that doesn't. The org label is
    refused on a workload outside the org's namespaces (the admission policy
    orgkeeper-workload-organization-label reads only the namespace, never the org), so a
    stranger labelling workloads learns nothing, and no org is woken."""
    real, ghost = f"real-{unique}", f"ghost-{unique_suffix()}"
    mallory, ns = f"mallory@evil-{unique}.test", f"mallory-{unique}"
    new_ready_org(admin, as_user, real)
    namespace_admin(admin, ns, mallory)
    attacker = as_user(mallory)
    answers: dict[str, str] = {}
    for org in (real, ghost):
        body = workload("Deployment", f"p-{org}", org, "data-plane", "mesh")
        body["spec"]["replicas"] = 0
        status, answers[org] = rejection(partial(create, attacker, ns, body))
        assert status == 403, answers[org]
    assert answers[real].replace(real, "ORG") == answers[ghost].replace(ghost, "ORG"), answers
    assert "orgkeeper-workload-organization-label" in answers[real]
    # Positive controls: the stranger may create workloads there (without the label), and the
    # operator serves `real`, counting a data plane where it counts (in org-<name>).
    plain = workload("Deployment", "plain", real, "data-plane", "mesh")
    plain["metadata"]["labels"].pop(names.LABEL_ORGANIZATION)
    plain["spec"]["replicas"] = 0
    create(attacker, ns, plain)
    own = workload("Deployment", "gateway", real, "data-plane", "mesh")
    own["spec"]["replicas"] = 0
    create(admin, f"org-{real}", own)
    wait_for(
        "the real org to count its own data plane",
        lambda: (admin.get("organizations", real).get("status") or {}).get("dataPlanes") == 1,
    )
    assert read(admin, "Deployment", ns, f"p-{real}") is None
    assert read(admin, "Deployment", ns, f"p-{ghost}") is None
