"""The operator's own identity on the test control plane, from manifests/ as a cluster gets it.

The namespace, ServiceAccount and RBAC of `kubectl kustomize manifests/` are applied as they
are; a token for the ServiceAccount comes from the TokenRequest API, as the kubelet would mount
it in the operator's Pod. The webhook configuration is applied too, with each Service
reference turned into a loopback URL (no Pods run here): paths and rules stay the manifests'.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from orgkeeper.api.v1alpha1 import GROUP, VERSION
from orgkeeper.names import PEOPLE_API_SERVICE, WEBHOOK_CONFIGURATION
from orgkeeper.webhook_server import WEBHOOK_KINDS
from orgkeeper_dev.localcluster import LocalCluster, kubectl
from support.kube import Kube

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
NAMESPACE = "orgkeeper-system"
SERVICE_ACCOUNT = "orgkeeper"
USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
IDENTITY_KINDS = frozenset(
    {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
)
RBAC_KINDS = frozenset({"ClusterRole", "Role"})


@dataclass(frozen=True)
class ServiceAccountIdentity:
    user: str
    kubeconfig: Path


def render(directory: Path = MANIFESTS) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a directory: what `kubectl apply -k` would send."""
    rendered = kubectl(None, "kustomize", str(directory)).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def of_kinds(documents: list[dict[str, Any]], kinds: frozenset[str]) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] in kinds]


def apply(cluster: LocalCluster, documents: list[dict[str, Any]]) -> str:
    """Server-side apply, as `kubectl apply --server-side` (warnings are returned)."""
    manifest = yaml.safe_dump_all(documents)
    return kubectl(
        cluster, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=manifest
    ).stderr


def loopback_webhooks(rendered: list[dict[str, Any]], port: int) -> list[dict[str, Any]]:
    """The manifests' webhook configurations, each Service reference made https://127.0.0.1."""
    configurations = copy.deepcopy(of_kinds(rendered, frozenset(WEBHOOK_KINDS)))
    assert len(configurations) == len(WEBHOOK_KINDS)
    for configuration in configurations:
        for webhook in configuration["webhooks"]:
            service = webhook["clientConfig"].pop("service")
            path = service.get("path", "/")
            webhook["clientConfig"]["url"] = f"https://127.0.0.1:{port}{path}"
    return configurations


def ca_bundles(admin: Kube) -> dict[str, list[str | None]]:
    """The caBundle of every webhook, per configuration kind (as the API server stores it)."""
    admission = client.AdmissionregistrationV1Api(admin.api)
    found = {
        "ValidatingWebhookConfiguration": admission.read_validating_webhook_configuration,
        "MutatingWebhookConfiguration": admission.read_mutating_webhook_configuration,
    }
    return {
        kind: [
            admin.api.sanitize_for_serialization(hook.client_config).get("caBundle")
            for hook in read(WEBHOOK_CONFIGURATION).webhooks
        ]
        for kind, read in found.items()
    }


def webhooks_answer(admin: Kube) -> bool:
    """A dry-run create goes through the webhooks: they are registered, up and trusted (a
    restarted operator's new CA is in the caBundle the API server uses)."""
    probe = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Organization",
        "metadata": {"name": "webhook-probe"},
        "spec": {
            "displayName": "probe",
            "plan": "Free",
            "region": "eu",
            "owner": "probe@probe.test",
        },
    }
    try:
        admin.custom.create_cluster_custom_object(
            GROUP, VERSION, "organizations", probe, dry_run="All"
        )
    except ApiException as error:
        if error.status in (500, 502, 503, 504) or "webhook" in str(error.body):
            return False
        raise
    admission = client.AdmissionregistrationV1Api(admin.api)
    return bool(admission.read_validating_webhook_configuration(WEBHOOK_CONFIGURATION).webhooks)


def remove_webhooks(cluster: LocalCluster) -> None:
    """Without the operator its webhooks would refuse writes (failurePolicy: Fail)."""
    for kind in WEBHOOK_KINDS:
        kubectl(cluster, "delete", kind.lower(), WEBHOOK_CONFIGURATION, "--ignore-not-found")


def issue_token(
    cluster: LocalCluster, admin: Kube, kubeconfig: Path, *, seconds: int = 7200
) -> ServiceAccountIdentity:
    """A token for the operator's ServiceAccount (TokenRequest API) in a kubeconfig of its own."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    issued = admin.core.create_namespaced_service_account_token(SERVICE_ACCOUNT, NAMESPACE, request)
    cluster.token_kubeconfig(kubeconfig, issued.status.token)
    return ServiceAccountIdentity(USER, kubeconfig)


def loopback_people_api(rendered: list[dict[str, Any]], port: int) -> list[dict[str, Any]]:
    """The manifests' APIService of the people API, reaching the operator on loopback: its
    Service is made an ExternalName one for `localhost` (kube-aggregator dials the name at the
    APIService's port; no Pods, so no Endpoints, run here), the port the operator's."""
    (api_service,) = [
        copy.deepcopy(doc)
        for doc in rendered
        if doc["kind"] == "APIService" and doc["metadata"]["name"] == PEOPLE_API_SERVICE
    ]
    service_ref = api_service["spec"]["service"]
    service_ref["port"] = port
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_ref["name"], "namespace": service_ref["namespace"]},
        "spec": {"type": "ExternalName", "externalName": "localhost"},
    }
    return [service, api_service]


def people_api_available(admin: Kube) -> bool:
    """The APIService is Available: kube-aggregator reached the operator and trusts its CA."""
    registration = client.ApiregistrationV1Api(admin.api)
    found = registration.read_api_service(PEOPLE_API_SERVICE)
    conditions = (found.status.conditions or []) if found.status else []
    return any(c.type == "Available" and c.status == "True" for c in conditions)


def remove_people_api(cluster: LocalCluster) -> None:
    """Without the operator the aggregator would answer 503 for the group (and discovery says
    so to every kubectl): remove the APIService and its loopback Service."""
    kubectl(cluster, "delete", "apiservice", PEOPLE_API_SERVICE, "--ignore-not-found")
    kubectl(
        cluster, "delete", "service", "orgkeeper-webhook", "-n", NAMESPACE, "--ignore-not-found"
    )
