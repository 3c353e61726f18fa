"""docs/regions/, the overlay that runs one operator per region, renders what README says:
one Deployment and PodDisruptionBudget per region, one shared webhook Service and
configuration pair whose Service selects every region's Pods, and no all-regions operator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.identity import render

OVERLAY = Path(__file__).resolve().parents[2] / "docs" / "regions"
REGIONS = ("eu", "us")


def of(kind: str, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def test_each_region_gets_its_own_deployment_and_disruption_budget() -> None:
    documents = render(OVERLAY)
    deployments = {d["metadata"]["name"]: d for d in of("Deployment", documents)}
    budgets = {b["metadata"]["name"]: b for b in of("PodDisruptionBudget", documents)}
    assert sorted(deployments) == [f"orgkeeper-{r}" for r in REGIONS]  # no all-regions one
    assert sorted(budgets) == sorted(deployments)
    for region in REGIONS:
        deployment = deployments[f"orgkeeper-{region}"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert [a for a in container["args"] if a.startswith("--region")] == [f"--region={region}"]
        assert "--leader-elect" in container["args"]  # Lease orgkeeper-<region>
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector["orgkeeper.dev/region"] == region  # Deployments don't share Pods
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        budget = budgets[f"orgkeeper-{region}"]
        assert budget["spec"]["selector"]["matchLabels"] == selector


def test_one_webhook_service_and_configuration_serve_every_region() -> None:
    documents = render(OVERLAY)
    (service,) = of("Service", documents)
    (validating,) = of("ValidatingWebhookConfiguration", documents)
    (mutating,) = of("MutatingWebhookConfiguration", documents)
    for deployment in of("Deployment", documents):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
    for configuration in (validating, mutating):
        for hook in configuration["webhooks"]:
            assert hook["clientConfig"]["service"]["name"] == service["metadata"]["name"]
    # The shared pieces come once, as the base has them.
    base = render()
    shared = {
        (d["kind"], d["metadata"]["name"])
        for d in base
        if d["kind"] not in ("Deployment", "PodDisruptionBudget")
    }
    rendered = [(d["kind"], d["metadata"]["name"]) for d in documents]
    assert shared <= set(rendered)
    assert len(rendered) == len(set(rendered))
    assert len(rendered) == len(shared) + 2 * len(REGIONS)
