"""Control-plane and data-plane workloads in tests: created, read (bodies shared with the demo)."""

from __future__ import annotations

from typing import Any

from kubernetes.client.rest import ApiException

from orgkeeper_dev.objects import workload as workload
from support.kube import Kube


def create(kube: Kube, namespace: str, body: dict[str, Any]) -> None:
    calls = {
        "Deployment": kube.apps.create_namespaced_deployment,
        "StatefulSet": kube.apps.create_namespaced_stateful_set,
        "DaemonSet": kube.apps.create_namespaced_daemon_set,
    }
    calls[body["kind"]](namespace, body)


def read(kube: Kube, kind: str, namespace: str, name: str) -> Any | None:
    calls = {
        "Deployment": kube.apps.read_namespaced_deployment,
        "StatefulSet": kube.apps.read_namespaced_stateful_set,
        "DaemonSet": kube.apps.read_namespaced_daemon_set,
    }
    try:
        return calls[kind](name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
