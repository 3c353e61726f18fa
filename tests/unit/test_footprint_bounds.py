"""What the operator lists, watches and keeps is bounded by what it serves (no cluster needed):
server-side selectors for kopf and the informers, small pages, small records, a diff base that
can't outgrow an annotation, per-org state that goes with the org, and the policies that reserve
the selected labels. tests/integration/test_footprint.py proves them against the API server."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
import yaml
from kopf._cogs.structs import ephemera
from kopf._cogs.structs.references import Resource
from kubernetes import client
from test_informer import CannedPages, body, informer, page

from orgkeeper import names
from orgkeeper.controllers.listwatch import ListWatch
from orgkeeper.controllers.records import BindingRecord, WorkloadRecord
from orgkeeper.controllers.runtime import Runtime
from orgkeeper.domain.shards import Shard
from orgkeeper.handlers import organization
from orgkeeper.handlers.indexes import WORKLOADS
from orgkeeper.handlers.startup import KOPF_CHUNK_SIZE, SpecDiffBaseStorage, configure_kopf
from orgkeeper.kube import LIST_PAGE_SIZE, KubeApi
from orgkeeper.manager import AdmissionForgets
from orgkeeper.settings import Settings

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "manifests" / "policies"
DEPLOYMENTS = Resource("apps", "v1", "deployments")
ORGANIZATIONS = Resource(names.GROUP, names.VERSION, names.ORGANIZATIONS)
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")


def kopf_settings(region: str | None = None) -> kopf.OperatorSettings:
    found = kopf.OperatorSettings()
    configure_kopf(found, Settings(region=region, webhook_mode="off"))
    return found


def selectors(settings: kopf.OperatorSettings, resource: Resource) -> tuple[list[str], list[str]]:
    watching = settings.watching
    return watching.label_selectors.collect(resource), watching.field_selectors.collect(resource)


def test_kopf_lists_and_watches_only_labelled_workloads_in_small_chunks() -> None:
    found = kopf_settings()
    for group, version, plural in WORKLOADS.values():
        labels, _ = selectors(found, Resource(group, version, plural))
        assert labels == [names.LABEL_ORGANIZATION], plural
    assert found.watching.chunk_size == KOPF_CHUNK_SIZE <= 100
    assert selectors(found, CRDS) == (["app.kubernetes.io/part-of=orgkeeper"], [])


def test_a_regional_operator_watches_its_regions_organizations_only() -> None:
    assert selectors(kopf_settings("eu"), ORGANIZATIONS) == ([], ["spec.region=eu"])
    # All regions: every Organization is served (admission bounds their size).
    assert selectors(kopf_settings(), ORGANIZATIONS) == ([], [])


def test_the_crd_makes_the_region_selectable() -> None:
    crd = yaml.safe_load((REPO / "crds" / "orgkeeper.dev_organizations.yaml").read_text())
    (served,) = crd["spec"]["versions"]
    assert served["selectableFields"] == [{"jsonPath": f".{names.REGION_FIELD}"}]


def test_informers_list_in_small_pages() -> None:
    assert LIST_PAGE_SIZE <= 100


def test_kopfs_diff_base_holds_the_spec_not_the_metadata() -> None:
    """M1 (a): 0.5 MB of labels made kopf's annotation exceed 256 KB: 422, retried forever."""
    fat = {f"k{i}.fat.example/" + "k" * 50: "v" * 63 for i in range(5000)}
    raw: dict[str, Any] = {
        "apiVersion": names.API_VERSION,
        "kind": "Organization",
        "metadata": {"name": "fat", "labels": fat, "annotations": {"a": "b" * 200_000}},
        "spec": {"displayName": "f", "plan": "Free", "region": "us", "owner": "m@evil.test"},
        "status": {"phase": "Active"},
    }
    storage = SpecDiffBaseStorage(prefix=names.GROUP, key="last-handled-configuration")
    essence = storage.build(body=kopf.Body(cast(kopf.RawBody, raw)))
    assert essence == {"spec": raw["spec"]}
    assert len(json.dumps(essence)) < 1024
    assert isinstance(kopf_settings().persistence.diffbase_storage, SpecDiffBaseStorage)


def test_a_binding_record_keeps_two_short_subjects_of_thousands() -> None:
    """H2: orgkeeper writes one subject; a forged binding's 2,000 are not kept."""
    subjects = [{"kind": "User", "name": f"u{i:05d}-" + "x" * 400} for i in range(2000)]
    owners = [{"uid": "u" * 1000} for _ in range(50)]
    record = BindingRecord.from_body(
        {
            "metadata": {"name": "b", "namespace": "org-a", "ownerReferences": owners},
            "roleRef": {"name": "view"},
            "subjects": subjects,
        }
    )
    assert len(record.users) == 2 and all(len(user) <= 320 for user in record.users)
    assert len(record.owners) == 2 and all(len(uid) <= 320 for uid in record.owners)
    assert record.users[0].startswith("u00000-")


def test_a_workload_record_cuts_a_long_annotation() -> None:
    record = WorkloadRecord.from_body(
        "Deployment",
        {
            "metadata": {
                "name": "w",
                "namespace": "org-a",
                "labels": {names.LABEL_ORGANIZATION: "a"},
                "annotations": {names.ANNOTATION_LICENSE_FINGERPRINT: "f" * 100_000},
            }
        },
    )
    assert len(record.annotations[names.ANNOTATION_LICENSE_FINGERPRINT]) <= 128


def test_memberships_and_bindings_are_held_only_in_org_namespaces() -> None:
    held = Runtime(kube=KubeApi(client.ApiClient()), settings=Settings())
    for keep in (held.caches.members.keep, held.caches.bindings.keep):
        assert keep is not None
        assert keep("org-acme") and not keep("mallory") and not keep("org-")
    # A shard's: only its orgs' namespaces (whatever slot label an object carries).
    shard = Shard.parse("0/2")
    sharded = Runtime(kube=KubeApi(client.ApiClient()), settings=Settings(shard=shard))
    mine = next(f"org-o{i}" for i in range(100) if shard.serves(f"o{i}"))
    theirs = next(f"org-o{i}" for i in range(100) if not shard.serves(f"o{i}"))
    for keep in (sharded.caches.members.keep, sharded.caches.bindings.keep):
        assert keep is not None
        assert keep(mine) and not keep(theirs) and not keep("mallory")
    assert sharded.caches.members.listwatch.label_selector == shard.selector()
    assert str(shard.selector()) in str(sharded.caches.bindings.listwatch.label_selector)
    listed = page(body("org-a", "m1", 5), body("mallory", "m2", 6), version=9)
    cache, changed = informer({"": listed})
    cache.keep = lambda namespace: namespace.startswith("org-")
    asyncio.run(cache._list())
    assert len(cache) == 1 and changed == ["org-a"]
    cache._take({"type": "ADDED", "object": body("mallory", "m3", 10)})
    assert len(cache) == 1 and changed == ["org-a"]


def test_a_namespace_whose_objects_are_all_gone_leaves_no_entry() -> None:
    """Org namespaces come and go with orgs: the cache is not keyed by every one ever seen."""
    cache, _ = informer({})
    for i in range(100):
        cache._take({"type": "ADDED", "object": body(f"org-{i}", "m", 10 + i)})
        cache._take({"type": "DELETED", "object": body(f"org-{i}", "m", 11 + i)})
    cache.observe(body("org-x", "m", 500))
    cache.forget("org-x", "m")
    assert cache._objects == {}
    cache.listwatch = cast(ListWatch, CannedPages({"": page(version=600)}))
    asyncio.run(cache._list())
    assert cache._objects == {}


NOW_DUE = datetime(2030, 1, 1, tzinfo=UTC)


def test_an_org_deleted_while_it_reconciled_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A turn's last writes after its org was forgotten are forgotten too (memory creep)."""
    held = Runtime(kube=KubeApi(client.ApiClient()), settings=Settings())

    async def reconcile_after_the_deletion(*_: Any, **__: Any) -> list[Any]:
        held.forget("gone")  # the DELETED event, while the reconcile runs
        held.memory.transitions["gone"] = "Deactivated"
        held.memory.told["gone"] = frozenset({"ignored:x"})
        held.metrics.phases["gone"] = "Active"
        held.wakes.due["gone"] = held.wakes.due.get("gone") or NOW_DUE
        return []

    monkeypatch.setattr(organization, "reconcile_organization", reconcile_after_the_deletion)
    monkeypatch.setattr(organization, "_observed", lambda *_: None)

    async def served_then_deleted() -> None:
        held.wakes.trigger("gone")
        held.wakes.bodies["gone"] = json.dumps({"metadata": {"name": "gone"}})
        held.wakes.poke("gone")
        await held.reconcile_slots.acquire()  # the scheduler takes the slot and the turn
        assert held.wakes.turns.take(0.0) == "gone"
        await organization._turn(held, "gone", 60.0)

    asyncio.run(served_then_deleted())
    memory, wakeups = held.memory, held.wakes
    assert (wakeups.triggers, memory.transitions, memory.told, held.metrics.phases) == (
        {},
        {},
        {},
        {},
    )
    assert (wakeups.due, wakeups.bodies, len(wakeups.turns)) == ({}, {}, 0)


def test_an_org_gone_from_the_cache_is_forgotten_even_if_kopf_missed_it() -> None:
    held = Runtime(kube=KubeApi(client.ApiClient()), settings=Settings())
    held.wakes.trigger("gone")
    held.memory.transitions["gone"] = "Deactivated"
    held.organization_cached("gone")
    assert held.wakes.triggers == {} and held.memory.transitions == {}


# --- the policies that reserve the selected labels and bound metadata ----------------------


def shipped(kind: str, name: str) -> dict[str, Any]:
    for path in POLICIES.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == kind and doc["metadata"]["name"] == name:
                return dict(doc)
    raise AssertionError(f"no {kind} {name} in {POLICIES}")


def policy(name: str) -> dict[str, Any]:
    return shipped("ValidatingAdmissionPolicy", name)


def binding(name: str) -> dict[str, Any]:
    return shipped("ValidatingAdmissionPolicyBinding", name)


NEW_POLICIES = (
    "orgkeeper-member-binding-labels",
    "orgkeeper-workload-organization-label",
    "orgkeeper-metadata-size",
    "orgkeeper-shard-slot-label",
)


@pytest.mark.parametrize("name", NEW_POLICIES)
def test_each_footprint_policy_denies_fails_closed_and_names_the_field(name: str) -> None:
    spec = policy(name)["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert binding(name)["spec"] == {"policyName": name, "validationActions": ["Deny"]}
    for validation in spec["validations"]:
        assert validation["messageExpression"].lstrip().startswith("'metadata")


def test_the_binding_labels_policy_reserves_the_informers_selector_for_the_operator() -> None:
    spec = policy("orgkeeper-member-binding-labels")["spec"]
    (condition,) = spec["matchConditions"]
    for key in (names.LABEL_MEMBERSHIP, names.LABEL_MANAGED_BY, names.MANAGED_BY):
        assert key in condition["expression"]
    (validation,) = spec["validations"]
    assert "check('reconcile')" in validation["expression"]
    # The operator's ServiceAccount holds that verb (and only the operator's role grants it).
    rbac = list(yaml.safe_load_all((REPO / "manifests" / "rbac" / "operator.yaml").read_text()))
    (role,) = [d for d in rbac if d["kind"] == "ClusterRole"]
    assert {
        "apiGroups": [names.GROUP],
        "resources": [names.MEMBERSHIPS],
        "verbs": ["reconcile"],
    } in role["rules"]


def test_the_workload_policy_guards_the_workload_selector() -> None:
    spec = policy("orgkeeper-workload-organization-label")["spec"]
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert sorted(rule["resources"]) == sorted(plural for _, _, plural in WORKLOADS.values())
    assert names.WORKLOAD_SELECTOR in spec["matchConditions"][0]["expression"]


def test_every_new_policy_is_in_the_kustomization() -> None:
    (kustomization,) = yaml.safe_load_all((REPO / "manifests" / "kustomization.yaml").read_text())
    assert {"policies/reserved-labels.yaml", "policies/metadata-size.yaml"} <= set(
        kustomization["resources"]
    )


def test_an_admission_review_leaves_no_memory_behind() -> None:
    """The soak's creep: kopf kept a memory of every Membership an UPDATE review was about, and
    its watch (it watches no Memberships) never told it they were deleted."""
    memories = AdmissionForgets()
    raw = cast(kopf.RawBody, {"metadata": {"uid": "u1", "name": "m", "namespace": "org-a"}})

    async def reviewed() -> Any:
        base = ephemera.AnyMemo(kopf.Memo(runtime="r"))
        return await memories.recall_memo(raw, memobase=base, ephemeral=False)

    memo = asyncio.run(reviewed())
    assert memo.runtime == "r"  # the handlers still reach the Runtime
    assert list(memories.iter_all_memories()) == []
    # An object kopf does watch keeps the memory its watch made.
    asyncio.run(memories.recall(raw))
    assert asyncio.run(reviewed()) is next(memories.iter_all_memories()).memo
