"""Admission finds an Owner's Organizations through an index by Owner, not a scan of every
org (a sign-up scanned all of them twice: quadratic in the orgs provisioned)."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from orgkeeper.controllers.runtime import Runtime
from orgkeeper.handlers.admission import _locking, _owned_by
from orgkeeper.kube import KubeApi
from orgkeeper.settings import Settings


def org(name: str, asked: str, version: int, **status: Any) -> dict[str, Any]:
    return {
        "type": "ADDED",
        "object": {
            "metadata": {"name": name, "resourceVersion": str(version)},
            "spec": {"owner": asked, "region": "eu", "plan": "Free", "displayName": name},
            "status": status,
        },
    }


def test_an_owners_orgs_and_locks_come_from_the_index_as_a_scan_would_find_them() -> None:
    runtime = Runtime(kube=KubeApi(client.ApiClient()), settings=Settings())
    orgs = runtime.caches.organizations
    for i in range(3000):
        orgs._take(org(f"o{i}", f"owner{i % 1000}@corp.test", i + 1))
    orgs._take(org("caps", " Owner7@CORP.test ", 5000))
    orgs._take(org("locked", "owner7@corp.test", 5001, ownerEmailLocked=True))
    assert _owned_by(runtime, "OWNER7@corp.test") == ["caps", "locked", "o1007", "o2007", "o7"]
    assert _locking(runtime, "owner7@corp.test ") == ["locked"]
    # The effective Owner (status) moves an org to its new Owner's key; a deletion drops it.
    moved = org("o7", "owner7@corp.test", 6000, owner="new@corp.test")
    orgs._take({**moved, "type": "MODIFIED"})
    orgs._take({**org("caps", "", 6001), "type": "DELETED"})
    assert _owned_by(runtime, "owner7@corp.test") == ["locked", "o1007", "o2007"]
    assert _owned_by(runtime, "new@corp.test") == ["o7"]
    assert _owned_by(runtime, "nobody@corp.test") == []
