"""Which namespaces an org owns, bounded state for unknown org names, bounded messages, and
licenses reissued on a plan or region change (no cluster needed)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kubernetes import client
from kubernetes.client.rest import ApiException

from orgkeeper import licensing, names
from orgkeeper.api.v1alpha1.license import LicenseStatus
from orgkeeper.api.v1alpha1.organization import (
    Activity,
    ApiRequests,
    Billing,
    OrganizationSpec,
    OrganizationStatus,
)
from orgkeeper.controllers.organization import _write_status
from orgkeeper.controllers.records import MemberRecord, NamespaceRecord, WorkloadRecord
from orgkeeper.controllers.runtime import Runtime
from orgkeeper.domain.license.copies import Delivery
from orgkeeper.domain.license.evaluation import Evaluated, evaluate, needs_issuing
from orgkeeper.domain.license.status import license_status
from orgkeeper.domain.namespaces import Claim, belongs_to, ignored_message, owned_namespaces
from orgkeeper.domain.organization.plan import Applied, OrgObservation, plan_organization
from orgkeeper.domain.organization.status import organization_status
from orgkeeper.domain.organization.warnings import ignored_key
from orgkeeper.handlers.organization import labelled_or_counted, license_changed, workload_changed
from orgkeeper.kube import KubeApi, Outcome, threaded
from orgkeeper.resources import OwnerRef
from orgkeeper.settings import Settings
from orgkeeper.views import switcher_rows
from support.inline import Inline

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def runtime() -> Runtime:
    return Runtime(kube=KubeApi(client.ApiClient()), settings=Settings())


def changed(memo: kopf.Memo, org: str, namespace: str, uid: str, type: str = "MODIFIED") -> Any:
    labels = cast(kopf.Labels, {names.LABEL_ORGANIZATION: org})
    return workload_changed(labels=labels, namespace=namespace, uid=uid, type=type, memo=memo)


def test_pokes_for_orgs_that_do_not_exist_leave_nothing_behind() -> None:
    async def scenario() -> Runtime:
        served = runtime()
        known = served.wakes.trigger("acme")  # acme's loop runs
        memo = kopf.Memo(runtime=served)
        for i in range(10_000):
            await changed(memo, f"ghost-{i}", "mallory", f"uid-{i}")
        served.member_changed("org-ghost")
        assert not known.is_set()
        await changed(memo, "acme", "org-acme", "uid-acme")
        assert known.is_set()
        return served

    served = asyncio.run(scenario())
    assert list(served.wakes.triggers) == ["acme"]
    assert list(served.wakes.changed_at) == ["acme"]


def test_a_workload_outside_the_orgs_namespaces_never_wakes_it() -> None:
    """It is told why it is ignored without the org's reconcile (test_events_for_outsiders.py):
    a stranger's writes cost the org nothing (review 2026-12-07, L3)."""

    async def scenario() -> None:
        served = runtime()
        acme = served.wakes.trigger("acme")
        memo = kopf.Memo(runtime=served)
        for _ in range(100):
            await changed(memo, "acme", "mallory", "uid-stolen")
        await changed(memo, "acme", "mallory", "uid-stolen", "DELETED")
        assert not acme.is_set()
        await changed(memo, "acme", "org-acme", "uid-own")
        assert acme.is_set()

    asyncio.run(scenario())


async def unlabelled(memo: kopf.Memo, namespace: str, uid: str, type: str = "MODIFIED") -> None:
    """An event of a workload without the org label, if kopf's filter lets it through."""
    labels = cast(kopf.Labels, {"app": "gateway"})
    if labelled_or_counted(labels=labels, uid=uid, memo=memo):
        await workload_changed(labels=labels, namespace=namespace, uid=uid, type=type, memo=memo)


def test_a_workload_whose_org_label_is_removed_wakes_the_org_it_left_once() -> None:
    async def scenario() -> None:
        served = runtime()
        acme = served.wakes.trigger("acme")
        memo = kopf.Memo(runtime=served)
        served.wakes.count_workloads("acme", ["uid-gw"])  # acme's reconcile counted it
        await unlabelled(memo, "org-acme", "uid-gw")
        assert acme.is_set()
        acme.clear()
        await unlabelled(memo, "org-acme", "uid-gw")  # its status changes, say
        await unlabelled(memo, "org-acme", "uid-gw", "DELETED")
        assert not acme.is_set()
        assert served.wakes.counted_by == {}
        served.wakes.count_workloads("acme", [])  # the reconcile it woke
        assert served.wakes.counted == {}

    asyncio.run(scenario())


def test_a_workload_moved_to_another_org_wakes_both() -> None:
    async def scenario() -> None:
        served = runtime()
        acme, beta = served.wakes.trigger("acme"), served.wakes.trigger("beta")
        memo = kopf.Memo(runtime=served)
        served.wakes.count_workloads("acme", ["uid-gw", "uid-other"])
        await changed(memo, "beta", "org-acme", "uid-gw")
        assert acme.is_set()  # it left: acme's copy and count go
        assert not beta.is_set()  # told why it is ignored without beta's reconcile
        # beta reconciles first and counts it, then acme: acme's count leaves beta's be.
        served.wakes.count_workloads("beta", ["uid-gw"])
        served.wakes.count_workloads("acme", ["uid-other"])
        assert served.wakes.counted_by == {"uid-gw": "beta", "uid-other": "acme"}
        acme.clear()
        beta.clear()
        await changed(memo, "acme", "org-acme", "uid-gw")  # and back
        assert acme.is_set()
        assert not beta.is_set()  # it left beta from a namespace beta doesn't own

    asyncio.run(scenario())


def test_a_workload_never_labelled_wakes_nothing_and_is_remembered_nowhere() -> None:
    async def scenario() -> Runtime:
        served = runtime()
        acme = served.wakes.trigger("acme")
        memo = kopf.Memo(runtime=served)
        served.wakes.count_workloads("acme", ["uid-gw"])
        for i in range(1_000):
            await unlabelled(memo, "org-acme", f"uid-{i}")
            await unlabelled(memo, "org-acme", f"uid-{i}", "DELETED")
        assert not acme.is_set()
        return served

    served = asyncio.run(scenario())
    assert served.wakes.counted_by == {"uid-gw": "acme"}
    assert served.wakes.counted == {"acme": frozenset({"uid-gw"})}
    assert list(served.wakes.triggers) == ["acme"] and served.wakes.changed_at == {}


def test_a_workload_leaving_a_namespace_the_org_does_not_own_wakes_nothing() -> None:
    async def scenario() -> None:
        served = runtime()
        acme = served.wakes.trigger("acme")
        memo = kopf.Memo(runtime=served)
        served.wakes.count_workloads("acme", ["uid-stolen"])  # counted, and told it is ignored
        served.memory.told["acme"] = frozenset({ignored_key("uid-stolen")})
        for _ in range(100):
            await unlabelled(memo, "mallory", "uid-stolen")
            await changed(memo, "acme", "mallory", "uid-stolen")
        assert not acme.is_set()

    asyncio.run(scenario())


def test_a_forgotten_org_keeps_no_count() -> None:
    served = runtime()
    served.wakes.count_workloads("acme", ["uid-gw"])
    served.wakes.count_workloads("beta", ["uid-db"])
    served.forget("acme")
    assert served.wakes.counted == {"beta": frozenset({"uid-db"})}
    assert served.wakes.counted_by == {"uid-db": "beta"}


def test_records_keep_only_the_keys_orgkeeper_reads() -> None:
    fat = {"x": "a" * 250_000, "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    workload = WorkloadRecord.from_body(
        "Deployment",
        {
            "metadata": {
                "name": "gw",
                "namespace": "edge",
                "labels": {
                    names.LABEL_ORGANIZATION: "acme",
                    names.LABEL_COMPONENT: "data-plane",
                    names.LABEL_PRODUCT: "mesh",
                    **fat,
                },
                "annotations": {**fat, names.ANNOTATION_FROZEN: "true"},
            }
        },
    )
    assert dict(workload.annotations) == {names.ANNOTATION_FROZEN: "true"}
    assert (workload.organization, workload.component, workload.product) == (
        "acme",
        "data-plane",
        "mesh",
    )
    member = MemberRecord.from_body(
        {
            "metadata": {
                "name": "m",
                "namespace": "org-acme",
                "labels": {**fat, names.LABEL_ORGANIZATION: "acme", names.LABEL_EMAIL_HASH: "h"},
            },
            "spec": {"email": "a@acme.test"},
        }
    )
    assert dict(member.labels) == {names.LABEL_ORGANIZATION: "acme", names.LABEL_EMAIL_HASH: "h"}


def test_a_namespace_belongs_to_its_owning_organization_else_to_its_label() -> None:
    mallory = Claim("mallory", "", ())
    labelled = Claim("edge", "acme", ())
    org_beta = Claim("org-beta", "acme", (("beta", "uid-beta"),))  # relabelled by someone
    owner = "owner@acme.test"
    owned = owned_namespaces(
        "acme", "uid-acme", owner, [mallory, labelled, org_beta], org_namespace_owned=True
    )
    assert owned == {"org-acme", "edge"}
    assert belongs_to(org_beta, "beta", "uid-beta", "owner@beta.test")
    assert not belongs_to(org_beta, "acme", "uid-acme", owner)
    squatted = Claim("org-acme", "acme", ())
    found = owned_namespaces("acme", "uid-acme", owner, [squatted], org_namespace_owned=False)
    assert found == set()
    record = NamespaceRecord.from_body(
        {
            "metadata": {
                "name": "org-beta",
                "labels": {names.LABEL_ORGANIZATION: "acme"},
                "ownerReferences": [
                    {
                        "apiVersion": names.API_VERSION,
                        "kind": "Organization",
                        "name": "beta",
                        "uid": "uid-beta",
                    },
                    {"apiVersion": "other.dev/v1", "kind": "Organization", "name": "x", "uid": "u"},
                ],
            }
        }
    )
    assert record.owners == (("beta", "uid-beta"),)


def test_the_ignored_workload_message_says_why_and_what_to_do() -> None:
    assert ignored_message("mallory", "acme", None) == (
        "namespace mallory does not belong to Organization acme: this workload is ignored "
        "(no license, not counted); its Owner can label the namespace "
        "orgkeeper.dev/organization=acme"
    )
    assert "belongs to Organization beta, not acme" in ignored_message("org-beta", "acme", "beta")


def verified(plan: str, region: str, issued: datetime) -> Evaluated:
    key = Ed25519PrivateKey.generate()
    payload = licensing.LicensePayload(
        organization="acme",
        product="mesh",
        plan=plan,
        region=region,
        issued_at=issued,
        expires_at=issued + timedelta(days=365),
    )
    document = licensing.sign(payload, key)
    return evaluate(
        "mesh",
        "mesh",
        "Provisioned",
        "",
        document,
        organization="acme",
        organization_uid="",
        public_key=key.public_key(),
        now=NOW,
    )


def test_a_plan_or_region_change_reissues_a_provisioned_license() -> None:
    current = verified("Enterprise", "eu", NOW - timedelta(days=1))
    assert current.valid
    rotate = timedelta(days=182)
    same = needs_issuing(current, now=NOW, rotate_after=rotate, plan="Enterprise", region="eu")
    assert same is None
    assert (
        needs_issuing(current, now=NOW, rotate_after=rotate, plan="Free", region="eu") == "reissued"
    )
    assert (
        needs_issuing(current, now=NOW, rotate_after=rotate, plan="Enterprise", region="us")
        == "reissued"
    )


def test_five_hundred_conflicts_give_a_short_message() -> None:
    item = verified("Enterprise", "eu", NOW - timedelta(days=1))
    conflicts = [f"namespace-with-a-long-name-{i:04}" for i in range(500)]
    status = license_status(
        item,
        item,
        Delivery(conflicts=conflicts, namespaces=["edge"]),
        LicenseStatus(),
        generation=1,
        now=NOW,
    )
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "SecretConflict")
    assert "and 497 more" in ready.message and len(ready.message) < 1000
    assert status.propagated_to is not None and status.propagated_to.namespaces == ["edge"]


def test_failed_targets_keep_ready_false_with_a_short_message() -> None:
    spec = OrganizationSpec.model_validate(
        {"displayName": "Acme", "plan": "Enterprise", "region": "eu", "owner": "o@acme.test"}
    )
    observed = OrgObservation(
        name="acme",
        uid="uid-acme",
        generation=3,
        created=NOW,
        spec=spec,
        status=OrganizationStatus(),
        now=NOW,
        billing_cycle=timedelta(days=30),
        inactivity_window=timedelta(days=30),
        sso_prefix="oidc:",
        namespace_ready=True,
    )
    status = organization_status(
        plan_organization(observed),
        Applied(
            licenses=frozenset({"gateway-enterprise", "ingress-controller", "mesh"}),
            failed=tuple(f"Deployment ns-{i}/fat (Invalid: too long)" for i in range(40)),
            complete=True,
        ),
    )
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "PartiallyApplied")
    assert ready.message.startswith("40 target(s) failed") and "and 37 more" in ready.message
    assert status.observed_generation == 3


def test_the_org_switcher_takes_the_org_from_the_namespace_not_a_label() -> None:
    membership: dict[str, Any] = {
        "metadata": {
            "name": "m",
            "namespace": "org-acme",
            "labels": {names.LABEL_ORGANIZATION: "victim"},
        },
        "spec": {"email": "a@acme.test", "teams": []},
    }
    orgs = {
        name: {"spec": {"displayName": name, "region": "eu"}, "status": {"phase": "Active"}}
        for name in ("acme", "victim")
    }
    (row,) = switcher_rows("a@acme.test", [membership], orgs)
    assert row["organization"] == "acme"


class RolloverApi:
    """patch_status answers 409 once (requests were recorded meanwhile), then takes the patch."""

    executor = Inline()

    def __init__(self) -> None:
        self.patches: list[tuple[dict[str, Any], str | None]] = []
        self.live_requests = 8  # 5 when the operator read the org, 3 more since

    @threaded
    def patch_status(
        self, plural: str, name: str, status: dict[str, Any], *, resource_version: str | None
    ) -> None:
        self.patches.append((json.loads(json.dumps(status)), resource_version))
        if len(self.patches) == 1:
            raise ApiException(status=409, reason="Conflict")

    @threaded
    def read_organization(self, name: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "resourceVersion": "11"},
            "status": {
                "billing": {"state": "Active", "cycleStart": "2026-11-01T00:00:00Z"},
                "activity": {"apiRequests": {"currentCycle": self.live_requests}},
            },
        }


def test_the_billing_cycle_rollover_loses_no_request() -> None:
    """L4: the rollover is compare-and-swap; a 409 rolls over again from the server's counts."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    current = {
        "billing": {"state": "Active", "cycleStart": "2026-11-01T00:00:00Z"},
        "activity": {"apiRequests": {"currentCycle": 5, "previousCycle": 0}},
    }
    desired = OrganizationStatus(
        billing=Billing(state="Active", cycle_start=start + timedelta(days=30)),
        activity=Activity(api_requests=ApiRequests(current_cycle=0, previous_cycle=5)),
    )
    api = RolloverApi()
    served = runtime()
    served.kube = cast(KubeApi, api)
    asyncio.run(
        _write_status(
            served, "acme", desired, current, version="10", now=start + timedelta(days=30, hours=1)
        )
    )
    (first, first_version), (second, second_version) = api.patches
    assert (first_version, second_version) == ("10", "11")
    assert first["activity"]["apiRequests"] == {"currentCycle": 0, "previousCycle": 5}
    assert second["activity"]["apiRequests"] == {"currentCycle": 0, "previousCycle": 8}


def test_a_relabelled_namespace_wakes_the_org_it_left_and_the_one_it_joins() -> None:
    def labelled(org: str | None) -> dict[str, Any]:
        labels = {names.LABEL_ORGANIZATION: org} if org else {}
        return {"metadata": {"name": "edge", "resourceVersion": "1", "labels": labels}}

    async def scenario() -> None:
        served = runtime()
        acme, beta = served.wakes.trigger("acme"), served.wakes.trigger("beta")
        served.caches.namespaces.observe(labelled("acme"))
        served.namespace_relabelled("edge")
        assert acme.is_set() and not beta.is_set()
        assert [r.name for r in served.caches.claimed("acme")] == ["edge"]
        acme.clear()
        served.caches.namespaces.forget("", "edge")
        served.caches.namespaces.observe(
            {
                **labelled("beta"),
                "metadata": {**labelled("beta")["metadata"], "resourceVersion": "2"},
            }
        )
        served.namespace_relabelled("edge")
        assert acme.is_set() and beta.is_set()
        assert served.caches.claimed("acme") == [] and [
            r.name for r in served.caches.claimed("beta")
        ] == ["edge"]
        served.caches.namespaces.forget("", "edge")  # the label removed: out of the selector
        served.namespace_relabelled("edge")
        assert served.caches.claims == {} and served.caches.claimed_by == {}

    asyncio.run(scenario())


class SquattedCore:
    """The namespace appears between the operator's read and its create (409)."""

    def __init__(self, owner_uid: str) -> None:
        self.owner_uid = owner_uid

    def create_namespace(self, body: dict[str, Any], field_manager: str) -> None:
        raise ApiException(status=409, reason="AlreadyExists")

    def read_namespace(self, name: str) -> client.V1Namespace:
        ref = client.V1OwnerReference(
            api_version=names.API_VERSION,
            kind="Organization",
            name="acme",
            uid=self.owner_uid,
        )
        return client.V1Namespace(metadata=client.V1ObjectMeta(name=name, owner_references=[ref]))


def test_a_namespace_created_first_by_someone_else_is_not_taken_as_the_orgs() -> None:
    """L1: a 409 on create is the org's namespace only if the org owns what is there."""
    kube = KubeApi(client.ApiClient())
    owner = OwnerRef(names.API_VERSION, "Organization", "acme", "uid-acme")
    kube.core = cast(client.CoreV1Api, SquattedCore("someone-else"))
    assert kube.create_namespace.blocking("org-acme", "acme", owner) is Outcome.TAKEN
    kube.core = cast(client.CoreV1Api, SquattedCore("uid-acme"))  # our own earlier create
    assert kube.create_namespace.blocking("org-acme", "acme", owner) is Outcome.UNCHANGED


def test_a_license_change_wakes_the_org_of_its_namespace_only() -> None:
    async def scenario() -> Runtime:
        served = runtime()
        acme = served.wakes.trigger("acme")
        memo = kopf.Memo(runtime=served)

        def changed(namespace: str, org: str) -> Any:
            labels = cast(kopf.Labels, names.shard_slot_label(org))  # as the webhook stamps
            return license_changed(namespace, "l", labels, "MODIFIED", memo)

        await changed("edge", "edge")
        await changed("org-ghost", "ghost")
        assert not acme.is_set()
        await changed("org-acme", "acme")
        assert acme.is_set()
        return served

    served = asyncio.run(scenario())
    assert list(served.wakes.triggers) == ["acme"]
    assert list(served.wakes.changed_at) == ["acme"]


def test_the_loop_sleeps_until_a_time_rule_is_due_once() -> None:
    served = runtime()
    served.wakes.schedule("acme", (None, NOW + timedelta(seconds=20), NOW + timedelta(seconds=5)))
    assert served.wakes.take_wait("acme", 300.0, NOW) == 5.0
    # Taken: until a reconcile schedules again, the check interval (a stalled or failing
    # reconcile must not spin on a moment already past).
    assert served.wakes.take_wait("acme", 300.0, NOW) == 300.0
    served.wakes.schedule("acme", (NOW - timedelta(seconds=1),))
    assert served.wakes.take_wait("acme", 300.0, NOW) == 0.0
    served.wakes.schedule("acme", (NOW + timedelta(hours=1),))
    assert served.wakes.take_wait("acme", 300.0, NOW) == 300.0
    served.wakes.schedule("acme", (None,))
    assert served.wakes.due == {}
