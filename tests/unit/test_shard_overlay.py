"""docs/shards/, the overlay that runs N fixed shards, renders what README ("Scaling out") says:
one Deployment and PodDisruptionBudget per shard, each `--shard i/N` with one N, one shared
webhook Service and configuration pair selecting every shard's Pods, the shards' Leases and maps
granted by name, and no unsharded operator."""

from __future__ import annotations

from pathlib import Path

from test_region_overlay import of

from orgkeeper import names
from orgkeeper.domain.shards import Shard
from orgkeeper.settings import lease_name
from support.identity import render

OVERLAY = Path(__file__).resolve().parents[2] / "docs" / "shards"
COUNT = 2
ROLE = "orgkeeper-shard-leases"


def test_each_shard_gets_its_deployment_budget_and_one_count() -> None:
    documents = render(OVERLAY)
    deployments = {d["metadata"]["name"]: d for d in of("Deployment", documents)}
    budgets = {b["metadata"]["name"]: b for b in of("PodDisruptionBudget", documents)}
    assert sorted(deployments) == [f"orgkeeper-shard-{i}" for i in range(COUNT)]  # no other
    assert sorted(budgets) == sorted(deployments)
    for index in range(COUNT):
        deployment = deployments[f"orgkeeper-shard-{index}"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        shards = [a for a in container["args"] if a.startswith("--shard")]
        assert shards == [f"--shard={index}/{COUNT}"]
        assert "--leader-elect" in container["args"]
        assert deployment["spec"]["replicas"] == 2
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector["orgkeeper.dev/shard"] == str(index)  # Deployments don't share Pods
        assert budgets[f"orgkeeper-shard-{index}"]["spec"]["selector"]["matchLabels"] == selector
    (service,) = of("Service", documents)
    for deployment in deployments.values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
    rendered = [(d["kind"], d["metadata"]["name"]) for d in documents]
    assert len(rendered) == len(set(rendered))


def test_the_shards_leases_and_maps_are_granted_by_name() -> None:
    documents = render(OVERLAY)
    (role,) = [
        r for r in of("Role", documents) if r["metadata"]["name"] == "orgkeeper-shard-leases"
    ]
    leases, maps = role["rules"]
    for count in (2, 3, 4):
        for index in range(count):
            assert lease_name(None, Shard.parse(f"{index}/{count}")) in leases["resourceNames"]
        assert names.shard_map(None, count) in maps["resourceNames"]
    assert leases["verbs"] == ["get", "update"] and maps["verbs"] == ["get"]
    (binding,) = [b for b in of("RoleBinding", documents) if b["metadata"]["name"] == ROLE]
    assert binding["subjects"][0]["name"] == "orgkeeper"
