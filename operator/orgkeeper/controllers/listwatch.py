"""What the informers (informer.py) follow, and how: a kind listed in pages, then watched.

A page is listed on kube's threads (`await listwatch.list_page(...)`, a `kube.threaded` verb;
`.blocking` before the loop runs, as the shard map does); a watch streams on a thread of the
informer's own. Both skip the client's model classes: the server's JSON goes straight to the
cache records.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from .. import names
from ..api.v1alpha1 import GROUP, VERSION
from ..kube import LIST_PAGE_SIZE, KubeApi, threaded

# Servers end a watch after this; the informer resumes from the last version it saw.
WATCH_SECONDS = 240


class WatchStop:
    """Ends a watch blocked in a read, from another thread, by shutting its socket down."""

    def __init__(self) -> None:
        self.response: Any = None
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        connection = getattr(self.response, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class ListWatch:
    """Every object of a kind in all namespaces (maybe by label): what an informer follows."""

    list_call: Callable[..., Any]
    args: tuple[str, ...] = ()
    label_selector: str | None = None
    executor: Executor | None = None  # where pages are listed (kube's threads)

    def selector(self) -> dict[str, str]:
        return {"label_selector": self.label_selector} if self.label_selector else {}

    @threaded
    def list_page(self, continue_token: str | None) -> dict[str, Any]:
        """One page of the list, as the server's JSON."""
        response = self.list_call(
            *self.args,
            limit=LIST_PAGE_SIZE,
            _continue=continue_token,
            _preload_content=False,
            **self.selector(),
        )
        page: dict[str, Any] = json.loads(response.data)
        if not isinstance(page.get("items"), list):
            raise ApiException(status=500, reason=f"a list without items: {page.get('kind')}")
        return page

    def watch_events(self, version: str, stop: WatchStop) -> Iterator[dict[str, Any]]:
        """Changes after `version` as raw events, until the server ends the watch. Blocking:
        the informer follows it on a thread of its own.

        A version too old for the server raises ApiException 410; `stop.stop()` ends it early.
        """
        response = self.list_call(
            *self.args,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _preload_content=False,
            **self.selector(),
        )
        stop.response = response
        try:
            for line in iter_resp_lines(response):
                if stop.stopped:
                    return
                if not line:
                    continue
                event: dict[str, Any] = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiException(
                        status=status.get("code"),
                        reason=f"{status.get('reason')}: {status.get('message')}",
                    )
                yield event
        finally:
            response.release_conn()


def organizations(kube: KubeApi) -> ListWatch:
    args = (GROUP, VERSION, "organizations")
    return ListWatch(kube.custom.list_cluster_custom_object, args, None, kube.executor)


def memberships(kube: KubeApi, shard: str | None = None) -> ListWatch:
    """Every Membership, or a shard's (`shard`: its slot selector)."""
    args = (GROUP, VERSION, "memberships")
    return ListWatch(kube.custom.list_cluster_custom_object, args, shard, kube.executor)


def member_role_bindings(kube: KubeApi, shard: str | None = None) -> ListWatch:
    """Labelled by the operator: labels only it may set (manifests/policies/)."""
    selector = ",".join(s for s in (names.MEMBER_BINDING_SELECTOR, shard) if s)
    return ListWatch(kube.rbac.list_role_binding_for_all_namespaces, (), selector, kube.executor)


def labelled_namespaces(kube: KubeApi) -> ListWatch:
    """Namespaces labelled orgkeeper.dev/organization: the ones an org may own."""
    return ListWatch(kube.core.list_namespace, (), names.NAMESPACE_SELECTOR, kube.executor)
