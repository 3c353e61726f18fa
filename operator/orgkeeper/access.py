"""What callers of the operator's open ports make it ask the API server: Token- and
SubjectAccessReviews (admission's `support` check, who may read /metrics) and the Memberships
read now for a namespace or an e-mail another shard holds (admission, the people API).

Each call is a `kube.threaded` verb on the reviews' own threads (KubeApi.review_executor), so
they never wait behind reconciles nor delay the Lease; reviews.py bounds how many wait. Reviews
are creates that change nothing: they pass the write gate by resource (kube.UNGATED_RESOURCES).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

from kubernetes import client

from .api.v1alpha1 import GROUP, VERSION
from .kube import LIST_PAGE_SIZE, KubeApi, threaded

REVIEW_TIMEOUT = 5.0  # seconds: a review's thread is never held longer per try


class Reviews:
    def __init__(self, kube: KubeApi) -> None:
        self.authentication = client.AuthenticationV1Api(kube.api_client)
        self.authorization = client.AuthorizationV1Api(kube.api_client)
        self.custom = kube.custom
        self.executor: Executor | None = kube.review_executor

    @threaded
    def may_on_organization(self, user: Mapping[str, Any], verb: str, organization: str) -> bool:
        """Whether the API server's authorizers let `user` (an admission request's userInfo)
        do `verb` on Organization `organization` (a SubjectAccessReview)."""
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user.get("username"),
                uid=user.get("uid"),
                groups=list(user.get("groups") or []),
                extra={k: list(v) for k, v in (user.get("extra") or {}).items()},
                resource_attributes=client.V1ResourceAttributes(
                    group=GROUP, resource="organizations", name=organization, verb=verb
                ),
            )
        )
        answer = self.authorization.create_subject_access_review(
            review, _request_timeout=REVIEW_TIMEOUT
        )
        return bool(answer.status and answer.status.allowed)

    @threaded
    def metrics_access(self, token: str, path: str) -> int:
        """Who may read /metrics (kubebuilder's secure metrics): 200 if the token's user may
        `get` the non-resource URL `path`; 401 or 403 if not."""
        review = self.authentication.create_token_review(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            },
            _request_timeout=REVIEW_TIMEOUT,
        )
        if review.status is None or not review.status.authenticated:
            return 401
        user = review.status.user
        access = self.authorization.create_subject_access_review(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user.username,
                    "uid": user.uid,
                    "groups": user.groups,
                    "extra": user.extra,
                    "nonResourceAttributes": {"path": path, "verb": "get"},
                },
            },
            _request_timeout=REVIEW_TIMEOUT,
        )
        return 200 if access.status is not None and access.status.allowed else 403

    @threaded
    def list_memberships(
        self, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Memberships read now, for what another shard holds in memory: those of one
        namespace (admission), or cluster-wide by a label selector (the people API, by e-mail
        hash); paged, as the server's JSON."""
        found: list[dict[str, Any]] = []
        token: str | None = None
        where = (namespace,) if namespace is not None else ()
        listing = (
            self.custom.list_namespaced_custom_object
            if namespace is not None
            else self.custom.list_cluster_custom_object
        )
        while True:
            response = listing(
                GROUP,
                VERSION,
                *where,
                "memberships",
                label_selector=selector,
                limit=LIST_PAGE_SIZE,
                _continue=token,
                _preload_content=False,
                _request_timeout=5,
            )
            page = json.loads(response.data)
            found.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return found
