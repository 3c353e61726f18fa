"""A slow and failing API server: a TLS proxy in front of kube-apiserver that answers a seeded
fraction of requests with 429 or 500, and delays another fraction.

The operator talks to it through a kubeconfig of its own. TLS ends at the proxy, with a
certificate from the test cluster's own CA (the suite owns that PKI), and starts again towards
the API server; the operator's bearer token passes through untouched, so the API server still
sees the operator's ServiceAccount.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orgkeeper.pki import certificate, pem_key, subject_name
from orgkeeper_dev.localcluster import LocalCluster, free_port

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}
)


def _status(code: int, reason: str, message: str) -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    ).encode()


@dataclass
class FlakyProxy:
    cluster: LocalCluster
    directory: Path
    rng: random.Random
    error_rate: float = 0.1  # answered 429 or 500 instead of forwarded
    delay_rate: float = 0.1  # forwarded after 0.5 to 3 seconds
    port: int = field(default_factory=free_port)
    # Requests whose path contains one of these get no answer (a partition of those paths).
    held: tuple[str, ...] = ()
    # Requests whose path contains one of these are answered `slow_seconds` late (an API
    # server slow on those, as under its own flow control).
    slowed: tuple[str, ...] = ()
    slow_seconds: float = 2.0
    injected: Counter[str] = field(default_factory=Counter)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubeconfig_for(self, kubeconfig: Path) -> Path:
        """A copy of `kubeconfig` whose server is this proxy (same CA, same credentials)."""
        config: dict[str, Any] = yaml.safe_load(kubeconfig.read_text())
        for entry in config["clusters"]:
            entry["cluster"]["server"] = self.url
        path = self.directory / "proxy.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _serving_context(self) -> ssl.SSLContext:
        pki = self.cluster.pki
        ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(
            subject_name("flaky-proxy"),
            key,
            (ca_cert, ca_key),
            server_names=("127.0.0.1", "localhost"),
        )
        (self.directory / "proxy.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.directory / "proxy.key").write_bytes(pem_key(key))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.directory / "proxy.crt", self.directory / "proxy.key")
        return context

    def start(self) -> FlakyProxy:
        self.directory.mkdir(parents=True, exist_ok=True)
        serving = self._serving_context()
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve(serving))
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="flaky-proxy", daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("the flaky proxy did not start")
        return self

    async def _serve(self, serving: ssl.SSLContext) -> None:
        upstream_context = ssl.create_default_context(cafile=str(self.cluster.pki / "ca.crt"))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=upstream_context, limit=0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=serving).start()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        watch = request.query.get("watch") in ("true", "1")
        self.injected["requests"] += 1
        if any(fragment in request.path for fragment in self.held):
            self.injected["held"] += 1
            await asyncio.sleep(3600)  # the client's timeout ends it
        if any(fragment in request.path for fragment in self.slowed):
            self.injected["slowed"] += 1
            await asyncio.sleep(self.slow_seconds)
        draw = self.rng.random()
        if draw < self.error_rate:
            if self.rng.random() < 0.5:
                self.injected["429"] += 1
                return web.Response(
                    status=429,
                    body=_status(429, "TooManyRequests", "injected by the flaky proxy"),
                    headers={"Retry-After": "1", "Content-Type": "application/json"},
                )
            self.injected["500"] += 1
            return web.Response(
                status=500,
                body=_status(500, "InternalError", "injected by the flaky proxy"),
                content_type="application/json",
            )
        if draw < self.error_rate + self.delay_rate:
            self.injected["delayed"] += 1
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        upstream = await self._session.request(
            request.method,
            f"{self.cluster.server}{request.path_qs}",
            headers=headers,
            data=body or None,
            # Exactly the client's headers: the official client sends JSON bodies without a
            # Content-Type, which the API server takes, but not aiohttp's octet-stream default.
            skip_auto_headers=("Content-Type", "User-Agent", "Accept-Encoding"),
        )
        reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            if not watch:
                payload = await upstream.read()
                return web.Response(status=upstream.status, body=payload, headers=reply_headers)
            loop = asyncio.get_running_loop()
            reply = web.StreamResponse(status=upstream.status, headers=reply_headers)
            await reply.prepare(request)
            # A watch ends when either side goes away (the API server restarting, the operator
            # stopping): the other side then sees its connection end, as without a proxy.
            # And some watches are cut short, as a load balancer's idle timeout would.
            cut_at = loop.time() + self.rng.uniform(3, 20)
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                while True:
                    try:
                        chunk = await asyncio.wait_for(
                            upstream.content.readany(), max(0.0, cut_at - loop.time())
                        )
                    except TimeoutError:
                        self.injected["watches cut"] += 1
                        break
                    if not chunk:
                        break  # the API server ended it
                    await reply.write(chunk)
                await reply.write_eof()
            return reply
        finally:
            upstream.release()

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            # Upstream first: that ends the watches still streaming, so the server can stop.
            await self._session.close()
            if self._runner is not None:
                await self._runner.cleanup()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FlakyProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
