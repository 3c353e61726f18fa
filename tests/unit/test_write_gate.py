"""The leader's write gate at the HTTP level (kopf's session): by verb and resource, whatever
code sends the request; and a resigning leader releases the Lease only after its writes in
flight got their answers."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubernetes import client

from orgkeeper.kube import (
    UNGATED_RESOURCES,
    WEBHOOK_CONFIGURATIONS,
    KubeApi,
    NotLeaderError,
    is_gated_request,
    resource_of,
    write_gate_middleware,
)
from orgkeeper.leases import Leases
from orgkeeper.manager import drained

ORG = "/apis/orgkeeper.dev/v1alpha1/organizations/acme"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/orgkeeper-system/leases/orgkeeper"
SECRET = "/api/v1/namespaces/org-acme/secrets/license"


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Runs an async test in a loop of its own (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def test_resources_are_read_from_the_rest_path() -> None:
    assert resource_of(ORG) == ("orgkeeper.dev", "organizations")
    assert resource_of(LEASE) == ("coordination.k8s.io", "leases")
    assert resource_of(SECRET) == ("", "secrets")
    assert resource_of("/api/v1/namespaces/org-acme") == ("", "namespaces")
    assert resource_of("/api/v1/namespaces") == ("", "namespaces")
    assert resource_of("/version") == ("", "")


@pytest.mark.parametrize("verb", ["POST", "PUT", "PATCH", "DELETE", "patch"])
def test_every_mutating_verb_is_a_write_the_gate_decides(verb: str) -> None:
    assert is_gated_request(verb, ORG)
    assert is_gated_request(verb, SECRET)
    assert is_gated_request(verb, "/api/v1/namespaces")


@pytest.mark.parametrize("verb", ["GET", "HEAD", "OPTIONS", "get"])
def test_reads_pass_the_gate(verb: str) -> None:
    assert not is_gated_request(verb, ORG)


def test_the_lease_and_the_reviews_pass_the_gate_and_webhooks_only_when_managed() -> None:
    assert not is_gated_request("PUT", LEASE)
    assert not is_gated_request("POST", "/apis/authentication.k8s.io/v1/tokenreviews")
    assert not is_gated_request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews")
    webhooks = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/orgkeeper"
    assert is_gated_request("PATCH", webhooks)
    assert not is_gated_request("PATCH", webhooks, UNGATED_RESOURCES | WEBHOOK_CONFIGURATIONS)


class Gate:
    def __init__(self) -> None:
        self.open = True

    def __call__(self) -> bool:
        return self.open


def gated_kube(gate: Callable[[], bool]) -> KubeApi:
    kube = KubeApi(client.ApiClient())  # its own client is not used: kopf's session is
    kube.write_gate = gate
    return kube


@asynccontextmanager
async def api_server(
    received: list[str], answer: asyncio.Event
) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A stand-in API server recording what reaches it; PATCHes wait for `answer`."""
    arrived = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        received.append(f"{request.method} {request.path}")
        if request.method == "PATCH":
            arrived.set()
            await answer.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", arrived
    finally:
        await runner.cleanup()


@run_async
async def test_kopfs_session_sends_no_write_once_the_gate_closed() -> None:
    gate, answer = Gate(), asyncio.Event()
    received: list[str] = []
    answer.set()
    kube = gated_kube(gate)
    async with (
        api_server(received, answer) as (url, _),
        aiohttp.ClientSession(url, middlewares=(write_gate_middleware(kube),)) as session,
    ):
        async with session.patch(ORG, json={}) as response:
            assert response.status == 200
        gate.open = False  # resigned, or the renew deadline passed
        with pytest.raises(NotLeaderError, match=f"PATCH {ORG}: this replica does not hold"):
            await session.patch(ORG, json={})
        with pytest.raises(NotLeaderError):
            await session.delete(SECRET)
        async with session.get(ORG) as response:  # reads go on (a follower's caches)
            assert response.status == 200
        async with session.put(LEASE, json={}) as response:  # the Lease is released by a write
            assert response.status == 200
    assert received == [f"PATCH {ORG}", f"GET {ORG}", f"PUT {LEASE}"]
    assert kube.writes_in_flight == 0


@run_async
async def test_a_write_in_flight_holds_the_release_until_its_answer_came() -> None:
    gate, answer = Gate(), asyncio.Event()
    received: list[str] = []
    kube = gated_kube(gate)
    async with (
        api_server(received, answer) as (url, arrived),
        aiohttp.ClientSession(url, middlewares=(write_gate_middleware(kube),)) as session,
    ):
        patching = asyncio.create_task(session.patch(ORG, json={}))
        await arrived.wait()  # sent before the step-down: it is in flight
        gate.open = False
        assert kube.writes_in_flight == 1
        assert not await drained(kube, 0.2)  # bounded: not drained, so the Lease is not released
        answer.set()
        assert await drained(kube, 5.0)
        (await patching).close()
    assert received == [f"PATCH {ORG}"]


def kube_at(url: str, gate: Callable[[], bool]) -> KubeApi:
    """A KubeApi whose client talks to `url` (a stand-in API server)."""
    configuration = client.Configuration()
    configuration.host = url
    kube = KubeApi(client.ApiClient(configuration))
    kube.write_gate = gate
    return kube


@run_async
async def test_kubes_client_sends_no_write_once_the_gate_closed_whichever_method_sends_it() -> None:
    gate, answer = Gate(), asyncio.Event()
    received: list[str] = []
    answer.set()
    async with api_server(received, answer) as (url, _):
        kube = kube_at(url, gate)
        await kube.delete_secret("org-acme", "license")
        gate.open = False
        with pytest.raises(NotLeaderError, match=f"DELETE {SECRET}: this replica does not hold"):
            await kube.delete_secret("org-acme", "license")

        def renamed_read_of_a_secret() -> None:  # a name that reads, a request that writes
            kube.core.delete_namespaced_secret("license", "org-acme")

        with pytest.raises(NotLeaderError):  # on any thread, past any adapter
            await asyncio.to_thread(renamed_read_of_a_secret)
        await kube.read_secret("org-acme", "license")  # reads go on
        lease = {"metadata": {"name": "orgkeeper"}, "spec": {}}
        # The Lease is written by whoever campaigns.
        await Leases(kube).replace_lease("orgkeeper-system", lease)
    assert received == [f"DELETE {SECRET}", f"GET {SECRET}", f"PUT {LEASE}"]
    assert kube.writes_in_flight == 0


@run_async
async def test_start_up_writes_pass_the_closed_gate_only_through_their_door() -> None:
    gate, answer = Gate(), asyncio.Event()
    gate.open = False  # a follower, or no replica leads yet
    received: list[str] = []
    answer.set()
    async with api_server(received, answer) as (url, _):
        kube = kube_at(url, gate)

        def make_the_shared_ca() -> None:
            with kube.start_up_writes("the webhook CA replicas share"):
                kube.core.create_namespaced_secret("orgkeeper-system", {"metadata": {}})

        await asyncio.to_thread(make_the_shared_ca)
        with kube.start_up_writes("the webhook CA replicas share"):  # held on kube's threads
            await kube.write_secret("orgkeeper-system", "ca", {}, {}, exists=False)
        with pytest.raises(NotLeaderError):  # outside the door, the same write is refused
            await kube.write_secret("orgkeeper-system", "ca", {}, {}, exists=False)
    assert received == ["POST /api/v1/namespaces/orgkeeper-system/secrets"] * 2
