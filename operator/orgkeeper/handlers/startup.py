"""The startup handlers of the operator's two kopf parts (manager.py): every kopf setting; on
every replica the webhook server, the health and metrics endpoints and the background tasks
(informers, memory trimming, the CA keeper); for the leader, kopf's persistence and watches,
and the loops that mark Pending and tell unserved regions."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any, cast

import aiohttp
import kopf
from aiohttp import web
from kubernetes.client.rest import ApiException

from .. import names
from ..access import Reviews
from ..controllers.runtime import Runtime
from ..controllers.signing import load_or_create_webhook_authority
from ..endpoints import METRICS_PATH, health_app, metrics_app, metrics_tls, serve
from ..kube import (
    UNGATED_RESOURCES,
    WEBHOOK_CONFIGURATIONS,
    KubeApi,
    write_gate_middleware,
)
from ..memory import trim_periodically, use_full_default_executor
from ..people import FrontProxy, people_app, people_tls
from ..pki import Authority
from ..preflight import Listeners
from ..registrations import Registrations
from ..reviews import token_key
from ..settings import Settings
from ..webhook_server import (
    CA_BUNDLE_RECHECK_SECONDS,
    ServingWebhookServer,
    keep_ca_bundle,
    people_api_bundle,
    people_api_external_name,
    webhook_server,
)
from .admission import log_refusals_as_info
from .indexes import LICENSES, ORGANIZATIONS, WORKLOADS
from .organization import pending_memberships, take_turns, tell_unserved_regions

logger = logging.getLogger(__name__)

# kopf notices CRDs installed or upgraded while it runs (it lists and watches them).
CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")


def register_always_on(registry: kopf.OperatorRegistry) -> None:
    """The startup and cleanup of the part every replica runs (manager.py): kopf's admission
    server, the caches (informers), the endpoints, the people API and the CA keeper."""

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime = memo.runtime
        configure_admission(settings, runtime.settings, shared_authority(runtime))

    @kopf.on.startup(registry=registry)
    async def start_background_tasks(
        settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any
    ) -> None:
        runtime: Runtime = memo.runtime
        use_full_default_executor(asyncio.get_running_loop())  # asyncio.to_thread's threads
        tasks = [
            asyncio.create_task(informer.run(), name=f"informer of {informer.what}")
            for informer in runtime.caches.informers()
        ]
        tasks.append(asyncio.create_task(trim_periodically(), name="malloc_trim"))
        synced = asyncio.create_task(runtime.caches.synced(), name="caches synced")
        tasks.append(synced)
        memo.endpoints = await serve_endpoints(runtime, memo.listeners, ready=synced.done)
        server = settings.admission.server
        people = None
        if isinstance(server, kopf.WebhookServer) and memo.listeners.people is not None:
            people = await serve_people(runtime, memo.listeners.people, server, synced.done)
            if people is not None:
                memo.endpoints.append(people[0])
                if not isinstance(server, ServingWebhookServer):  # managed: register it here
                    memo.people_registered = await register_people_api(runtime, server)
        if isinstance(server, ServingWebhookServer):
            interval = min(
                runtime.settings.check_interval.total_seconds(), CA_BUNDLE_RECHECK_SECONDS
            )
            keeping = keep_ca_bundle(
                runtime.kube,
                server,
                interval,
                api_service=people is not None,
                on_serving=people[1] if people is not None else None,
            )
            tasks.append(asyncio.create_task(keeping))
        memo.background_tasks = tasks

    @kopf.on.cleanup(registry=registry)
    async def stop_background_tasks(memo: kopf.Memo, **_: Any) -> None:
        await cancelled(memo.get("background_tasks", []))
        for runner in memo.get("endpoints", []):
            await runner.cleanup()
        if memo.get("people_registered"):
            settings = memo.runtime.settings
            kube = memo.runtime.kube
            try:
                await Registrations(kube).unregister_people_api(
                    settings.namespace, settings.webhook_service
                )
            except Exception as error:  # stopping regardless; say what is left behind
                logger.warning(
                    "Could not remove the people API's APIService %s (%s): kubectl warns "
                    "until it is deleted.",
                    names.PEOPLE_API_SERVICE,
                    error,
                )

    register_login(registry)


def register_leader_only(registry: kopf.OperatorRegistry) -> None:
    """The startup of the part only the leader runs (manager.py): kopf's persistence and what
    it watches, for the reconcile loops, the event handlers and the indexes."""

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure_kopf(settings, memo.runtime.settings)

    @kopf.on.startup(registry=registry)
    async def start_leader_tasks(memo: kopf.Memo, **_: Any) -> None:
        # The scheduler of the orgs' reconciles (cancelled with the term, it lets running turns
        # end), and the loops that write for orgs no org serves; what the caches told them
        # while this replica followed waits for them (Wakeups.unserved, unreconciled_elsewhere).
        runtime: Runtime = memo.runtime
        memo.leader_tasks = [
            asyncio.create_task(take_turns(runtime), name="organizations' turns"),
            asyncio.create_task(pending_memberships(runtime), name="pending memberships"),
            asyncio.create_task(tell_unserved_regions(runtime), name="unserved regions"),
        ]

    @kopf.on.cleanup(registry=registry)
    async def stop_leader_tasks(memo: kopf.Memo, **_: Any) -> None:
        await cancelled(memo.get("leader_tasks", []))
        memo.runtime.wakes.end_term()

    register_login(registry)


async def cancelled(tasks: list[asyncio.Task[None]]) -> None:
    """Cancels the tasks and returns once they have ended."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def register_login(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.login(registry=registry)
    async def login(memo: kopf.Memo, **kwargs: Any) -> kopf.AiohttpSession | None:
        # The same credentials as the official client: in-cluster, else $KUBECONFIG.
        info = await asyncio.to_thread(kopf.login_via_client, **kwargs)
        if info is None:
            return None
        runtime: Runtime = memo.runtime
        ungated = UNGATED_RESOURCES
        if runtime.settings.webhook_mode == "managed":  # kopf registers this process's URL
            ungated |= WEBHOOK_CONFIGURATIONS
        return gated_session(info, runtime.kube, ungated)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _IdentifiedConnection(kopf.ConnectionInfo):
    """kopf's credentials plus our User-Agent: kopf keeps a User-Agent it is given."""

    user_agent: str

    def as_http_headers(self) -> dict[str, str]:
        return {**super().as_http_headers(), "User-Agent": self.user_agent}


def identified(info: kopf.ConnectionInfo, user_agent: str) -> kopf.ConnectionInfo:
    """The same connection, its requests sent as `user_agent` (the operator's, with identity)."""
    fields = {field.name: getattr(info, field.name) for field in dataclasses.fields(info)}
    return _IdentifiedConnection(**fields, user_agent=user_agent)


def gated_session(
    info: kopf.ConnectionInfo, kube: KubeApi, ungated: frozenset[tuple[str, str]]
) -> kopf.AiohttpSession:
    """kopf's HTTP session (as kopf builds it from `info`), sent as the operator's User-Agent,
    its writes (its patches of finalizers, annotations and status) through the leader's write
    gate by HTTP verb (kube.write_gate_middleware)."""
    identity = identified(info, kube.api_client.user_agent)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=identity.as_ssl_context()),
        headers=identity.as_http_headers(),
        proxy=identity.proxy_url,
        trust_env=identity.trust_env,
        middlewares=(write_gate_middleware(kube, ungated),),
    )
    return kopf.AiohttpSession(
        server=identity.server,
        priority=identity.priority,
        default_namespace=identity.default_namespace,
        expiration=identity.expiration,
        aiohttp_session=session,
    )


def shared_authority(runtime: Runtime) -> Authority | None:
    """Replicas (--leader-elect) generating their webhook certificates share one CA."""
    settings = runtime.settings
    if settings.leader_elect and settings.webhook_mode == "serve" and not settings.webhook_cert_dir:
        # Before any replica leads, the first to start makes it: past the leader's write gate.
        with runtime.kube.start_up_writes("the webhook CA replicas share"):
            return load_or_create_webhook_authority(runtime.kube, settings.namespace)
    return None


async def serve_endpoints(
    runtime: Runtime, listeners: Listeners, ready: Callable[[], bool]
) -> list[web.AppRunner]:
    """/healthz and /readyz on the health port; /metrics, authorized, over HTTPS."""

    reviews = Reviews(runtime.kube)

    async def authorize(token: str) -> int:
        # Kept briefly by the token's hash; asked with a bound (reviews.py).
        return await runtime.metrics_access.ask(
            token_key(token, METRICS_PATH),
            lambda: reviews.metrics_access(token, METRICS_PATH),
        )

    return [
        await serve(health_app(ready), listeners.health),
        await serve(
            metrics_app(runtime.metrics.registry, authorize),
            listeners.metrics,
            metrics_tls(runtime.settings.metrics_cert_dir),
        ),
    ]


async def register_people_api(runtime: Runtime, server: kopf.WebhookServer) -> bool:
    """`managed` mode: the APIService and an ExternalName Service for this process (README "The
    org switcher"), as kopf registers the webhooks by URL; removed again at exit."""
    settings, kube = runtime.settings, runtime.kube
    bundle = people_api_bundle(server)
    if bundle is None or settings.people_api_port is None:
        return False
    try:
        await Registrations(kube).register_people_api(
            settings.namespace,
            settings.webhook_service,
            people_api_external_name(settings),
            settings.people_api_port,
            bundle,
        )
    except (ApiException, ValueError) as error:
        reason = error.reason if isinstance(error, ApiException) else str(error)
        logger.error("The people API is served but not registered: %s", reason)
        return False
    logger.info(
        "Registered the people API (APIService %s) for this process.", names.PEOPLE_API_SERVICE
    )
    return True


async def serve_people(
    runtime: Runtime, sock: socket.socket, server: kopf.WebhookServer, ready: Callable[[], bool]
) -> tuple[web.AppRunner, Callable[[], None]] | None:
    """The people API (people.py) on its port, with the webhook server's certificate; and how
    to load that certificate again once renewed. None, with one log line saying why, if the
    cluster publishes no front-proxy CA or the operator may not read it."""
    kube = runtime.kube
    try:
        data = await Registrations(kube).front_proxy_config()
    except ApiException as error:
        logger.error(
            "The people API is not served: reading %s/%s was refused (%s); grant the Role "
            "extension-apiserver-authentication-reader in kube-system, as "
            "manifests/rbac/operator.yaml does.",
            *names.FRONT_PROXY_CONFIG_MAP,
            error.status,
        )
        return None
    front_proxy = FrontProxy.from_config_map(data or {})
    if front_proxy is None:
        logger.error(
            "The people API is not served: kube-apiserver publishes no front-proxy CA in %s/%s "
            "(start it with --requestheader-client-ca-file, as kubeadm does).",
            *names.FRONT_PROXY_CONFIG_MAP,
        )
        return None
    certificate, key = str(server.certfile), str(server.pkeyfile)
    context = people_tls(certificate, key, front_proxy)
    app = people_app(runtime.caches.my_organizations, ready, front_proxy)
    runner = await serve(app, sock, context)

    def reload() -> None:
        context.load_cert_chain(str(server.certfile), str(server.pkeyfile))

    return runner, reload


class SpecDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base (an annotation) without the object's labels and annotations.

    No handler of orgkeeper reacts to a change of metadata, and kopf's own essence copies every
    label and annotation into one annotation: an Organization with 200 KB of labels made it
    exceed the API server's 256 KB limit, and every handling ended in a 422, retried forever.
    The spec alone is bounded by the CRD's schema.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
        return cast(kopf.BodyEssence, {k: v for k, v in essence.items() if k != "metadata"})


# kopf lists in pages this size (never a whole kind at once).
KOPF_CHUNK_SIZE = 100


def select_served(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    """kopf lists and watches only what the operator serves, selected by the API server: the
    workloads labelled for an org (the label is reserved: manifests/policies/), orgkeeper's own
    CRDs, and under --region that region's Organizations (spec.region, a selectable field);
    under --shard i/N its orgs' Organizations and Licenses (the slot label, set at admission).

    A workload whose org label is removed leaves the selection: its watch says DELETED, which
    is what the org it left must hear (handlers/organization.py: workload_changed).
    """
    watching = kopf_settings.watching
    for resource in WORKLOADS.values():
        watching.label_selectors[resource] = names.WORKLOAD_SELECTOR
    if settings.region is not None:
        watching.field_selectors[ORGANIZATIONS] = names.region_selector(settings.region)
    shard = settings.shard.selector()
    if shard is not None:  # --shard i/N: its orgs' Organizations and Licenses only
        watching.label_selectors[ORGANIZATIONS] = shard
        watching.label_selectors[LICENSES] = shard


# How long kopf's workers may finish the events they hold once the leader-only part is told
# to stop: as long as a resigning leader waits for its writes in flight (manager.py), so that
# kopf's own PATCHes on their way are answered, not cancelled, before the Lease is released.
WORKERS_EXIT_SECONDS = 5.0


def quiet_routine_logs(verbose: bool) -> None:
    """Without --verbose, what goes right is not logged object by object: kopf's "Handler ...
    succeeded" for every event and "Webhook ... succeeded" for every admission review, and
    aiohttp's access line for every review (at 1,000 orgs, logging those was about a sixth of
    the operator's CPU while Memberships arrived). Warnings and errors still are, and refusals
    (logged at INFO by RefusalsAreNotErrors, from kopf's ERROR)."""
    level = logging.NOTSET if verbose else logging.WARNING
    for name in ("kopf.objects", "aiohttp.access"):
        logging.getLogger(name).setLevel(level)


def configure_common(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    """What both parts' kopf share: quiet refusals and routine logs, no kopf Events, timeouts,
    CRDs watched."""
    log_refusals_as_info()
    quiet_routine_logs(settings.verbose)
    # The operator posts its own Events (kube.post_event: on the object concerned, where
    # `kubectl describe` finds them, once per transition). kopf's would go to `default` with
    # the wrong involvedObject, raw API errors included: its messages stay in the logs.
    kopf_settings.posting.enabled = False
    kopf_settings.networking.request_timeout = 30
    kopf_settings.networking.connect_timeout = 10
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    kopf_settings.watching.reconnect_backoff = 1.0
    kopf_settings.watching.chunk_size = KOPF_CHUNK_SIZE
    kopf_settings.watching.label_selectors[CRDS] = names.CRD_SELECTOR


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    """The leader-only part: kopf's persistence, what it watches, its workers."""
    configure_common(kopf_settings, settings)
    prefix = names.kopf_prefix(settings.region)
    persistence = kopf_settings.persistence
    persistence.finalizer = names.finalizer(settings.region)
    persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    persistence.diffbase_storage = SpecDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    kopf_settings.queueing.error_delays = (1, 2, 5, 10, 30, 60)
    kopf_settings.queueing.exit_timeout = WORKERS_EXIT_SECONDS
    kopf_settings.execution.max_workers = 32
    select_served(kopf_settings, settings)


def configure_admission(
    kopf_settings: kopf.OperatorSettings, settings: Settings, authority: Authority | None = None
) -> None:
    """The always-on part: kopf's admission server (none with --webhook-mode off)."""
    configure_common(kopf_settings, settings)
    if settings.webhook_mode == "off":
        return
    if settings.webhook_mode == "managed":
        # One configuration per regional operator: they would overwrite each other's URL.
        kopf_settings.admission.managed = names.kopf_prefix(settings.region)
    kopf_settings.admission.server = webhook_server(settings, authority)
