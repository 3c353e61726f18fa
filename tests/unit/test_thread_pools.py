"""The operator's thread pools are started whole: no burst, however rare, adds a thread later.

A lazily started pool grows by one thread each time a burst finds every thread busy, and keeps
it: over hours of churn that was the operator's creep of resident memory (memory.full_pool).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor, wait

from kubernetes import client

from orgkeeper.kube import MAX_CONNECTIONS, REVIEW_CONCURRENCY, KubeApi
from orgkeeper.memory import default_workers, full_pool, use_full_default_executor


def _burst(pool: ThreadPoolExecutor, size: int) -> None:
    """`size` calls at once, each held until all have started (so each needs a thread)."""
    barrier = threading.Barrier(size)
    wait([pool.submit(barrier.wait, 10.0) for _ in range(size)])


def test_a_lazy_pool_keeps_a_thread_for_each_new_height_of_burst() -> None:
    """The mechanism: after small bursts, a larger one leaves threads behind for good."""
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lazy")
    try:
        _burst(pool, 2)
        assert len(pool._threads) == 2
        _burst(pool, 2)
        assert len(pool._threads) == 2
        _burst(pool, 6)
        assert len(pool._threads) == 6
    finally:
        pool.shutdown()


def test_a_full_pool_has_all_its_threads_from_the_start_and_bursts_add_none() -> None:
    pool = full_pool(8, "whole")
    try:
        assert len(pool._threads) == 8
        assert all(thread.name.startswith("whole_") for thread in pool._threads)
        for size in (1, 3, 8, 2, 8):
            _burst(pool, size)
        assert len(pool._threads) == 8
        assert [f.result() for f in [pool.submit(lambda: 42)]] == [42]  # still serves calls
    finally:
        pool.shutdown()


def test_the_operators_kube_pools_are_whole_and_others_lazy() -> None:
    operator = KubeApi(client.ApiClient(), whole_pools=True)
    tool = KubeApi(client.ApiClient())
    try:
        assert len(operator.executor._threads) == MAX_CONNECTIONS
        assert len(operator.lease_executor._threads) == 2
        assert len(operator.review_executor._threads) == REVIEW_CONCURRENCY
        # Tests and tools that make a KubeApi start no thread they don't use.
        assert len(tool.executor._threads) == 0
    finally:
        for api in (operator, tool):
            for pool in (api.executor, api.lease_executor, api.review_executor):
                pool.shutdown()


def test_asyncio_to_thread_runs_on_a_whole_default_executor() -> None:
    async def main() -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        use_full_default_executor(loop)
        name = await asyncio.to_thread(lambda: threading.current_thread().name)
        executor = loop._default_executor  # type: ignore[attr-defined]
        assert isinstance(executor, ThreadPoolExecutor)
        return len(executor._threads), name

    threads, name = asyncio.run(main())
    assert threads == default_workers()
    assert name.startswith("asyncio_")
