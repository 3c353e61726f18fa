"""Who may do what (API.md, "Who may do what"), acted out through the API server.

The people: a stranger (any signed-in user), a tenant (organization-admin of another org),
the Owner, support (a user bound to orgkeeper-support) and the cluster admin (system:masters,
which counts as support too). Each refusal stands beside its positive control.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from orgkeeper import names
from orgkeeper.names import WEBHOOK_CONFIGURATION
from orgkeeper_dev.localcluster import LocalCluster, install_orgkeeper
from support.kube import AsUser, Kube, api_client, rejection, wait_for
from support.operator import OperatorProcess
from support.orgs import (
    is_condition,
    membership,
    organization,
    wait_allowed,
    wait_members_bound,
    wait_org,
    wait_owner_rights,
)

SUPPORT = "support (orgkeeper-support)"
LABEL = names.LABEL_ORGANIZATION
AUTHORITY_POLICY = "ValidatingAdmissionPolicy 'orgkeeper-organization-authority'"
NAMESPACE_POLICY = "ValidatingAdmissionPolicy 'orgkeeper-namespace-organization-label'"
Managed = tuple[LocalCluster, OperatorProcess]


def binding(name: str, role: str, user: str) -> client.V1ClusterRoleBinding:
    return client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=name),
        role_ref=client.V1RoleRef(
            api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role
        ),
        subjects=[
            client.RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")
        ],
    )


def grant(admin: Kube, user: str, name: str, rules: list[client.V1PolicyRule]) -> None:
    admin.rbac.create_cluster_role(
        client.V1ClusterRole(metadata=client.V1ObjectMeta(name=name), rules=rules)
    )
    admin.rbac.create_cluster_role_binding(binding(name, name, user))
    rule = rules[0]
    wait_allowed(
        admin,
        user,
        rule.verbs[0],
        rule.resources[0],
        group=rule.api_groups[0],
        name=(rule.resource_names or [None])[0],
    )


@pytest.fixture(scope="module")
def support_user(admin: Kube) -> str:
    """A person of the support team: bound to the shipped orgkeeper-support, nothing else."""
    user = "support@platform.test"
    admin.rbac.create_cluster_role_binding(
        binding("test-orgkeeper-support", "orgkeeper-support", user)
    )
    wait_allowed(admin, user, "support", "organizations")
    return user


@pytest.fixture(scope="module")
def editor(admin: Kube) -> str:
    """Someone who may update any Organization, without the support verb (a plain RBAC grant)."""
    user = "editor@platform.test"
    rule = client.V1PolicyRule(
        api_groups=[names.GROUP], resources=["organizations"], verbs=["get", "update", "patch"]
    )
    grant(admin, user, "test-organization-editor", [rule])
    return user


def administered_namespace(admin: Kube, name: str, *users: str) -> str:
    """A namespace `users` may edit (labels included), as its admins would."""
    admin.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    rule = client.V1PolicyRule(
        api_groups=[""], resources=["namespaces"], resource_names=[name], verbs=["get", "patch"]
    )
    for index, user in enumerate(users):
        grant(admin, user, f"test-ns-{name}-{index}", [rule])
    return name


def label(kube: Kube, namespace: str, value: str | None) -> None:
    kube.core.patch_namespace(namespace, {"metadata": {"labels": {LABEL: value}}})


def organization_label(admin: Kube, namespace: str) -> str | None:
    labels = admin.core.read_namespace(namespace).metadata.labels or {}
    return labels.get(LABEL)


def sign_up(as_user: AsUser, admin: Kube, name: str, owner: str, **spec: Any) -> None:
    as_user(owner).create("organizations", organization(name, owner, **{"plan": "Plus", **spec}))
    wait_org(admin, name)
    wait_owner_rights(admin, name, owner)


def refused(call: Callable[[], object], *expected: str, status: int = 403) -> str:
    code, message = rejection(call)
    assert code == status, message
    for text in expected:
        assert text in message, message
    return message


def patch_spec(kube: Kube, name: str, **spec: Any) -> Callable[[], object]:
    return lambda: kube.patch("organizations", name, {"spec": spec})


def absent(admin: Kube, name: str) -> bool:
    return all(o["metadata"]["name"] != name for o in admin.list("organizations"))


# --- H3: sign-up ---------------------------------------------------------------------------


def test_sign_up_is_for_oneself_and_support_signs_up_anyone(
    admin: Kube, as_user: AsUser, operator: OperatorProcess, support_user: str, unique: str
) -> None:
    stranger, victim = f"mallory@h3-{unique}.test", f"victim@h3-{unique}.test"
    squat = organization(f"squat-{unique}", victim, plan="Plus")
    refused(
        lambda: as_user(stranger).create("organizations", squat),
        AUTHORITY_POLICY,
        f"spec.owner: sign-up is for yourself: you are signed in as {stranger}",
        f"only {SUPPORT} may create an Organization for someone else",
    )
    assert absent(admin, f"squat-{unique}")

    # Positive controls: for oneself, also through the identity provider (oidc: + e-mail).
    sign_up(as_user, admin, f"own-{unique}", stranger)
    sso = f"sso@h3-{unique}.test"
    as_user(f"oidc:{sso}").create("organizations", organization(f"sso-{unique}", sso, plan="Free"))
    # Support signs up someone else, on the Enterprise contract; so does a cluster admin.
    as_user(support_user).create(
        "organizations", organization(f"contract-{unique}", victim, plan="Enterprise")
    )
    admin.create("organizations", organization(f"admin-{unique}", f"other@h3-{unique}.test"))
    for name, owner in ((f"contract-{unique}", victim), (f"sso-{unique}", sso)):
        assert wait_org(admin, name)["status"]["owner"] == owner


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"plan": "Enterprise"}, "spec.plan: Enterprise is a contract"),
        ({"state": "Deactivated"}, "spec.state: a new Organization starts Active"),
        ({"unlockOwnerEmail": True}, "spec.unlockOwnerEmail: only"),
        ({"reactivationRequestedAt": "2099-01-01T00:00:00Z"}, "spec.reactivationRequestedAt"),
    ],
    ids=["enterprise", "deactivated", "unlock", "reactivation"],
)
def test_a_sign_up_starts_active_on_free_or_plus(
    admin: Kube,
    as_user: AsUser,
    operator: OperatorProcess,
    unique: str,
    spec: dict[str, Any],
    field: str,
) -> None:
    owner = f"owner@signup-{unique}.test"
    body = organization(f"signup-{unique}", owner, plan="Free")
    body["spec"].update(spec)
    refused(lambda: as_user(owner).create("organizations", body), field, SUPPORT)
    # Nothing was created, so nothing (the owner's e-mail above all) got locked.
    assert absent(admin, f"signup-{unique}")
    sign_up(as_user, admin, f"signup-{unique}", owner, plan="Free")


# --- M1: what the Owner may change -----------------------------------------------------------


def test_the_owner_changes_their_fields_and_support_the_rest(
    admin: Kube,
    as_user: AsUser,
    operator: OperatorProcess,
    support_user: str,
    editor: str,
    unique: str,
) -> None:
    name, owner = f"m1-{unique}", f"owner@m1-{unique}.test"
    sign_up(as_user, admin, name, owner)
    me, support, others = as_user(owner), as_user(support_user), as_user(editor)
    ahead = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")

    refused(patch_spec(me, name, unlockOwnerEmail=True), "spec.unlockOwnerEmail", SUPPORT)
    refused(patch_spec(me, name, reactivationRequestedAt=ahead), "spec.reactivationRequestedAt")
    refused(patch_spec(me, name, plan="Enterprise"), "spec.plan", f"only {SUPPORT} may set it")
    # Positive controls: the Owner's own fields.
    patch_spec(me, name, displayName="Renamed", plan="Free")()
    patch_spec(me, name, plan="Plus", ssoOnly=True)()
    # SSO-only binds the Owner as oidc:<e-mail> only (an ordinary org binds both names): once
    # the bare e-mail has lost its rights, that session turns it off again.
    sso = as_user(f"oidc:{owner}")
    wait_for("the Owner's bare e-mail to lose its rights", lambda: not may_patch(me, name))
    assert may_patch(sso, name)
    patch_spec(sso, name, ssoOnly=False)()
    wait_for("the Owner's binding", lambda: may_patch(me, name))
    # Enterprise is support's: on, and off again; the Owner can't leave it.
    patch_spec(support, name, plan="Enterprise")()
    refused(patch_spec(me, name, plan="Plus"), "spec.plan", "move an Organization off it")
    patch_spec(support, name, plan="Plus")()

    # An unlock ahead of a deactivation would pre-release its lock: refused, even to support.
    refused(
        patch_spec(support, name, unlockOwnerEmail=True),
        "spec.unlockOwnerEmail: may be set only on an Organization whose status.phase is "
        "Deactivated (this one is Active)",
    )
    patch_spec(me, name, state="Deactivated")()
    org = wait_org(admin, name, "Deactivated", "True", "Requested")
    assert org["status"]["ownerEmailLocked"] is True

    # Reactivating is support's: someone who may merely update the org is refused.
    refused(patch_spec(others, name, state="Active"), "spec.state: only", SUPPORT)
    refused(patch_spec(others, name, reactivationRequestedAt=ahead), "spec.reactivationRequested")
    refused(patch_spec(others, name, unlockOwnerEmail=True), "spec.unlockOwnerEmail", SUPPORT)
    patch_spec(support, name, unlockOwnerEmail=True)()
    wait_for(
        "the unlock",
        lambda: admin.get("organizations", name)["status"]["ownerEmailLocked"] is False,
    )
    refused(
        patch_spec(support, name, state="Active"),
        "spec.unlockOwnerEmail: set it back to false in the same request that reactivates",
    )
    patch_spec(support, name, state="Active", unlockOwnerEmail=False)()
    wait_org(admin, name, "Ready", "True", "Reconciled")

    # The next deactivation locks the e-mail again: the earlier unlock is spent.
    wait_for("the Owner's rights back", lambda: may_patch(me, name))
    patch_spec(me, name, state="Deactivated")()
    org = wait_org(admin, name, "Deactivated", "True", "Requested")
    assert org["status"]["ownerEmailLocked"] is True


def may_patch(kube: Kube, name: str) -> bool:
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                group=names.GROUP, resource="organizations", name=name, verb="patch"
            )
        )
    )
    answer = client.AuthorizationV1Api(kube.api).create_self_subject_access_review(review)
    return bool(answer.status.allowed)


# --- ownership transfers: L9 and an Owner who left -------------------------------------------


def test_a_transfer_to_a_locked_email_is_refused(
    admin: Kube, as_user: AsUser, operator: OperatorProcess, unique: str
) -> None:
    name, owner = f"l9-{unique}", f"owner@l9-{unique}.test"
    locked, alice = f"locked@l9-{unique}.test", f"alice@l9-{unique}.test"
    admin.create("organizations", organization(f"gone-{unique}", locked))
    wait_org(admin, f"gone-{unique}")
    admin.patch("organizations", f"gone-{unique}", {"spec": {"state": "Deactivated"}})
    wait_org(admin, f"gone-{unique}", "Deactivated", "True", "Requested")

    sign_up(as_user, admin, name, owner)
    me = as_user(owner)
    for member, email in (("locked", locked), ("alice", alice)):
        me.create("memberships", membership(member, email, "organization-admin"), f"org-{name}")
    wait_members_bound(
        admin,
        name,
        {e: ["organization-admin"] for e in (owner, locked, alice)},
    )
    refused(
        patch_spec(me, name, owner=locked),
        f"spec.owner: ownership can't be transferred to {locked}",
        f"locked by deactivated organization gone-{unique}",
        f"only {SUPPORT} releases it",
    )
    patch_spec(me, name, owner=alice)()
    wait_owner(admin, name, alice)


def wait_owner(admin: Kube, name: str, owner: str) -> None:
    """Until the transfer took effect: status.owner moved and OwnerValid is True."""
    wait_for(
        f"{owner} to own {name}",
        lambda: (
            (org := admin.get("organizations", name))
            and (org.get("status") or {}).get("owner") == owner
            and is_condition(org, "OwnerValid", "True")
        ),
    )


@contextlib.contextmanager
def membership_deletes_unchecked(admin: Kube) -> Iterator[None]:
    """The Membership webhook skips DELETE meanwhile: how an Owner could leave (M3)."""
    admission = client.AdmissionregistrationV1Api(admin.api)
    configuration = admission.read_validating_webhook_configuration(WEBHOOK_CONFIGURATION)
    index = next(i for i, hook in enumerate(configuration.webhooks) if "membership" in hook.name)
    path = f"/webhooks/{index}/rules/0/operations"
    admission.patch_validating_webhook_configuration(
        WEBHOOK_CONFIGURATION, [{"op": "replace", "path": path, "value": ["CREATE", "UPDATE"]}]
    )
    try:
        yield
    finally:
        admission.patch_validating_webhook_configuration(
            WEBHOOK_CONFIGURATION,
            [{"op": "replace", "path": path, "value": ["CREATE", "UPDATE", "DELETE"]}],
        )


def test_support_transfers_an_org_whose_owner_left(
    admin: Kube, as_user: AsUser, operator: OperatorProcess, support_user: str, unique: str
) -> None:
    name, owner = f"left-{unique}", f"owner@left-{unique}.test"
    newcomer, other = f"new@left-{unique}.test", f"other@left-{unique}.test"
    sign_up(as_user, admin, name, owner)
    with membership_deletes_unchecked(admin):
        admin.delete("memberships", names.owner_membership(owner), f"org-{name}")
    wait_org(admin, name, "OwnerValid", "False", "OwnerLeft")

    # The Owner who left may still edit the org, but not hand it to a non-admin.
    refused(
        patch_spec(as_user(owner), name, owner=other),
        f"ownership can't be transferred to {other}",
        f"the Owner {owner} left, so {SUPPORT} may also transfer it to any e-mail",
    )
    patch_spec(as_user(support_user), name, owner=newcomer)()
    wait_owner(admin, name, newcomer)
    # The new Owner got a Membership in organization-admin, as a first Owner does.
    wait_members_bound(admin, name, {newcomer: ["organization-admin"]})
    wait_org(admin, name)


def test_an_org_admin_squatting_the_new_owner_s_membership_name_breaks_no_transfer(
    admin: Kube, as_user: AsUser, operator: OperatorProcess, support_user: str, unique: str
) -> None:
    """L5: an org admin makes owner-<hash of the next Owner's e-mail> for another e-mail before
    support transfers to that person. The plain transfer just above is the positive control."""
    name, owner = f"squat-{unique}", f"owner@squat-{unique}.test"
    alice, newcomer = f"alice@squat-{unique}.test", f"new@squat-{unique}.test"
    decoy, namespace = f"alice2@squat-{unique}.test", f"org-{name}"
    sign_up(as_user, admin, name, owner)
    as_user(owner).create(
        "memberships", membership("alice", alice, "organization-admin"), namespace
    )
    wait_members_bound(admin, name, {alice: ["organization-admin"]})
    squatted = names.owner_membership(newcomer)
    as_user(alice).create("memberships", membership(squatted, decoy, "portal-admin"), namespace)
    with membership_deletes_unchecked(admin):
        admin.delete("memberships", names.owner_membership(owner), namespace)
    wait_org(admin, name, "OwnerValid", "False", "OwnerLeft")

    patch_spec(as_user(support_user), name, owner=newcomer)()
    wait_owner(admin, name, newcomer)

    def held() -> dict[str, tuple[str, list[str]]]:
        return {
            m["spec"]["email"]: (
                m["metadata"]["name"],
                sorted((m.get("status") or {}).get("effectiveTeams") or []),
            )
            for m in admin.list("memberships", namespace)
        }

    wait_for(
        "the new Owner's Membership beside the squatted one, each bound",
        lambda: (
            (found := held())
            and found.get(decoy) == (squatted, ["portal-admin"])
            and found.get(alice, ("", []))[1] == ["organization-admin"]
            and found.get(newcomer, ("", []))[0].startswith(f"{squatted}-")
            and found[newcomer][1] == ["organization-admin"]
        ),
        details=lambda: str(held()),
    )
    wait_org(admin, name)
    wait_owner_rights(admin, name, newcomer)


# --- who may claim a namespace for an org ----------------------------------------------------


def test_only_the_owner_or_support_label_a_namespace_for_an_org(
    admin: Kube, as_user: AsUser, operator: OperatorProcess, support_user: str, unique: str
) -> None:
    acme, owner = f"acme-{unique}", f"owner@acme-{unique}.test"
    beta, beta_owner = f"beta-{unique}", f"owner@beta-{unique}.test"
    tenant, stranger = f"tenant@beta-{unique}.test", f"mallory@evil-{unique}.test"
    mine = f"mal-{unique}"
    sign_up(as_user, admin, acme, owner)
    sign_up(as_user, admin, beta, beta_owner)
    sign_up(as_user, admin, mine, stranger)
    as_user(beta_owner).create(
        "memberships", membership("tenant", tenant, "organization-admin"), f"org-{beta}"
    )
    wait_members_bound(
        admin, beta, {beta_owner: ["organization-admin"], tenant: ["organization-admin"]}
    )

    # A stranger labels their own namespace with someone else's org: refused.
    theirs = administered_namespace(admin, f"mal-ns-{unique}", stranger)
    refused(
        lambda: label(as_user(stranger), theirs, acme),
        NAMESPACE_POLICY,
        f"metadata.labels[{LABEL}]: {stranger} may not claim namespace {theirs} for "
        f"Organization {acme}",
        f"only its Owner or {SUPPORT}",
    )
    # The tenant of beta (an organization-admin there) can't claim one for acme either.
    tenants = administered_namespace(admin, f"tenant-ns-{unique}", tenant)
    refused(lambda: label(as_user(tenant), tenants, acme), NAMESPACE_POLICY)
    assert organization_label(admin, theirs) is None and organization_label(admin, tenants) is None

    # Positive controls: an Owner labels a namespace they administer with their own org.
    label(as_user(stranger), theirs, mine)
    edge = administered_namespace(admin, f"acme-edge-{unique}", owner)
    label(as_user(owner), edge, acme)
    assert organization_label(admin, edge) == acme

    # Support (and a cluster admin) may claim any; taking it away again is refused to others.
    shared = administered_namespace(admin, f"shared-{unique}", stranger, support_user)
    label(as_user(support_user), shared, acme)
    refused(
        lambda: label(as_user(stranger), shared, None),
        f"may not take namespace {shared} away from Organization {acme}",
    )
    refused(lambda: label(as_user(stranger), shared, mine), "away from Organization")
    assert organization_label(admin, shared) == acme
    label(admin, shared, beta)

    # Creating a namespace that carries the label is the same claim.
    creator = client.V1PolicyRule(api_groups=[""], resources=["namespaces"], verbs=["create"])
    grant(admin, stranger, f"test-ns-creator-{unique}", [creator])

    def new_namespace(name: str, value: str) -> Callable[[], object]:
        body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={LABEL: value}))
        return lambda: as_user(stranger).core.create_namespace(body)

    refused(new_namespace(f"claim-{unique}", acme), NAMESPACE_POLICY)
    new_namespace(f"claim-{unique}", mine)()


# --- L3: names that can't form org-<name> ----------------------------------------------------


@pytest.mark.parametrize("too_long", [False, True], ids=["dotted", "60-characters"])
def test_an_organization_name_must_form_its_namespace(
    admin: Kube, unique: str, too_long: bool
) -> None:
    bad = f"l3-{unique}".ljust(60, "x") if too_long else f"dotted.name-{unique}"
    refused(
        lambda: admin.create("organizations", organization(bad, f"o@l3-{unique}.test")),
        f"metadata.name: {bad} can not be an Organization name: its namespace org-{bad}",
        "at most 59",
        status=422,
    )


def test_a_59_character_name_gets_its_namespace(
    admin: Kube, operator: OperatorProcess, unique: str
) -> None:
    name = f"l3-{unique}".ljust(59, "x")
    admin.create("organizations", organization(name, f"o@l3-{unique}.test"))
    assert wait_org(admin, name)["status"]["namespace"] == f"org-{name}"
    assert len(f"org-{name}") == 63


# --- the rules hold while the operator is away -----------------------------------------------


@pytest.fixture(scope="module")
def managed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCluster, OperatorProcess]]:
    """A control plane of its own, the operator in kopf's managed webhook mode (`make run`)."""
    local = LocalCluster(tmp_path_factory.mktemp("managed-cluster"))
    local.start()
    try:
        install_orgkeeper(local)
        log: Path = tmp_path_factory.mktemp("managed-operator") / "operator.log"
        process = OperatorProcess(local, log, webhook_mode="managed").start()
        try:
            yield local, process
        finally:
            process.stop()
    finally:
        local.stop()


def validating_webhooks(admin: Kube) -> list[str]:
    admission = client.AdmissionregistrationV1Api(admin.api)
    found = admission.list_validating_webhook_configuration().items
    return sorted(hook.name for c in found for hook in c.webhooks or [])


def test_with_the_operator_stopped_every_rule_still_refuses(managed: Managed, unique: str) -> None:
    local, process = managed
    admin = Kube(api_client(local.kubeconfig))

    def as_user(user: str) -> Kube:
        return Kube(api_client(local.kubeconfig, user=user))

    registered = wait_for(
        "kopf to register the validating webhooks",
        lambda: len(validating_webhooks(admin)) == 3 and validating_webhooks(admin),
    )
    name, owner, stranger = f"away-{unique}", f"owner@away-{unique}.test", f"m@away-{unique}.test"
    sign_up(as_user, admin, name, owner)
    edge = administered_namespace(admin, f"edge-{unique}", owner, stranger)

    process.stop()
    # N1: the configuration keeps its webhooks, which fail closed while nobody answers.
    assert validating_webhooks(admin) == registered
    refused(
        lambda: as_user(owner).custom.delete_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            f"org-{name}",
            "memberships",
            names.owner_membership(owner),
            dry_run="All",
        ),
        'failed calling webhook "validate-membership.orgkeeper.dev',
        status=500,
    )
    # The admission policies live in the API server: they answer without the operator.
    squat = organization(f"squat-{unique}", owner, plan="Plus")
    refused(lambda: as_user(stranger).create("organizations", squat), AUTHORITY_POLICY)
    refused(patch_spec(as_user(owner), name, plan="Enterprise"), AUTHORITY_POLICY, "spec.plan")
    refused(lambda: label(as_user(stranger), edge, name), NAMESPACE_POLICY)
    label(as_user(owner), edge, name)  # the positive control needs no webhook at all
    assert organization_label(admin, edge) == name
    # A Membership where no org can serve it: refused by its policy, saying where it goes.
    refused(
        lambda: admin.create("memberships", membership("stray", stranger), "default"),
        "ValidatingAdmissionPolicy 'orgkeeper-org-namespace-only'",
        "metadata.namespace: a Membership belongs in the namespace of its Organization",
        status=422,
    )
