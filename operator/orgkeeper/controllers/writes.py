"""Writing only what differs, a bounded number at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from .records import WorkloadRecord
from .runtime import Runtime

WRITE_CONCURRENCY = 16


async def bounded(calls: Sequence[Awaitable[Any]], limit: int = WRITE_CONCURRENCY) -> None:
    """Runs the calls, at most `limit` at a time; the first error is raised once all are done.

    `limit` workers take the calls in turn, so a cascade of thousands holds `limit` tasks,
    not one per call; every call is awaited even after one fails.
    """
    pending = iter(calls)
    errors: list[BaseException] = []

    async def worker() -> None:
        for call in pending:
            try:
                await call
            except Exception as error:
                errors.append(error)

    await asyncio.gather(*(worker() for _ in range(min(limit, len(calls)))))
    if errors:
        raise errors[0]


def annotate(
    runtime: Runtime, workload: WorkloadRecord, annotations: Mapping[str, str | None]
) -> Awaitable[None]:
    """Sets (None: removes) annotations on a workload orgkeeper doesn't own."""
    kube = runtime.kube
    return kube.run(
        kube.annotate_workload, workload.kind, workload.namespace, workload.name, annotations
    )


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def status_wire(status: BaseModel, *, omit: Sequence[str] = ()) -> dict[str, Any]:
    """Status as a merge patch: unset top-level fields become null (removed)."""
    wire = status.model_dump(mode="json", by_alias=True)
    return {key: value for key, value in wire.items() if key not in omit}


def differs(patch: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Would a JSON merge patch change `current`? (null removes, objects merge, lists replace.)"""
    for key, value in patch.items():
        present = current.get(key)
        if value is None:
            if key in current:
                return True
        elif isinstance(value, Mapping):
            if isinstance(present, Mapping):
                if differs(value, present):
                    return True
            elif _without_nulls(value):
                return True
        elif _without_nulls(value) != present:
            return True
    return False


def _without_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value
