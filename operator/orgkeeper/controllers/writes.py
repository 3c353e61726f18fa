"""Writing only what differs, a bounded number at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

WRITE_CONCURRENCY = 16


async def bounded(calls: Sequence[Awaitable[Any]], limit: int = WRITE_CONCURRENCY) -> None:
    """Runs the calls concurrently, at most `limit` at a time; the first error is raised."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[Any]) -> None:
        async with gate:
            await call

    await asyncio.gather(*(one(call) for call in calls))


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def status_wire(status: BaseModel, *, omit: Sequence[str] = ()) -> dict[str, Any]:
    """Status as a merge patch: unset top-level fields become null (removed)."""
    wire = status.model_dump(mode="json", by_alias=True)
    return {key: value for key, value in wire.items() if key not in omit}


def differs(desired: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    return any(current.get(key) != value for key, value in desired.items())
