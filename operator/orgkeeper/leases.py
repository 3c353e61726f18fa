"""The Lease API (coordination.k8s.io/v1): the calls of leader election (leader.py), its checks
at start, and admission's question whether a region is served.

Each call is a `kube.threaded` verb: `await leases.read_lease(...)` on the Lease's own threads
(KubeApi.lease_executor: a renewal never waits behind a cascade), unless made with kube's
threads (admission: its reads must not delay a renewal either); `.blocking(...)` before the loop
runs. Writes to Leases pass the write gate by resource (kube.UNGATED_RESOURCES).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from . import names
from .kube import FIELD_MANAGER, LIST_PAGE_SIZE, KubeApi, absent_ok, is_status, threaded


class Leases:
    def __init__(self, kube: KubeApi, executor: Executor | None = None) -> None:
        """`executor`: whose threads the calls run on (default: the Lease's own)."""
        self.api_client = kube.api_client
        self.coordination = client.CoordinationV1Api(kube.api_client)
        self.executor: Executor | None = executor or kube.lease_executor

    def _wire(self, lease: Any) -> dict[str, Any]:
        wire: dict[str, Any] = self.api_client.sanitize_for_serialization(lease)
        return wire

    @threaded
    def read_lease(
        self, namespace: str, name: str, timeout: float | None = None
    ) -> dict[str, Any] | None:
        found = absent_ok(
            self.coordination.read_namespaced_lease, name, namespace, _request_timeout=timeout
        )
        return None if found is None else self._wire(found)

    @threaded
    def create_lease(
        self, namespace: str, body: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """Creates the Lease; ApiException 409 if another replica created it first."""
        created = self.coordination.create_namespaced_lease(
            namespace, body, field_manager=FIELD_MANAGER, _request_timeout=timeout
        )
        return self._wire(created)

    @threaded
    def replace_lease(
        self, namespace: str, body: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """An update that carries metadata.resourceVersion: 409 if the Lease changed meanwhile."""
        replaced = self.coordination.replace_namespaced_lease(
            body["metadata"]["name"],
            namespace,
            body,
            field_manager=FIELD_MANAGER,
            _request_timeout=timeout,
        )
        return self._wire(replaced)

    @threaded
    def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The Leases in `namespace` that `selector` selects (orgkeeper's: names.LEASE_SELECTOR),
        paged."""
        found: list[dict[str, Any]] = []
        page: str | None = None
        while True:
            listed = self.coordination.list_namespaced_lease(
                namespace,
                label_selector=selector,
                limit=LIST_PAGE_SIZE,
                _continue=page,
                _request_timeout=5.0,
            )
            found.extend(self._wire(item) for item in listed.items)
            page = listed.metadata._continue if listed.metadata else None
            if not page:
                return found

    @threaded
    def scope_leases(
        self, namespace: str, scopes: Sequence[str], timeout: float = 10.0
    ) -> dict[str, dict[str, Any]]:
        """The Leases in `namespace` by name: each unsharded one of these scopes read by name
        (one taken by a version before the label has none yet), and every labelled one, of any
        scope and shard count, in one LIST selected by names.LEASE_SELECTOR."""
        found: dict[str, dict[str, Any]] = {}
        for scope in scopes:
            lease = self.read_lease.blocking(namespace, scope, timeout)
            if lease is not None:
                found[scope] = lease
        for lease in self.list_leases.blocking(namespace, names.LEASE_SELECTOR):
            found.setdefault(str(lease["metadata"]["name"]), lease)
        return found

    @threaded
    def leases_named(self, names: Sequence[str]) -> list[dict[str, Any]] | None:
        """Leases with these names in every namespace; None if not allowed to list them."""
        found: list[dict[str, Any]] = []
        for name in names:
            page: str | None = None
            while True:
                try:
                    listed = self.coordination.list_lease_for_all_namespaces(
                        field_selector=f"metadata.name={name}",
                        limit=LIST_PAGE_SIZE,
                        _continue=page,
                        _request_timeout=10.0,
                    )
                except ApiException as error:
                    if is_status(error, 403):
                        return None
                    raise
                found += [self._wire(item) for item in listed.items]
                page = listed.metadata._continue
                if not page:
                    break
        return found
