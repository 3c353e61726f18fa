"""The Kubernetes API client (besides kopf's own watching and patching), its write gate, and
the apply verbs of `KubeApi`.

Its siblings call the API for one purpose each, through this client and gate: leases.py (the
Lease), access.py (reviews), registrations.py (webhook and APIService caBundles),
controllers/listwatch.py (what the informers follow). Bodies come from resources.py, policy
from the domain. The official client is synchronous: every call is a `threaded` verb, awaited
by async code on its adapter's thread pool, or called `.blocking(...)` before the loop runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from enum import Enum
from importlib.metadata import version
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload
from urllib.parse import urlsplit

import aiohttp
from aiohttp import ClientHandlerType, ClientMiddlewareType
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from urllib3.util.retry import Retry

from . import resources
from .api.v1alpha1 import GROUP, VERSION
from .domain.guardrails import QUOTA_NAME, Guardrails, QuotaSeen
from .domain.membership import Binding
from .memory import thread_pool
from .resources import OwnerRef, PostedEvent
from .settings import Settings

T = TypeVar("T")
P = ParamSpec("P")
FIELD_MANAGER = "orgkeeper"
MAX_CONNECTIONS = 32
# Informers list in pages this size: a page of tenant-sized objects is parsed whole, and its
# peak sets the process's memory (glibc keeps what a peak needed).
LIST_PAGE_SIZE = 100
# Token- and SubjectAccessReviews asked at once (their own threads; see reviews.py).
REVIEW_CONCURRENCY = 4


# A busy or restarting API server answers 429 (with Retry-After), 500, 502, 503 or 504: each call
# is tried again up to four times, backing off (at once, then 1s, 2s, 4s; or as Retry-After says),
# before its error reaches the reconcile (which then backs off as a whole). Every write here is
# idempotent (merge patches, creates that take 409 as done, deletes that take 404 as done), so
# retrying one that got through is harmless.
TRANSIENT_RETRIES = Retry(
    total=4,
    status_forcelist=(429, 500, 502, 503, 504),
    allowed_methods=None,  # every method
    backoff_factor=0.5,
    respect_retry_after_header=True,
    raise_on_status=False,  # the last answer still comes back as an ApiException
)


def load_client(
    identity: str,
    max_connections: int = MAX_CONNECTIONS,
    retries: Retry | int = TRANSIENT_RETRIES,
) -> client.ApiClient:
    """In-cluster credentials when running in a Pod, else the kubeconfig ($KUBECONFIG).

    Every request carries the operator's User-Agent with `identity` (the audit log tells
    replicas apart by it).
    """
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = max_connections
    configuration.retries = retries
    if configuration.refresh_api_key_hook is not None:
        configuration.refresh_api_key_hook = throttled(configuration.refresh_api_key_hook)
    api_client = client.ApiClient(configuration)
    api_client.user_agent = user_agent(version("orgkeeper"), identity)
    return api_client


# How often the client's credentials hook may run (a kubeconfig's token: it re-applies the
# whole kubeconfig, proxies from the environment included; a Pod's: it rereads the token file).
CREDENTIALS_REFRESH_SECONDS = 10.0


def throttled(
    hook: Callable[[client.Configuration], None],
    seconds: float = CREDENTIALS_REFRESH_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[client.Configuration], None]:
    """The client's credentials hook, run at most once every `seconds`, not before every
    request (with a kubeconfig's token it was 6% of the operator's CPU at scale). A token
    that expires (exec plugins, a Pod's projected token) is still renewed: hours ahead of
    its expiry, the hook runs again within seconds; the token applied last is kept between."""
    last = [float("-inf")]

    def hook_now_and_then(configuration: client.Configuration) -> None:
        now = clock()
        if now - last[0] >= seconds:
            last[0] = now
            hook(configuration)

    return hook_now_and_then


def server_version(identity: str, timeout: float) -> str:
    """The API server's version, asked once (no retries): is there a cluster at all?"""
    with load_client(identity, max_connections=1, retries=0) as api_client:
        info = client.VersionApi(api_client).get_code(_request_timeout=timeout)
    return str(info.git_version)


def is_status(error: Exception, *codes: int) -> bool:
    return isinstance(error, ApiException) and error.status in codes


# The two answers that mean "already so": a read, patch or delete of what is not there (404),
# and a create of what is there already (409). These turn them into None; any other error
# goes on up.


def absent_ok(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
    """The call's answer, or None if what it reads, patches or deletes is not there (404)."""
    return _none_on(404, call, *args, **kwargs)


def exists_ok(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
    """The call's answer, or None if what it creates is there already (409)."""
    return _none_on(409, call, *args, **kwargs)


def _none_on(status: int, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
    try:
        return call(*args, **kwargs)
    except ApiException as error:
        if error.status == status:
            return None
        raise


def _seen(quota: client.V1ResourceQuota) -> QuotaSeen:
    """A quota as the domain judges it (domain/guardrails.py)."""
    status = quota.status
    created = quota.metadata.creation_timestamp
    return QuotaSeen(
        hard=(quota.spec.hard if quota.spec is not None else None) or {},
        status_hard=status.hard if status is not None else None,
        used=status.used if status is not None else None,
        age=datetime.now(UTC) - created if created else timedelta(0),
    )


# What org namespaces enforce unless `orgkeeper run` is told otherwise.
DEFAULT_GUARDRAILS = Guardrails(Settings.pod_security, Settings.membership_quota)


class Outcome(Enum):
    """What an apply verb did (Kong's op.Result): one answer for every verb that writes only
    what differs."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    ABSENT = "absent"  # nothing there to apply to (404): nothing written
    TAKEN = "taken"  # one of that name is another's (not ours to change): nothing written


# The more an outcome wrote, the earlier: the outcome of several writes is the first of theirs.
_WRITTEN = [Outcome.CREATED, Outcome.UPDATED, Outcome.UNCHANGED, Outcome.ABSENT, Outcome.TAKEN]


class NotLeaderError(RuntimeError):
    """A write refused because this replica does not hold a valid Lease."""


# The HTTP verbs that change nothing; any other request is a write.
READ_VERBS = frozenset({"GET", "HEAD", "OPTIONS"})
# Writes any replica sends, by (API group, resource): the Lease (how it becomes or stays the
# leader) and the Token- and SubjectAccessReviews (creates that change nothing).
UNGATED_RESOURCES = frozenset(
    {
        ("coordination.k8s.io", "leases"),
        ("authentication.k8s.io", "tokenreviews"),
        ("authorization.k8s.io", "subjectaccessreviews"),
        ("authorization.k8s.io", "selfsubjectaccessreviews"),
    }
)
# kopf's own writes of the webhook configurations in `managed` mode: every process registers
# its own URL there (README: one replica in that mode).
WEBHOOK_CONFIGURATIONS = frozenset(
    {
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    }
)


def resource_of(path: str) -> tuple[str, str]:
    """(API group, resource) of a REST path: /api/v1/namespaces/ns/secrets/x -> ("", "secrets")."""
    parts = [part for part in path.split("/") if part]
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return "", ""
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]  # namespaced: the resource comes after the namespace
    return group, rest[0] if rest else ""


def is_gated_request(
    method: str, path: str, ungated: frozenset[tuple[str, str]] = UNGATED_RESOURCES
) -> bool:
    """A write that only the leader may send: any verb but GET, HEAD and OPTIONS, except to
    the `ungated` resources. Decided by the HTTP request, whatever code sends it."""
    return method.upper() not in READ_VERBS and resource_of(path) not in ungated


def write_gate_middleware(
    kube: KubeApi, ungated: frozenset[tuple[str, str]] = UNGATED_RESOURCES
) -> ClientMiddlewareType:
    """An aiohttp client middleware (kopf's session): a write is sent only while `kube`'s
    write gate is open, and counted in `kube.writes_in_flight` until its answer came, so a
    resigning leader releases the Lease only after it (manager.py)."""

    async def gate(
        request: aiohttp.ClientRequest, handler: ClientHandlerType
    ) -> aiohttp.ClientResponse:
        if kube.write_gate is None or not is_gated_request(
            request.method, request.url.path, ungated
        ):
            return await handler(request)
        with kube.writing(request.method, request.url.path):
            return await handler(request)

    return gate


# Set inside KubeApi.start_up_writes: what the requests of this context write at start.
_START_UP_WRITE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "orgkeeper_start_up_write", default=None
)


def gate_rest_client(kube: KubeApi) -> None:
    """Every request of `kube`'s API client passes `kube.writing` with its HTTP verb and path:
    the write gate is decided by the request sent, never by which method sent it."""
    rest = kube.api_client.rest_client
    send = rest.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        with kube.writing(method, urlsplit(url).path):
            return send(method, url, *args, **kwargs)

    rest.request = request


def user_agent(version: str, identity: str) -> str:
    """`orgkeeper/<version> (<identity>)`: the audit log tells replicas apart by it."""
    return f"orgkeeper/{version} ({identity})"


class Pooled(Protocol):
    """An adapter whose blocking calls run on `executor` (one of KubeApi's thread pools)."""

    @property
    def executor(self) -> Executor | None: ...


A = TypeVar("A", bound=Pooled)


class Verb(Generic[A, P, T]):
    """A blocking call of an adapter, bound to it: `await verb(...)` runs it on the adapter's
    threads (async code never blocks the loop); `verb.blocking(...)` runs it on this thread
    (before the loop runs, or on a thread already)."""

    __slots__ = ("_adapter", "_call")

    def __init__(self, call: Callable[Concatenate[A, P], T], adapter: A) -> None:
        self._call = call
        self._adapter = adapter

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(self._call, self._adapter, *args, **kwargs)
        # In the caller's context, as asyncio.to_thread: KubeApi.start_up_writes holds there.
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._adapter.executor, context.run, call)

    def blocking(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(self._adapter, *args, **kwargs)


class Threaded(Generic[A, P, T]):
    """See `threaded`."""

    def __init__(self, call: Callable[Concatenate[A, P], T]) -> None:
        self._call = call
        self.__doc__ = call.__doc__
        self.__name__ = call.__name__

    @overload
    def __get__(self, adapter: None, owner: type[Any]) -> Threaded[A, P, T]: ...
    @overload
    def __get__(self, adapter: A, owner: type[Any]) -> Verb[A, P, T]: ...
    def __get__(self, adapter: A | None, owner: type[Any]) -> Threaded[A, P, T] | Verb[A, P, T]:
        return self if adapter is None else Verb(self._call, adapter)


def threaded(call: Callable[Concatenate[A, P], T]) -> Threaded[A, P, T]:
    """Makes a blocking method of an adapter (KubeApi, Leases, ...) a `Verb`: async callers
    `await adapter.method(...)` and it runs on the adapter's thread pool; code before the loop
    runs calls `adapter.method.blocking(...)`. The one way the operator's async code reaches
    the API server's client (its writes pass the write gate by HTTP verb, gate_rest_client)."""
    return Threaded(call)


class KubeApi:
    def __init__(
        self,
        api_client: client.ApiClient,
        guardrails: Guardrails = DEFAULT_GUARDRAILS,
        *,
        whole_pools: bool = False,
    ) -> None:
        self.api_client = api_client
        self.guardrails = guardrails
        self.core = client.CoreV1Api(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        # As many threads as pooled connections: asyncio's default executor has only
        # cpu_count + 4, which would cap every cascade's write concurrency at that.
        # The operator starts every pool whole (`whole_pools`; memory.full_pool: threads
        # added late were part of its creep of resident memory under churn); tests and tools
        # start theirs lazily.
        self.executor = thread_pool(MAX_CONNECTIONS, "kube", whole=whole_pools)
        # Pools of their own, so neither waits behind the other nor behind reconciles: the
        # Lease (leader election: a renewal queued behind a cascade would cost the Lease), and
        # the Token- and SubjectAccessReviews that callers of /metrics and of the webhook port
        # can make the operator ask (anyone who reaches those ports; see reviews.py).
        self.lease_executor = thread_pool(2, "lease", whole=whole_pools)
        self.review_executor = thread_pool(REVIEW_CONCURRENCY, "review", whole=whole_pools)
        # Leader election sets this: a write (by HTTP verb, write_gate_middleware and
        # gate_rest_client) is sent only while it answers True.
        self.write_gate: Callable[[], bool] | None = None
        self.writes_in_flight = 0
        self._in_flight_lock = threading.Lock()  # kube's threads and kopf's loop both count
        gate_rest_client(self)

    @staticmethod
    @contextlib.contextmanager
    def start_up_writes(what: str) -> Iterator[None]:
        """The one door past the write gate, for what every replica writes at start whether
        it leads or not (`what`, e.g. the webhook CA its peers share): requests sent by this
        thread (or task) inside the block."""
        token = _START_UP_WRITE.set(what)
        try:
            yield
        finally:
            _START_UP_WRITE.reset(token)

    @contextlib.contextmanager
    def writing(self, method: str, path: str) -> Iterator[None]:
        """Around one request, whoever sends it: a write passes only while the gate is open,
        and counts in `writes_in_flight` until its answer came (a resigning leader releases
        the Lease only after it: manager.py)."""
        if (
            self.write_gate is None
            or _START_UP_WRITE.get() is not None
            or not is_gated_request(method, path)
        ):
            yield
            return
        if not self.write_gate():
            raise NotLeaderError(f"{method} {path}: this replica does not hold the leader Lease")
        with self._in_flight_lock:
            self.writes_in_flight += 1
        try:
            yield
        finally:
            with self._in_flight_lock:
                self.writes_in_flight -= 1

    # --- namespaces ---------------------------------------------------------------------

    @threaded
    def read_namespace(self, name: str) -> client.V1Namespace | None:
        return absent_ok(self.core.read_namespace, name)

    @threaded
    def ensure_namespace(self, name: str) -> Outcome:
        """A plain namespace (the operator's own), created if missing."""
        if self.read_namespace.blocking(name) is not None:
            return Outcome.UNCHANGED
        body = {"metadata": {"name": name}}
        made = exists_ok(self.core.create_namespace, body, field_manager=FIELD_MANAGER)
        return Outcome.CREATED if made is not None else Outcome.UNCHANGED

    @threaded
    def create_namespace(self, name: str, organization: str, owner: OwnerRef) -> Outcome:
        """Creates the org's namespace: CREATED, UNCHANGED if `owner` owns it already, TAKEN if
        one by that name exists that `owner` doesn't own (someone created it first; see
        namespaces.made_for for one made for the org)."""
        body = resources.org_namespace(name, organization, owner, self.guardrails)
        if exists_ok(self.core.create_namespace, body, field_manager=FIELD_MANAGER) is not None:
            return Outcome.CREATED
        found = self.read_namespace.blocking(name)
        refs = (found.metadata.owner_references or []) if found is not None else []
        return Outcome.UNCHANGED if any(ref.uid == owner.uid for ref in refs) else Outcome.TAKEN

    @threaded
    def label_namespace(self, name: str, labels: Mapping[str, str | None]) -> None:
        """Sets (None: removes) these labels of the namespace: the UID of the org that serves
        it, or its release (domain/namespaces.py); nothing if it is gone."""
        absent_ok(
            self.core.patch_namespace,
            name,
            {"metadata": {"labels": dict(labels)}},
            field_manager=FIELD_MANAGER,
        )

    @threaded
    def ensure_pod_security(self, name: str, labels: Mapping[str, str]) -> Outcome:
        """The org namespace's Pod Security labels put back if changed (`labels`: its own)."""
        if not self.guardrails.pod_security_differs(labels):
            return Outcome.UNCHANGED
        body = {"metadata": {"labels": self.guardrails.labels()}}
        self.core.patch_namespace(name, body, field_manager=FIELD_MANAGER)
        return Outcome.UPDATED

    @threaded
    def ensure_membership_quota(self, name: str, organization: str, owner: OwnerRef) -> bool:
        """The org namespace's Membership quota, repaired on drift; True once it counts.

        Until kube-controller-manager has counted a new quota, the API server refuses every
        Membership create in the namespace ("status unknown for quota"), so the quota is
        created after the Owner's Membership and the caller waits for it before it calls the
        org ready.
        """
        hard = self.guardrails.hard()
        quota = absent_ok(self.core.read_namespaced_resource_quota, QUOTA_NAME, name)
        if quota is None:
            quota = self._create_quota(name, organization, owner)
        if _seen(quota).to_remake(hard):
            self.core.delete_namespaced_resource_quota(QUOTA_NAME, name)
            quota = self._create_quota(name, organization, owner)
        if _seen(quota).limit_differs(hard):
            # A merge patch of spec.hard keeps keys an admin added; `replace` sets ours exactly.
            quota = self.core.patch_namespaced_resource_quota(
                QUOTA_NAME,
                name,
                [{"op": "replace", "path": "/spec/hard", "value": hard}],
                field_manager=FIELD_MANAGER,
            )
        return _seen(quota).counts(hard)

    def _create_quota(self, namespace: str, organization: str, owner: OwnerRef) -> Any:
        body = resources.membership_quota(organization, owner, self.guardrails.hard())
        created = exists_ok(
            self.core.create_namespaced_resource_quota, namespace, body, field_manager=FIELD_MANAGER
        )
        if created is not None:
            return created
        return self.core.read_namespaced_resource_quota(QUOTA_NAME, namespace)

    # --- the Owner's cluster-scoped RBAC ----------------------------------------------

    @threaded
    def ensure_owner_rbac(
        self,
        organization: str,
        users: Sequence[str],
        owner: OwnerRef,
        rules: Sequence[Mapping[str, Any]],
    ) -> Outcome:
        """The per-org ClusterRole with `rules` (the domain's `owner_rules`) and its binding
        to the Owner's `users` (membership.user_names): CREATED if either was created, else
        UPDATED if either was repaired, else UNCHANGED."""
        role, binding = resources.owner_rbac(organization, users, owner, rules)
        wrote_role = self._create_or_repair(
            self.rbac.read_cluster_role,
            self.rbac.create_cluster_role,
            self.rbac.patch_cluster_role,
            role,
            "rules",
        )
        wrote_binding = self._create_or_repair(
            self.rbac.read_cluster_role_binding,
            self.rbac.create_cluster_role_binding,
            self.rbac.patch_cluster_role_binding,
            binding,
            "subjects",
        )
        return min(wrote_role, wrote_binding, key=_WRITTEN.index)

    def _create_or_repair(
        self,
        read: Callable[[str], Any],
        create: Callable[..., Any],
        patch: Callable[..., Any],
        body: dict[str, Any],
        field: str,
    ) -> Outcome:
        """Creates the cluster-scoped object, or patches back what differs from `body`
        (resources.owned_repair)."""
        name = body["metadata"]["name"]
        current = absent_ok(read, name)
        if current is None:
            create(body, field_manager=FIELD_MANAGER)
            return Outcome.CREATED
        found = self.api_client.sanitize_for_serialization(current)
        repair = resources.owned_repair(found, body, field)
        if not repair:
            return Outcome.UNCHANGED
        patch(name, repair, field_manager=FIELD_MANAGER)
        return Outcome.UPDATED

    # --- member RoleBindings ------------------------------------------------------------

    @threaded
    def put_member_binding(
        self, namespace: str, binding: Binding, owner: OwnerRef, *, exists: bool
    ) -> dict[str, Any]:
        """Creates or re-points the binding; returns it as the server now has it. One request
        when the cache is right: a patch if it holds the binding (`exists`: an ssoOnly flip
        re-points every one), else a create; the other if the server disagrees (404, 409)."""
        body = resources.member_binding(binding, owner)
        repair = resources.member_binding_repair(body)

        def create() -> Any:
            return exists_ok(
                self.rbac.create_namespaced_role_binding,
                namespace,
                body,
                field_manager=FIELD_MANAGER,
            )

        def patch() -> Any:
            return absent_ok(
                self.rbac.patch_namespaced_role_binding,
                binding.name,
                namespace,
                repair,
                field_manager=FIELD_MANAGER,
            )

        first, then = (patch, create) if exists else (create, patch)
        written = first()
        if written is None:
            written = then()
        if written is None:  # created and deleted, or deleted and created, meanwhile
            raise ApiException(status=409, reason=f"RoleBinding {binding.name} changed meanwhile")
        wire: dict[str, Any] = self.api_client.sanitize_for_serialization(written)
        return wire

    @threaded
    def delete_role_binding(self, namespace: str, name: str) -> None:
        absent_ok(self.rbac.delete_namespaced_role_binding, name, namespace)

    # --- orgkeeper.dev objects ----------------------------------------------------------

    @threaded
    def read_organization(self, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = absent_ok(
            self.custom.get_cluster_custom_object, GROUP, VERSION, "organizations", name
        )
        return found

    @threaded
    def read_membership(self, namespace: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = absent_ok(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, "memberships", name
        )
        return found

    @threaded
    def create_custom(
        self, plural: str, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The object created, or None if one of that name was there already (409)."""
        created: dict[str, Any] | None = exists_ok(
            self.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            body,
            field_manager=FIELD_MANAGER,
        )
        return created

    @threaded
    def drop_organization_finalizers(self, name: str, finalizers: Sequence[str]) -> None:
        """Removes these finalizers from the Organization, leaving any other (kopf's own
        included); compare-and-swap on the list, so a finalizer added meanwhile stays."""
        for _ in range(5):
            org = self.read_organization.blocking(name)
            found = list(((org or {}).get("metadata") or {}).get("finalizers") or [])
            kept = [f for f in found if f not in finalizers]
            if org is None or kept == found:
                return
            operations = resources.finalizers_swap(found, kept)
            try:
                self.custom.patch_cluster_custom_object(
                    GROUP,
                    VERSION,
                    "organizations",
                    name,
                    operations,
                    _content_type="application/json-patch+json",
                )
                return
            except ApiException as error:
                if error.status not in (404, 409, 422):  # 422: the test failed; read again
                    raise
        raise RuntimeError(f"Organization {name}: its finalizers kept changing")

    @threaded
    def patch_labels(
        self, plural: str, namespace: str, name: str, labels: Mapping[str, str]
    ) -> dict[str, Any]:
        """Adds or replaces the labels; returns the patched object."""
        patched: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            {"metadata": {"labels": dict(labels)}},
            field_manager=FIELD_MANAGER,
        )
        return patched

    @threaded
    def label_organization(self, name: str, labels: Mapping[str, str]) -> None:
        self.custom.patch_cluster_custom_object(
            GROUP,
            VERSION,
            "organizations",
            name,
            {"metadata": {"labels": dict(labels)}},
            field_manager=FIELD_MANAGER,
        )

    @threaded
    def patch_status(
        self,
        plural: str,
        name: str,
        status: Mapping[str, Any],
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any] | None:
        """A merge patch of .status; returns the patched object, None if it has vanished.

        With `resource_version`, compare-and-swap: 409 if the object changed since.
        """
        body = resources.status_patch(status, resource_version)
        if namespace is None:
            patched = absent_ok(
                self.custom.patch_cluster_custom_object_status,
                GROUP,
                VERSION,
                plural,
                name,
                body,
                field_manager=FIELD_MANAGER,
            )
        else:
            patched = absent_ok(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                body,
                field_manager=FIELD_MANAGER,
            )
        result: dict[str, Any] | None = patched
        return result

    # --- data-plane and control-plane workloads -----------------------------------------

    def _workload_calls(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
        calls = {
            "Deployment": (
                self.apps.patch_namespaced_deployment,
                self.apps.delete_namespaced_deployment,
            ),
            "StatefulSet": (
                self.apps.patch_namespaced_stateful_set,
                self.apps.delete_namespaced_stateful_set,
            ),
            "DaemonSet": (
                self.apps.patch_namespaced_daemon_set,
                self.apps.delete_namespaced_daemon_set,
            ),
        }
        return calls[kind]

    @threaded
    def annotate_workload(
        self, kind: str, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        """Sets (or, with None, removes) annotations on a workload's metadata."""
        patch, _ = self._workload_calls(kind)
        body = {"metadata": {"annotations": dict(annotations)}}
        absent_ok(patch, name, namespace, body, field_manager=FIELD_MANAGER)

    @threaded
    def park_workload(self, kind: str, namespace: str, name: str) -> None:
        """Stops a workload without deleting it: no replicas (a DaemonSet: no node matches),
        and the annotation orgkeeper.dev/decommissioned."""
        patch, _ = self._workload_calls(kind)
        body = resources.parked_workload(kind)
        absent_ok(patch, name, namespace, body, field_manager=FIELD_MANAGER)

    @threaded
    def delete_workload(self, kind: str, namespace: str, name: str) -> None:
        _, delete = self._workload_calls(kind)
        absent_ok(delete, name, namespace, propagation_policy="Background")

    # --- Secrets and ConfigMaps, by name only (orgkeeper never lists or watches Secrets) --

    @threaded
    def read_secret(self, namespace: str, name: str) -> client.V1Secret | None:
        return absent_ok(self.core.read_namespaced_secret, name, namespace)

    @threaded
    def write_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        labels: Mapping[str, str],
        owners: Sequence[Mapping[str, Any]] = (),
        *,
        exists: bool,
        resource_version: str | None = None,
    ) -> client.V1Secret:
        """Creates the Secret, or replaces its data, labels and owners (merge patch); returns it
        as the server now has it.

        With `resource_version`, only that version is patched (409 if it changed since read).
        """
        body = resources.secret(name, data, labels, owners, resource_version)
        if exists:
            return self.core.patch_namespaced_secret(
                name, namespace, body, field_manager=FIELD_MANAGER
            )
        return self.core.create_namespaced_secret(namespace, body, field_manager=FIELD_MANAGER)

    @threaded
    def delete_secret(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Deletes the Secret (with `uid`: only that very object, 409 if it was replaced)."""
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
        absent_ok(
            self.core.delete_namespaced_secret, name, namespace, body=options if uid else None
        )

    @threaded
    def read_config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        found = absent_ok(self.core.read_namespaced_config_map, name, namespace)
        return dict(found.data or {}) if found is not None else None

    @threaded
    def create_immutable_config_map(
        self, namespace: str, name: str, data: Mapping[str, str]
    ) -> Outcome:
        """Creates it unless one by that name exists: CREATED, or UNCHANGED (that one stays)."""
        body = resources.config_map(name, data, immutable=True)
        created = exists_ok(
            self.core.create_namespaced_config_map, namespace, body, field_manager=FIELD_MANAGER
        )
        return Outcome.UNCHANGED if created is None else Outcome.CREATED

    @threaded
    def apply_config_map(self, namespace: str, name: str, data: Mapping[str, str]) -> Outcome:
        body = resources.config_map(name, data)
        current = absent_ok(self.core.read_namespaced_config_map, name, namespace)
        if current is None:
            self.core.create_namespaced_config_map(namespace, body, field_manager=FIELD_MANAGER)
            return Outcome.CREATED
        if (current.data or {}) == dict(data):
            return Outcome.UNCHANGED
        self.core.patch_namespaced_config_map(name, namespace, body, field_manager=FIELD_MANAGER)
        return Outcome.UPDATED

    # --- Events: the operator posts its own -------------------------------------------

    @threaded
    def post_event(self, involved: Mapping[str, Any], event: PostedEvent) -> None:
        """A core/v1 Event on `involved` (resources.event says where)."""
        namespace = (involved.get("metadata") or {}).get("namespace") or "default"
        body = resources.event(involved, event, datetime.now(UTC))
        try:
            self.core.create_namespaced_event(namespace, body)
        except ApiException as error:
            if not (event.name and error.status == 409):
                raise  # a named Event that exists was told already
