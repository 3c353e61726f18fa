"""Identities as clusters have them: which user names an org binds (API.md "Identities (SSO)").

An ordinary org accepts the person through any login the cluster offers, the bare e-mail and
the identity provider's `oidc:<e-mail>`; an SSO-only org only through the identity provider.
Every test acts through the real API server by impersonation (the tests that log in through a
real provider are in test_sso_login.py); refusals stand beside a positive control.
"""

from __future__ import annotations

import json
from functools import partial

import pytest
from kubernetes.client.rest import ApiException

from orgkeeper_dev.localcluster import LocalCluster
from support.cli import orgkeeper
from support.kube import AsUser, Kube, rejection, wait_for
from support.orgs import membership, new_org, organization, wait_members_bound, wait_org

pytestmark = pytest.mark.usefixtures("operator")

SSO = "oidc:"


def config_map(name: str) -> dict[str, object]:
    return {"metadata": {"name": name}, "data": {"made-by": "a member"}}


def acts(as_user: AsUser, user: str, namespace: str, name: str) -> None:
    """`user` creates a ConfigMap in the org namespace (a control-plane-admin's right)."""
    as_user(user).core.create_namespaced_config_map(namespace, config_map(name))


def can_act(as_user: AsUser, user: str, namespace: str, name: str) -> bool:
    try:
        acts(as_user, user, namespace, name)
    except ApiException as error:
        if error.status == 403:  # only a refusal means "not yet"
            return False
        raise
    return True


def refused(as_user: AsUser, user: str, namespace: str, name: str) -> str:
    status, message = rejection(lambda: acts(as_user, user, namespace, name))
    assert status == 403, message
    return message


def member_org(admin: Kube, as_user: AsUser, name: str, member: str, **spec: object) -> str:
    """An org whose Owner signed up, with `member` in control-plane-admin; its namespace."""
    new_org(as_user, name, f"owner@{name}.test", **spec)
    wait_org(admin, name)
    namespace = f"org-{name}"
    admin.create("memberships", membership("member", member, "control-plane-admin"), namespace)
    wait_members_bound(admin, name, {member: ["control-plane-admin"]})
    return namespace


def test_an_ordinary_orgs_member_acts_as_their_email_and_through_the_identity_provider(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    name = f"plain-{unique}"
    # The Membership spells the e-mail with capitals: the bindings name it lower-cased.
    alice = f"alice@{name}.test"
    namespace = member_org(admin, as_user, name, alice.title())

    wait_for("alice to act as her e-mail", lambda: can_act(as_user, alice, namespace, "as-email"))
    acts(as_user, SSO + alice, namespace, "as-sso")
    # The Owner's rights too: both logins edit the org.
    for user, display in ((f"owner@{name}.test", "Mail"), (f"{SSO}owner@{name}.test", "Sso")):
        as_user(user).patch("organizations", name, {"spec": {"displayName": display}})
    # Someone else, under either name, holds nothing there.
    for stranger in (f"mallory@{name}.test", f"{SSO}mallory@{name}.test"):
        refused(as_user, stranger, namespace, "stranger")
    # Another identity provider's prefix is not the one the cluster was set up with.
    refused(as_user, f"corp:{alice}", namespace, "other-prefix")


def test_an_sso_only_orgs_member_acts_only_through_the_identity_provider(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    name = f"sso-{unique}"
    alice, owner = f"alice@{name}.test", f"owner@{name}.test"
    namespace = member_org(admin, as_user, name, alice, ssoOnly=True)

    # Positive control: the identity provider's session acts.
    wait_for("oidc:alice to act", lambda: can_act(as_user, SSO + alice, namespace, "as-sso"))
    message = refused(as_user, alice, namespace, "as-email")
    assert f'User "{alice}" cannot create resource "configmaps"' in message, message
    # The Owner likewise: only the SSO session may delete the org.
    status, message = rejection(lambda: as_user(owner).delete("organizations", name))
    assert status == 403, message
    as_user(SSO + owner).delete("organizations", name)


def test_turning_sso_only_on_and_off_rebinds_within_seconds(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    name = f"flip-{unique}"
    alice, owner = f"alice@{name}.test", f"owner@{name}.test"
    namespace = member_org(admin, as_user, name, alice)
    wait_for("alice to act as her e-mail", lambda: can_act(as_user, alice, namespace, "before"))

    as_user(owner).patch("organizations", name, {"spec": {"ssoOnly": True}})
    wait_for(
        "alice's e-mail login to lose the org's roles",
        lambda: not can_act(as_user, alice, namespace, "during-email"),
        timeout=15,
    )
    acts(as_user, SSO + alice, namespace, "during-sso")  # positive control
    # Now only the Owner's SSO session may edit the org: it turns SSO-only off again.
    status, _ = rejection(
        lambda: as_user(owner).patch("organizations", name, {"spec": {"ssoOnly": False}})
    )
    assert status == 403
    as_user(SSO + owner).patch("organizations", name, {"spec": {"ssoOnly": False}})
    wait_for(
        "alice's e-mail login to act again",
        lambda: can_act(as_user, alice, namespace, "after-email"),
        timeout=15,
    )
    acts(as_user, SSO + alice, namespace, "after-sso")


def test_sign_up_takes_the_email_whatever_its_case_through_either_login(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    for login, name in (("", f"up-{unique}"), (SSO, f"up-sso-{unique}")):
        spelled = f"Bob.{login.rstrip(':') or 'mail'}@{unique}.Test"
        as_user(login + spelled.lower()).create(
            "organizations", organization(name, spelled, plan="Free")
        )
        org = wait_org(admin, name)
        assert org["status"]["owner"] == spelled
        # The new Owner holds the org's rights under the name they signed up with.
        as_user(login + spelled.lower()).patch(
            "organizations", name, {"spec": {"displayName": "Mine"}}
        )


def test_an_sso_login_of_a_locked_email_is_locked_too(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    name, owner = f"locked-{unique}", f"owner@locked-{unique}.test"
    new_org(as_user, name, owner, plan="Free")
    wait_org(admin, name)
    as_user(owner).patch("organizations", name, {"spec": {"state": "Deactivated"}})
    wait_for(
        f"{name}'s owner e-mail to be locked",
        lambda: (admin.get("organizations", name).get("status") or {}).get("ownerEmailLocked"),
    )
    again = organization(f"again-{unique}", owner, plan="Free")
    for kube in (as_user(owner), as_user(SSO + owner)):
        status, message = rejection(partial(kube.create, "organizations", again))
        assert status == 403, message
        assert f"spec.owner: the e-mail {owner} is locked by deactivated organization" in message
    # Positive control: another person signs up through the identity provider.
    other = f"other@locked-{unique}.test"
    as_user(SSO + other).create(
        "organizations", organization(f"other-{unique}", other, plan="Free")
    )


def test_the_org_switcher_finds_orgs_from_an_sso_user_name_and_says_which_need_sso(
    admin: Kube, as_user: AsUser, cluster: LocalCluster, unique: str
) -> None:
    alice = f"alice@switch-{unique}.test"
    member_org(admin, as_user, f"plain-{unique}", alice)
    member_org(admin, as_user, f"sso-{unique}", alice, ssoOnly=True)

    listed = orgkeeper(cluster, "orgs", "--email", SSO + alice, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["organization"]: row["ssoOnly"] for row in json.loads(listed.stdout)}
    assert rows == {f"plain-{unique}": False, f"sso-{unique}": True}
    table = orgkeeper(cluster, "orgs", "--email", alice).stdout.splitlines()
    assert table[0].split()[-2:] == ["SSO", "ONLY"]
    assert table[-1] == (
        f"SSO ONLY: its roles are held only through the identity provider, signed in as "
        f"{SSO}{alice} (an SSO session)"
    )
    status = orgkeeper(cluster, "status", f"sso-{unique}")
    assert "  Sign-in:  SSO only: members act only through the identity provider" in status.stdout

    login = orgkeeper(
        cluster, "activity", "login", "--org", f"sso-{unique}", "--email", SSO + alice
    )
    assert login.returncode == 0, login.stderr
    assert login.stdout.startswith(f"recorded a login of {alice} to sso-{unique} at ")
    member = admin.get("memberships", "member", f"org-sso-{unique}")
    assert member["status"]["lastLoginTime"]
