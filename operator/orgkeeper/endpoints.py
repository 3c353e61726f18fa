"""The operator's own HTTP endpoints, on the sockets `orgkeeper run` bound before it started.

- health port (plain HTTP, for the kubelet): `/healthz` answers while the process serves;
  `/readyz` answers 200 only once the caches are synced, so a Service sends admission calls
  only to a replica that knows every Organization and Membership (503 before).
- metrics port (HTTPS): `/metrics` for authorized clients only, as kubebuilder's secure metrics
  do: the bearer token is checked with a TokenReview, then a SubjectAccessReview for `get` on
  the non-resource URL `/metrics` (granted by the ClusterRole `orgkeeper-metrics-reader`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .pki import mounted_webhook_tls, webhook_tls
from .reviews import BusyError

METRICS_PATH = "/metrics"
RETRY = {"Retry-After": "1"}
logger = logging.getLogger(__name__)

# A bearer token -> 200 (may read), 401 (not authenticated) or 403 (not authorized).
Authorize = Callable[[str], Awaitable[int]]


def health_app(ready: Callable[[], bool]) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not ready: the caches are not synced yet\n")

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz)])
    return app


def metrics_app(registry: CollectorRegistry, authorize: Authorize) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _refusal(401, "a bearer token is required")
        try:
            verdict = await authorize(token.strip())
        except BusyError:  # more token checks pending than allowed: come back, nothing queued
            return web.Response(
                status=429, text="too many token checks now; try again\n", headers=RETRY
            )
        except Exception as error:  # the API server unreachable, say: no answer, no leak
            logger.warning("Could not check a metrics client's token: %s", type(error).__name__)
            return web.Response(status=503, text="can't check the token now; try again\n")
        if verdict == 401:
            return _refusal(401, "the token is not valid")
        if verdict != 200:
            return web.Response(status=403, text=f"not allowed to get {METRICS_PATH}\n")
        exposition = generate_latest(registry)
        return web.Response(body=exposition, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes([web.get(METRICS_PATH, metrics)])
    return app


def _refusal(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers={"WWW-Authenticate": "Bearer"})


def metrics_tls(cert_dir: str | None) -> ssl.SSLContext:
    """A mounted certificate (tls.crt, tls.key), or one made at start (no scraper can verify
    it: mount one, README "Metrics")."""
    if cert_dir:
        mounted = mounted_webhook_tls(Path(cert_dir))
        certificate, key = mounted.certificate, mounted.key
    else:
        directory = Path(tempfile.mkdtemp(prefix="orgkeeper-metrics-"))
        certificate, key, _ = webhook_tls(directory, hosts=("orgkeeper-metrics", "localhost"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certificate), str(key))
    return context


async def serve(
    app: web.Application, sock: socket.socket, context: ssl.SSLContext | None = None
) -> web.AppRunner:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=context).start()
    return runner
