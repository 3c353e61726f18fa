"""The informer cache: what a list, a watch event and the operator's own writes leave in it.

The API is replaced by canned list pages here; tests/integration runs the informers against
the real API server (every Membership and RoleBinding the operator reconciles goes through
them), and tests/faults restarts the operator and the API server under them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

from orgkeeper.controllers.informer import Informer
from orgkeeper.controllers.listwatch import ListWatch
from orgkeeper.kube import threaded
from support.inline import Inline


def body(namespace: str, name: str, version: int, email: str = "a@x.io") -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "resourceVersion": str(version)},
        "spec": {"email": email},
    }


class CannedPages:
    """Answers list_page from pages keyed by continue token ("" for the first)."""

    def __init__(self, pages: Mapping[str, Mapping[str, Any]]) -> None:
        self.pages = pages
        self.asked: list[str] = []
        self.executor = Inline()

    @threaded
    def list_page(self, token: str | None) -> Mapping[str, Any]:
        self.asked.append(token or "")
        return self.pages[token or ""]


def page(*items: dict[str, Any], version: int, more: str | None = None) -> dict[str, Any]:
    return {"items": list(items), "metadata": {"resourceVersion": str(version), "continue": more}}


def informer(pages: Mapping[str, Mapping[str, Any]]) -> tuple[Informer[str], list[str]]:
    changed: list[str] = []
    cache = Informer(
        "test objects",
        cast(ListWatch, CannedPages(pages)),
        lambda b: f"{b['metadata']['name']}={b['spec']['email']}",
        changed.append,
    )
    return cache, changed


def test_a_list_follows_every_page_and_takes_its_version() -> None:
    cache, changed = informer(
        {
            "": page(body("org-a", "m1", 5), version=9, more="next"),
            "next": page(body("org-b", "m2", 7), version=9),
        }
    )
    asyncio.run(cache._list())
    assert cache.version == "9"
    assert cache.in_namespace("org-a") == ["m1=a@x.io"]
    assert cache.in_namespace("org-b") == ["m2=a@x.io"]
    assert sorted(changed) == ["org-a", "org-b"]
    assert cache.synced.is_set()


def test_a_second_list_drops_what_was_deleted_meanwhile_and_pokes_only_what_changed() -> None:
    cache, changed = informer({"": page(body("org-a", "m1", 5), body("org-b", "m2", 6), version=9)})
    asyncio.run(cache._list())
    changed.clear()
    cache.listwatch = cast(ListWatch, CannedPages({"": page(body("org-a", "m1", 5), version=12)}))
    asyncio.run(cache._list())
    assert cache.in_namespace("org-b") == []
    assert changed == ["org-b"]


def test_watch_events_add_change_and_delete() -> None:
    cache, changed = informer({})
    cache._take({"type": "ADDED", "object": body("org-a", "m1", 5)})
    cache._take({"type": "MODIFIED", "object": body("org-a", "m1", 6, email="b@x.io")})
    assert cache.in_namespace("org-a") == ["m1=b@x.io"]
    cache._take({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "8"}}})
    assert cache.version == "8", "a broken watch resumes from the bookmark"
    cache._take({"type": "DELETED", "object": body("org-a", "m1", 9)})
    assert cache.in_namespace("org-a") == []
    assert cache.version == "9"
    assert changed == ["org-a", "org-a", "org-a"]


def test_an_event_older_than_the_operators_own_write_is_ignored() -> None:
    cache, changed = informer({})
    cache.observe(body("org-a", "m1", 10, email="written@x.io"))
    cache._take({"type": "MODIFIED", "object": body("org-a", "m1", 9, email="stale@x.io")})
    cache._take({"type": "MODIFIED", "object": body("org-a", "m1", 10, email="written@x.io")})
    assert cache.in_namespace("org-a") == ["m1=written@x.io"]
    assert changed == []  # nothing new: no reconcile to wake
    cache._take({"type": "MODIFIED", "object": body("org-a", "m1", 11, email="user@x.io")})
    assert cache.in_namespace("org-a") == ["m1=user@x.io"]
    assert changed == ["org-a"]


def test_a_deleted_object_is_forgotten_before_its_event() -> None:
    cache, _ = informer({})
    cache.observe(body("org-a", "m1", 10))
    cache.forget("org-a", "m1")
    assert len(cache) == 0


def test_cluster_scoped_objects_are_held_under_no_namespace() -> None:
    org = {"metadata": {"name": "acme", "resourceVersion": "3"}, "spec": {"email": "o@x.io"}}
    cache, _ = informer({"": page(org, version=4)})
    asyncio.run(cache._list())
    assert cache.get("", "acme") == "acme=o@x.io"
    assert cache.get("", "other") is None
    cache._take({"type": "DELETED", "object": org})
    assert cache.get("", "acme") is None
