"""orgkeeper's Leases carry its label (names.LABEL_LEASE: the Lease's scope), and what lists
Leases selects by it: the fence between shard counts and the start-up check of scopes, which
sees shard Leases too (a regional shard keeps an all-regions operator out, and the reverse)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from test_leader import NAMESPACE, Clock, Leases, elector, lease, run_async

from orgkeeper import names
from orgkeeper.domain.shards import Shard, lease_scope
from orgkeeper.leader import LeaseHeldError, check_sharing, other_generation
from orgkeeper.leases import Leases as LeaseApi
from orgkeeper.settings import Settings


def labelled(found: dict[str, object], scope: str) -> dict[str, object]:
    meta = dict(cast(dict[str, object], found["metadata"]))
    meta["labels"] = {names.LABEL_LEASE: scope}
    return {**found, "metadata": meta}


def test_the_scope_of_a_lease_is_its_name_without_the_shard() -> None:
    assert lease_scope("orgkeeper") == "orgkeeper"
    assert lease_scope("orgkeeper-eu-shard-1-of-4") == "orgkeeper-eu"
    assert lease_scope("orgkeeper-shard-0-of-2") == "orgkeeper"


@run_async
async def test_the_elector_labels_the_lease_it_creates_and_one_an_earlier_version_took() -> None:
    leases, clock, log = Leases(), Clock(), list[str]()
    assert await elector(leases, clock, "a", log).try_acquire_or_renew()
    assert leases.stored["orgkeeper"]["metadata"]["labels"] == {names.LABEL_LEASE: "orgkeeper"}
    # Taken before the label existed, with labels of someone else's: its renewal adds it.
    leases.stored["orgkeeper"]["metadata"]["labels"] = {"team": "platform"}
    assert await elector(leases, clock, "a", log).try_acquire_or_renew()
    assert leases.stored["orgkeeper"]["metadata"]["labels"] == {
        "team": "platform",
        names.LABEL_LEASE: "orgkeeper",
    }


@pytest.mark.parametrize(
    ("held", "holder", "starting", "serving"),
    [
        ("orgkeeper-eu-shard-0-of-2", "eu-shard-0", Settings(identity="all-1"), "region eu"),
        (
            "orgkeeper-shard-1-of-3",
            "all-shard-1",
            Settings(region="us", identity="us-1"),
            "every region",
        ),
    ],
)
def test_a_shard_lease_of_another_scope_refuses_the_start(
    held: str, holder: str, starting: Settings, serving: str
) -> None:
    leases = Leases()
    leases.stored[held] = labelled(lease(holder, datetime.now(UTC)), lease_scope(held))
    with pytest.raises(LeaseHeldError, match=f"{holder!r}, serving {serving}, holds .*/{held} "):
        check_sharing(cast(LeaseApi, leases), starting)


def test_same_scope_expired_or_other_region_shard_leases_are_no_obstacle() -> None:
    leases = Leases()
    now = datetime.now(UTC)
    leases.stored["orgkeeper-shard-0-of-2"] = labelled(lease("all-0", now), "orgkeeper")
    leases.stored["orgkeeper-eu-shard-0-of-2"] = labelled(
        lease("eu-0", now - timedelta(minutes=1)), "orgkeeper-eu"
    )
    check_sharing(cast(LeaseApi, leases), Settings(identity="all-1"))  # same scope: its replica
    del leases.stored["orgkeeper-shard-0-of-2"]
    leases.stored["orgkeeper-au-shard-0-of-2"] = labelled(lease("au-0", now), "orgkeeper-au")
    check_sharing(cast(LeaseApi, leases), Settings(region="eu", identity="eu-1"))  # au: not eu


def test_an_unlabelled_unsharded_lease_of_an_earlier_version_is_still_seen() -> None:
    """Read by name: the label comes only with a renewal by this version."""
    leases = Leases()
    leases.stored["orgkeeper-eu"] = lease("eu-old", datetime.now(UTC))  # no label
    with pytest.raises(LeaseHeldError, match="'eu-old', serving region eu"):
        check_sharing(cast(LeaseApi, leases), Settings(identity="all-1"))
    leases.stored["orgkeeper"] = lease("all-old", datetime.now(UTC))
    sharded = Settings(shard=Shard.parse("0/2"), identity="s0", leader_elect=True)
    blocked = asyncio.run(other_generation(cast(LeaseApi, leases), sharded))
    assert blocked is not None and f"{NAMESPACE}/orgkeeper of 1 shard(s)" in blocked
