"""The org switcher for the person themself: `orgkeeper orgs` and `kubectl get myorganizations`
answer for whoever is logged in, through the people API (an aggregated API the operator serves
behind the APIService of manifests/), with that person's own rights; `orgkeeper status` works
for a member who may not read the Organization.

Every person acts through the real API server: a client certificate of their own (a login the
cluster accepts; `oidc:<e-mail>` is the identity provider's user name) or impersonation.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from orgkeeper.names import MY_ORGANIZATIONS, PEOPLE_API_PATH, PEOPLE_GROUP, PEOPLE_VERSION
from orgkeeper_dev.localcluster import LocalCluster, kubectl
from support import identity
from support.cli import orgkeeper
from support.kube import AsUser, Kube, api_client, rejection, wait_for
from support.operator import OperatorProcess
from support.orgs import (
    membership,
    new_org,
    unique_suffix,
    wait_members_bound,
    wait_org,
    wait_owner_rights,
)

pytestmark = pytest.mark.usefixtures("operator")

SSO = "oidc:"


def my_organizations(kube: Kube) -> list[str]:
    found: dict[str, Any] = kube.custom.list_cluster_custom_object(
        PEOPLE_GROUP, PEOPLE_VERSION, MY_ORGANIZATIONS
    )
    return [item["metadata"]["name"] for item in found["items"]]


@pytest.fixture(scope="module")
def alice_orgs(operator: OperatorProcess, cluster: LocalCluster) -> Iterator[dict[str, str]]:
    """alice is a member of three orgs: an ordinary one, one its Owner deactivated, and one
    SSO-only; bob of a fourth. The org names by role, and the people."""
    admin = Kube(api_client(cluster.kubeconfig))
    wait_for(
        "the people API's APIService to be Available",
        lambda: identity.people_api_available(admin),
    )

    def as_user(user: str) -> Kube:
        return Kube(api_client(cluster.kubeconfig, user=user))

    unique = unique_suffix()
    alice, bob = f"alice@{unique}.test", f"bob@{unique}.test"
    orgs = {
        "plain": f"sw-plain-{unique}",
        "deactivated": f"sw-off-{unique}",
        "sso": f"sw-sso-{unique}",
        "bobs": f"sw-bob-{unique}",
    }
    for role, name in orgs.items():
        new_org(as_user, name, f"owner@{name}.test", **({"ssoOnly": True} if role == "sso" else {}))
    for role, name in orgs.items():
        wait_org(admin, name)
        member, team = (bob, "portal-admin") if role == "bobs" else (alice, "control-plane-admin")
        admin.create("memberships", membership("member", member, team), f"org-{name}")
    for role, name in orgs.items():
        member, team = (bob, "portal-admin") if role == "bobs" else (alice, "control-plane-admin")
        wait_members_bound(admin, name, {member: [team]})
    off, off_owner = orgs["deactivated"], f"owner@{orgs['deactivated']}.test"
    wait_owner_rights(admin, off, off_owner)
    as_user(off_owner).patch("organizations", off, {"spec": {"state": "Deactivated"}})
    wait_org(admin, off, "Deactivated", "True", "Requested", timeout=60)
    yield {**orgs, "alice": alice, "bob": bob, "unique": unique}
    for role in ("plain", "deactivated", "sso", "bobs"):
        with contextlib.suppress(ApiException):
            admin.delete("organizations", orgs[role])


def login(cluster: LocalCluster, tmp_path: Path, user: str) -> Path:
    """A kubeconfig that logs `user` in with a client certificate of their own."""
    return cluster.user_kubeconfig(tmp_path / user.replace(":", "-"), user)


def orgs_json(cluster: LocalCluster, kubeconfig: Path) -> list[dict[str, Any]]:
    done = orgkeeper(cluster, "orgs", "-o", "json", kubeconfig=kubeconfig)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def test_a_member_of_three_orgs_sees_each_login_s_own_orgs_and_the_deactivated_one_as_such(
    cluster: LocalCluster, alice_orgs: dict[str, str], tmp_path: Path
) -> None:
    alice, plain, off, sso = (alice_orgs[k] for k in ("alice", "plain", "deactivated", "sso"))
    row = {
        "organization": plain,
        "displayName": plain.title(),
        "region": "eu",
        "state": "Active",
        "deactivated": False,
        "owner": False,
        "ssoOnly": False,
        "teams": ["control-plane-admin"],
    }
    deactivated = {
        **row,
        "organization": off,
        "displayName": off.title(),
        "state": "Deactivated",
        "deactivated": True,
        "teams": [],
    }
    through_sso = {**row, "organization": sso, "displayName": sso.title(), "ssoOnly": True}
    # Her bare e-mail: the SSO-only org holds her only through the identity provider. (Rows
    # come sorted by name: sw-off-, sw-plain-, sw-sso-.)
    assert orgs_json(cluster, login(cluster, tmp_path, alice)) == [deactivated, row]
    # Signed in through the identity provider: all three.
    by_sso = login(cluster, tmp_path, SSO + alice)
    assert orgs_json(cluster, by_sso) == [deactivated, row, through_sso]
    table = orgkeeper(cluster, "orgs", kubeconfig=by_sso)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["ORGANIZATION", "DISPLAY", "NAME", "REGION"]
    assert any(line.split()[0] == off and "Deactivated" in line for line in lines)
    assert lines[-1].startswith("SSO ONLY:")
    # Bob's org is nowhere in hers.
    assert alice_orgs["bobs"] not in table.stdout
    # kubectl reads it as a table too (the server's Table), as her SSO login.
    seen = kubectl(cluster, "get", "myorganizations", f"--as={SSO}{alice}").stdout.splitlines()
    assert seen[0].split() == [
        "NAME",
        "DISPLAY",
        "NAME",
        "REGION",
        "STATE",
        "OWNER",
        "TEAMS",
        "SSO",
        "ONLY",
    ]
    assert [line.split()[0] for line in seen[1:]] == [off, plain, sso]


def test_a_stranger_sees_nothing_and_nobody_else_s_orgs_by_name(
    cluster: LocalCluster, alice_orgs: dict[str, str], as_user: AsUser, tmp_path: Path
) -> None:
    stranger = f"mallory@{alice_orgs['unique']}.test"
    kubeconfig = login(cluster, tmp_path, stranger)
    assert orgs_json(cluster, kubeconfig) == []
    empty = orgkeeper(cluster, "orgs", kubeconfig=kubeconfig)
    assert empty.stdout == (
        "you are not a member of any organization (as the user you are logged in as)\n"
    )
    # kubectl's way, impersonated: the list is empty, and a get of someone else's org is the
    # same NotFound as an org that doesn't exist.
    assert my_organizations(as_user(stranger)) == []
    assert my_organizations(as_user(SSO + stranger)) == []
    for name in (alice_orgs["plain"], f"no-such-{alice_orgs['unique']}"):
        status, message = rejection(
            partial(
                as_user(stranger).custom.get_cluster_custom_object,
                PEOPLE_GROUP,
                PEOPLE_VERSION,
                MY_ORGANIZATIONS,
                name,
            )
        )
        assert status == 404, message
        assert f'"{name}" not found' in message
    # Positive control: alice gets her own org by name, bob his, each through kubectl's API.
    found = as_user(alice_orgs["alice"]).custom.get_cluster_custom_object(
        PEOPLE_GROUP, PEOPLE_VERSION, MY_ORGANIZATIONS, alice_orgs["plain"]
    )
    assert found["membership"]["teams"] == ["control-plane-admin"]
    assert my_organizations(as_user(alice_orgs["bob"])) == [alice_orgs["bobs"]]
    # Read-only: RBAC grants get and list, nothing else.
    status, _ = rejection(
        lambda: as_user(stranger).custom.create_cluster_custom_object(
            PEOPLE_GROUP,
            PEOPLE_VERSION,
            MY_ORGANIZATIONS,
            {"metadata": {"name": alice_orgs["plain"]}},
        )
    )
    assert status == 403


def test_only_the_api_servers_front_proxy_may_name_the_requester(
    cluster: LocalCluster, alice_orgs: dict[str, str], operator: OperatorProcess
) -> None:
    """Straight at the operator's port, a caller who names alice in X-Remote-User is refused
    at the handshake unless the front proxy's CA signed its certificate (a user's certificate
    from the cluster's CA is not enough); the front proxy's own certificate gets her answer."""
    url = f"https://127.0.0.1:{operator.people_api_port}{PEOPLE_API_PATH}/{MY_ORGANIZATIONS}"
    pki = cluster.pki

    def call(cert: str) -> Any:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(pki / f"{cert}.crt", pki / f"{cert}.key")
        request = urllib.request.Request(url, headers={"X-Remote-User": alice_orgs["alice"]})
        with urllib.request.urlopen(request, context=context, timeout=10) as reply:
            return json.loads(reply.read())

    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        call("admin")  # the cluster admin's certificate, from the cluster's CA
    answered = call("front-proxy-client")
    assert [item["metadata"]["name"] for item in answered["items"]] == sorted(
        [alice_orgs["plain"], alice_orgs["deactivated"]]
    )


def test_status_run_by_a_member_says_what_the_org_is_and_what_they_may_do_next(
    cluster: LocalCluster, alice_orgs: dict[str, str], tmp_path: Path
) -> None:
    kubeconfig = login(cluster, tmp_path, alice_orgs["alice"])
    plain, off = alice_orgs["plain"], alice_orgs["deactivated"]
    seen = orgkeeper(cluster, "status", plain, kubeconfig=kubeconfig)
    assert seen.returncode == 0, seen.stderr
    assert f"Organization {plain} ({plain.title()})" in seen.stdout
    assert "Phase:    Active" in seen.stdout
    assert "Plus in region eu" in seen.stdout
    assert "You:      member; teams control-plane-admin" in seen.stdout
    assert "What you may do next:" in seen.stdout
    assert f"kubectl auth can-i --list -n org-{plain}" in seen.stdout
    as_json = json.loads(
        orgkeeper(cluster, "status", plain, "-o", "json", kubeconfig=kubeconfig).stdout
    )
    assert as_json["you"]["owner"] is False and as_json["next"]
    # The deactivated org: what it is, and that only its Owner (through support) brings it back.
    off_seen = orgkeeper(cluster, "status", off, kubeconfig=kubeconfig)
    assert off_seen.returncode == 0, off_seen.stderr
    assert "Phase:    Deactivated" in off_seen.stdout
    assert "hold no roles while it is deactivated" in off_seen.stdout
    # Someone else's org is as unknown as one that doesn't exist: the API server's refusal
    # (the same for any name), and not among hers.
    for name in (alice_orgs["bobs"], f"no-such-{alice_orgs['unique']}"):
        refused = orgkeeper(cluster, "status", name, kubeconfig=kubeconfig)
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr == (
            f'error: the API server refused (403): organizations.orgkeeper.dev "{name}" is '
            f'forbidden: User "{alice_orgs["alice"]}" cannot get resource "organizations" in '
            f'API group "orgkeeper.dev" at the cluster scope; nor is {name} among your '
            "organizations (orgkeeper orgs lists them)\n"
        )
    # Positive control: the Owner reads the Organization itself, and is told they own it.
    owner = login(cluster, tmp_path, f"owner@{plain}.test")
    as_owner = orgkeeper(cluster, "status", plain, kubeconfig=owner)
    assert as_owner.returncode == 0, as_owner.stderr
    assert "You:      Owner" in as_owner.stdout and "Licenses:" in as_owner.stdout
    assert f"kubectl delete organization {plain}" in as_owner.stdout
