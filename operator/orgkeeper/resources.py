"""The bodies of what orgkeeper writes: pure functions from what the domain decided to the
objects, patches and labels the apply verbs (kube.py and its siblings) send. No client, no I/O
(`make lint` checks it imports neither)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import names


def ca_bundle_operations(configuration: Mapping[str, Any], bundle: str) -> list[dict[str, Any]]:
    """A JSON patch putting `bundle` into each webhook of `configuration` (as JSON) that lacks
    it; each first tests the webhook's name, so one changed meanwhile is refused (422) rather
    than patched at the wrong index. Empty if every webhook has it."""
    operations: list[dict[str, Any]] = []
    for index, webhook in enumerate(configuration.get("webhooks") or []):
        if (webhook.get("clientConfig") or {}).get("caBundle") == bundle:
            continue
        operations += [
            {"op": "test", "path": f"/webhooks/{index}/name", "value": webhook["name"]},
            {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": bundle},
        ]
    return operations


def people_api_service(namespace: str, service: str, port: int, bundle: str) -> dict[str, Any]:
    """The people API's APIService, reaching it through `namespace`/`service` at `port`."""
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {
            "name": names.PEOPLE_API_SERVICE,
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY},
        },
        "spec": {
            "group": names.PEOPLE_GROUP,
            "version": names.PEOPLE_VERSION,
            "groupPriorityMinimum": 1000,
            "versionPriority": 15,
            "service": {"namespace": namespace, "name": service, "port": port},
            "caBundle": bundle,
        },
    }
