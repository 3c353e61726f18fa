"""The validating webhooks fail closed: until the Organization and Membership caches have
listed the whole cluster, every answer is 503 (an empty cache would allow what the rules
refuse). tests/integration exercise the rules themselves through the API server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, cast
from unittest import mock

import kopf
import pytest

from orgkeeper.controllers.runtime import Runtime
from orgkeeper.handlers import admission
from orgkeeper.kube import KubeApi
from orgkeeper.settings import Settings

ORG = {"displayName": "Acme", "plan": "Plus", "region": "eu", "owner": "o@acme.test"}
MEMBER = {
    "metadata": {"name": "owner-x", "namespace": "org-acme"},
    "spec": {"email": "o@acme.test", "teams": []},
}


def runtime() -> Runtime:
    return Runtime(kube=cast(KubeApi, mock.MagicMock()), settings=Settings())


def webhook_calls(memo: kopf.Memo) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
    return {
        "validate-organization": lambda: admission.validate_organization(
            spec=cast(kopf.Spec, ORG),
            old=None,
            name="acme",
            operation="CREATE",
            userinfo=cast(kopf.UserInfo, {"username": "o@acme.test"}),
            memo=memo,
            warnings=[],
        ),
        "validate-organization-delete": lambda: admission.validate_organization_delete(
            body=cast(kopf.Body, {"spec": ORG}),
            name="acme",
            userinfo=cast(kopf.UserInfo, {"username": "o@acme.test"}),
            memo=memo,
        ),
        "validate-membership": lambda: admission.validate_membership(
            body=cast(kopf.Body, MEMBER),
            name="owner-x",
            namespace="org-acme",
            operation="DELETE",
            memo=memo,
        ),
    }


@pytest.mark.parametrize("synced", [(), ("Memberships",), ("Organizations",)])
@pytest.mark.parametrize(
    "webhook", ["validate-organization", "validate-organization-delete", "validate-membership"]
)
def test_every_webhook_answers_503_until_both_caches_listed(
    monkeypatch: pytest.MonkeyPatch, webhook: str, synced: tuple[str, ...]
) -> None:
    monkeypatch.setattr(admission, "CACHE_WAIT_SECONDS", 0.01)
    memo = kopf.Memo(runtime=runtime())
    for informer in memo.runtime.caches.informers():
        if informer.what in synced:
            informer.synced.set()
    with pytest.raises(kopf.AdmissionError) as refused:
        asyncio.run(webhook_calls(memo)[webhook]())
    assert refused.value.code == 503
    assert "orgkeeper is still loading" in str(refused.value)
    assert "try again in a few seconds" in str(refused.value)


def test_once_listed_the_owners_membership_delete_is_refused() -> None:
    memo: Any = kopf.Memo(runtime=runtime())
    for informer in memo.runtime.caches.informers():
        informer.synced.set()
    memo.runtime.caches.organizations.observe(
        {"metadata": {"name": "acme", "resourceVersion": "1"}, "spec": ORG}
    )
    with pytest.raises(kopf.AdmissionError) as refused:
        asyncio.run(webhook_calls(memo)["validate-membership"]())
    assert refused.value.code == 403
    assert "is the Owner of this organization" in str(refused.value)


@pytest.mark.parametrize("region", [None, "us", "eu"])
def test_every_operator_checks_every_regions_objects(region: str | None) -> None:
    """One webhook configuration may send any region's object to any regional operator."""
    memo: Any = kopf.Memo(
        runtime=Runtime(kube=cast(KubeApi, mock.MagicMock()), settings=Settings(region=region))
    )
    for informer in memo.runtime.caches.informers():
        informer.synced.set()
    memo.runtime.caches.organizations.observe(
        {"metadata": {"name": "acme", "resourceVersion": "1"}, "spec": ORG}  # an eu org
    )
    with pytest.raises(kopf.AdmissionError) as refused:
        asyncio.run(webhook_calls(memo)["validate-membership"]())
    assert refused.value.code == 403
    assert "is the Owner of this organization" in str(refused.value)


def test_a_refusal_is_logged_as_info_and_other_errors_stay_errors() -> None:
    """Newcomer finding 16: kopf logs each refused request at ERROR ("failed permanently")."""
    refusals = admission.RefusalsAreNotErrors()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, message, None, None)

    refused = record("Webhook 'validate-membership' failed permanently: spec.teams: the Owner ...")
    assert refusals.filter(refused) and (refused.levelno, refused.levelname) == (20, "INFO")
    other = record("Handler 'organization_loop' failed with an exception. Will retry.")
    assert refusals.filter(other) and other.levelno == logging.ERROR
