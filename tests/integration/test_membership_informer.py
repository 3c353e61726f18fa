"""The Membership informer against the real API server: paged list, then every change."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from orgkeeper.controllers import listwatch
from orgkeeper.controllers.informer import Informer
from orgkeeper.controllers.listwatch import ListWatch
from orgkeeper.controllers.records import MemberRecord
from orgkeeper.kube import KubeApi
from orgkeeper_dev.localcluster import LocalCluster
from support.kube import Kube, api_client
from support.orgs import membership


async def until(what: str, probe: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


def page_counting(followed: ListWatch, pages: list[str | None]) -> ListWatch:
    """The real list and watch, noting the continue token of every page it is asked for."""

    def list_call(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("watch"):
            pages.append(kwargs.get("_continue"))
        return followed.list_call(*args, **kwargs)

    return dataclasses.replace(followed, list_call=list_call)


def viewer(name: str) -> dict[str, Any]:
    return membership(name, f"{name}@informer.test", "analytics-viewer")


def test_it_lists_in_pages_then_follows_changes_and_stops_when_cancelled(
    cluster: LocalCluster, admin: Kube, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listwatch, "LIST_PAGE_SIZE", 2)  # five objects: three pages at least
    namespace = f"org-informer-{unique}"  # Memberships live in org-<name> namespaces (policy)
    admin.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    for index in range(5):
        admin.create("memberships", viewer(f"m{index}"), namespace)
    pages: list[str | None] = []
    followed = page_counting(listwatch.memberships(KubeApi(api_client(cluster.kubeconfig))), pages)

    def teams() -> dict[str, tuple[str, ...]]:
        return {record.name: record.teams for record in informer.in_namespace(namespace)}

    changed: list[str] = []
    informer = Informer("Memberships", followed, MemberRecord.from_body, changed.append)

    async def scenario() -> None:
        task = asyncio.create_task(informer.run())
        await asyncio.wait_for(informer.synced.wait(), timeout=30)
        assert teams() == {f"m{i}": ("analytics-viewer",) for i in range(5)}
        assert len(pages) >= 3 and pages[0] is None, "the list went page by page"
        assert namespace in changed

        await asyncio.to_thread(admin.create, "memberships", viewer("late"), namespace)
        await asyncio.to_thread(
            admin.patch, "memberships", "m0", {"spec": {"teams": ["portal-admin"]}}, namespace
        )
        await asyncio.to_thread(admin.delete, "memberships", "m1", namespace)
        await until(
            "the watch to bring the create, the change and the deletion",
            lambda: (
                "late" in teams() and teams().get("m0") == ("portal-admin",) and "m1" not in teams()
            ),
        )

        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await until(
            "the watch thread to end",
            lambda: not any(t.name == "watch Memberships" for t in threading.enumerate()),
            timeout=10,
        )

    asyncio.run(scenario())
