"""Counting API calls from the control plane's audit log, by user, verb and resource."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

READS = {"get", "list", "watch"}
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


@dataclass(frozen=True)
class Call:
    at: datetime
    user: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str

    @property
    def kind(self) -> str:
        if self.resource == "events":
            return "event"
        if self.verb in WRITES:
            return "write"
        return "read" if self.verb in READS else "other"


def calls(log: Path, user: str, since: datetime, until: datetime) -> Iterator[Call]:
    """The calls `user` made between the two moments (completed requests only)."""
    with log.open() as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line the API server is writing right now

            if entry.get("stage") != "ResponseComplete" or entry["user"]["username"] != user:
                continue
            at = datetime.fromisoformat(entry["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if not since <= at <= until:
                continue
            ref = entry.get("objectRef") or {}
            yield Call(
                at,
                user,
                entry["verb"],
                ref.get("resource", ""),
                ref.get("subresource", ""),
                ref.get("namespace", ""),
                ref.get("name", ""),
            )


def summary(found: list[Call]) -> dict[str, int]:
    kinds = Counter(call.kind for call in found)
    return {"reads": kinds["read"], "writes": kinds["write"], "events": kinds["event"]}


def writes_by_resource(found: list[Call]) -> dict[str, int]:
    return dict(
        Counter(
            f"{c.resource}{'/' + c.subresource if c.subresource else ''} {c.verb}"
            for c in found
            if c.kind == "write"
        ).most_common()
    )
