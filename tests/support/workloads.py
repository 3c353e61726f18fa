"""Control-plane and data-plane workloads as a platform team would label them."""

from __future__ import annotations

from typing import Any

from kubernetes.client.rest import ApiException

from orgkeeper import names
from support.kube import Kube

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def workload(
    kind: str, name: str, org: str, component: str, product: str = "gateway-enterprise"
) -> dict[str, Any]:
    labels = {
        "app": name,
        names.LABEL_ORGANIZATION: org,
        names.LABEL_COMPONENT: component,
        names.LABEL_PRODUCT: product,
    }
    # Pod Security `restricted` (what org namespaces enforce) admits its Pods.
    container = {
        "name": "main",
        "image": "registry.invalid/gateway:1",
        "securityContext": RESTRICTED,
    }
    template = {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": name}}, "template": template}
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }


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
