"""The people API: `people.orgkeeper.dev/v1alpha1` `myorganizations`, an aggregated API.

kube-apiserver's aggregation layer authenticates and authorizes the person (one ClusterRole,
bound to `system:authenticated`, grants get and list on `myorganizations`), then proxies the
request here with its front-proxy client certificate and the person in `X-Remote-User` and
`X-Remote-Group`. This server trusts those headers only over a TLS connection whose client
certificate the front proxy's CA signed (and whose name is an allowed one): the CA and the
header names are kube-apiserver's own, read from kube-system/extension-apiserver-authentication.
Every answer is about the requester themself; nobody can ask about anyone else.

Every replica serves it (leader or not), from its own caches (the Runtime's informers), like
the admission webhooks: on the webhook server's certificate, behind the same Service.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .controllers.writes import explain
from .domain.people import table
from .names import (
    MY_ORGANIZATION_KIND,
    MY_ORGANIZATIONS,
    PEOPLE_API_PATH,
    PEOPLE_GROUP,
    PEOPLE_VERSION,
)

logger = logging.getLogger(__name__)

# Answers a user name with their MyOrganizations.
Answer = Callable[[str], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class FrontProxy:
    """How kube-apiserver's front proxy (the aggregator) vouches for a requester."""

    ca: str  # PEM: the CA of its client certificate
    allowed_names: tuple[str, ...]  # the certificate's common names accepted; empty: any
    user_headers: tuple[str, ...]
    group_headers: tuple[str, ...]

    @classmethod
    def from_config_map(cls, data: Mapping[str, str]) -> FrontProxy | None:
        """From extension-apiserver-authentication's data; None without a front-proxy CA (the
        API server runs without --requestheader-client-ca-file: no aggregation layer)."""
        ca = data.get("requestheader-client-ca-file", "").strip()
        if not ca:
            return None

        def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            try:
                found = json.loads(data.get(key) or "null")
            except ValueError:
                found = None
            return tuple(str(n) for n in found) if isinstance(found, list) else default

        return cls(
            ca=ca,
            allowed_names=names("requestheader-allowed-names", ()),
            user_headers=names("requestheader-username-headers", ("X-Remote-User",)),
            group_headers=names("requestheader-group-headers", ("X-Remote-Group",)),
        )


def people_tls(certificate: str, key: str, front_proxy: FrontProxy) -> ssl.SSLContext:
    """Serves `certificate`; a client must present one the front proxy's CA signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=front_proxy.ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(certificate, key)
    return context


def _common_name(request: web.Request) -> str | None:
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (peer or {}).get("subject", ()):
        for attribute, value in rdn:
            if attribute == "commonName":
                return str(value)
    return None


def requester(request: web.Request, front_proxy: FrontProxy) -> str | None:
    """The user the front proxy vouches for; None if the caller is not the front proxy (the TLS
    handshake already refused certificates of any other CA) or names nobody."""
    name = _common_name(request)
    if name is None or (front_proxy.allowed_names and name not in front_proxy.allowed_names):
        return None
    for header in front_proxy.user_headers:
        user = request.headers.get(header, "").strip()
        if user:
            return user
    return None


def status(code: int, reason: str, message: str, name: str | None = None) -> web.Response:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if name is not None:
        body["details"] = {"name": name, "group": PEOPLE_GROUP, "kind": MY_ORGANIZATIONS}
    return web.json_response(body, status=code)


RESOURCE_LIST = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": f"{PEOPLE_GROUP}/{PEOPLE_VERSION}",
    "resources": [
        {
            "name": MY_ORGANIZATIONS,
            "singularName": "myorganization",
            "namespaced": False,
            "kind": MY_ORGANIZATION_KIND,
            "verbs": ["get", "list"],
            "shortNames": ["myorg", "myorgs"],
            "categories": [],
        }
    ],
}
GROUP = {
    "kind": "APIGroup",
    "apiVersion": "v1",
    "name": PEOPLE_GROUP,
    "versions": [{"groupVersion": f"{PEOPLE_GROUP}/{PEOPLE_VERSION}", "version": PEOPLE_VERSION}],
    "preferredVersion": {
        "groupVersion": f"{PEOPLE_GROUP}/{PEOPLE_VERSION}",
        "version": PEOPLE_VERSION,
    },
}


def wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def people_app(
    answer: Answer, ready: Callable[[], bool], front_proxy: FrontProxy
) -> web.Application:
    """The people API's routes. Discovery answers once the front proxy vouches for the caller
    (its availability check calls as system:kube-aggregator); `myorganizations` answers each
    requester about themself, once this replica's caches are synced (503 before)."""

    @web.middleware
    async def vouched(request: web.Request, handler: Any) -> web.StreamResponse:
        user = requester(request, front_proxy)
        if user is None:
            return status(401, "Unauthorized", "only the API server's front proxy may call here")
        request["user"] = user
        if request.method != "GET":
            return status(
                405, "MethodNotAllowed", f"{MY_ORGANIZATIONS} is read-only: get and list only"
            )
        response: web.StreamResponse = await handler(request)
        return response

    async def group(_: web.Request) -> web.Response:
        return web.json_response(GROUP)

    async def resources(_: web.Request) -> web.Response:
        return web.json_response(RESOURCE_LIST)

    async def answered(request: web.Request) -> list[dict[str, Any]] | web.Response:
        if not ready():
            return status(503, "ServiceUnavailable", "the operator's caches are not synced yet")
        if request.query.get("watch") in ("1", "true"):
            return status(405, "MethodNotAllowed", f"{MY_ORGANIZATIONS} can't be watched")
        try:
            return await answer(str(request["user"]))
        except Exception as error:  # a read under --shard that failed: the caller may retry
            message = f"the operator could not read your Memberships ({type(error).__name__})"
            # The API server's message only (explain): never a response's headers or body.
            logger.warning("People API: %s: %s", message, explain(error)[1])
            return status(503, "ServiceUnavailable", f"{message}; try again in a few seconds")

    async def listed(request: web.Request) -> web.Response:
        items = await answered(request)
        if isinstance(items, web.Response):
            return items
        if wants_table(request):
            return web.json_response(table(items))
        return web.json_response(
            {
                "kind": f"{MY_ORGANIZATION_KIND}List",
                "apiVersion": f"{PEOPLE_GROUP}/{PEOPLE_VERSION}",
                "metadata": {},
                "items": items,
            }
        )

    async def one(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        items = await answered(request)
        if isinstance(items, web.Response):
            return items
        found = [item for item in items if item["metadata"]["name"] == name]
        if not found:
            # The same answer whether the org doesn't exist or the requester isn't in it.
            return status(
                404, "NotFound", f'{MY_ORGANIZATIONS}.{PEOPLE_GROUP} "{name}" not found', name
            )
        return web.json_response(table(found) if wants_table(request) else found[0])

    app = web.Application(middlewares=[vouched])
    app.add_routes(
        [
            web.get(f"/apis/{PEOPLE_GROUP}", group),
            web.get(PEOPLE_API_PATH, resources),
            web.get(f"{PEOPLE_API_PATH}/{MY_ORGANIZATIONS}", listed),
            web.get(f"{PEOPLE_API_PATH}/{MY_ORGANIZATIONS}/{{name}}", one),
        ]
    )
    return app
