"""How the API server finds and trusts the operator's servers (webhook_server.py, people.py):
the caBundle of the webhook configurations and of the people API's APIService, the
configurations a start checks, and in `managed` mode (`make run`) the people API's
registration; and the front proxy's settings the people API trusts.

Each call is a `kube.threaded` verb on kube's threads (`await registrations.x(...)`), or
`.blocking(...)` before the loop runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from . import names, resources
from .kube import FIELD_MANAGER, KubeApi, Outcome, absent_ok, is_status, threaded


class Registrations:
    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube
        self.api_client = kube.api_client
        self.core = kube.core
        self.admission = client.AdmissionregistrationV1Api(kube.api_client)
        self.registration = client.ApiregistrationV1Api(kube.api_client)
        self.executor: Executor | None = kube.executor

    @threaded
    def put_webhook_ca_bundle(self, kind: str, name: str, bundle: str) -> Outcome:
        """Puts `bundle` into every webhook of the webhook configuration `kind`/`name`:
        UPDATED, UNCHANGED, or ABSENT if there is no such configuration.

        One JSON patch that first tests each webhook's name, so a configuration changed meanwhile
        is refused (422) rather than patched at the wrong index.
        """
        read, patch = {
            "ValidatingWebhookConfiguration": (
                self.admission.read_validating_webhook_configuration,
                self.admission.patch_validating_webhook_configuration,
            ),
            "MutatingWebhookConfiguration": (
                self.admission.read_mutating_webhook_configuration,
                self.admission.patch_mutating_webhook_configuration,
            ),
        }[kind]
        current = absent_ok(read, name)
        if current is None:
            return Outcome.ABSENT
        wire = self.api_client.sanitize_for_serialization(current)
        operations = resources.ca_bundle_operations(wire, bundle)
        if not operations:
            return Outcome.UNCHANGED
        patch(name, operations, field_manager=FIELD_MANAGER)
        return Outcome.UPDATED

    @threaded
    def put_api_service_ca_bundle(self, name: str, bundle: str) -> Outcome:
        """Puts `bundle` into the APIService `name` (the people API's)."""
        current = absent_ok(self.registration.read_api_service, name)
        if current is None:
            return Outcome.ABSENT
        if (current.spec.ca_bundle or "") == bundle:
            return Outcome.UNCHANGED
        body = {
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "spec": {"caBundle": bundle},
        }
        self.registration.patch_api_service(name, body, field_manager=FIELD_MANAGER)
        return Outcome.UPDATED

    @threaded
    def register_people_api(
        self, namespace: str, service: str, external_name: str, port: int, bundle: str
    ) -> None:
        """`managed` mode (`make run`): the people API's APIService, reaching this process
        through an ExternalName Service for `external_name` at `port`, as the APIService of
        manifests/ does through the webhook Service. Refuses to replace a Service of another
        type (an installed operator's)."""
        self.kube.ensure_namespace.blocking(namespace)
        found = absent_ok(self.core.read_namespaced_service, service, namespace)
        spec = {"type": "ExternalName", "externalName": external_name}
        if found is None:
            made = {"metadata": {"name": service}, "spec": spec}
            self.core.create_namespaced_service(namespace, made, field_manager=FIELD_MANAGER)
        elif found.spec.type != "ExternalName":
            raise ValueError(
                f"Service {namespace}/{service} is of type {found.spec.type} (an installed "
                "operator's?): the people API is not registered for this one"
            )
        elif found.spec.external_name != external_name:
            self.core.patch_namespaced_service(
                service, namespace, {"spec": spec}, field_manager=FIELD_MANAGER
            )
        body = resources.people_api_service(namespace, service, port, bundle)
        current = absent_ok(self.registration.read_api_service, names.PEOPLE_API_SERVICE)
        if current is None:
            self.registration.create_api_service(body, field_manager=FIELD_MANAGER)
        else:
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            self.registration.replace_api_service(
                names.PEOPLE_API_SERVICE, body, field_manager=FIELD_MANAGER
            )

    @threaded
    def unregister_people_api(self, namespace: str, service: str) -> None:
        """Undoes register_people_api: an APIService nobody serves makes kube-apiserver answer
        503 for its group, and every kubectl's discovery warn."""
        absent_ok(self.registration.delete_api_service, names.PEOPLE_API_SERVICE)
        absent_ok(self.core.delete_namespaced_service, service, namespace)

    @threaded
    def front_proxy_config(self) -> dict[str, str] | None:
        """kube-apiserver's front-proxy settings (kube-system/extension-apiserver-authentication,
        read with the built-in Role extension-apiserver-authentication-reader); None if absent."""
        namespace, name = names.FRONT_PROXY_CONFIG_MAP
        found = absent_ok(self.core.read_namespaced_config_map, name, namespace)
        return dict(found.data or {}) if found is not None else None

    @threaded
    def webhook_configurations(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """The validating and mutating webhook configurations named `names` that exist, as JSON
        (each with its `kind`), read by name: never a list of every configuration in the
        cluster. 403s are skipped (the operator's Role may read only its own)."""
        kinds = (
            (
                "ValidatingWebhookConfiguration",
                self.admission.read_validating_webhook_configuration,
            ),
            ("MutatingWebhookConfiguration", self.admission.read_mutating_webhook_configuration),
        )
        found: list[dict[str, Any]] = []
        for kind, read_call in kinds:
            for name in names:
                try:
                    item = absent_ok(read_call, name)
                except ApiException as error:
                    if not is_status(error, 403):
                        raise
                    continue
                if item is not None:
                    found.append({"kind": kind, **self.api_client.sanitize_for_serialization(item)})
        return found
