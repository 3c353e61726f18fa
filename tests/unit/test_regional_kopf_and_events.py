"""Regional operators side by side: kopf's finalizer and annotations per region, a finalizer
left by the other kind of operator dropped at deletion; the operator's own Events: where they
go (kubectl describe's lookup), and each lifecycle transition told once."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from kubernetes import client

from orgkeeper import names
from orgkeeper.domain.lifecycle import untold_transitions
from orgkeeper.handlers.startup import configure_kopf
from orgkeeper.kube import KubeApi
from orgkeeper.resources import EVENT_CONTROLLER, PostedEvent
from orgkeeper.settings import Settings

ALL, US, EU = "orgkeeper.dev/finalizer", "us.orgkeeper.dev/finalizer", "eu.orgkeeper.dev/finalizer"


@pytest.mark.parametrize(
    ("region", "finalizer", "annotation"),
    [
        (None, "orgkeeper.dev/finalizer", "orgkeeper.dev/last-handled-configuration"),
        ("us", "us.orgkeeper.dev/finalizer", "us.orgkeeper.dev/last-handled-configuration"),
    ],
)
def test_kopf_keeps_its_state_under_the_operators_region(
    region: str | None, finalizer: str, annotation: str
) -> None:
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(kopf_settings, Settings(region=region, webhook_mode="off"))
    assert kopf_settings.persistence.finalizer == finalizer
    body = kopf.Body({"metadata": {"name": "acme"}, "spec": {"region": "eu"}})
    patch = kopf.Patch()
    kopf_settings.persistence.diffbase_storage.store(body=body, patch=patch, essence={})
    stored = patch["metadata"]["annotations"]
    assert annotation in stored
    assert all(key.startswith(f"{names.kopf_prefix(region)}/") for key in stored)
    assert not kopf_settings.posting.enabled  # the operator posts its own Events


def test_the_all_regions_finalizer_stays_the_contracts() -> None:
    assert names.finalizer(None) == "orgkeeper.dev/finalizer"


@pytest.mark.parametrize(
    ("region", "found", "stale"),
    [
        # A regional operator drops the all-regions one, which ran before it.
        (
            "us",
            ["orgkeeper.dev/finalizer", "us.orgkeeper.dev/finalizer"],
            ["orgkeeper.dev/finalizer"],
        ),
        # The all-regions operator drops a regional one.
        (
            None,
            ["eu.orgkeeper.dev/finalizer", "orgkeeper.dev/finalizer"],
            ["eu.orgkeeper.dev/finalizer"],
        ),
        # Its own, and anyone else's, stay.
        ("us", [US, "example.com/keep"], []),
        (None, [ALL, "foregroundDeletion"], []),
    ],
)
def test_finalizers_of_the_operator_that_ran_before_are_stale(
    region: str | None, found: list[str], stale: list[str]
) -> None:
    assert names.stale_finalizers(found, region) == stale


def test_each_lifecycle_transition_is_told_once() -> None:
    # A reconcile reading the org from before its own status write tells Deactivated again.
    keep, last = untold_transitions(None, ["Deactivating", "Deactivated"])
    assert (keep, last) == ([True, True], "Deactivated")
    keep, last = untold_transitions(last, ["Deactivated", "OwnerLeft"])
    assert (keep, last) == ([False, True], "Deactivated")
    keep, last = untold_transitions(last, ["Deactivating"])  # stale: no new deactivation
    assert (keep, last) == ([False], "Deactivated")
    keep, last = untold_transitions(last, ["Reactivated"])
    assert (keep, last) == ([True], "Reactivated")
    keep, last = untold_transitions(last, ["Reactivated"])
    assert (keep, last) == ([False], "Reactivated")
    keep, last = untold_transitions(last, ["Deactivating", "Deactivated"])  # a new one
    assert (keep, last) == ([True, True], "Deactivated")


class _Core:
    """Takes the Events posted, as the API server receives them (JSON)."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, Any]]] = []

    def create_namespaced_event(self, namespace: str, body: Any) -> None:
        self.posted.append((namespace, client.ApiClient().sanitize_for_serialization(body)))


def _posted(involved: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kube = KubeApi(client.ApiClient())
    core = _Core()
    kube.core = core
    event = PostedEvent("Normal", "Deactivated", "deactivated", "Deactivate", "replica-a")
    kube.post_event.blocking(involved, event)
    ((namespace, body),) = core.posted
    assert body["reportingComponent"] == EVENT_CONTROLLER == "orgkeeper.dev/operator"
    assert body["reportingInstance"] == "replica-a"
    assert body["action"] == "Deactivate"
    assert (body["reason"], body["type"], body["count"]) == ("Deactivated", "Normal", 1)
    assert body["firstTimestamp"] == body["lastTimestamp"] and "+00:00" in body["firstTimestamp"]
    return namespace, body


def test_an_organizations_event_has_no_involved_namespace() -> None:
    """kubectl describe of a cluster-scoped object looks for involvedObject.namespace ""."""
    org = {
        "apiVersion": names.API_VERSION,
        "kind": "Organization",
        "metadata": {"name": "acme", "uid": "u-1"},
    }
    namespace, body = _posted(org)
    assert namespace == "default"
    assert "namespace" not in body["involvedObject"]
    assert (body["involvedObject"]["kind"], body["involvedObject"]["uid"]) == (
        "Organization",
        "u-1",
    )


def test_a_licenses_event_is_in_its_namespace() -> None:
    license_ = {
        "apiVersion": names.API_VERSION,
        "kind": "License",
        "metadata": {"name": "gateway", "namespace": "org-acme", "uid": "u-2"},
    }
    namespace, body = _posted(license_)
    assert namespace == "org-acme"
    assert body["involvedObject"]["namespace"] == "org-acme"
    assert body["involvedObject"]["name"] == "gateway"
