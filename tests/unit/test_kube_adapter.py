"""The adapter's "already so" answers (404 on what is gone, 409 on what exists) and its
read-compare-patch-or-create of the Owner's RBAC, with fakes in place of the API server."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from orgkeeper import names
from orgkeeper.domain.membership import Binding
from orgkeeper.domain.organization.ownership import owner_rules
from orgkeeper.kube import KubeApi, Outcome, absent_ok, exists_ok
from orgkeeper.resources import OwnerRef

ROLE = names.owner_role("acme")
OWNER = OwnerRef("orgkeeper.dev/v1alpha1", "Organization", "acme", "uid-acme")


def failing(status: int) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise ApiException(status=status, reason=f"status {status}")

    return call


def answering(*args: Any, **kwargs: Any) -> Any:
    return {"args": args, "kwargs": kwargs}


@pytest.mark.parametrize(
    ("helper", "tolerated"), [(absent_ok, 404), (exists_ok, 409)], ids=["absent_ok", "exists_ok"]
)
def test_each_helper_swallows_its_own_status_and_no_other(
    helper: Callable[..., Any], tolerated: int
) -> None:
    assert helper(answering, "a", 1, field_manager="orgkeeper") == {
        "args": ("a", 1),
        "kwargs": {"field_manager": "orgkeeper"},
    }
    assert helper(failing(tolerated)) is None
    for status in {400, 403, 404, 409, 410, 422, 500} - {tolerated}:
        with pytest.raises(ApiException) as raised:
            helper(failing(status))
        assert raised.value.status == status


@pytest.mark.parametrize("helper", [absent_ok, exists_ok], ids=["absent_ok", "exists_ok"])
def test_errors_other_than_api_statuses_go_on_up(helper: Callable[..., Any]) -> None:
    def unreachable() -> None:
        raise OSError("connection refused")

    with pytest.raises(OSError, match="connection refused"):
        helper(unreachable)


class FakeKind:
    """Cluster-scoped objects of one kind by name, as plain wire dicts; writes are logged."""

    def __init__(self, kind: str, writes: list[str]) -> None:
        self.kind = kind
        self.stored: dict[str, dict[str, Any]] = {}
        self.writes = writes

    def read(self, name: str) -> dict[str, Any]:
        if name not in self.stored:
            raise ApiException(status=404, reason="NotFound")
        return copy.deepcopy(self.stored[name])

    def create(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.writes.append(f"create {self.kind}")
        self.stored[body["metadata"]["name"]] = copy.deepcopy(body)
        return body

    def patch(self, name: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.writes.append(f"patch {self.kind} {sorted(body)}")
        self.stored[name].update(copy.deepcopy(body))
        return self.stored[name]


class FakeRbac:
    """ClusterRoles and ClusterRoleBindings, under the names RbacAuthorizationV1Api gives."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.roles = FakeKind("ClusterRole", self.writes)
        self.bindings = FakeKind("ClusterRoleBinding", self.writes)
        self.read_cluster_role = self.roles.read
        self.create_cluster_role = self.roles.create
        self.patch_cluster_role = self.roles.patch
        self.read_cluster_role_binding = self.bindings.read
        self.create_cluster_role_binding = self.bindings.create
        self.patch_cluster_role_binding = self.bindings.patch


def test_the_owner_rbac_is_created_once_then_only_its_drift_is_patched() -> None:
    kube = KubeApi(client.ApiClient())
    rbac = FakeRbac()
    kube.rbac = cast(client.RbacAuthorizationV1Api, rbac)
    rules = owner_rules("acme")

    assert (
        kube.ensure_owner_rbac.blocking("acme", ("ada@example.com",), OWNER, rules)
        is Outcome.CREATED
    )
    assert rbac.writes == ["create ClusterRole", "create ClusterRoleBinding"]
    role = rbac.roles.stored[ROLE]
    binding = rbac.bindings.stored[ROLE]
    assert role["rules"] == rules
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": ROLE,
    }
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ada@example.com"}
    ]
    for stored in (role, binding):
        assert stored["metadata"]["ownerReferences"] == [OWNER.to_wire()]
        assert stored["metadata"]["labels"]["orgkeeper.dev/organization"] == "acme"

    rbac.writes.clear()
    assert (
        kube.ensure_owner_rbac.blocking("acme", ("ada@example.com",), OWNER, rules)
        is Outcome.UNCHANGED
    )
    assert rbac.writes == []

    # A transfer (or an SSO switch) changes only the binding's subject.
    assert (
        kube.ensure_owner_rbac.blocking("acme", ("sso:ada@example.com",), OWNER, rules)
        is Outcome.UPDATED
    )
    assert rbac.writes == ["patch ClusterRoleBinding ['subjects']"]
    subjects = rbac.bindings.stored[ROLE]["subjects"]
    assert [subject["name"] for subject in subjects] == ["sso:ada@example.com"]

    # Someone edited the role: its rules are put back, the binding left alone.
    rbac.writes.clear()
    rbac.roles.stored[ROLE]["rules"][0]["verbs"] = ["*"]
    assert (
        kube.ensure_owner_rbac.blocking("acme", ("sso:ada@example.com",), OWNER, rules)
        is Outcome.UPDATED
    )
    assert rbac.writes == ["patch ClusterRole ['rules']"]
    assert rbac.roles.stored[ROLE]["rules"] == rules


class FakeRoleBindings:
    """Namespaced RoleBindings under RbacAuthorizationV1Api's names; every request is logged."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[str] = []

    def create_namespaced_role_binding(
        self, namespace: str, body: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        self.requests.append("create")
        key = (namespace, body["metadata"]["name"])
        if key in self.stored:
            raise ApiException(status=409, reason="AlreadyExists")
        self.stored[key] = copy.deepcopy(body)
        return body

    def patch_namespaced_role_binding(
        self, name: str, namespace: str, body: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        self.requests.append("patch")
        if (namespace, name) not in self.stored:
            raise ApiException(status=404, reason="NotFound")
        self.stored[(namespace, name)].update(copy.deepcopy(body))
        return self.stored[(namespace, name)]


def member(users: tuple[str, ...]) -> Binding:
    return Binding(
        name="ada-developer",
        organization="acme",
        membership="ada",
        email="ada@example.com",
        team="api-product-developer",
        users=users,
    )


def test_a_member_binding_costs_one_request_when_the_cache_is_right() -> None:
    """A new binding is created; one the cache holds is patched (an ssoOnly flip re-points
    every binding of the org: a create refused with 409 first would double its requests)."""
    kube = KubeApi(client.ApiClient())
    rbac = FakeRoleBindings()
    kube.rbac = cast(client.RbacAuthorizationV1Api, rbac)
    owner = OwnerRef("orgkeeper.dev/v1alpha1", "Membership", "ada", "uid-ada")

    kube.put_member_binding.blocking("org-acme", member(("ada@example.com",)), owner, exists=False)
    assert rbac.requests == ["create"]
    rbac.requests.clear()
    flipped = member(("oidc:ada@example.com",))
    written = kube.put_member_binding.blocking("org-acme", flipped, owner, exists=True)
    assert rbac.requests == ["patch"]
    assert [s["name"] for s in written["subjects"]] == ["oidc:ada@example.com"]


def test_a_member_binding_is_written_when_the_cache_is_wrong_either_way() -> None:
    kube = KubeApi(client.ApiClient())
    rbac = FakeRoleBindings()
    kube.rbac = cast(client.RbacAuthorizationV1Api, rbac)
    owner = OwnerRef("orgkeeper.dev/v1alpha1", "Membership", "ada", "uid-ada")

    # The cache says it exists, but it was deleted: the patch's 404, then a create.
    kube.put_member_binding.blocking("org-acme", member(("ada@example.com",)), owner, exists=True)
    assert rbac.requests == ["patch", "create"]
    rbac.requests.clear()
    # The cache hasn't seen it yet: the create's 409, then a patch that re-points it.
    flipped = member(("oidc:ada@example.com",))
    kube.put_member_binding.blocking("org-acme", flipped, owner, exists=False)
    assert rbac.requests == ["create", "patch"]
    subjects = rbac.stored[("org-acme", "ada-developer")]["subjects"]
    assert [s["name"] for s in subjects] == ["oidc:ada@example.com"]
