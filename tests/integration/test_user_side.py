"""The user's side: the org switcher, `status`, clear errors, /metrics, GitOps health."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml
from kubernetes import client

from orgkeeper import names
from orgkeeper_dev.localcluster import LocalCluster, kubectl
from support import metrics as scraping
from support.cli import orgkeeper
from support.kube import AsUser, Kube, wait_for
from support.licenses import license_body, secret_body
from support.operator import OperatorProcess
from support.orgs import membership, organization, wait_members_bound, wait_org
from support.workloads import create, workload

pytestmark = pytest.mark.usefixtures("operator")

REPO = Path(__file__).resolve().parents[2]
HEALTH_LUA = (REPO / "manifests" / "gitops" / "health.lua").read_text()


def test_the_org_switcher_lists_exactly_the_orgs_of_an_email(
    admin: Kube, as_user: AsUser, cluster: LocalCluster, unique: str
) -> None:
    carol = f"carol@{unique}.test"
    orgs = {f"north-{unique}": "portal-admin", f"south-{unique}": "analytics-viewer"}
    for name, team in orgs.items():
        as_user(f"owner@{name}.test").create(
            "organizations", organization(name, f"owner@{name}.test", plan="Plus", region="sg")
        )
        wait_org(admin, name)
        admin.create("memberships", membership("carol", carol, team), f"org-{name}")
        wait_members_bound(admin, name, {carol: [team]})
    as_user(f"owner@other-{unique}.test").create(
        "organizations", organization(f"other-{unique}", f"owner@other-{unique}.test", plan="Plus")
    )
    admin.patch("organizations", f"south-{unique}", {"spec": {"state": "Deactivated"}})
    wait_org(admin, f"south-{unique}", "Deactivated", "True", timeout=60)

    listed = orgkeeper(cluster, "orgs", "--email", carol.upper(), "-o", "json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["organization"], r["region"], r["state"], r["deactivated"]) for r in rows] == [
        (f"north-{unique}", "sg", "Active", False),
        (f"south-{unique}", "sg", "Deactivated", True),
    ]
    assert (
        rows[0]["teams"] == ["portal-admin"] and rows[0]["displayName"] == f"North-{unique}".title()
    )

    screen = orgkeeper(cluster, "orgs", "--email", carol)
    lines = screen.stdout.splitlines()
    assert lines[0].split() == [
        "ORGANIZATION",
        "DISPLAY",
        "NAME",
        "REGION",
        "STATE",
        "OWNER",
        "TEAMS",
        "SSO",
        "ONLY",
    ]
    assert any(f"north-{unique}" in line and "portal-admin" in line for line in lines)
    assert any(f"south-{unique}" in line and "Deactivated" in line for line in lines)

    nobody = orgkeeper(cluster, "orgs", "--email", f"nobody@{unique}.test")
    assert (
        nobody.returncode == 0
        and nobody.stdout.strip() == f"nobody@{unique}.test is not a member of any organization"
    )


def test_status_shows_an_org_and_the_effects_of_its_deactivation(
    admin: Kube, as_user: AsUser, cluster: LocalCluster, unique: str
) -> None:
    name = f"shown-{unique}"
    as_user(f"owner@{name}.test").create(
        "organizations", organization(name, f"owner@{name}.test", plan="Plus")
    )
    wait_org(admin, name)
    wait_for(
        "licenses to be issued",
        lambda: all(
            (lic.get("status") or {}).get("active") for lic in admin.list("licenses", f"org-{name}")
        ),
    )

    before = orgkeeper(cluster, "status", name)
    assert before.returncode == 0, before.stderr
    assert "Phase:    Active" in before.stdout
    assert "Billing:  Trial" in before.stdout
    assert "Trial:    30 day(s) of credits left" in before.stdout
    assert "Members:  1 (1 admin(s))" in before.stdout
    assert "gateway-enterprise" in before.stdout and "Provisioned" in before.stdout

    admin.patch("organizations", name, {"spec": {"state": "Deactivated"}})
    wait_org(admin, name, "Deactivated", "True", timeout=60)
    after = orgkeeper(cluster, "status", name, "-o", "yaml")
    summary = yaml.safe_load(after.stdout)
    assert summary["phase"] == "Deactivated"
    assert summary["billing"] == "Stopped" and summary["subscriptions"] == []
    assert summary["deactivation"]["reason"] == "Requested"
    assert summary["ownerEmailLocked"] is True
    assert {"type": "Deactivated", "status": "True", "reason": "Requested"}.items() <= next(
        c for c in summary["conditions"] if c["type"] == "Deactivated"
    ).items()
    screen = orgkeeper(cluster, "status", name).stdout
    assert "Deactivated: Requested at" in screen and "owner e-mail locked" in screen


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "no-such-org"], "error: organization no-such-org not found"),
        (
            ["activity", "login", "--org", "no-such-org", "--email", "a@b.test"],
            "error: organization no-such-org not found",
        ),
        (
            ["activity", "requests", "--org", "x", "--count", "many"],
            "error: argument --count: 'many' is not a positive whole number "
            "(see `orgkeeper activity requests --help`)",
        ),
        (
            ["activity", "login", "--org", "x"],
            "error: the following arguments are required: --email "
            "(see `orgkeeper activity login --help`)",
        ),
    ],
    ids=["unknown-org", "login-unknown-org", "bad-count", "missing-email"],
)
def test_bad_arguments_exit_non_zero_with_one_clear_line(
    cluster: LocalCluster, args: list[str], message: str
) -> None:
    result = orgkeeper(cluster, *args)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [message]


def test_metrics_expose_reconciles_phases_license_expiry_and_propagation_lag(
    admin: Kube, as_user: AsUser, operator: OperatorProcess, metrics_reader: str, unique: str
) -> None:
    def metrics(operator: OperatorProcess) -> dict[str, float]:
        status, text = scraping.scrape(operator.metrics_port, metrics_reader)
        assert status == 200, text
        return scraping.samples(text)

    name = f"metered-{unique}"
    as_user(f"owner@{name}.test").create(
        "organizations", organization(name, f"owner@{name}.test", plan="Plus")
    )
    wait_org(admin, name)
    labels = {names.LABEL_ORGANIZATION: name}  # given to the org by the admin
    admin.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=f"edge-{unique}", labels=labels))
    )
    create(admin, f"edge-{unique}", workload("Deployment", "dp", name, "data-plane", "mesh"))
    wait_for(
        "a delivery to be measured",
        lambda: (
            metrics(operator).get(
                'orgkeeper_license_propagation_lag_seconds_count{product="mesh"}', 0
            )
            > 0
        ),
    )

    samples = metrics(operator)
    assert samples['orgkeeper_reconciles_total{kind="Organization",result="success"}'] > 0
    assert samples['orgkeeper_reconciles_total{kind="License",result="success"}'] > 0
    assert samples['orgkeeper_reconcile_duration_seconds_count{kind="Organization"}'] > 0
    assert samples['orgkeeper_organizations{phase="Active"}'] >= 1
    expiry = samples[
        f'orgkeeper_license_expiry_seconds{{license="mesh",organization="{name}",product="mesh"}}'
    ]
    assert 364 * 86400 < expiry <= 365 * 86400
    lag_sum = samples['orgkeeper_license_propagation_lag_seconds_sum{product="mesh"}']
    lag_count = samples['orgkeeper_license_propagation_lag_seconds_count{product="mesh"}']
    assert 0 < lag_sum / lag_count < 30


def applied(obj: dict[str, Any]) -> dict[str, Any]:
    """All of an object but its status: the operator's status writes change the resourceVersion
    and their own managedFields entry, never this."""
    meta = obj["metadata"]
    return {
        "metadata": {
            k: v for k, v in meta.items() if k not in ("resourceVersion", "managedFields")
        },
        "spec": obj["spec"],
        "managedFields": [e for e in meta["managedFields"] if e.get("subresource") != "status"],
    }


def test_server_side_apply_of_the_samples_twice_is_a_no_op(
    admin: Kube, cluster: LocalCluster, unique: str, tmp_path: Path
) -> None:
    name = f"gitops-{unique}"
    org = organization(name, f"owner@{name}.test")
    member = {
        **membership("alice", f"alice@{name}.test", "analytics-viewer"),
        "metadata": {"name": "alice", "namespace": f"org-{name}"},
    }
    manifest = tmp_path / "org.yaml"
    manifest.write_text(yaml.safe_dump(org))
    kubectl(cluster, "apply", "--server-side", "--field-manager=argocd", "-f", str(manifest))
    wait_org(admin, name)
    members = tmp_path / "member.yaml"
    members.write_text(yaml.safe_dump(member))
    kubectl(cluster, "apply", "--server-side", "--field-manager=argocd", "-f", str(members))
    wait_members_bound(admin, name, {f"alice@{name}.test": ["analytics-viewer"]})
    # Settled: the org's status counts alice (her binding and the count are two writes).
    wait_for(
        "the org to count alice",
        lambda: (admin.get("organizations", name).get("status") or {}).get("members") == 2,
    )
    wait_org(admin, name)

    before = (
        applied(admin.get("organizations", name)),
        applied(admin.get("memberships", "alice", f"org-{name}")),
    )
    for path in (manifest, members):
        kubectl(cluster, "apply", "--server-side", "--field-manager=argocd", "-f", str(path))
    after = (
        applied(admin.get("organizations", name)),
        applied(admin.get("memberships", "alice", f"org-{name}")),
    )
    assert after == before
    for obj in (admin.get("organizations", name), admin.get("memberships", "alice", f"org-{name}")):
        spec_managers = {
            entry["manager"]
            for entry in obj["metadata"]["managedFields"]
            if "f:spec" in entry.get("fieldsV1", {})
        }
        assert spec_managers == {"argocd"}, spec_managers


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals()["obj"] = runtime.table_from(obj, recursive=True)
    result = runtime.execute(HEALTH_LUA)
    # types-lupa says execute() returns `object`, though what it returns is the Lua value itself
    # (the stubs' own Lua values are Any): here HEALTH_LUA's table, which takes string keys.
    return {key: result[key] for key in ("status", "message") if result[key] is not None}  # type: ignore[index]


def test_argocd_health_check_reads_real_statuses(admin: Kube, as_user: AsUser, unique: str) -> None:
    name, stopped = f"healthy-{unique}", f"stopped-{unique}"
    for org in (name, stopped):
        as_user(f"owner@{org}.test").create(
            "organizations", organization(org, f"owner@{org}.test", plan="Plus")
        )
    assert (
        argocd_health(
            organization("fresh", "o@fresh.test") | {"metadata": {"name": "fresh", "generation": 1}}
        )["status"]
        == "Progressing"
    )
    assert argocd_health(wait_org(admin, name))["status"] == "Healthy"
    admin.patch("organizations", stopped, {"spec": {"state": "Deactivated"}})
    deactivated = wait_org(admin, stopped, "Deactivated", "True", timeout=60)
    assert argocd_health(deactivated)["status"] == "Suspended"
    (owner,) = admin.list("memberships", f"org-{stopped}")
    wait_for(
        "the owner's membership to show Removed",
        lambda: (
            admin.get("memberships", owner["metadata"]["name"], f"org-{stopped}")["status"]["state"]
            == "Removed"
        ),
    )
    assert (
        argocd_health(admin.get("memberships", owner["metadata"]["name"], f"org-{stopped}"))[
            "status"
        ]
        == "Suspended"
    )

    admin.core.create_namespaced_secret(f"org-{name}", secret_body("junk", b"not a license"))
    admin.create("licenses", license_body("junk", "mesh", "junk"), f"org-{name}")
    broken = wait_for(
        "the junk license to be judged",
        lambda: (lic := admin.get("licenses", "junk", f"org-{name}")).get("status") and lic,
    )
    health = argocd_health(broken)
    assert (
        health["status"] == "Degraded" and "not an orgkeeper license document" in health["message"]
    )
    assert (
        argocd_health(
            wait_for(
                "the provisioned license",
                lambda: (
                    (lic := admin.get("licenses", "mesh", f"org-{name}"))
                    .get("status", {})
                    .get("active")
                    and lic
                ),
            )
        )["status"]
        == "Healthy"
    )
