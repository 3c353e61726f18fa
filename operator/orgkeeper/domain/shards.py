"""Fixed shards: which operator serves which organization (`orgkeeper run --shard i/N`).

The organization is the unit. Each org has a slot, `names.shard_slot(name)` (0..SLOTS-1, from
its name, so everything in `org-<name>` knows it without a lookup, and it never changes); a
shard serves a set of slots, and the API server selects its objects by the slot label. Changing
N moves no label: only which shard serves a slot.

Pure: no I/O. The balance of the default map and of a planned one is proven in
tests/unit/test_shards.py.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .. import names

SLOTS = names.SHARD_SLOTS
_SHARD = re.compile(r"^(\d+)/(\d+)$")
MAX_SHARDS = 64


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`; `slot_map[slot]` is the shard serving that slot."""

    index: int = 0
    count: int = 1
    slot_map: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'0/2' -> Shard(0, 2); a ValueError saying what is wrong otherwise."""
        match = _SHARD.match(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not i/N; write the shard's index and count, e.g. 0/2")
        index, count = int(match.group(1)), int(match.group(2))
        if not 1 <= count <= MAX_SHARDS:
            raise ValueError(f"{text!r}: the count must be 1 to {MAX_SHARDS}")
        if not 0 <= index < count:
            raise ValueError(f"{text!r}: the index must be 0 to {count - 1}")
        return cls(index, count, default_map(count))

    def __str__(self) -> str:
        """As the flag is written: i/N."""
        return f"{self.index}/{self.count}"

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def serving(self, slot: int) -> int:
        return self.slot_map[slot] if self.slot_map else slot % self.count

    def slots(self) -> tuple[int, ...]:
        return tuple(slot for slot in range(SLOTS) if self.serving(slot) == self.index)

    def serves(self, organization: str) -> bool:
        return not self.sharded or self.serving(names.shard_slot(organization)) == self.index

    def serves_namespace(self, namespace: str) -> bool:
        """Whether objects in `namespace` are this shard's: those of org-<name> of its orgs."""
        organization = names.organization_of_namespace(namespace)
        return bool(organization) and self.serves(str(organization))

    def selector(self) -> str | None:
        """The label selector of this shard's objects; None when unsharded (everything)."""
        if not self.sharded:
            return None
        values = ",".join(str(slot) for slot in self.slots())
        return f"{names.LABEL_SHARD_SLOT} in ({values})"

    def lease_suffix(self) -> str:
        """What a shard's Lease name ends with: the generation (N) is part of it."""
        return f"-shard-{self.index}-of-{self.count}" if self.sharded else ""


def default_map(count: int) -> tuple[int, ...]:
    """Slot -> shard, round robin: every shard holds SLOTS/N slots (one more for some)."""
    return tuple(slot % count for slot in range(SLOTS))


def plan(load: Mapping[int, int], count: int) -> tuple[int, ...]:
    """Slot -> shard balanced by measured load (orgs, or Memberships, per slot): the heaviest
    slot first to the lightest shard (longest processing time first); among equally light
    shards the one with fewer slots, then the lowest index, so slots without load (orgs still
    to come) spread evenly too."""
    heap = [(0, 0, shard) for shard in range(count)]
    slot_map = [0] * SLOTS
    for slot in sorted(range(SLOTS), key=lambda s: (-load.get(s, 0), s)):
        total, slots, shard = heapq.heappop(heap)
        slot_map[slot] = shard
        heapq.heappush(heap, (total + load.get(slot, 0), slots + 1, shard))
    return tuple(slot_map)


def map_data(count: int, slot_map: Sequence[int]) -> dict[str, str]:
    """The shard map as its ConfigMap holds it."""
    return {
        names.SHARD_MAP_COUNT: str(count),
        names.SHARD_MAP_SLOTS: ",".join(str(shard) for shard in slot_map),
    }


def map_of(data: Mapping[str, str], count: int) -> tuple[int, ...]:
    """The shard map a ConfigMap holds; a ValueError saying what is wrong if it can't be one
    for `count` shards."""
    if data.get(names.SHARD_MAP_COUNT) != str(count):
        raise ValueError(f"it is for {data.get(names.SHARD_MAP_COUNT)!r} shards, not {count}")
    try:
        slot_map = tuple(int(v) for v in data.get(names.SHARD_MAP_SLOTS, "").split(","))
    except ValueError:
        raise ValueError(f"{names.SHARD_MAP_SLOTS} is not a list of shard indexes") from None
    if len(slot_map) != SLOTS or not all(0 <= shard < count for shard in slot_map):
        raise ValueError(f"{names.SHARD_MAP_SLOTS} must give each of {SLOTS} slots a shard")
    return slot_map


def load_of(organizations: Iterable[str]) -> dict[int, int]:
    """Orgs per slot."""
    load: dict[int, int] = {}
    for organization in organizations:
        slot = names.shard_slot(organization)
        load[slot] = load.get(slot, 0) + 1
    return load


def shard_sizes(organizations: Iterable[str], count: int, slot_map: Sequence[int]) -> list[int]:
    """Orgs per shard under `slot_map`."""
    sizes = [0] * count
    for organization in organizations:
        sizes[slot_map[names.shard_slot(organization)]] += 1
    return sizes


_LEASE = re.compile(r"^(?P<base>.+?)(?:-shard-(?P<index>\d+)-of-(?P<count>\d+))?$")


def lease_scope(lease: str) -> str:
    """The scope of a Lease orgkeeper takes (`orgkeeper`, `orgkeeper-<region>`): its name
    without the shard (`-shard-<i>-of-<N>`)."""
    match = _LEASE.match(lease)
    return match.group("base") if match is not None else lease


def lease_generation(lease: str, base: str) -> int | None:
    """The shard count of a Lease of scope `base` (`orgkeeper`, `orgkeeper-<region>`): 1 for
    `base` itself, N for `base-shard-i-of-N`; None for a Lease of another scope."""
    match = _LEASE.match(lease)
    if match is None or match.group("base") != base:
        return None
    return int(match.group("count")) if match.group("count") else 1
