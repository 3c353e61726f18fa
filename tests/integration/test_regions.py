"""An operator with `--region eu` and no webhooks: geos share a cluster, rules become conditions.
Its periodic check is 10 minutes away: whatever a test sees happen, an event made happen."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from orgkeeper import names
from orgkeeper_dev.localcluster import LocalCluster, install_orgkeeper
from support.kube import Kube, api_client, wait_for
from support.licenses import secret_document
from support.operator import OperatorProcess
from support.orgs import (
    condition,
    is_condition,
    membership,
    organization,
    wait_members_bound,
    wait_org,
)
from support.workloads import create, workload


@pytest.fixture(scope="module")
def eu_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kube, OperatorProcess]]:
    """A control plane of its own whose only operator serves region eu."""
    local = LocalCluster(tmp_path_factory.mktemp("geo-cluster"))
    local.start()
    try:
        install_orgkeeper(local)
        log: Path = tmp_path_factory.mktemp("geo-operator") / "operator.log"
        process = OperatorProcess(
            local, log, extra_args=("--region=eu",), webhook_mode="off", check_interval="10m"
        ).start()
        try:
            yield Kube(api_client(local.kubeconfig)), process
        finally:
            process.stop()
    finally:
        local.stop()


def test_an_eu_operator_ignores_a_us_org(eu_only: tuple[Kube, OperatorProcess]) -> None:
    admin, _ = eu_only
    admin.create("organizations", organization("stateside", "owner@stateside.test", region="us"))
    admin.create("organizations", organization("europa", "owner@europa.test", region="eu"))

    wait_org(admin, "europa")
    # The eu org was created after the us one and is fully reconciled: the us one was seen
    # and passed over, not merely not reached yet.
    assert "status" not in admin.get("organizations", "stateside")
    assert admin.core.list_namespace(field_selector="metadata.name=org-stateside").items == []


def test_without_webhooks_the_rules_show_as_conditions(
    eu_only: tuple[Kube, OperatorProcess],
) -> None:
    """With no admission webhooks, what would have been refused is reported, not applied."""
    admin, _ = eu_only
    owner, alice, victor = "owner@quiet.test", "alice@quiet.test", "victor@quiet.test"
    admin.create("organizations", organization("quiet", owner, region="eu"))
    wait_org(admin, "quiet")
    admin.create("memberships", membership("alice", alice, "organization-admin"), "org-quiet")
    admin.create("memberships", membership("victor", victor, "analytics-viewer"), "org-quiet")
    wait_members_bound(
        admin, "quiet", {alice: ["organization-admin"], victor: ["analytics-viewer"]}
    )

    admin.patch("organizations", "quiet", {"spec": {"owner": victor}})
    org = wait_org(admin, "quiet", "OwnerValid", "False", "TransferRejected")
    assert org["status"]["owner"] == owner
    owner_valid = condition(org, "OwnerValid")
    assert owner_valid is not None, f"no OwnerValid condition in {org['status']}"
    assert "add organization-admin to their Membership first" in owner_valid["message"]
    assert is_condition(org, "Ready", "False", "TransferRejected")

    admin.patch("organizations", "quiet", {"spec": {"owner": owner}})
    wait_org(admin, "quiet")
    (owner_membership,) = [
        m for m in admin.list("memberships", "org-quiet") if m["spec"]["email"] == owner
    ]
    admin.delete("memberships", owner_membership["metadata"]["name"], "org-quiet")
    org = wait_org(admin, "quiet", "OwnerValid", "False", "OwnerLeft")
    owner_valid = condition(org, "OwnerValid")
    assert owner_valid is not None, f"no OwnerValid condition in {org['status']}"
    assert "transfer ownership by setting spec.owner" in owner_valid["message"]

    admin.patch("organizations", "quiet", {"spec": {"owner": alice}})
    org = wait_org(admin, "quiet")
    assert org["status"]["owner"] == alice


def test_a_data_plane_that_leaves_its_org_loses_the_copy_at_once(
    eu_only: tuple[Kube, OperatorProcess],
) -> None:
    """kopf filters by label on the new body only: the org the workload left is woken all
    the same, not at its next periodic check."""
    admin, _ = eu_only
    admin.create("organizations", organization("leaver", "owner@leaver.test", region="eu"))
    wait_org(admin, "leaver")
    edge = "edge-leaver"
    labels = {names.LABEL_ORGANIZATION: "leaver"}
    admin.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=edge, labels=labels))
    )
    create(admin, edge, workload("Deployment", "gateway", "leaver", "data-plane", "mesh"))

    def holders() -> list[str]:
        status = admin.get("licenses", "mesh", "org-leaver").get("status") or {}
        return list(status.get("propagatedTo", {}).get("namespaces", []))

    wait_for("the copy", lambda: secret_document(admin, edge, "orgkeeper-license-mesh"))
    wait_for("the License to record the copy", lambda: holders() == [edge])

    admin.apps.patch_namespaced_deployment(
        "gateway", edge, {"metadata": {"labels": {names.LABEL_ORGANIZATION: None}}}
    )
    wait_for(
        "the copy to go",
        lambda: secret_document(admin, edge, "orgkeeper-license-mesh") is None,
    )
    wait_for("the License to drop the copy", lambda: holders() == [])


def namespace(admin: Kube, name: str, **labels: str) -> None:
    admin.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels or None))
    )


def state(admin: Kube, name: str, namespace: str) -> str | None:
    return (admin.get("memberships", name, namespace).get("status") or {}).get("state")


def test_an_eu_operator_marks_pending_only_where_it_knows_the_region(
    eu_only: tuple[Kube, OperatorProcess],
) -> None:
    """L8: with no Organization <name>, the Memberships of org-<name> wait as Pending, marked
    by the operator of the namespace's region; an eu operator leaves one whose region it
    doesn't know (it may be another region's, its org not yet in the cache)."""
    admin, _ = eu_only
    namespace(admin, "org-anon")
    admin.create("memberships", membership("kim", "kim@anon.test", "portal-admin"), "org-anon")
    namespace(admin, "org-euro-later", **{names.LABEL_REGION: "eu"})
    admin.create(
        "memberships", membership("lee", "lee@euro.test", "portal-admin"), "org-euro-later"
    )
    wait_for("lee Pending", lambda: state(admin, "lee", "org-euro-later") == "Pending")
    # org-anon sorts first and its Membership came first: looked at, and left alone.
    assert state(admin, "kim", "org-anon") is None


def test_an_eu_operator_marks_pending_in_a_namespace_of_an_org_it_served(
    eu_only: tuple[Kube, OperatorProcess],
) -> None:
    """A namespace made ahead (for its Owner) without a region label: the eu operator served
    its org, so once the org is deleted it knows the namespace was eu's, and takes the members'
    roles away."""
    admin, _ = eu_only
    name, owner = "served", "owner@served.test"
    made_for_owner = {
        names.LABEL_ORGANIZATION: name,
        names.LABEL_EMAIL_HASH: names.email_hash(owner),
    }
    namespace(admin, f"org-{name}", **made_for_owner)
    admin.create("organizations", organization(name, owner, region="eu"))
    wait_org(admin, name)
    wait_members_bound(admin, name, {owner: ["organization-admin"]})
    admin.delete("organizations", name)
    wait_for(
        "the Owner's Membership Pending, without RoleBindings",
        lambda: (
            all(
                state(admin, m["metadata"]["name"], f"org-{name}") == "Pending"
                for m in admin.list("memberships", f"org-{name}")
            )
            and not admin.rbac.list_namespaced_role_binding(f"org-{name}").items
        ),
    )


def test_an_eu_operators_kopf_lists_and_watches_eu_organizations_only(
    eu_only: tuple[Kube, OperatorProcess],
) -> None:
    """kopf's Organizations are selected by the API server (spec.region, a selectable field of
    the CRD); the informer admission reads keeps every region's (it answers for all of them)."""
    _, process = eu_only
    selected: dict[str, set[str]] = {}
    for line in process.cluster.audit_log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line the API server is writing right now
        ref = entry.get("objectRef") or {}
        if (
            str(entry.get("userAgent", "")).startswith("orgkeeper/")
            and ref.get("resource") == "organizations"
            and entry.get("verb") in ("list", "watch")
        ):
            query = parse_qs(urlsplit(entry["requestURI"]).query)
            for selector in query.get("fieldSelector", []):
                selected.setdefault(selector, set()).add(entry["verb"])
    assert selected == {f"{names.REGION_FIELD}=eu": {"list", "watch"}}
