"""`orgkeeper run`: the operator process."""

from __future__ import annotations

import kopf

from .controllers.runtime import Runtime
from .handlers import register
from .kube import KubeApi, load_client
from .settings import Settings


def run_operator(settings: Settings, *, verbose: bool = False, log_format: str = "plain") -> int:
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    runtime = Runtime(kube=KubeApi(load_client()), settings=settings)
    kopf.run(
        registry=registry,
        memo=kopf.Memo(runtime=runtime),
        clusterwide=True,
        standalone=True,
        liveness_endpoint=f"http://{settings.listen_address}:{settings.health_port}/healthz",
    )
    return 0
