"""The operator's own LIST-then-WATCH caches, for the kinds that come by the thousand.

kopf's indexes pre-populate through a set of per-object toggles whose every change wakes
every waiting object (quadratic in the objects watched): a restart with 10,000 Memberships
and their RoleBindings spent minutes there. An informer lists in pages, then follows the
changes from the listed version; a watch too old for the server (410 Gone) lists again, so
objects deleted while it was away do not linger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from ..kube import is_status
from .listwatch import ListWatch, WatchStop

R = TypeVar("R")
MAX_BACKOFF = 30.0

logger = logging.getLogger(__name__)


def _version(body: Mapping[str, Any]) -> int:
    """An object's resourceVersion as a number (etcd's revision); 0 if it isn't one."""
    raw = str(body.get("metadata", {}).get("resourceVersion", ""))
    return int(raw) if raw.isdigit() else 0


def _namespace(meta: Mapping[str, Any]) -> str:
    """Where an object is held: its namespace; a cluster-scoped one under ""."""
    return str(meta.get("namespace") or "")


def _changed(meta: Mapping[str, Any]) -> str:
    """What `on_change` is told: the namespace, or a cluster-scoped object's own name (a
    Namespace's change concerns the namespace of that name)."""
    return str(meta.get("namespace") or meta["name"])


class Informer(Generic[R]):
    """Records of one kind by namespace and name, kept current by a watch.

    Cluster-scoped objects are held under the namespace "".

    `on_change(namespace)` is called on the event loop for every change the cache takes in.
    """

    def __init__(
        self,
        what: str,
        listwatch: ListWatch,
        record: Callable[[Mapping[str, Any]], R],
        on_change: Callable[[str], None],
        keep: Callable[[str], bool] | None = None,
        index: Callable[[R], str] | None = None,
    ) -> None:
        """`keep(namespace)`: whether objects there are held at all (default: all of them);
        `index(record)`: a key the records are also found by (`indexed`)."""
        self.what = what
        self.keep = keep
        self.listwatch = listwatch
        self.record = record
        self.on_change = on_change
        self.synced = asyncio.Event()
        # The last resourceVersion taken in (list or event): where a broken watch resumes.
        self.version: str | None = None
        self._objects: dict[str, dict[str, tuple[int, R]]] = {}
        self.index = index
        self._index: dict[str, set[tuple[str, str]]] = {}  # key -> (namespace, name)

    def indexed(self, key: str) -> list[R]:
        """The records whose index key is `key`."""
        found = (self.get(namespace, name) for namespace, name in self._index.get(key, ()))
        return [record for record in found if record is not None]

    def _unindex(self, namespace: str, name: str, record: R) -> None:
        if self.index is None:
            return
        key = self.index(record)
        held = self._index.get(key)
        if held is not None:
            held.discard((namespace, name))
            if not held:
                del self._index[key]

    def _reindex(self) -> None:
        if self.index is None:
            return
        self._index = {}
        for namespace, objects in self._objects.items():
            for name, (_, record) in objects.items():
                self._index.setdefault(self.index(record), set()).add((namespace, name))

    def in_namespace(self, namespace: str) -> list[R]:
        return [record for _, record in self._objects.get(namespace, {}).values()]

    def get(self, namespace: str, name: str) -> R | None:
        held = self._objects.get(namespace, {}).get(name)
        return held[1] if held is not None else None

    def __len__(self) -> int:
        return sum(len(objects) for objects in self._objects.values())

    def observe(self, body: Mapping[str, Any]) -> None:
        """Takes in an object the operator just wrote, so no reconcile acts on the old one."""
        self._put(body, notify=False)

    def forget(self, namespace: str, name: str) -> None:
        """Drops an object the operator just deleted, ahead of the watch's DELETED event."""
        self._drop(namespace, name)

    def _drop(self, namespace: str, name: str) -> bool:
        """Drops an object, and its namespace's entry with its last one (namespaces come and
        go with orgs: a cache keyed by every namespace ever seen would only grow)."""
        objects = self._objects.get(namespace)
        held = objects.pop(name, None) if objects is not None else None
        if objects is None or held is None:
            return False
        self._unindex(namespace, name, held[1])
        if not objects:
            del self._objects[namespace]
        return True

    def _kept(self, meta: Mapping[str, Any]) -> bool:
        return self.keep is None or self.keep(_namespace(meta))

    async def wait_synced(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Lists, then watches, for as long as the operator runs.

        A watch that breaks resumes from the last version taken in; one too old for the
        server (410 Gone) lists again. Failures back off, up to MAX_BACKOFF.
        """
        backoff = 1.0
        while True:
            try:
                if self.version is None:
                    await self._list()
                if self.version is not None and await self._watch(self.version):
                    self.version = None
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the cache must outlive any API failure
                step = "listing" if self.version is None else "watching"
                logger.warning("%s: %s failed, again in %.0fs: %s", self.what, step, backoff, error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _list(self) -> None:
        """Replaces the cache with a fresh list, and takes the list's resourceVersion."""
        # Records are made page by page: holding every raw page at once would set the peak
        # memory of a restart (and Python keeps a peak's pages).
        fresh: dict[str, dict[str, tuple[int, R]]] = {}
        token: str | None = None
        while True:
            page = await self.listwatch.list_page(token)
            for body in page["items"]:
                meta = body["metadata"]
                if not self._kept(meta):
                    continue
                held = (_version(body), self.record(body))
                fresh.setdefault(_namespace(meta), {})[meta["name"]] = held
            token = page.get("metadata", {}).get("continue") or None
            if token is None:
                break
        changed: set[str] = set()
        for namespace in fresh.keys() | self._objects.keys():
            before, after = self._objects.get(namespace, {}), fresh.get(namespace, {})
            if before == after:
                continue
            if namespace:
                changed.add(namespace)
            else:  # cluster-scoped: each object that changed is told by its own name
                names = before.keys() | after.keys()
                changed |= {n for n in names if before.get(n) != after.get(n)}
        self._objects = fresh
        self._reindex()
        self.version = str(page["metadata"]["resourceVersion"])
        self.synced.set()
        self._notify(changed)

    async def _watch(self, version: str) -> bool:
        """Follows changes from `version` until the server ends the watch; True if expired.

        The blocking stream runs in a thread of its own and hands each event to the loop,
        in order, ahead of the outcome.
        """
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[bool] = loop.create_future()
        stop = WatchStop()

        def finish(expired: bool, error: BaseException | None) -> None:
            if ended.done():
                return
            if error is None:
                ended.set_result(expired)
            else:
                ended.set_exception(error)

        def follow() -> None:
            expired, error = False, None
            try:
                for event in self.listwatch.watch_events(version, stop):
                    loop.call_soon_threadsafe(self._take, event)
            except Exception as failure:
                expired = is_status(failure, 410)
                error = None if expired else failure
            with contextlib.suppress(RuntimeError):  # the loop has closed: we are exiting
                loop.call_soon_threadsafe(finish, expired, error)

        threading.Thread(target=follow, name=f"watch {self.what}", daemon=True).start()
        try:
            return await ended
        finally:
            stop.stop()

    def _take(self, event: Mapping[str, Any]) -> None:
        body = event["object"]
        self.version = str(body["metadata"]["resourceVersion"])
        if event["type"] == "BOOKMARK":
            return
        if event["type"] == "DELETED":
            meta = body["metadata"]
            if self._drop(_namespace(meta), meta["name"]):
                self._notify([_changed(meta)])
        elif event["type"] in ("ADDED", "MODIFIED"):
            self._put(body, notify=True)

    def _put(self, body: Mapping[str, Any], *, notify: bool) -> None:
        meta = body["metadata"]
        if not self._kept(meta):
            return
        objects = self._objects.setdefault(_namespace(meta), {})
        version = _version(body)
        known = objects.get(meta["name"])
        if known is not None and version and known[0] >= version:
            return  # already taken in (written by the operator), or older than what is held
        record = self.record(body)
        if known is not None:
            self._unindex(_namespace(meta), meta["name"], known[1])
        objects[meta["name"]] = (version, record)
        if self.index is not None:
            self._index.setdefault(self.index(record), set()).add((_namespace(meta), meta["name"]))
        if notify:
            self._notify([_changed(meta)])

    def _notify(self, namespaces: Iterable[str]) -> None:
        for namespace in namespaces:
            self.on_change(namespace)
