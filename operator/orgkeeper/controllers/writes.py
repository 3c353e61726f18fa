"""Writing only what differs, a bounded number at a time."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes.client.rest import ApiException
from pydantic import BaseModel

from .records import WorkloadRecord
from .runtime import Runtime

WRITE_CONCURRENCY = 16
DETAIL = 160

logger = logging.getLogger(__name__)
K = TypeVar("K")
T = TypeVar("T")


async def bounded(
    calls: Sequence[Awaitable[Any]], limit: int = WRITE_CONCURRENCY
) -> list[Exception | None]:
    """Runs the calls, at most `limit` at a time; returns each call's error (None: it worked).

    `limit` workers take the calls in turn, so a cascade of thousands holds `limit` tasks,
    not one per call; one call failing never keeps the others from running and being told.
    """
    outcomes = await _outcomes(calls, limit)
    return [o if isinstance(o, Exception) else None for o in outcomes]


async def _outcomes(calls: Sequence[Awaitable[T]], limit: int) -> list[T | Exception]:
    """Each call's answer, or its error; the calls run as `bounded` says."""
    pending = iter(enumerate(calls))
    outcomes: dict[int, T | Exception] = {}

    async def worker() -> None:
        for index, call in pending:
            try:
                outcomes[index] = await call
            except Exception as error:
                outcomes[index] = error

    await asyncio.gather(*(worker() for _ in range(min(limit, len(calls)))))
    return [outcomes[index] for index in range(len(calls))]


@dataclass(frozen=True)
class Target:
    """What a write goes to: named in conditions, and the objects its failure is told on."""

    what: str  # e.g. "Secret edge/orgkeeper-license-mesh"
    involved: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Failure:
    target: Target
    reason: str  # short: Forbidden, Conflict, Invalid, ...
    detail: str  # the API server's message, cut short (never a response's headers or body)

    def describe(self) -> str:
        return f"{self.target.what} ({self.reason}: {self.detail})"

    @classmethod
    def of(cls, target: Target, error: Exception) -> Failure:
        reason, detail = explain(error)
        return cls(target, reason, detail)


REASONS = {
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Gone",
    422: "Invalid",
    429: "TooManyRequests",
}


def explain(error: Exception) -> tuple[str, str]:
    """A short reason and message for an error (an ApiException's Status message only)."""
    if isinstance(error, ApiException):
        status = int(error.status or 0)
        reason = REASONS.get(status, "ServerError" if status >= 500 else f"HTTP{status}")
        try:
            message = str(json.loads(error.body or "{}").get("message") or error.reason)
        except (TypeError, ValueError, AttributeError):
            message = str(error.reason or "")
        return reason, message[:DETAIL]
    return type(error).__name__, str(error)[:DETAIL]


async def attempt(
    calls: Sequence[tuple[Target, Awaitable[Any]]], failures: list[Failure]
) -> list[bool]:
    """Runs the writes bounded; each failure is logged and added to `failures` with its target.

    Returns which calls worked, in order.
    """
    errors = await bounded([call for _, call in calls])
    for (target, _), error in zip(calls, errors, strict=True):
        if error is not None:
            logger.warning("%s: write failed: %s", target.what, error)
            failures.append(Failure.of(target, error))
    return [error is None for error in errors]


async def fetch(
    calls: Mapping[K, tuple[Target, Awaitable[T]]], failures: list[Failure]
) -> dict[K, T]:
    """Runs the reads bounded, as `attempt` runs writes: the answers by key; a read that failed
    is in `failures` (told on its target) and its key is absent."""
    outcomes = await _outcomes([call for _, call in calls.values()], WRITE_CONCURRENCY)
    answers: dict[K, T] = {}
    for (key, (target, _)), outcome in zip(calls.items(), outcomes, strict=True):
        if isinstance(outcome, Exception):
            logger.warning("%s: read failed: %s", target.what, outcome)
            failures.append(Failure.of(target, outcome))
        else:
            answers[key] = outcome
    return answers


def workload_ref(workload: WorkloadRecord) -> dict[str, Any]:
    """A workload as the object an Event is about."""
    return {
        "apiVersion": "apps/v1",
        "kind": workload.kind,
        "metadata": {"name": workload.name, "namespace": workload.namespace, "uid": workload.uid},
    }


def annotate(
    runtime: Runtime, workload: WorkloadRecord, annotations: Mapping[str, str | None]
) -> Awaitable[None]:
    """Sets (None: removes) annotations on a workload orgkeeper doesn't own."""
    kube = runtime.kube
    return kube.annotate_workload(workload.kind, workload.namespace, workload.name, annotations)


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
