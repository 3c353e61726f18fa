"""`orgkeeper run`: the operator process."""

from __future__ import annotations

import kopf

from .controllers.runtime import Runtime
from .handlers import register
from .kube import Guardrails, KubeApi, load_client
from .preflight import Listeners
from .settings import Settings


def run_operator(
    settings: Settings, *, listeners: Listeners, verbose: bool = False, log_format: str = "plain"
) -> int:
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    guardrails = Guardrails(settings.pod_security, settings.membership_quota)
    runtime = Runtime(kube=KubeApi(load_client(), guardrails), settings=settings)
    try:
        kopf.run(
            registry=registry,
            # The health and metrics servers start on `listeners` (handlers/startup.py).
            memo=kopf.Memo(runtime=runtime, listeners=listeners),
            clusterwide=True,
            standalone=True,
        )
    finally:
        listeners.close()
    return 0
