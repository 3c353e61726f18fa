"""Sharing a cluster: a `--region us` and a `--region eu` operator side by side, each with
leader election, as the operator's ServiceAccount, on a control plane of their own.

Each converges its own region's orgs and never writes to the other region's objects (the
audit log tells them apart by User-Agent); one webhook configuration, whose URL reaches the us
operator, checks both regions' objects.
"""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from orgkeeper import names
from orgkeeper_dev.localcluster import LocalCluster, install_orgkeeper, kubectl
from support import identity
from support.kube import Kube, api_client, rejection, wait_for
from support.operator import OperatorProcess
from support.orgs import membership, organization, wait_members_bound, wait_org, wait_owner_rights
from support.replicas import NAMESPACE, WRITES, completed_requests, describe

REGIONS = ("us", "eu")
# Names that contain no other one: an org's name shows in every object written for it.
ORGS = {"us": "stateside", "eu": "europa"}


@dataclass
class Shared:
    cluster: LocalCluster
    admin: Kube
    operators: dict[str, OperatorProcess]


def leads(admin: Kube, lease: str, identity: str) -> bool:
    try:
        found = client.CoordinationV1Api(admin.api).read_namespaced_lease(lease, NAMESPACE)
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return bool(found.spec.holder_identity == identity)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    local = LocalCluster(tmp_path_factory.mktemp("shared-cluster"))
    local.start()
    try:
        install_orgkeeper(local)
        identity.apply(local, identity.of_kinds(identity.render(), identity.IDENTITY_KINDS))
        admin = Kube(api_client(local.kubeconfig))
        directory = tmp_path_factory.mktemp("regional-operators")
        account = identity.issue_token(local, admin, directory / "kubeconfig")
        operators = {
            region: OperatorProcess(
                local,
                directory / f"{region}.log",
                webhook_mode="serve",
                kubeconfig=account.kubeconfig,
                extra_args=(
                    f"--region={region}",
                    "--leader-elect",
                    f"--identity=op-{region}",
                    "--webhook-host=127.0.0.1",
                ),
            )
            for region in REGIONS
        }
        # manifests/' one webhook configuration pair; its Service made the us operator's URL.
        port = operators["us"].webhook_port
        identity.apply(local, identity.loopback_webhooks(identity.render(), port))
        try:
            for region, process in operators.items():
                process.start()
                lease, me = f"orgkeeper-{region}", f"op-{region}"
                wait_for(f"{me} to lead its region", partial(leads, admin, lease, me))
            wait_for(
                "the shared CA in every webhook",
                lambda: all(all(h) for h in identity.ca_bundles(admin).values()),
            )
            yield Shared(local, admin, operators)
        finally:
            for process in operators.values():
                process.stop()
    finally:
        local.stop()


def orgkeeper_metadata(org: dict[str, Any]) -> set[str]:
    """Finalizers and annotation keys under orgkeeper.dev (kopf's state included)."""
    meta = org["metadata"]
    keys = set(meta.get("finalizers") or []) | set(meta.get("annotations") or {})
    return {key for key in keys if "orgkeeper.dev/" in key}


def writes_by(shared: Shared, region: str) -> list[dict[str, Any]]:
    agent = f"(op-{region})"
    return [
        entry
        for entry in completed_requests(shared.cluster.audit_log)
        if entry["verb"] in WRITES and str(entry.get("userAgent", "")).endswith(agent)
    ]


def concerns(entry: dict[str, Any], organization: str) -> bool:
    """Whether a request touched an object of the org: the org itself, its namespace (or
    anything in it), its owner ClusterRoleBinding and ClusterRole."""
    ref = entry.get("objectRef") or {}
    namespace = names.org_namespace(organization)
    return ref.get("namespace") == namespace or ref.get("name") in (
        organization,
        namespace,
        names.owner_role(organization),
    )


def test_each_operator_converges_its_region_and_never_writes_to_the_other(
    shared: Shared,
) -> None:
    admin = shared.admin
    for region, name in ORGS.items():
        admin.create("organizations", organization(name, f"owner@{name}.test", region=region))
    for name in ORGS.values():
        namespace = names.org_namespace(name)
        wait_org(admin, name)
        admin.create(
            "memberships", membership("dev", f"dev@{name}.test", "analytics-viewer"), namespace
        )
        wait_members_bound(
            admin,
            name,
            {
                f"owner@{name}.test": ["organization-admin"],
                f"dev@{name}.test": ["analytics-viewer"],
            },
        )
    # A change to each org, seen by both operators' watches, handled by its own only.
    for name in ORGS.values():
        admin.patch("organizations", name, {"spec": {"displayName": f"{name} renamed"}})
    for name in ORGS.values():
        wait_org(admin, name)

    for region, name in ORGS.items():
        org = admin.get("organizations", name)
        (other,) = [r for r in REGIONS if r != region]
        kept = orgkeeper_metadata(org)
        assert f"{region}.orgkeeper.dev/finalizer" in kept
        # Nothing of the other region's operator, nor of an all-regions one.
        assert not {k for k in kept if not k.startswith(f"{region}.orgkeeper.dev/")}, kept
        assert not [k for k in kept if k.startswith(f"{other}.")]

    for region in REGIONS:
        (other,) = [r for r in REGIONS if r != region]
        writes = writes_by(shared, region)
        assert any(concerns(e, ORGS[region]) for e in writes), f"op-{region} wrote nothing"
        trespass = [describe(e) for e in writes if concerns(e, ORGS[other])]
        assert trespass == [], f"op-{region} wrote to region {other}'s objects: {trespass}"
    # Events (in `default` for an org) name the org they are about.
    for event in admin.core.list_namespaced_event("default").items:
        source = event.reporting_instance
        if source in {f"op-{r}" for r in REGIONS}:
            assert event.involved_object.name == ORGS[source.removeprefix("op-")], event


def test_admission_checks_both_regions_through_one_webhook(shared: Shared) -> None:
    """The webhook URL reaches the us operator only: it refuses for eu's objects too."""
    admin = shared.admin
    for region in REGIONS:
        name = f"guarded-{region}"
        owner, dev = f"owner@{name}.test", f"dev@{name}.test"
        namespace = names.org_namespace(name)
        admin.create("organizations", organization(name, owner, region=region))
        wait_org(admin, name)
        admin.create("memberships", membership("dev", dev, "analytics-viewer"), namespace)
        wait_members_bound(admin, name, {owner: ["organization-admin"], dev: ["analytics-viewer"]})
        wait_owner_rights(admin, name, owner)
        as_owner = Kube(api_client(shared.cluster.kubeconfig, user=owner))

        def transfer_refused() -> str | None:
            status, message = rejection(
                lambda: as_owner.patch("organizations", name, {"spec": {"owner": dev}})  # noqa: B023
            )
            assert status == 403, message
            # The us operator's cache takes eu's Memberships in from its own watch: until it
            # holds dev, the refusal says dev has no Membership.
            return message if "not a member of the organization-admin team" in message else None

        wait_for(
            f"the webhook to refuse a transfer to {dev}, an analytics-viewer", transfer_refused
        )
        status, message = rejection(
            lambda: as_owner.delete("memberships", names.owner_membership(owner), namespace)  # noqa: B023
        )
        assert status == 403, message
        assert f"{owner} is the Owner of this organization" in message
        # Positive controls: the Owner's legitimate writes go through the same webhook.
        as_owner.patch("organizations", name, {"spec": {"displayName": f"{region} renamed"}})
        as_owner.delete("memberships", "dev", namespace)
        assert admin.list("memberships", namespace) != []


def test_an_org_left_with_the_all_regions_finalizer_is_still_deleted(shared: Shared) -> None:
    """Switching from one all-regions operator to regional ones: an org keeps the old
    operator's finalizer, which the regional operator drops when the org is deleted."""
    admin = shared.admin
    name = "switched"
    body = organization(name, f"owner@{name}.test", region="us")
    body["metadata"]["finalizers"] = [names.finalizer(None)]
    admin.create("organizations", body)
    wait_org(admin, name)
    assert admin.get("organizations", name)["metadata"]["finalizers"] == [
        names.finalizer(None),
        names.finalizer("us"),
    ]
    admin.delete("organizations", name)

    def gone() -> bool:
        return not [o for o in admin.list("organizations") if o["metadata"]["name"] == name]

    wait_for(f"Organization {name} to be deleted", gone)
    # The eu operator took no part.
    assert not [describe(e) for e in writes_by(shared, "eu") if concerns(e, name)]


def test_every_regional_operator_serves_under_the_one_ca_the_webhooks_trust(
    shared: Shared,
) -> None:
    """So a Service may send admission to any region's Pod: they share one CA."""
    (bundle,) = {h for hooks in identity.ca_bundles(shared.admin).values() for h in hooks}
    trusted = ssl.create_default_context(cadata=base64.b64decode(str(bundle)).decode())
    for process in shared.operators.values():
        with (
            socket.create_connection(("127.0.0.1", process.webhook_port), timeout=5) as raw,
            trusted.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() is not None


def test_an_org_of_a_region_no_operator_serves_is_told_so(shared: Shared, tmp_path: Path) -> None:
    """U1: au has no operator here: its sign-up is admitted with a warning, and its status says
    why nothing happens; eu (its Lease live) gets no warning."""
    admin = shared.admin
    for region, name in (("au", "outback"), ("eu", "served-eu")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(organization(name, f"owner@{name}.test", region=region)))
        created = kubectl(shared.cluster, "create", "-f", str(path))
        warned = (
            "Warning: spec.region: no orgkeeper operator serves region au now" in created.stderr
        )
        assert warned is (region == "au"), created.stderr
    wait_org(admin, "served-eu")

    def told() -> dict[str, Any] | None:
        conditions = (admin.get("organizations", "outback").get("status") or {}).get("conditions")
        return conditions[0] if conditions else None

    ready = wait_for("outback's status to say its region is not served", told)
    assert (ready["status"], ready["reason"]) == ("False", "RegionNotServed")
    assert "--region=au" in ready["message"]
    assert "phase" not in admin.get("organizations", "outback")["status"]
