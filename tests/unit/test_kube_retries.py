"""The operator's API client tries transient answers (429, 5xx) again before giving up."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kubernetes.client.rest import ApiException
from kubernetes.config import kube_config

from orgkeeper import kube
from orgkeeper.kube import KubeApi, load_client

NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "org-acme"}}


class FlakyServer(ThreadingHTTPServer):
    def __init__(self, answers: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.answers = answers  # status of each answer in turn; 200 once they run out
        self.requests: list[str] = []


class Handler(BaseHTTPRequestHandler):
    server: FlakyServer

    def _answer(self) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        status = self.server.answers.pop(0) if self.server.answers else 200
        body = json.dumps(NAMESPACE if status == 200 else {"kind": "Status", "code": status})
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        pass


for verb in ("GET", "PATCH"):  # http.server looks for do_GET, do_PATCH
    setattr(Handler, f"do_{verb}", Handler._answer)

Serve = Callable[[list[int]], tuple[FlakyServer, KubeApi]]


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    servers: list[FlakyServer] = []

    def start(answers: list[int]) -> tuple[FlakyServer, KubeApi]:
        server = FlakyServer(answers)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "c",
                            "cluster": {"server": f"http://127.0.0.1:{server.server_port}"},
                        }
                    ],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        # Read at import from $KUBECONFIG: point it at this server's kubeconfig.
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        # The same retries without the waits between them, to keep the unit tests quick.
        monkeypatch.setattr(kube, "TRANSIENT_RETRIES", kube.TRANSIENT_RETRIES.new(backoff_factor=0))
        return server, KubeApi(load_client("test"))

    yield start
    for server in servers:
        server.shutdown()


def test_transient_answers_are_retried(serve: Serve) -> None:
    server, api = serve([429, 500, 503])
    found = api.read_namespace.blocking("org-acme")
    assert found is not None and found.metadata.name == "org-acme"
    assert len(server.requests) == 4


def test_writes_are_retried_too(serve: Serve) -> None:
    server, api = serve([502, 504])
    api.patch_labels.blocking("memberships", "org-acme", "alice", {"team": "x"})
    assert [r.split()[0] for r in server.requests] == ["PATCH"] * 3


def test_an_error_that_persists_comes_back_as_itself(serve: Serve) -> None:
    server, api = serve([500] * 10)
    with pytest.raises(ApiException) as raised:
        api.read_namespace.blocking("org-acme")
    assert raised.value.status == 500
    assert len(server.requests) == 5  # the first try and four more
