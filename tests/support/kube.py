"""Talking to the test control plane as the admin or as a given user (impersonation)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from orgkeeper.api.v1alpha1 import GROUP, VERSION

T = TypeVar("T")


def api_client(
    kubeconfig: Path, *, user: str | None = None, groups: tuple[str, ...] = ()
) -> client.ApiClient:
    """A client for the cluster; with `user`, every request impersonates that user."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    api = client.ApiClient(configuration)
    if user is not None:
        api.set_default_header("Impersonate-User", user)
        # The client sends one value per header name; one group is all these tests need.
        if groups:
            api.set_default_header("Impersonate-Group", groups[0])
    return api


@dataclass
class Kube:
    """The cluster as one identity sees it."""

    api: client.ApiClient

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def rbac(self) -> client.RbacAuthorizationV1Api:
        return client.RbacAuthorizationV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    # Custom resources of orgkeeper.dev -------------------------------------------------

    def create(
        self, plural: str, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        if namespace is None:
            created = self.custom.create_cluster_custom_object(GROUP, VERSION, plural, body)
        else:
            created = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, body
            )
        return cast("dict[str, Any]", created)

    def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        if namespace is None:
            found = self.custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
        else:
            found = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        return cast("dict[str, Any]", found)

    def patch(
        self, plural: str, name: str, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        if namespace is None:
            patched = self.custom.patch_cluster_custom_object(GROUP, VERSION, plural, name, body)
        else:
            patched = self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, body
            )
        return cast("dict[str, Any]", patched)

    def delete(self, plural: str, name: str, namespace: str | None = None) -> None:
        if namespace is None:
            self.custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)
        else:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)

    def list(
        self, plural: str, namespace: str | None = None, **kwargs: Any
    ) -> list[dict[str, Any]]:
        if namespace is None:
            result = self.custom.list_cluster_custom_object(GROUP, VERSION, plural, **kwargs)
        else:
            result = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, **kwargs
            )
        return list(result["items"])


# The cluster as a given user sees it (impersonation, with system:authenticated): `as_user`.
AsUser = Callable[[str], Kube]


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def rejection(call: Callable[[], object]) -> tuple[int, str]:
    """Runs a call that the API server must refuse; returns (HTTP status, message)."""
    try:
        call()
    except ApiException as error:
        import json

        try:
            message = json.loads(error.body).get("message", error.body)
        except (TypeError, ValueError):
            message = str(error.body)
        return int(error.status), str(message)
    raise AssertionError("the API server accepted a request it should have refused")


def wait_for(
    what: str,
    probe: Callable[[], T | Literal[False] | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    details: Callable[[], str] | None = None,
) -> T:
    """Polls `probe` until it returns something truthy; fails with `what` after `timeout`.

    A probe says "not yet" with None or False (as `cond and value` does); the first truthy
    value it returns is what `wait_for` returns.

    `details`, if given, says what the probes last found; the failure message ends with it.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except ApiException as error:
            last_error, value = error, None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}"
        + (f" (last error: {last_error})" if last_error else "")
        + (f": {details()}" if details else "")
    )


def timed_wait_for(
    what: str,
    probe: Callable[[], object],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    details: Callable[[], str] | None = None,
) -> float:
    """`wait_for`, returning the seconds it took (the fault report shows them)."""
    started = time.monotonic()
    wait_for(what, probe, timeout=timeout, interval=interval, details=details)
    return time.monotonic() - started
