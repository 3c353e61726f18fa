"""The DELETE webhook for Organizations: the Owner, or whoever the API server's authorizers
say holds the verb `support` (SubjectAccessReview); no group is trusted by its name.
tests/integration/test_deletion_authority.py proves it through the API server."""

from __future__ import annotations

import asyncio
from typing import Any, cast
from unittest import mock

import kopf
import pytest

from orgkeeper.controllers.runtime import Runtime
from orgkeeper.handlers import admission
from orgkeeper.kube import KubeApi
from orgkeeper.settings import Settings

ORG = {"displayName": "Acme", "plan": "Plus", "region": "eu", "owner": "o@acme.test"}


def delete_as(user: str, groups: list[str], *, support: bool) -> tuple[Any, mock.AsyncMock]:
    """The webhook's answer to a DELETE by `user`, with the SubjectAccessReview answering
    `support`; and the mock that answered it."""
    review = mock.AsyncMock(return_value=support)
    reviews = mock.MagicMock(may_on_organization=review)
    runtime = Runtime(kube=cast(KubeApi, mock.MagicMock()), settings=Settings())
    for informer in runtime.caches.informers():
        informer.synced.set()
    userinfo = {"username": user, "groups": groups, "uid": "u-1", "extra": {}}
    try:
        with mock.patch.object(admission, "Reviews", return_value=reviews):
            asyncio.run(
                admission.validate_organization_delete(
                    body=cast(kopf.Body, {"spec": ORG, "status": {"owner": "o@acme.test"}}),
                    name="acme",
                    userinfo=cast(kopf.UserInfo, userinfo),
                    memo=kopf.Memo(runtime=runtime),
                )
            )
    except kopf.AdmissionError as refused:
        return refused, review
    return None, review


@pytest.mark.parametrize("user", ["o@acme.test", "oidc:O@Acme.test"])
def test_the_owner_deletes_without_a_subject_access_review(user: str) -> None:
    refused, review = delete_as(user, ["system:authenticated"], support=False)
    assert refused is None
    review.assert_not_awaited()


def test_support_by_subject_access_review_deletes() -> None:
    groups = ["kubeadm:cluster-admins", "system:authenticated"]
    refused, review = delete_as("kubernetes-admin", groups, support=True)
    assert refused is None
    ((userinfo, verb, name),) = [call.args for call in review.await_args_list]
    assert (userinfo["username"], userinfo["groups"], verb, name) == (
        "kubernetes-admin",
        groups,
        "support",
        "acme",
    )


@pytest.mark.parametrize("groups", [["system:authenticated"], ["system:masters"]])
def test_without_the_support_verb_anyone_else_is_refused(groups: list[str]) -> None:
    """Even a group named system:masters: the authorizers decide (they do allow it for real)."""
    refused, _ = delete_as("admin@acme.test", groups, support=False)
    assert refused is not None and refused.code == 403
    assert "only the Owner of Organization acme or support (orgkeeper-support)" in str(refused)
