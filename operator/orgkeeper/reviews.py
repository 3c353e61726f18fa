"""Token- and SubjectAccessReviews that callers of the open ports can make the operator ask.

Anyone who reaches `/metrics` makes it ask a TokenReview (and a SubjectAccessReview), and anyone
who reaches the webhook port can post an AdmissionReview that makes it ask whether its made-up
user is support. Neither caller is authenticated, so what they can make the operator do is
bounded, as kube-rbac-proxy bounds it:

- each verdict is kept a short while (a scraper asks every few seconds with the same token);
- at most `concurrency` reviews are asked at once, on threads of their own (access.Reviews),
  never on the threads of the Lease or of the reconciles;
- at most `waiting` more wait for a turn; beyond that the caller is told at once to come back
  later (`BusyError`), so a flood costs a refusal, not a queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# kube-rbac-proxy keeps allowed verdicts for minutes and denied ones for seconds; these are
# shorter, so a granted or revoked role shows soon.
METRICS_TTL_SECONDS = 60.0  # an authenticated token's verdict (200 or 403)
UNAUTHENTICATED_TTL_SECONDS = 10.0  # a token the API server did not recognize (401)
SUPPORT_TTL_SECONDS = 5.0  # admission's "is this requester support?"
CAPACITY = 1024  # verdicts kept at most (the oldest go first): junk can't grow the cache
WAITING = 16  # reviews that may wait for a turn beyond those being asked


class BusyError(Exception):
    """Too many reviews asked and waiting already: the caller should try again shortly."""


class Verdicts(Generic[K, V]):
    """Review verdicts by key, kept for `ttl(verdict)` seconds; reviews asked with a bound."""

    def __init__(
        self,
        ttl: Callable[[V], float],
        *,
        concurrency: int,
        waiting: int = WAITING,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.concurrency = concurrency
        self.waiting = waiting
        self.capacity = capacity
        self.clock = clock
        self.kept: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.slots = asyncio.Semaphore(concurrency)
        self.pending = 0  # asked or waiting now
        self.refused = 0  # told BusyError, since start

    def cached(self, key: K) -> V | None:
        found = self.kept.get(key)
        if found is None:
            return None
        until, verdict = found
        if self.clock() >= until:
            del self.kept[key]
            return None
        return verdict

    async def ask(self, key: K, review: Callable[[], Awaitable[V]]) -> V:
        """The kept verdict, else `review()`'s (kept); BusyError if too many are pending."""
        verdict = self.cached(key)
        if verdict is not None:
            return verdict
        if self.pending >= self.concurrency + self.waiting:
            self.refused += 1
            raise BusyError(f"{self.pending} reviews pending")
        self.pending += 1
        try:
            async with self.slots:
                verdict = self.cached(key)  # the same key, asked meanwhile
                if verdict is None:
                    verdict = await review()
                    self.keep(key, verdict)
                return verdict
        finally:
            self.pending -= 1

    def keep(self, key: K, verdict: V) -> None:
        self.kept[key] = (self.clock() + self.ttl(verdict), verdict)
        self.kept.move_to_end(key)
        while len(self.kept) > self.capacity:
            self.kept.popitem(last=False)


def token_key(token: str, path: str) -> str:
    """What a metrics verdict is kept under: never the token itself."""
    return hashlib.sha256(f"{path}\0{token}".encode()).hexdigest()


def user_key(user: Mapping[str, Any], verb: str, organization: str) -> str:
    """What an authorization verdict is kept under: the whole userInfo, the verb and the org."""
    wire = json.dumps([dict(user), verb, organization], sort_keys=True, default=str)
    return hashlib.sha256(wire.encode()).hexdigest()


def metrics_ttl(status: int) -> float:
    return UNAUTHENTICATED_TTL_SECONDS if status == 401 else METRICS_TTL_SECONDS


def support_ttl(_: bool) -> float:
    return SUPPORT_TTL_SECONDS
