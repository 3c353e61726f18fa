"""Fixed shards (README: "Scaling out"): the slot of an org, which shard serves it, the balance
of the planned map, the shard's selector and Lease, and the fence between shard counts."""

from __future__ import annotations

import asyncio
import random
import string
from typing import Any, cast

import kopf
import pytest
from test_leader import NAMESPACE, Clock, Leases, run_async

from orgkeeper import names
from orgkeeper.domain.shards import (
    SLOTS,
    Shard,
    default_map,
    lease_generation,
    load_of,
    map_data,
    map_of,
    plan,
    shard_sizes,
)
from orgkeeper.handlers.mutation import label_license, label_membership, label_organization
from orgkeeper.kube import threaded
from orgkeeper.leader import Elector, LeaseConfig, other_generation
from orgkeeper.leases import Leases as LeaseApi
from orgkeeper.settings import SettingError, Settings, check, lease_name

COUNTS = range(2, 9)
ORGS = 10_000


def sequential() -> list[str]:
    return [f"org{i}" for i in range(ORGS)]


def customers() -> list[str]:
    return [f"acme-{i:05d}" for i in range(ORGS)]


def random_names() -> list[str]:
    rng = random.Random(23)
    alphabet = string.ascii_lowercase + string.digits
    return ["".join(rng.choices(alphabet, k=rng.randint(3, 20))) for _ in range(ORGS)]


@pytest.mark.parametrize("orgs", [sequential(), customers(), random_names()])
def test_the_planned_map_keeps_the_busiest_shard_within_5_percent_of_the_mean(
    orgs: list[str],
) -> None:
    for count in COUNTS:
        sizes = shard_sizes(orgs, count, plan(load_of(orgs), count))
        assert sum(sizes) == len(orgs)
        assert max(sizes) <= 1.05 * len(orgs) / count, (count, sizes)


def test_hashing_alone_would_not_keep_5_percent() -> None:
    """Why the map is planned: the slots' own spread (a binomial one) exceeds 5% at N=8."""
    orgs = random_names()
    worst = max(
        max(shard_sizes(orgs, count, default_map(count))) / (len(orgs) / count) for count in COUNTS
    )
    assert worst > 1.05


def test_a_map_planned_before_any_org_spreads_the_slots_evenly() -> None:
    for count in COUNTS:
        slots = [sum(1 for s in plan({}, count) if s == shard) for shard in range(count)]
        assert max(slots) - min(slots) <= 1, (count, slots)


def test_a_slot_is_the_orgs_for_good_and_every_slot_has_one_shard() -> None:
    assert names.shard_slot("acme") == names.shard_slot("acme")
    assert {names.shard_slot(o) for o in sequential()} == set(range(SLOTS))
    for count in (1, 2, 3, 7):
        shards = [Shard(i, count, plan({}, count)) for i in range(count)]
        owned = sorted(s for shard in shards for s in shard.slots())
        assert owned == list(range(SLOTS))  # each slot once
        for org in ("acme", "globex", "initech"):
            assert sum(shard.serves(org) for shard in shards) == 1


def test_a_shard_selects_its_slots_and_an_unsharded_operator_everything() -> None:
    shard = Shard(1, 3, plan({}, 3))
    selector = shard.selector()
    assert selector == f"orgkeeper.dev/shard-slot in ({','.join(map(str, shard.slots()))})"
    assert Shard().selector() is None and Shard().serves("anything")
    org = next(f"o{i}" for i in range(100) if shard.serves(f"o{i}"))
    assert shard.serves_namespace(f"org-{org}") and not shard.serves_namespace("default")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("2", "is not i/N"),
        ("2/2", "the index must be 0 to 1"),
        ("0/0", "the count must be 1 to 64"),
        ("-1/2", "is not i/N"),
    ],
)
def test_a_shard_that_cant_be_is_refused_saying_why(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Shard.parse(text)


def test_a_shard_elects_on_a_lease_of_its_own_that_names_the_count() -> None:
    assert lease_name(None, Shard.parse("0/1")) == "orgkeeper"  # unsharded: as before
    assert lease_name(None, Shard.parse("1/3")) == "orgkeeper-shard-1-of-3"
    assert lease_name("eu", Shard.parse("0/2")) == "orgkeeper-eu-shard-0-of-2"
    assert lease_generation("orgkeeper-shard-1-of-3", "orgkeeper") == 3
    assert lease_generation("orgkeeper", "orgkeeper") == 1
    assert lease_generation("orgkeeper-eu-shard-0-of-2", "orgkeeper-eu") == 2
    assert lease_generation("orgkeeper-eu-shard-0-of-2", "orgkeeper") is None  # another region
    assert lease_generation("orgkeeper-eu", "orgkeeper") is None


def test_shards_need_leader_election() -> None:
    with pytest.raises(SettingError, match=r"--shard \(ORGKEEPER_SHARD\): 0/2 needs"):
        check(Settings(shard=Shard.parse("0/2")))
    check(Settings(shard=Shard.parse("0/2"), leader_elect=True))


def test_the_stored_map_reads_back_and_a_wrong_one_is_refused() -> None:
    slot_map = plan(load_of(sequential()), 3)
    assert map_of(map_data(3, slot_map), 3) == slot_map
    with pytest.raises(ValueError, match="not 2"):
        map_of(map_data(3, slot_map), 2)
    with pytest.raises(ValueError, match="each of 256 slots"):
        map_of({"count": "3", "slots": "0,1,2"}, 3)


# --- the fence between shard counts ------------------------------------------------------


class ListedLeases(Leases):
    @threaded
    def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]:  # type: ignore[override]
        assert selector == names.LEASE_SELECTOR
        return [
            cast(dict[str, Any], self.read_lease.blocking(namespace, name)) for name in self.stored
        ]


def shard_elector(leases: ListedLeases, clock: Clock, shard: str, identity: str) -> Elector:
    settings = Settings(shard=Shard.parse(shard), leader_elect=True, identity=identity)
    config = LeaseConfig(NAMESPACE, settings.lease_name, identity, 15.0, 10.0, 2.0)

    async def nothing() -> None:
        return None

    async def fence() -> str | None:
        return await other_generation(cast(LeaseApi, leases), settings)

    return Elector(
        cast(LeaseApi, leases),
        config,
        on_started_leading=nothing,
        on_stopped_leading=nothing,
        clock=clock,
        fence=fence,
    )


@run_async
async def test_a_shard_of_another_count_waits_until_the_old_leases_are_released() -> None:
    leases, clock = ListedLeases(), Clock()
    old = shard_elector(leases, clock, "0/2", "old")
    new = shard_elector(leases, clock, "0/3", "new")
    assert await old.try_acquire_or_renew()
    assert not await new.try_acquire_or_renew()
    assert "orgkeeper-shard-0-of-3" not in leases.stored  # not even created
    assert new.blocked is not None and "of 2 shard(s) is held by 'old'" in new.blocked
    await old.resign()
    await old.release()
    assert await new.try_acquire_or_renew()
    # The old count can't come back while the new one leads.
    again = shard_elector(leases, clock, "0/2", "again")
    assert not await again.try_acquire_or_renew()
    assert leases.record("orgkeeper-shard-0-of-2").holder == ""


@run_async
async def test_of_two_counts_taking_their_leases_at_once_never_both_lead() -> None:
    """The second look, after taking the Lease: whoever took it second sees the other and
    hands its own back."""
    leases, clock = ListedLeases(), Clock()
    old = shard_elector(leases, clock, "0/2", "old")
    new = shard_elector(leases, clock, "0/3", "new")
    assert new.fence is not None
    first_look = new.fence

    async def raced() -> str | None:
        blocked = await first_look()  # nothing held yet...
        if new.fence is raced:
            new.fence = first_look
            assert await old.try_acquire_or_renew()  # ...then the old count takes its Lease
        return blocked

    new.fence = raced
    assert not await new.try_acquire_or_renew()
    assert leases.record("orgkeeper-shard-0-of-3").holder == ""  # handed back
    assert old.holds_lease() and not new.holds_lease()


# --- who may write the slot label ------------------------------------------------------


SLOT_FIELD = r"metadata.labels\[orgkeeper.dev/shard-slot\]"


async def stamp(kind: str, body: Any) -> Any:
    """What the mutating webhook of `kind` patches into `body` of org acme."""
    patch: Any = kopf.Patch()
    if kind == "membership":
        spec: Any = {"email": "a@x.test"}
        await label_membership(body, spec, "org-acme", patch)
    elif kind == "license":
        await label_license(body, "org-acme", patch)
    else:
        await label_organization(body, "acme", patch)
    return patch["metadata"]["labels"]


@pytest.mark.parametrize("kind", ["membership", "license", "organization"])
def test_the_mutating_webhook_stamps_the_slot_and_refuses_another(kind: str) -> None:
    slot = str(names.shard_slot("acme"))
    assert asyncio.run(stamp(kind, {"metadata": {}}))[names.LABEL_SHARD_SLOT] == slot
    right = {"metadata": {"labels": {names.LABEL_SHARD_SLOT: slot}}}
    assert asyncio.run(stamp(kind, right))[names.LABEL_SHARD_SLOT] == slot
    wrong = {"metadata": {"labels": {names.LABEL_SHARD_SLOT: "999"}}}
    with pytest.raises(kopf.AdmissionError, match=SLOT_FIELD) as refused:
        asyncio.run(stamp(kind, wrong))
    assert "only the orgkeeper operator sets this label" in str(refused.value)
