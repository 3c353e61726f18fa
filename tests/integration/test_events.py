"""The operator's Events show where `kubectl describe` looks: an Organization's under
`kubectl describe org`, a License's under `kubectl describe lic`; each transition once."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from orgkeeper import names
from orgkeeper_dev.localcluster import LocalCluster, kubectl
from support.kube import Kube, wait_for
from support.orgs import membership, organization, wait_members_bound, wait_org
from support.workloads import create, workload

pytestmark = pytest.mark.usefixtures("operator")

PRODUCT = "gateway-enterprise"


def org_events(admin: Kube, name: str) -> list[Any]:
    """The operator's Events about the Organization (kept in `default`, cluster-scoped)."""
    return [
        e
        for e in admin.core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={name}"
        ).items
        if e.reporting_component == "orgkeeper.dev/operator"
    ]


def phase(admin: Kube, name: str) -> str | None:
    return (admin.get("organizations", name).get("status") or {}).get("phase")


def test_describe_shows_an_orgs_and_a_licenses_events_each_transition_once(
    cluster: LocalCluster, admin: Kube, unique: str
) -> None:
    name = f"told-{unique}"
    owner, alice = f"owner@{name}.test", f"alice@{name}.test"
    namespace = names.org_namespace(name)
    admin.create("organizations", organization(name, owner))
    wait_org(admin, name)
    admin.create("memberships", membership("alice", alice, "analytics-viewer"), namespace)
    # Members enough that their RoleBindings, removed and restored, wake the org while it
    # reconciles: the next reconcile may read the org from before the last status write.
    viewers = {f"m{i}@{name}.test": ["analytics-viewer"] for i in range(15)}
    for i, email in enumerate(viewers):
        admin.create("memberships", membership(f"m{i}", email, "analytics-viewer"), namespace)
    bound = {owner: ["organization-admin"], alice: ["analytics-viewer"], **viewers}
    wait_members_bound(admin, name, bound)
    create(admin, namespace, workload("Deployment", "edge", name, "data-plane", PRODUCT))

    admin.patch("organizations", name, {"spec": {"state": "Deactivated"}})
    wait_for("the org to be deactivated", lambda: phase(admin, name) == "Deactivated")
    admin.patch("organizations", name, {"spec": {"state": "Active"}})
    wait_for("the org to be active again", lambda: phase(admin, name) == "Active")
    # One more change, reconciled: any Event told twice would be there by now.
    admin.patch("organizations", name, {"spec": {"displayName": "Told again"}})
    wait_org(admin, name)

    events = org_events(admin, name)
    told = Counter(e.reason for e in events)
    for reason in ("OwnerMembershipCreated", "Deactivating", "Deactivated", "Reactivated"):
        assert told[reason] == 1, f"{reason} posted {told[reason]} times: {told}"
    for event in events:
        assert event.involved_object.namespace is None  # cluster-scoped: describe matches ""
        assert event.involved_object.kind == "Organization"
        assert event.reporting_instance  # the operator's identity
        assert event.action and event.action != "Action?"
    # kopf posts nothing of its own (its Events would name `default` as the org's namespace).
    assert all(e.involved_object.namespace is None for e in org_events(admin, name))

    described = kubectl(cluster, "describe", "org", name).stdout
    events_section = described.split("Events:", 1)[1]
    for reason in ("OwnerMembershipCreated", "Deactivating", "Deactivated", "Reactivated"):
        assert reason in events_section, described
    assert "orgkeeper.dev/operator" in events_section
    assert "<none>" not in events_section

    # LicensePropagated goes on the License whose payload reached the data plane.
    def license_described() -> str | None:
        text = kubectl(cluster, "describe", "lic", "-n", namespace, PRODUCT).stdout
        return text if "LicensePropagated" in text.split("Events:", 1)[1] else None

    described_license = wait_for("LicensePropagated under kubectl describe lic", license_described)
    assert "orgkeeper.dev/operator" in described_license
    # Read again now that it is posted: the org's own Events don't show it.
    described = kubectl(cluster, "describe", "org", name).stdout
    assert "LicensePropagated" not in described.split("Events:", 1)[1]
