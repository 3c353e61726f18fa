"""Least privilege, proven: the operator runs as its ServiceAccount with the RBAC of manifests/.

Every other integration test already runs against that operator, so together they prove the
RBAC sufficient; the tests here prove it is not more than that, and that the Deployment is
hardened as the Pod Security `restricted` profile demands.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from orgkeeper import names
from orgkeeper.names import WEBHOOK_CONFIGURATION
from orgkeeper_dev.localcluster import LocalCluster, kubectl
from support import identity
from support.identity import ServiceAccountIdentity
from support.kube import AsUser, Kube, api_client, rejection, wait_for
from support.operator import OperatorProcess
from support.orgs import membership, organization, wait_members_bound, wait_org, wait_owner_rights
from support.workloads import create, workload

pytestmark = pytest.mark.usefixtures("operator")

RBAC = "rbac.authorization.k8s.io"
ADMISSION = "admissionregistration.k8s.io"
GROUP = names.GROUP
TEAM_ROLES = {
    "orgkeeper-organization-admin",
    "orgkeeper-control-plane-admin",
    "orgkeeper-api-product-developer",
    "orgkeeper-portal-admin",
    "orgkeeper-analytics-viewer",
}
TEST_AGENT = "orgkeeper-tests"  # keeps this module's own requests apart in the audit log


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    """`kubectl kustomize manifests/`: what `kubectl apply -k manifests/` sends."""
    return identity.render()


@pytest.fixture(scope="module")
def as_operator(operator_identity: ServiceAccountIdentity) -> Kube:
    """The cluster as the operator's own token sees it (not impersonation)."""
    api = api_client(operator_identity.kubeconfig)
    api.user_agent = TEST_AGENT
    return Kube(api)


def operator_rules(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule of every Role and ClusterRole bound to the operator's ServiceAccount."""
    bound: set[tuple[str, str]] = set()
    for doc in rendered:
        if doc["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        for subject in doc.get("subjects") or []:
            if (subject["kind"], subject["name"], subject.get("namespace")) == (
                "ServiceAccount",
                identity.SERVICE_ACCOUNT,
                identity.NAMESPACE,
            ):
                bound.add((doc["roleRef"]["kind"], doc["roleRef"]["name"]))
    assert bound, "no binding in manifests/ names the operator's ServiceAccount"
    return [
        rule
        for doc in rendered
        if (doc["kind"], doc["metadata"]["name"]) in bound
        for rule in doc.get("rules") or []
    ]


def wildcards(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from wildcards(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from wildcards(item, f"{path}[{index}]")
    elif isinstance(value, str) and value.strip() == "*":
        yield path


# --- what manifests/ says ------------------------------------------------------------------


def test_no_rule_in_the_manifests_uses_a_wildcard(rendered: list[dict[str, Any]]) -> None:
    found = [
        f"{doc['kind']}/{doc['metadata']['name']}{path}"
        for doc in rendered
        for path in wildcards(doc)
    ]
    assert found == [], f"`*` in manifests/: {found}"


def test_the_operator_role_grants_no_escalate_impersonate_or_secret_listing(
    rendered: list[dict[str, Any]],
) -> None:
    rules = operator_rules(rendered)
    verbs = {verb for rule in rules for verb in rule["verbs"]}
    assert not verbs & {"escalate", "impersonate"}

    secrets = [rule for rule in rules if "secrets" in rule["resources"]]
    assert {v for rule in secrets for v in rule["verbs"]} == {"get", "create", "patch", "delete"}
    for rule in secrets:
        if {"patch", "delete"} & set(rule["verbs"]):
            assert rule.get("resourceNames"), "patch/delete of Secrets must name the Secrets"

    binds = [rule for rule in rules if "bind" in rule["verbs"]]
    assert [set(rule.get("resourceNames") or []) for rule in binds] == [TEAM_ROLES]
    assert all(rule["verbs"] == ["bind"] for rule in binds)

    events = [rule for rule in rules if "events" in rule["resources"]]
    assert [rule["verbs"] for rule in events] == [["create"]]


def test_kubectl_apply_k_manifests_is_accepted_without_warnings(
    cluster: LocalCluster,
) -> None:
    """The whole base, as `kubectl apply -k manifests/` sends it (server-side dry run)."""
    done = kubectl(
        cluster,
        "apply",
        "-k",
        str(identity.MANIFESTS),
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
    )
    assert "deployment.apps/orgkeeper serverside-applied (server dry run)" in done.stdout
    assert "Warning" not in done.stderr, done.stderr


def pod_of(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [doc for doc in rendered if doc["kind"] == "Deployment"]
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": "orgkeeper-psa-probe"},
        "spec": template["spec"],
    }


def test_the_operator_pod_passes_pod_security_restricted(
    admin: Kube, rendered: list[dict[str, Any]]
) -> None:
    """Its namespace enforces `restricted`; the Deployment's Pod is admitted there (dry run)."""
    labels = admin.core.read_namespace(identity.NAMESPACE).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = pod_of(rendered)
    admin.core.create_namespaced_pod(identity.NAMESPACE, pod, dry_run="All")

    # The same Pod allowed to gain privileges is refused: the profile is really enforced.
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    status, message = rejection(
        lambda: admin.core.create_namespaced_pod(identity.NAMESPACE, pod, dry_run="All")
    )
    assert status == 403 and 'violates PodSecurity "restricted' in message


# --- what the API server says the operator may do --------------------------------------------


@dataclass(frozen=True)
class Access:
    what: str
    verb: str
    resource: str
    group: str = ""
    name: str | None = None
    namespace: str | None = None
    subresource: str | None = None


def can(kube: Kube, access: Access) -> bool:
    """A SelfSubjectAccessReview: `kubectl auth can-i` with the caller's own credentials."""
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                verb=access.verb,
                resource=access.resource,
                group=access.group,
                name=access.name,
                namespace=access.namespace,
                subresource=access.subresource,
            )
        )
    )
    api = client.AuthorizationV1Api(kube.api)
    return bool(api.create_self_subject_access_review(review).status.allowed)


DENIED = [
    Access("list Secrets cluster-wide", "list", "secrets"),
    Access("watch Secrets cluster-wide", "watch", "secrets"),
    Access("list Secrets in its own namespace", "list", "secrets", namespace=identity.NAMESPACE),
    Access("watch Secrets in an org namespace", "watch", "secrets", namespace="org-acme"),
    Access("patch a Secret it does not own", "patch", "secrets", name="db", namespace="default"),
    Access("delete a Secret it does not own", "delete", "secrets", name="db", namespace="default"),
    Access("escalate a ClusterRole", "escalate", "clusterroles", RBAC),
    Access("escalate a Role", "escalate", "roles", RBAC, namespace="org-acme"),
    Access("impersonate a user", "impersonate", "users"),
    Access("impersonate a group", "impersonate", "groups"),
    Access(
        "impersonate a ServiceAccount", "impersonate", "serviceaccounts", namespace="kube-system"
    ),
    Access("bind cluster-admin", "bind", "clusterroles", RBAC, name="cluster-admin"),
    Access("bind admin", "bind", "clusterroles", RBAC, name="admin"),
    Access("bind its own ClusterRole", "bind", "clusterroles", RBAC, name="orgkeeper-operator"),
    Access(
        "bind the organization-creator role",
        "bind",
        "clusterroles",
        RBAC,
        name="orgkeeper-organization-creator",
    ),
    Access(
        "mint ServiceAccount tokens",
        "create",
        "serviceaccounts",
        name="default",
        namespace="kube-system",
        subresource="token",
    ),
    Access("create Pods", "create", "pods", namespace=identity.NAMESPACE),
    Access("create webhook configurations", "create", "validatingwebhookconfigurations", ADMISSION),
    Access(
        "create mutating webhook configurations",
        "create",
        "mutatingwebhookconfigurations",
        ADMISSION,
    ),
    Access(
        "patch another mutating webhook configuration",
        "patch",
        "mutatingwebhookconfigurations",
        ADMISSION,
        name="someone-else",
    ),
    Access(
        "patch another webhook configuration",
        "patch",
        "validatingwebhookconfigurations",
        ADMISSION,
        name="someone-else",
    ),
    Access("create CRDs", "create", "customresourcedefinitions", "apiextensions.k8s.io"),
    Access("delete namespaces", "delete", "namespaces", name="org-acme"),
    Access("update Events", "update", "events", name="e", namespace="default"),
    Access("delete Events", "delete", "events", name="e", namespace="default"),
    Access(
        "patch another ResourceQuota",
        "patch",
        "resourcequotas",
        name="compute",
        namespace="org-acme",
    ),
    Access(
        "delete another ResourceQuota",
        "delete",
        "resourcequotas",
        name="compute",
        namespace="org-acme",
    ),
    Access("list ResourceQuotas", "list", "resourcequotas", namespace="org-acme"),
    Access(
        "write a quota's status",
        "update",
        "resourcequotas",
        name="orgkeeper",
        namespace="org-acme",
        subresource="status",
    ),
    Access("update namespaces", "update", "namespaces", name="org-acme"),
    Access("act as support (the namespace label policy)", "support", "organizations", GROUP),
]
# The rights it does need, so that the refusals above mean something.
ALLOWED = [
    Access("get a Secret by name", "get", "secrets", name="contract", namespace="org-acme"),
    Access(
        "patch the license copy it owns",
        "patch",
        "secrets",
        name="orgkeeper-license-mesh",
        namespace="edge",
    ),
    Access("bind a team role", "bind", "clusterroles", RBAC, name="orgkeeper-organization-admin"),
    Access("create Events", "create", "events", namespace="default"),
    Access("label an org namespace (Pod Security)", "patch", "namespaces", name="org-acme"),
    Access("record an org's UID on a namespace, release it", "adopt", "organizations", GROUP),
    Access("create a quota", "create", "resourcequotas", namespace="org-acme"),
    Access("repair its quota", "patch", "resourcequotas", name="orgkeeper", namespace="org-acme"),
    Access("remake its quota", "delete", "resourcequotas", name="orgkeeper", namespace="org-acme"),
    Access("read its quota", "get", "resourcequotas", name="orgkeeper", namespace="org-acme"),
    Access("check a metrics token", "create", "tokenreviews", "authentication.k8s.io"),
    Access("check a metrics reader", "create", "subjectaccessreviews", "authorization.k8s.io"),
    Access(
        "patch its own webhook configuration",
        "patch",
        "validatingwebhookconfigurations",
        ADMISSION,
        name=WEBHOOK_CONFIGURATION,
    ),
    Access(
        "patch its own mutating webhook configuration",
        "patch",
        "mutatingwebhookconfigurations",
        ADMISSION,
        name=WEBHOOK_CONFIGURATION,
    ),
]


@pytest.mark.parametrize("access", DENIED, ids=lambda access: access.what)
def test_the_operator_cannot(as_operator: Kube, access: Access) -> None:
    assert not can(as_operator, access)


@pytest.mark.parametrize("access", ALLOWED, ids=lambda access: access.what)
def test_the_operator_can(as_operator: Kube, access: Access) -> None:
    assert can(as_operator, access)


def test_the_operator_token_is_its_service_account(
    as_operator: Kube, operator: OperatorProcess, operator_identity: ServiceAccountIdentity
) -> None:
    review = client.AuthenticationV1Api(as_operator.api).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    assert review.status.user_info.username == identity.USER
    assert operator.kubeconfig == operator_identity.kubeconfig


def test_what_the_operator_would_see_if_it_overstepped(as_operator: Kube) -> None:
    status, message = rejection(lambda: as_operator.core.list_secret_for_all_namespaces())
    assert status == 403 and 'cannot list resource "secrets"' in message

    # Granting itself cluster-admin: no `bind` on it.
    grab = client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name="orgkeeper-grab"),
        role_ref=client.V1RoleRef(api_group=RBAC, kind="ClusterRole", name="cluster-admin"),
        subjects=[
            client.RbacV1Subject(
                kind="ServiceAccount", name=identity.SERVICE_ACCOUNT, namespace=identity.NAMESPACE
            )
        ],
    )
    status, message = rejection(
        lambda: as_operator.rbac.create_cluster_role_binding(grab, dry_run="All")
    )
    assert status == 403 and "not currently held" in message

    # Writing a role with rights it lacks: no `escalate`.
    role = client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name="orgkeeper:owner:grab"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])],
    )
    status, message = rejection(lambda: as_operator.rbac.create_cluster_role(role, dry_run="All"))
    assert status == 403 and "not currently held" in message

    # Acting as someone else: no `impersonate`.
    as_operator.api.set_default_header("Impersonate-User", "owner@acme.test")
    try:
        status, message = rejection(lambda: as_operator.core.list_namespace())
    finally:
        as_operator.api.default_headers.pop("Impersonate-User")
    assert status == 403 and "cannot impersonate" in message


# --- the whole story, as the ServiceAccount, read back from the audit log ---------------------


def audit_lines(cluster: LocalCluster) -> list[str]:
    return cluster.audit_log.read_text().splitlines()


def audit_events(cluster: LocalCluster, user: str, since: int = 0) -> list[dict[str, Any]]:
    """`user`'s requests in the audit log from line `since` (this module's own left out)."""
    events = []
    for line in audit_lines(cluster)[since:]:
        event = json.loads(line)
        if event["user"].get("username") == user and event.get("userAgent") != TEST_AGENT:
            events.append(event)
    return events


def concerns(event: dict[str, Any], organization: str, namespaces: set[str]) -> bool:
    """A request about this organization's objects, or a cluster-wide one (lists, watches).

    Other tests provoke refusals on purpose (a License naming a Secret the operator may not
    write), so refusals are judged only for what this test set up.
    """
    ref = event.get("objectRef") or {}
    namespace, name = ref.get("namespace"), ref.get("name")
    if namespace in namespaces:
        return True
    return namespace in (None, "", "default") and (name is None or organization in name)


def described(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", event.get("requestURI"))
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    where = "/".join(part for part in (ref.get("namespace"), ref.get("name")) if part)
    return f"{event['verb']} {resource} {where}".strip()


def kind_of_request(event: dict[str, Any]) -> tuple[str, str, str]:
    """(verb, resource[/subresource], namespace) of an audit event."""
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "")
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    return event["verb"], resource, ref.get("namespace", "")


def test_the_operator_does_its_whole_job_as_its_service_account_and_is_never_refused(
    admin: Kube, as_user: AsUser, as_operator: Kube, cluster: LocalCluster, unique: str
) -> None:
    """Provision, bind, license a data plane, deactivate: no request of the operator refused."""
    name, owner, alice = f"sec-{unique}", f"owner@sec-{unique}.test", f"alice@sec-{unique}.test"
    since = len(audit_lines(cluster))
    as_user(owner).create("organizations", organization(name, owner, plan="Plus"))
    wait_org(admin, name)
    wait_owner_rights(admin, name, owner)
    member = membership("alice", alice, "analytics-viewer")
    as_user(owner).create("memberships", member, f"org-{name}")
    wait_members_bound(admin, name, {owner: ["organization-admin"], alice: ["analytics-viewer"]})
    edge = f"edge-{unique}"
    labels = {names.LABEL_ORGANIZATION: name}  # given to the org by the admin
    admin.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=edge, labels=labels))
    )
    create(admin, edge, workload("Deployment", "gw", name, "data-plane", "mesh"))
    create(admin, f"org-{name}", workload("Deployment", "cp", name, "control-plane"))
    wait_for(
        "the license copy in the data plane's namespace",
        lambda: (
            admin.core.list_namespaced_secret(
                edge, field_selector="metadata.name=orgkeeper-license-mesh"
            ).items
        ),
    )

    # The Owner's ClusterRole grants nothing the operator doesn't hold itself (it has no
    # `escalate`): every verb of it, checked against the operator's own token.
    owner_role = admin.rbac.read_cluster_role(f"orgkeeper:owner:{name}")
    for rule in owner_role.rules:
        for resource in rule.resources:
            plural, _, subresource = resource.partition("/")
            for verb in rule.verbs:
                for resource_name in rule.resource_names or [None]:
                    access = Access(
                        f"{verb} {resource}",
                        verb,
                        plural,
                        rule.api_groups[0],
                        name=resource_name,
                        subresource=subresource or None,
                    )
                    assert can(as_operator, access), f"the operator can't {access.what}"

    admin.patch("organizations", name, {"spec": {"state": "Deactivated"}})
    wait_org(admin, name, "Deactivated", "True", "Requested", timeout=60)

    events = [
        event
        for event in audit_events(cluster, identity.USER, since)
        if concerns(event, name, {f"org-{name}", edge})
    ]
    refused = [
        described(event)
        for event in events
        if (event.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"
    ]
    assert refused == [], f"RBAC refused the operator: {refused}"
    done = {kind_of_request(event) for event in events}
    # It really did the job as itself (and not as the cluster admin).
    for expected in (
        ("create", "namespaces", ""),
        ("create", "resourcequotas", f"org-{name}"),
        ("get", "resourcequotas", f"org-{name}"),
        ("create", "clusterroles", ""),
        ("create", "clusterrolebindings", ""),
        ("create", "rolebindings", f"org-{name}"),
        ("create", "secrets", f"org-{name}"),
        ("create", "secrets", edge),
        ("patch", "deployments", edge),
        ("delete", "deployments", f"org-{name}"),
        ("delete", "rolebindings", f"org-{name}"),
        ("patch", "organizations/status", ""),
        ("patch", "memberships/status", f"org-{name}"),
        ("create", "events", "default"),
    ):
        assert expected in done, f"the audit log shows no {expected} by the operator"
