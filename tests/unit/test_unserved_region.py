"""U1: an Organization of a region no operator serves is admitted with a warning that says so."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from unittest import mock

import kopf
import pytest

from orgkeeper import names
from orgkeeper.controllers.runtime import Runtime
from orgkeeper.domain.admission import unserved_region_warning
from orgkeeper.handlers import admission, organization
from orgkeeper.kube import KubeApi, threaded
from orgkeeper.leases import Leases as LeaseApi
from orgkeeper.settings import Settings
from support.inline import Inline

LEASES = ["orgkeeper", "orgkeeper-au"]


def test_the_warning_names_the_region_and_what_would_serve_it() -> None:
    warning = unserved_region_warning("au", own_region="us", live_leases=[], leases=LEASES)
    assert warning == (
        "spec.region: no orgkeeper operator serves region au now (no live Lease orgkeeper or "
        "orgkeeper-au); the Organization is kept but gets no namespace, roles or status until "
        "an operator with --region=au (or without --region) runs"
    )


@pytest.mark.parametrize(
    ("own", "live"),
    [(None, []), ("au", []), ("us", ["orgkeeper-au"]), ("us", ["orgkeeper"])],
    ids=["this-serves-all", "this-serves-au", "au-lease-live", "all-regions-lease-live"],
)
def test_no_warning_when_an_operator_serves_the_region(own: str | None, live: list[str]) -> None:
    assert unserved_region_warning("au", own_region=own, live_leases=live, leases=LEASES) is None


def _lease(holder: str, renewed: datetime) -> dict[str, Any]:
    stamp = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": stamp}}


def stored(leases: dict[str, Any]) -> Any:
    """The Lease API, answering with `leases` (by name), as admission reads it."""

    class Stored:
        def __init__(self, kube: Any, executor: Any = None) -> None:
            self.executor = Inline()

        @threaded
        def read_lease(self, namespace: str, name: str, timeout: float) -> Any:
            return leases.get(name)

        @threaded
        def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]:
            assert selector == names.LEASE_SELECTOR
            return [{"metadata": {"name": name}, **lease} for name, lease in leases.items()]

        scope_leases = LeaseApi.scope_leases  # the real one, over the reads above

    return Stored


def _create(region: str, leases: dict[str, Any]) -> list[str]:
    runtime = Runtime(kube=cast(KubeApi, mock.MagicMock()), settings=Settings(region="us"))
    for informer in runtime.caches.informers():
        informer.synced.set()
    warnings: list[str] = []
    spec = {"displayName": "A", "plan": "Free", "region": region, "owner": "o@a.test"}
    with mock.patch.object(admission, "Leases", stored(leases)):
        validate = admission.validate_organization(
            spec=cast(kopf.Spec, spec),
            old=None,
            name="a",
            operation="CREATE",
            userinfo=cast(kopf.UserInfo, {"username": "o@a.test"}),
            memo=kopf.Memo(runtime=runtime),
            warnings=warnings,
        )
        asyncio.run(validate)
    return warnings


def test_a_regional_operator_warns_only_without_a_live_lease_for_the_region() -> None:
    now = datetime.now(UTC)
    assert _create("us", {}) == [], "its own region"
    (warning,) = _create("au", {})
    assert warning.startswith("spec.region: no orgkeeper operator serves region au now")
    stale = {"orgkeeper-au": _lease("au-1", now - timedelta(minutes=5))}
    assert len(_create("au", stale)) == 1, "a Lease nobody renews serves nothing"
    assert _create("au", {"orgkeeper-au": _lease("au-1", now)}) == []
    # Shards of the region (--shard) serve it too; another region's don't.
    assert _create("au", {"orgkeeper-au-shard-1-of-2": _lease("au-s1", now)}) == []
    assert len(_create("au", {"orgkeeper-eu-shard-1-of-2": _lease("eu-s1", now)})) == 1


def _seen(body: dict[str, Any], *, leader_elect: bool = True) -> list[Any]:
    """What a us operator writes once its Organizations informer takes in `body`."""
    kube = mock.MagicMock()
    kube.read_organization = mock.AsyncMock(return_value=body)
    written: list[Any] = []

    async def patch_status(*args: Any, **kwargs: Any) -> None:
        written.append((args, kwargs))

    kube.patch_status = patch_status
    settings = Settings(region="us", leader_elect=leader_elect)
    runtime = Runtime(kube=cast(KubeApi, kube), settings=settings)
    runtime.caches.organizations.observe(body)
    runtime.organization_cached("a")
    with mock.patch.object(admission, "Leases", stored({})):
        asyncio.run(organization.tell_unserved(runtime, runtime.wakes.unreconciled_elsewhere))
    return written


def test_an_unserved_org_s_status_says_so_once_and_never_over_a_reconciled_one() -> None:
    body: dict[str, Any] = {
        "metadata": {"name": "a", "generation": 1, "resourceVersion": "7"},
        "spec": {"region": "au"},
    }
    ((args, kwargs),) = _seen(body)
    (ready,) = args[2]["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        "Ready",
        "False",
        "RegionNotServed",
    )
    assert ready["message"].startswith("spec.region: no orgkeeper operator serves region au now")
    assert kwargs == {"resource_version": "7"}
    assert _seen({**body, "status": {"conditions": [ready]}}) == [], "once"
    assert _seen({**body, "status": {"phase": "Active"}}) == [], "an operator serves it"
    assert _seen(body, leader_elect=False) == [], "without a Lease of its own it can't judge"
