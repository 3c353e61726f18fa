"""The admission webhook server: its TLS, and (`serve` mode) the caBundle it is trusted by."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kopf
from kubernetes.client.rest import ApiException

from .api.v1alpha1 import REGIONS
from .kube import KubeApi, NotLeaderError, Outcome
from .names import PEOPLE_API_SERVICE, WEBHOOK_CONFIGURATION, kopf_prefix
from .pki import Authority, mounted_webhook_tls, webhook_tls
from .registrations import Registrations
from .settings import SettingError, Settings

# The kinds of both webhook configurations (names.WEBHOOK_CONFIGURATION): kopf's own in
# `managed` mode, those of manifests/ in `serve` mode.
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
# How often, at most, `serve` mode re-checks the configuration's caBundle (a re-applied or
# re-created configuration gets it back).
CA_BUNDLE_RECHECK_SECONDS = 60.0
# While a webhook configuration is missing (manifests applied after the operator started, as a
# first install may do), it is looked for again sooner: after 1 s, doubling up to the interval,
# so admission works within seconds of the apply, and a missing one costs a few reads only.
MISSING_FIRST_RECHECK_SECONDS = 1.0

logger = logging.getLogger(__name__)


def webhook_server(settings: Settings, authority: Authority | None = None) -> kopf.WebhookServer:
    """kopf's HTTPS server for the admission webhooks, with a mounted or a generated certificate.

    `managed`: kopf registers the webhooks by URL, with the CA of this server as caBundle.
    `serve`: the configuration comes from manifests/ (a Service in front of the Pod); the server
    also reports each CA it serves under, for `keep_ca_bundle` to patch into it.
    """
    serve = settings.webhook_mode == "serve"
    server_class = ServingWebhookServer if serve else kopf.WebhookServer
    host = settings.webhook_host or (_service_host(settings) if serve else settings.listen_address)
    if settings.webhook_cert_dir:
        mounted = mounted_webhook_tls(Path(settings.webhook_cert_dir))
        return server_class(
            addr=settings.listen_address,
            port=settings.webhook_port,
            host=host,
            certfile=str(mounted.certificate),
            pkeyfile=str(mounted.key),
            # Without ca.crt kopf would offer the serving certificate itself as the CA bundle;
            # then the caBundle is left to whoever issued the certificate.
            cafile=str(mounted.authority) if mounted.authority else None,
        )
    if serve:
        hosts = serving_names(settings)
    else:  # the people API is reached under the Service's name even on loopback (managed)
        service = (_service_host(settings),) if settings.people_api_port is not None else ()
        hosts = tuple(dict.fromkeys((settings.listen_address, host, *service)))
    # `authority`: the replicas' shared CA (--leader-elect); else one of this process's own.
    certificate, key, ca = webhook_tls(
        Path(tempfile.mkdtemp(prefix="orgkeeper-webhook-")), hosts=hosts, authority=authority
    )
    return server_class(
        addr=settings.listen_address,
        port=settings.webhook_port,
        host=host,
        certfile=str(certificate),
        pkeyfile=str(key),
        cadata=ca,
    )


def people_api_bundle(server: kopf.WebhookServer) -> str | None:
    """The caBundle (base64 PEM) the people API's APIService needs: the webhook server's CA."""
    if isinstance(server, ServingWebhookServer) and server.ca_bundle:
        return server.ca_bundle
    ca = server.cadata
    if ca is None and server.cafile:
        ca = Path(server.cafile).read_bytes()
    if ca is None:
        return None
    return base64.b64encode(ca if isinstance(ca, bytes) else ca.encode()).decode()


def people_api_external_name(settings: Settings) -> str:
    """Where kube-aggregator dials the people API of `managed` mode: --webhook-host if given,
    else `localhost` (the API server and `make run` on one machine, as kopf's webhook URLs)."""
    return settings.webhook_host or "localhost"


def _service_host(settings: Settings) -> str:
    return f"{settings.webhook_service}.{settings.namespace}.svc"


def serving_names(settings: Settings) -> tuple[str, ...]:
    """The names the API server may use to reach the webhooks in `serve` mode (certificate SANs).

    --webhook-host first when given, then the Service's DNS names, then the listen address unless
    it is a catch-all one (0.0.0.0, ::).
    """
    names = [settings.webhook_host] if settings.webhook_host else []
    service = _service_host(settings)
    names += [service, f"{service}.cluster.local"]
    with contextlib.suppress(ValueError):
        if not ipaddress.ip_address(settings.listen_address).is_unspecified:
            names.append(settings.listen_address)
    return tuple(dict.fromkeys(names))


class ServingWebhookServer(kopf.WebhookServer):
    """kopf's webhook server that also tells which CA bundle it currently serves under.

    kopf yields a client config each time the server (re)starts listening: at start, and after
    a mounted certificate was renewed. Its caBundle (base64 PEM) is what the API server needs.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ca_bundle: str | None = None
        self.serving = asyncio.Event()  # set once listening; again after every restart

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async for client_config in super().__call__(fn):
            self.ca_bundle = client_config.get("caBundle") if self.cadata or self.cafile else None
            self.serving.set()
            yield client_config


API_SERVICE = "APIService"


async def keep_ca_bundle(
    kube: KubeApi,
    server: ServingWebhookServer,
    interval: float,
    *,
    api_service: bool = False,
    on_serving: Callable[[], None] | None = None,
) -> None:
    """`serve` mode: once the server listens, its CA goes into both webhook configurations.

    Re-checked every `interval` and after every certificate renewal; a configuration already
    right is not written. With `api_service`, the people API's APIService too (it is served on
    the same certificate), and `on_serving` is called whenever the server (re)starts, so the
    people API serves a renewed certificate as well. A missing configuration is not an error:
    the operator runs without admission checks (a transfer that got in is still refused as
    OwnerValid=False) and picks the configuration up when it appears.
    """
    reported: dict[str, str] = {}  # the last state logged per kind: a steady state logs once
    registrations = Registrations(kube)
    soon = MISSING_FIRST_RECHECK_SECONDS
    while True:
        await server.serving.wait()
        server.serving.clear()
        if on_serving is not None:
            on_serving()
        for kind in (*WEBHOOK_KINDS, *([API_SERVICE] if api_service else [])):
            state = await _check_ca_bundle(registrations, kind, server.ca_bundle)
            if state != reported.get(kind):
                _log_ca_bundle_state(kind, state)
                reported[kind] = state
        # Check again after the interval (sooner while one is missing), or at once when a
        # renewed certificate is served.
        missing = any(reported.get(kind) == Outcome.ABSENT.value for kind in WEBHOOK_KINDS)
        wait, soon = next_ca_check(interval, soon, missing=missing)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.serving.wait(), timeout=wait)
        server.serving.set()


def next_ca_check(interval: float, soon: float, *, missing: bool) -> tuple[float, float]:
    """How long until the next check of the caBundles, and the wait after it while a webhook
    configuration stays missing (MISSING_FIRST_RECHECK_SECONDS, doubling up to `interval`)."""
    if not missing:
        return interval, MISSING_FIRST_RECHECK_SECONDS
    return min(soon, interval), min(soon * 2, interval)


async def _check_ca_bundle(registrations: Registrations, kind: str, bundle: str | None) -> str:
    if bundle is None:
        return "no-ca"
    try:
        if kind == API_SERVICE:
            outcome = await registrations.put_api_service_ca_bundle(PEOPLE_API_SERVICE, bundle)
        else:
            outcome = await registrations.put_webhook_ca_bundle(kind, WEBHOOK_CONFIGURATION, bundle)
    except NotLeaderError:
        return "follower"  # the leader keeps the bundle (the replicas share one CA)
    except ApiException as error:
        if error.status == 403:
            return "forbidden"
        if error.status in (409, 422):
            return "changed"  # changed meanwhile: the next round sees the new one
        return f"failed: {error.status} {error.reason}"
    except Exception as error:  # the API server unreachable, say; the next round retries
        return f"failed: {error}"
    return outcome.value


def _log_ca_bundle_state(kind: str, state: str) -> None:
    name = PEOPLE_API_SERVICE if kind == API_SERVICE else WEBHOOK_CONFIGURATION
    if state == Outcome.UPDATED.value:
        logger.info("Put the webhook server's CA into %s %s.", kind, name)
    elif state == Outcome.ABSENT.value and kind == API_SERVICE:
        logger.warning(
            "%s %s does not exist, so `orgkeeper orgs` and `kubectl get myorganizations` find "
            "no people API; apply manifests/ to register it.",
            kind,
            name,
        )
    elif state == Outcome.ABSENT.value:
        logger.warning(
            "%s %s does not exist, so its rules are not applied at admission; apply "
            "manifests/ to apply them. The operator runs on regardless.",
            kind,
            name,
        )
    elif state == "no-ca":
        logger.info(
            "The webhook certificate directory has no ca.crt: the caBundle of %s %s is left "
            "to whoever issued the certificate (cert-manager's CA injector, with the "
            "inject-ca-from annotation).",
            kind,
            name,
        )
    elif state == "forbidden":
        logger.error(
            "Not allowed to read or patch %s %s: grant get and patch on it by name, as "
            "manifests/rbac/operator.yaml does.",
            kind,
            name,
        )
    elif state.startswith("failed"):
        logger.warning("Could not update the caBundle of %s %s (%s); retrying.", kind, name, state)


# Every name orgkeeper gives its webhook configurations: the installed ones (manifests/) and
# those of managed mode, one per regional operator.
CONFIGURATION_NAMES = (WEBHOOK_CONFIGURATION, *(kopf_prefix(region) for region in REGIONS))
# How long a webhook URL may take to accept a connection before it counts as dead.
CONNECT_SECONDS = 1.0


def check_webhook_configurations(registrations: Registrations, settings: Settings) -> list[str]:
    """orgkeeper's webhook configurations as this operator finds them at start.

    Raises SettingError (one line, exit 2) when one shows another installation (it calls a
    Service in another namespace), or when managed mode would replace the installed one (it
    calls a Service). Returns a warning for each one that calls a URL where nothing answers
    (left by a stopped `orgkeeper run`): it fails closed, refusing every write it matches.
    Blocking: call it before the loop runs.
    """
    managed = kopf_prefix(settings.region) if settings.webhook_mode == "managed" else None
    serving = WEBHOOK_CONFIGURATION if settings.webhook_mode == "serve" else None
    mine = {managed, serving} - {None}  # configurations this operator is about to serve
    dead: dict[str, list[str]] = {}  # name -> kinds, for one kubectl command per name
    called: dict[str, str] = {}  # name -> a URL it calls
    for configuration in registrations.webhook_configurations.blocking(CONFIGURATION_NAMES):
        kind, name = configuration["kind"], configuration["metadata"]["name"]
        hooks = configuration.get("webhooks") or []
        configs = [hook.get("clientConfig") or {} for hook in hooks]
        services = sorted(
            {
                f"{c['service'].get('namespace')}/{c['service'].get('name')}"
                for c in configs
                if c.get("service")
            }
        )
        for service in services:
            namespace = service.split("/")[0]
            if namespace != settings.namespace:
                raise SettingError(
                    "namespace",
                    f"orgkeeper is installed in namespace {namespace} ({kind} {name} calls "
                    f"Service {service}); this one (in {settings.namespace}) would run beside it "
                    "with a signing key of its own and re-sign its licenses: stop that "
                    f"installation, or run this one with --namespace {namespace}",
                )
        if name == managed and services:
            raise SettingError(
                "webhook-mode",
                f"managed would replace {kind} {name}, the installed one (it calls Service "
                f"{services[0]}); run the installed operator, or this one with "
                "--webhook-mode off or serve",
            )
        if name in mine:
            continue  # registered anew (managed), or served from now on (serve)
        urls = sorted({c["url"] for c in configs if c.get("url")})
        if urls and not any(_answers(url) for url in urls):
            dead.setdefault(name, []).append(kind.lower())
            called[name] = urls[0]
    return [
        f"The webhook configurations {name} call {called[name]}, where nothing answers "
        "(left by a stopped `orgkeeper run`?): they refuse every write they match "
        "(failurePolicy Fail); remove them: kubectl delete "
        + " ".join(f"{kind}/{name}" for kind in kinds)
        for name, kinds in dead.items()
    ]


def _answers(url: str) -> bool:
    """Whether something accepts a connection at the URL's host and port (from here)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 443), CONNECT_SECONDS):
            return True
    except OSError:
        return False
