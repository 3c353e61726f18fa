"""Giving the memory a burst of work freed back to the system.

glibc keeps freed heap pages for reuse, and its heap only shrinks from the top: after a burst
(thousands of API answers and admission reviews at once) a process holds far more than it
uses. malloc_trim(0) releases every free page; at 10,000 memberships it took the operator
from 288 to 178 MiB. Other C libraries (musl, macOS) have no malloc_trim: nothing to do there.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

TRIM_INTERVAL_SECONDS = 30.0
POOL_START_SECONDS = 30.0
# glibc's mallopt parameter for the most arenas (malloc heaps) a process makes.
M_ARENA_MAX = -8
ARENAS = 2


def _libc_function(name: str) -> Any:
    """A function of the C library, or None where it has none (not glibc)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Caps glibc's malloc arenas, unless MALLOC_ARENA_MAX says otherwise; True if capped.

    glibc gives a thread that finds the arenas in use one of its own, up to eight per core,
    and never gives one back; each keeps freed memory of its own. The operator's thread pools
    (API calls, reviews, watches) grow with the bursts they meet: a soaking operator run
    without the image's MALLOC_ARENA_MAX=2 had 15 arenas holding 11 MiB. Capped here, every
    way of running it (the image, `make run`, the fault suite) holds its memory alike. Call
    it before threads start."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))


def malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), or None where the C library has none."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def collect_and_trim(trim: Callable[[], object] | None) -> int:
    """A full garbage collection, then malloc_trim where there is one; what was collected.

    CPython collects its oldest generation only once the objects promoted there since its
    last full collection exceed a quarter of those that survived it. Garbage in reference
    cycles that lived through two younger collections (an API answer parsed while others
    waited, a finished task, a caught exception and its frames) waits there meanwhile: with
    200,000 objects live, up to 50,000 of it, spread over pymalloc's arenas. That was part
    of the creep of resident memory under churn (README, Footprint): a soak's operator
    collected 5,000 to 7,500 objects of it every 200 to 300 s, and rested 2.6 to 3.8 MiB
    higher than with this from its fourth minute on. Collected every trim interval, it never
    piles up, and the trim then has freed pages to give back."""
    collected = gc.collect()
    if trim is not None:
        trim()
    return collected


async def trim_periodically(interval: float = TRIM_INTERVAL_SECONDS) -> None:
    trim = malloc_trim()
    while True:
        await asyncio.sleep(interval)
        collect_and_trim(trim)


def thread_pool(workers: int, prefix: str, *, whole: bool) -> ThreadPoolExecutor:
    """A thread pool of `workers` threads; `whole`: all started now (see full_pool)."""
    if whole:
        return full_pool(workers, prefix)
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=prefix)


def full_pool(workers: int, prefix: str) -> ThreadPoolExecutor:
    """A thread pool whose `workers` threads all start now, not one by one later.

    ThreadPoolExecutor starts a thread whenever a call finds none idle (also when one is just
    finishing), up to its maximum, and never ends one. Started lazily, an operator's pools
    grow for hours: each rarer burst (a cascade's writes, the orgs' checks falling due
    together) reaches a new height and leaves a thread behind, with its stack, its thread
    state, its TLS and malloc caches (tens of KiB each). That was part of the operator's
    creep of resident memory under churn (README, Footprint). A pool started whole costs from
    the start what it will ever cost."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=prefix)
    # Each task holds its thread until all have one: `workers` tasks, `workers` threads.
    barrier = threading.Barrier(workers)
    wait([pool.submit(barrier.wait, POOL_START_SECONDS) for _ in range(workers)])
    return pool


def default_workers() -> int:
    """asyncio's own size for its default executor (`asyncio.to_thread`)."""
    return min(32, (os.cpu_count() or 1) + 4)


def use_full_default_executor(loop: asyncio.AbstractEventLoop) -> None:
    """The loop's default executor (asyncio.to_thread) started whole, as `full_pool`."""
    loop.set_default_executor(full_pool(default_workers(), "asyncio"))
