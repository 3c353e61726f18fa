"""Building and observing orgkeeper objects in tests (the bodies are the demo's too)."""

from __future__ import annotations

import uuid
from typing import Any

from kubernetes import client

from orgkeeper import names
from orgkeeper_dev.objects import membership as membership
from orgkeeper_dev.objects import organization as organization
from support.kube import AsUser, Kube, wait_for


def unique_suffix() -> str:
    """A short suffix that keeps object names apart from every other test's and trial's."""
    return uuid.uuid4().hex[:6]


def new_org(as_user: AsUser, name: str, owner: str, **spec: Any) -> None:
    """The Owner signs up, as a signed-in user would (self-service: Plus unless given, since
    Enterprise is support's to set)."""
    as_user(owner).create("organizations", organization(name, owner, **{"plan": "Plus", **spec}))


def new_ready_org(admin: Kube, as_user: AsUser, name: str) -> None:
    """owner@<name>.test signs up (new_org); returns once the org is Ready and its Owner may act."""
    owner = f"owner@{name}.test"
    new_org(as_user, name, owner)
    wait_org(admin, name)
    wait_owner_rights(admin, name, owner)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None
    )


def is_condition(obj: dict[str, Any], type_: str, status: str, reason: str | None = None) -> bool:
    found = condition(obj, type_)
    return (
        found is not None
        and found["status"] == status
        and (reason is None or found["reason"] == reason)
        and found.get("observedGeneration") == obj["metadata"]["generation"]
    )


def wait_org(
    kube: Kube,
    name: str,
    type_: str = "Ready",
    status: str = "True",
    reason: str | None = None,
    timeout: float = 30,
) -> dict[str, Any]:
    return wait_for(
        f"Organization {name} {type_}={status}" + (f" ({reason})" if reason else ""),
        lambda: (
            (org := kube.get("organizations", name))
            and is_condition(org, type_, status, reason)
            and org
        ),
        timeout=timeout,
    )


def wait_members_bound(
    kube: Kube, org: str, emails_to_teams: dict[str, list[str]], timeout: float = 30
) -> None:
    """Until each listed member's effectiveTeams are exactly the given ones."""

    def bound() -> bool:
        found = {
            m["spec"]["email"]: (m.get("status") or {}).get("effectiveTeams", [])
            for m in kube.list("memberships", f"org-{org}")
        }
        return all(
            sorted(found.get(email, [])) == sorted(teams)
            for email, teams in emails_to_teams.items()
        )

    wait_for(f"memberships of {org} bound as {emails_to_teams}", bound, timeout=timeout)


def allowed(
    admin: Kube,
    user: str,
    verb: str,
    resource: str,
    *,
    group: str = names.GROUP,
    name: str | None = None,
    namespace: str | None = None,
) -> bool:
    """Would RBAC let `user` do this? (A SubjectAccessReview, as `kubectl auth can-i --as`.)"""
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                group=group, resource=resource, verb=verb, name=name, namespace=namespace
            ),
        )
    )
    return bool(
        client.AuthorizationV1Api(admin.api).create_subject_access_review(review).status.allowed
    )


def wait_allowed(admin: Kube, user: str, verb: str, resource: str, **where: Any) -> None:
    """Until `allowed` (same arguments) says yes. The API server's authorizer takes a new
    (Cluster)RoleBinding in from its own watch, a moment after the create answered: acting at
    once can get a 403."""
    wait_for(
        f"RBAC to let {user} {verb} {resource}",
        lambda: allowed(admin, user, verb, resource, **where),
        timeout=30,
    )


def wait_owner_rights(admin: Kube, org: str, owner: str) -> None:
    """Until RBAC lets the Owner edit the org and add members. The operator writes their
    bindings before it says Ready, but the API server's authorizer takes them in from its own
    watch: an Owner acting the moment the org is Ready can get a 403."""
    wait_allowed(admin, owner, "patch", "organizations", name=org)
    wait_allowed(admin, owner, "create", "memberships", namespace=names.org_namespace(org))
