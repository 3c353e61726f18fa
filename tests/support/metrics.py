"""Reading the operator's /metrics as a scraper does: HTTPS and a ServiceAccount's bearer token."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

from kubernetes import client

from support.kube import Kube

READER_ROLE = "orgkeeper-metrics-reader"


def scrape(port: int, token: str | None) -> tuple[int, str]:
    """(status, body) of GET /metrics; the certificate is the operator's own, not verified."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"https://127.0.0.1:{port}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def service_account_token(
    admin: Kube, namespace: str, name: str, cluster_role: str | None = None
) -> str:
    """A token of a new ServiceAccount, bound to `cluster_role` when given."""
    try:
        admin.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    except client.ApiException as error:
        if error.status != 409:
            raise
    if cluster_role:
        binding = {
            "metadata": {"name": f"{name}-{cluster_role}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }
        try:
            admin.rbac.create_cluster_role_binding(binding)
        except client.ApiException as error:
            if error.status != 409:
                raise
    request = {"spec": {"expirationSeconds": 3600}}
    issued = admin.core.create_namespaced_service_account_token(name, namespace, request)
    return str(issued.status.token)
