"""An org namespace's guardrails, with a fake CoreV1Api: what is written, and when."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from orgkeeper import names
from orgkeeper.controllers import guardrails
from orgkeeper.controllers.runtime import Runtime
from orgkeeper.domain.guardrails import MEMBERSHIP_COUNT, POD_SECURITY_ENFORCE, Guardrails
from orgkeeper.kube import DEFAULT_GUARDRAILS, KubeApi
from orgkeeper.resources import OwnerRef

DEFAULTS = DEFAULT_GUARDRAILS
ENFORCE = POD_SECURITY_ENFORCE
OWNER = OwnerRef(names.API_VERSION, "Organization", "acme", "uid-1")


class FakeCore:
    """Namespace labels and one ResourceQuota, as the API server would hold them."""

    def __init__(self, quota: client.V1ResourceQuota | None = None) -> None:
        self.quota = quota
        self.calls: list[str] = []

    def patch_namespace(self, name: str, body: Any, **_: Any) -> None:
        self.calls.append(f"patch namespace {body['metadata']['labels']}")

    def read_namespaced_resource_quota(self, name: str, namespace: str) -> Any:
        self.calls.append("read quota")
        if self.quota is None:
            raise ApiException(status=404)
        return self.quota

    def create_namespaced_resource_quota(self, namespace: str, body: Any, **_: Any) -> Any:
        self.calls.append("create quota")
        # The API server writes quantities canonically, and the new quota is not counted yet.
        self.quota = quota(hard="10k" if body["spec"]["hard"][MEMBERSHIP_COUNT] == "10000" else "2")
        return self.quota

    def delete_namespaced_resource_quota(self, name: str, namespace: str) -> None:
        self.calls.append("delete quota")
        self.quota = None

    def patch_namespaced_resource_quota(
        self, name: str, namespace: str, body: Any, **_: Any
    ) -> Any:
        self.calls.append(f"patch quota {body}")
        return self.quota


def quota(
    hard: str = "10k",
    used: str | None = None,
    age: timedelta = timedelta(0),
    synced: bool = False,
) -> client.V1ResourceQuota:
    """`synced`: kube-controller-manager took in the limit (even without counting)."""
    status = client.V1ResourceQuotaStatus(
        hard={MEMBERSHIP_COUNT: hard} if synced or used is not None else None,
        used={MEMBERSHIP_COUNT: used} if used is not None else None,
    )
    return client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="orgkeeper", creation_timestamp=datetime.now(UTC) - age),
        spec=client.V1ResourceQuotaSpec(hard={MEMBERSHIP_COUNT: hard}),
        status=status,
    )


def kube_with(core: FakeCore, guardrails: Guardrails = DEFAULTS) -> KubeApi:
    kube = KubeApi.__new__(KubeApi)
    kube.core = cast(client.CoreV1Api, core)
    kube.guardrails = guardrails
    kube.executor = ThreadPoolExecutor(max_workers=1)
    return kube


def test_pod_security_labels_are_patched_only_when_they_drifted() -> None:
    core = FakeCore()
    kube = kube_with(core)
    right = {
        ENFORCE: "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    kube.ensure_pod_security.blocking("org-acme", {**right, "other": "kept"})
    assert core.calls == []
    kube.ensure_pod_security.blocking(
        "org-acme", {**right, "pod-security.kubernetes.io/enforce": "privileged"}
    )
    assert core.calls == [f"patch namespace {right}"]


def test_baseline_is_what_a_baseline_operator_puts_back() -> None:
    core = FakeCore()
    kube_with(
        core, Guardrails("baseline", DEFAULT_GUARDRAILS.membership_quota)
    ).ensure_pod_security.blocking("org-acme", {})
    assert "'pod-security.kubernetes.io/enforce': 'baseline'" in core.calls[0]


def test_a_missing_quota_is_created_and_not_counted_yet() -> None:
    core = FakeCore()
    assert kube_with(core).ensure_membership_quota.blocking("org-acme", "acme", OWNER) is False
    assert core.calls == ["read quota", "create quota"]


def test_a_counted_quota_in_canonical_form_is_left_alone() -> None:
    core = FakeCore(quota(hard="10k", used="3"))
    assert kube_with(core).ensure_membership_quota.blocking("org-acme", "acme", OWNER) is True
    assert core.calls == ["read quota"]


def test_a_changed_limit_is_set_back() -> None:
    core = FakeCore(quota(hard="999", used="3"))
    kube_with(core).ensure_membership_quota.blocking("org-acme", "acme", OWNER)
    (patch,) = [call for call in core.calls if call.startswith("patch quota")]
    assert f"'value': {{'{MEMBERSHIP_COUNT}': '10000'}}" in patch


def test_a_quota_left_uncounted_is_made_anew_after_the_grace() -> None:
    core = FakeCore(quota(age=timedelta(seconds=1), synced=True))
    kube_with(core).ensure_membership_quota.blocking("org-acme", "acme", OWNER)
    assert "delete quota" not in core.calls  # kube-controller-manager gets its second
    core = FakeCore(quota(age=timedelta(seconds=30), synced=True))
    kube_with(core).ensure_membership_quota.blocking("org-acme", "acme", OWNER)
    assert core.calls == ["read quota", "delete quota", "create quota"]


def test_a_quota_not_synced_yet_or_with_a_new_limit_is_waited_for_not_remade() -> None:
    for waiting in (
        quota(age=timedelta(seconds=30)),  # kube-controller-manager not there
        quota(hard="999", used="3", age=timedelta(seconds=30)),  # a limit it has to take in
    ):
        core = FakeCore(waiting)
        assert kube_with(core).ensure_membership_quota.blocking("org-acme", "acme", OWNER) is False
        assert "delete quota" not in core.calls


def test_the_reconcile_fails_while_the_quota_is_not_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(guardrails, "QUOTA_WAIT_SECONDS", 0.3)
    monkeypatch.setattr(guardrails, "QUOTA_POLL_SECONDS", 0.05)
    core = FakeCore()
    kube = kube_with(core)

    runtime = cast(Runtime, type("R", (), {"kube": kube})())
    with pytest.raises(guardrails.QuotaNotCountedError, match="org-acme/orgkeeper"):
        asyncio.run(guardrails.ensure_guardrails(runtime, "org-acme", "acme", OWNER, None))
    assert core.calls.count("create quota") == 1  # within the grace, not remade

    core.quota = quota(used="1")
    asyncio.run(guardrails.ensure_guardrails(runtime, "org-acme", "acme", OWNER, None))
