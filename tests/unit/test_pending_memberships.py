"""Finding 9: Memberships in org-<name> while Organization <name> doesn't exist show Pending,
written by the leader only, never for an org that exists (in any region). L8 (security review
2026-12-07): a regional operator writes only into namespaces it knows are of its region, and
never on the word of a cache that may lag."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import pytest

from orgkeeper import names
from orgkeeper.controllers.runtime import Runtime
from orgkeeper.domain.regions import marks_pending_here
from orgkeeper.handlers import organization as handlers
from orgkeeper.kube import threaded
from orgkeeper.settings import Settings
from support.inline import Inline

EU = {names.LABEL_REGION: "eu"}


class FakeKube:
    """KubeApi as the pending loop uses it: reads answer, writes are recorded."""

    executor = Inline()

    def __init__(self) -> None:
        self.write_gate: Callable[[], bool] | None = None
        self.patched: list[tuple[str, str, dict[str, Any]]] = []
        self.namespace_owners: dict[str, list[Any]] = {}
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self.organizations: set[str] = set()  # what the API server holds (the cache may lag)
        self.deleted: list[tuple[str, str]] = []

    @threaded
    def read_namespace(self, name: str) -> Any:
        owners = self.namespace_owners.get(name, [])
        labels = self.namespace_labels.get(name)
        return SimpleNamespace(
            metadata=SimpleNamespace(
                deletion_timestamp=None, owner_references=owners, labels=labels
            )
        )

    @threaded
    def read_organization(self, name: str) -> Any:
        return {"metadata": {"name": name}} if name in self.organizations else None

    @threaded
    def delete_role_binding(self, namespace: str, name: str) -> None:
        self.deleted.append((namespace, name))

    @threaded
    def patch_status(
        self, plural: str, name: str, body: dict[str, Any], namespace: str
    ) -> dict[str, Any]:
        if self.write_gate is not None and not self.write_gate():
            raise AssertionError("a follower wrote")
        self.patched.append((namespace, name, body))
        return {
            "metadata": {"name": name, "namespace": namespace, "generation": 1},
            "spec": {"email": f"{name}@example.com"},
            "status": body,
        }


def member(name: str, namespace: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": name, "generation": 1},
        "spec": {"email": f"{name}@example.com", "teams": ["portal-admin"]},
    }


def runtime_with(kube: FakeKube, *members: dict[str, Any], region: str | None = "eu") -> Runtime:
    runtime = Runtime(kube=MagicMock(), settings=Settings(region=region))
    runtime.kube = kube  # type: ignore[assignment]
    for informer in runtime.caches.informers():
        informer.synced.set()
    for body in members:
        runtime.caches.members.observe(body)
    return runtime


async def settle(kube: FakeKube, count: int) -> None:
    for _ in range(500):  # up to 5 s: a follower looks again every PENDING_RECHECK (2 s)
        if len(kube.patched) >= count:
            return
        await asyncio.sleep(0.01)


async def run_loop(runtime: Runtime, body: Callable[[], Any]) -> None:
    task = asyncio.create_task(handlers.pending_memberships(runtime))
    try:
        await body()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_the_leader_marks_memberships_of_a_missing_org_pending() -> None:
    kube = FakeKube()
    kube.namespace_labels["org-ghost"] = EU  # made ahead for an org of region eu
    runtime = runtime_with(kube, member("carol", "org-ghost"), member("dan", "org-ghost"))

    async def scenario() -> None:
        runtime.member_changed("org-ghost")
        await settle(kube, 2)
        # Told again: the status taken in from the write's answer is already right.
        runtime.member_changed("org-ghost")
        await asyncio.sleep(0.1)

    runtime.caches.bindings.observe(
        {"metadata": {"name": "carol-portal-admin", "namespace": "org-ghost"}, "subjects": []}
    )
    asyncio.run(run_loop(runtime, scenario))
    assert sorted(name for _, name, _ in kube.patched) == ["carol", "dan"], "each written once"
    assert kube.deleted == [("org-ghost", "carol-portal-admin")], "no roles without an org"
    (status,) = {str(body["state"]) for _, _, body in kube.patched}
    assert status == "Pending"
    (_, _, body) = kube.patched[0]
    (ready,) = body["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "OrganizationNotFound")


def test_a_follower_writes_nothing_until_it_leads() -> None:
    kube = FakeKube()
    kube.namespace_labels["org-ghost"] = EU
    leads = False
    kube.write_gate = lambda: leads
    runtime = runtime_with(kube, member("carol", "org-ghost"))

    async def scenario() -> None:
        nonlocal leads
        runtime.member_changed("org-ghost")
        await asyncio.sleep(0.2)
        assert kube.patched == []
        leads = True  # it takes the Lease: the namespace it kept is served
        await settle(kube, 1)

    asyncio.run(run_loop(runtime, scenario))
    assert [name for _, name, _ in kube.patched] == ["carol"]


def test_a_deleted_orgs_namespace_is_looked_at() -> None:
    runtime = runtime_with(FakeKube())
    body = {"metadata": {"name": "gone"}, "spec": {"region": "eu", "owner": "o@gone.example"}}
    runtime.caches.organizations.observe(body)
    runtime.organization_cached("gone")
    assert runtime.wakes.unserved == set(), "it exists"
    runtime.caches.organizations.forget("", "gone")
    runtime.organization_cached("gone")
    assert runtime.wakes.unserved == {"org-gone"}


def test_an_existing_org_in_any_region_or_a_deleted_one_is_left_alone() -> None:
    kube = FakeKube()
    kube.namespace_owners["org-gone"] = [SimpleNamespace(kind="Organization")]
    runtime = runtime_with(kube, member("erin", "org-us"), member("finn", "org-gone"))
    runtime.caches.organizations.observe(
        {"metadata": {"name": "us"}, "spec": {"region": "us", "owner": "o@us.example"}}
    )

    async def scenario() -> None:
        runtime.member_changed("org-us")  # served by the us operator, not this eu one
        runtime.member_changed("org-gone")  # its org was deleted: going with it
        await asyncio.sleep(0.2)

    asyncio.run(run_loop(runtime, scenario))
    assert kube.patched == []


@pytest.mark.parametrize(
    ("region", "labels", "served_here", "marks"),
    [
        (None, {}, False, True),  # an operator of every region serves every namespace
        ("eu", EU, False, True),  # made ahead for region eu
        ("eu", {}, True, True),  # its own loop served the org until it was deleted
        ("eu", {}, False, False),  # not known: maybe another region's
        ("eu", {names.LABEL_REGION: "us"}, False, False),
    ],
)
def test_a_regional_operator_marks_only_namespaces_it_knows_are_its_region_s(
    region: str | None, labels: dict[str, str], served_here: bool, marks: bool
) -> None:
    assert marks_pending_here(region, labels, served_here) is marks


def test_a_regional_operator_leaves_namespaces_not_known_to_be_its_own() -> None:
    kube = FakeKube()
    kube.namespace_labels["org-theirs"] = {names.LABEL_REGION: "us"}
    runtime = runtime_with(kube, member("gia", "org-unknown"), member("hal", "org-theirs"))
    runtime.caches.bindings.observe(
        {"metadata": {"name": "gia-portal-admin", "namespace": "org-unknown"}, "subjects": []}
    )

    async def scenario() -> None:
        runtime.member_changed("org-unknown")
        runtime.member_changed("org-theirs")
        await asyncio.sleep(0.2)

    asyncio.run(run_loop(runtime, scenario))
    assert (kube.patched, kube.deleted) == ([], [])


@pytest.mark.parametrize("region", ["eu", None])
def test_an_org_the_cache_has_not_seen_yet_is_left_to_its_own_loop(region: str | None) -> None:
    """The Organizations cache lags (a watch backing off): the API server has the org."""
    kube = FakeKube()
    kube.namespace_labels["org-lagging"] = EU  # even labelled for this region
    kube.organizations.add("lagging")
    runtime = runtime_with(kube, member("ivy", "org-lagging"), region=region)
    runtime.caches.bindings.observe(
        {"metadata": {"name": "ivy-portal-admin", "namespace": "org-lagging"}, "subjects": []}
    )

    async def scenario() -> None:
        runtime.member_changed("org-lagging")
        await asyncio.sleep(0.2)

    asyncio.run(run_loop(runtime, scenario))
    assert (kube.patched, kube.deleted) == ([], [])


def test_the_namespace_of_an_org_served_here_is_marked_once_it_is_deleted() -> None:
    """A namespace made ahead without a region label: the eu operator ran its org's loop, so
    it knows the namespace is eu's; an operator that never served it doesn't."""
    kube = FakeKube()
    runtime = runtime_with(kube, member("jo", "org-left"))
    runtime.wakes.trigger("left")  # the org's loop ran here
    stranger = runtime_with(FakeKube())

    async def scenario() -> None:
        runtime.forget("left")  # kopf told the org is gone
        stranger.forget("left")
        await settle(kube, 1)

    asyncio.run(run_loop(runtime, scenario))
    assert [name for _, name, _ in kube.patched] == ["jo"]
    assert runtime.wakes.released == set(), "forgotten once served"
    assert stranger.wakes.released == stranger.wakes.unserved == set()
