"""An executor for fakes of the API adapters (`kube.threaded` verbs): each call runs at once on
the caller's thread, so a fake's state needs no lock and a test's order is the calls' order."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")


class Inline(Executor):
    """While `refused()`, each call fails as an unreachable API server does."""

    def __init__(self, refused: Callable[[], bool] = lambda: False) -> None:
        self.refused = refused

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            if self.refused():
                raise OSError("connection refused")
            future.set_result(fn(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)
        return future
