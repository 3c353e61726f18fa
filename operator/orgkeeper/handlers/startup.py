"""The one startup handler that holds every kopf setting."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import kopf

from ..controllers.runtime import Runtime
from ..controllers.signing import load_or_create_signing_key
from ..pki import webhook_tls
from ..settings import Settings

PREFIX = "orgkeeper.dev"


def register(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime = memo.runtime
        configure_kopf(settings, runtime.settings)
        runtime.signing_key = load_or_create_signing_key(runtime.kube, runtime.settings.namespace)
        runtime.metrics.serve(runtime.settings.listen_address, runtime.settings.metrics_port)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as the official client: in-cluster, else $KUBECONFIG.
        return kopf.login_via_client(**kwargs)


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    persistence = kopf_settings.persistence
    persistence.finalizer = f"{PREFIX}/finalizer"
    persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # Explicit Events carry the story; kopf's per-handler chatter stays in the logs.
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.networking.request_timeout = 30
    kopf_settings.networking.connect_timeout = 10
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    kopf_settings.watching.reconnect_backoff = 1.0
    kopf_settings.batching.error_delays = (1, 2, 5, 10, 30, 60)
    kopf_settings.execution.max_workers = 32
    if settings.webhook_mode == "off":
        return
    if settings.webhook_mode == "managed":
        kopf_settings.admission.managed = PREFIX
    certificate, key, authority = webhook_tls(
        Path(tempfile.mkdtemp(prefix="orgkeeper-webhook-")),
        hosts=tuple({settings.listen_address, settings.webhook_host or settings.listen_address}),
    )
    kopf_settings.admission.server = kopf.WebhookServer(
        addr=settings.listen_address,
        port=settings.webhook_port,
        host=settings.webhook_host or settings.listen_address,
        certfile=str(certificate),
        pkeyfile=str(key),
        cadata=authority,
    )
