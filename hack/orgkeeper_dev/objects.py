"""Bodies of orgkeeper objects, and of workloads as a platform team labels them: what the demo
creates and the tests build on (tests/support re-exports them)."""

from __future__ import annotations

from typing import Any

from orgkeeper.api.v1alpha1 import API_VERSION
from orgkeeper.names import LABEL_COMPONENT, LABEL_ORGANIZATION, LABEL_PRODUCT

# Pod Security `restricted`, what org namespaces enforce, admits Pods with this context.
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def organization(
    name: str, owner: str, *, plan: str = "Enterprise", region: str = "eu", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Organization",
        "metadata": {"name": name},
        "spec": {
            "displayName": name.title(),
            "plan": plan,
            "region": region,
            "owner": owner,
            **spec,
        },
    }


def membership(name: str, email: str, *teams: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Membership",
        "metadata": {"name": name},
        "spec": {"email": email, "teams": list(teams)},
    }


def workload(
    kind: str, name: str, org: str, component: str, product: str = "gateway-enterprise"
) -> dict[str, Any]:
    labels = {
        "app": name,
        LABEL_ORGANIZATION: org,
        LABEL_COMPONENT: component,
        LABEL_PRODUCT: product,
    }
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
