"""The people API's pieces without a cluster: which orgs a user name sees (domain/people.py),
how the server trusts only the front proxy (people.py), the Memberships index it reads, what
`orgkeeper status` tells a member to do next, and the manifests that register it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from aiohttp.test_utils import make_mocked_request

from orgkeeper import names, views
from orgkeeper.controllers.informer import Informer
from orgkeeper.controllers.records import MemberRecord
from orgkeeper.domain.people import MemberFacts, OrgFacts, email_of, my_organizations, table
from orgkeeper.people import FrontProxy, requester

SSO = "oidc:"
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def orgs(*facts: OrgFacts) -> dict[str, OrgFacts]:
    return {f.name: f for f in facts}


PLAIN = OrgFacts("plain", "Plain", "eu", "Plus", "Active", False, "owner@plain.test")
SSO_ONLY = OrgFacts("sso", "Sso", "us", "Free", "Active", True, "alice@x.test")
OFF = OrgFacts("off", "Off", "au", "Free", "Deactivated", False, "owner@off.test")
ALL = orgs(PLAIN, SSO_ONLY, OFF)


def member(org: str, email: str = "Alice@X.test", **status: Any) -> MemberFacts:
    return MemberFacts(f"org-{org}", "alice", email, ("control-plane-admin",), status)


def names_of(items: list[dict[str, Any]]) -> list[str]:
    return [item["metadata"]["name"] for item in items]


def test_the_bare_email_sees_ordinary_orgs_and_the_sso_login_sees_sso_only_ones_too() -> None:
    memberships = [member("sso"), member("plain"), member("off")]
    bare = my_organizations("alice@x.test", memberships, ALL, sso_prefix=SSO)
    assert names_of(bare) == ["off", "plain"]
    through_sso = my_organizations(f"{SSO}alice@x.test", memberships, ALL, sso_prefix=SSO)
    assert names_of(through_sso) == ["off", "plain", "sso"]
    (sso,) = [item for item in through_sso if item["metadata"]["name"] == "sso"]
    assert sso["organization"]["ssoOnly"] is True and sso["membership"]["owner"] is True


def test_someone_else_s_memberships_and_misplaced_ones_show_nothing() -> None:
    others = [member("plain", "bob@x.test"), MemberFacts("default", "m", "alice@x.test")]
    assert my_organizations("alice@x.test", others, ALL, sso_prefix=SSO) == []
    assert my_organizations("alice@x.test", [member("gone")], ALL, sso_prefix=SSO) == []
    # Another identity provider's prefix is not this cluster's.
    assert my_organizations("corp:alice@x.test", [member("plain")], ALL, sso_prefix=SSO) == []


def test_a_deactivated_org_shows_as_such_with_the_teams_it_held() -> None:
    removed = member("off", state="Removed", effectiveTeams=[])
    (item,) = my_organizations("alice@x.test", [removed], ALL, sso_prefix=SSO)
    assert item["organization"]["state"] == "Deactivated"
    assert item["organization"]["deactivated"] is True
    assert item["membership"]["teams"] == []
    assert item["membership"]["requestedTeams"] == ["control-plane-admin"]


def test_the_lookup_key_is_the_email_without_the_sso_prefix() -> None:
    assert email_of(" oidc:Alice@X.test", SSO) == "alice@x.test"
    assert names.email_hash(email_of("Alice@X.test", SSO)) == names.email_hash("alice@x.test")


def test_the_table_has_a_row_per_org_for_kubectl() -> None:
    items = my_organizations("alice@x.test", [member("plain")], ALL, sso_prefix=SSO)
    found = table(items)
    assert found["kind"] == "Table"
    (row,) = found["rows"]
    assert row["cells"][:4] == ["plain", "Plain", "eu", "Active"]
    assert len(row["cells"]) == len(found["columnDefinitions"])


CONFIG_MAP = {
    "requestheader-client-ca-file": "-----BEGIN CERTIFICATE-----\n...",
    "requestheader-allowed-names": '["front-proxy-client"]',
    "requestheader-username-headers": '["X-Remote-User"]',
    "requestheader-group-headers": '["X-Remote-Group"]',
}


def test_the_front_proxy_settings_come_from_the_api_server_s_config_map() -> None:
    proxy = FrontProxy.from_config_map(CONFIG_MAP)
    assert proxy is not None
    assert proxy.allowed_names == ("front-proxy-client",)
    assert proxy.user_headers == ("X-Remote-User",)
    # No front-proxy CA: no aggregation layer, nothing to trust.
    assert FrontProxy.from_config_map({"client-ca-file": "x"}) is None


class _Transport:
    def __init__(self, common_name: str | None) -> None:
        self.peer = (
            {"subject": ((("commonName", common_name),),)} if common_name is not None else None
        )

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return self.peer if key == "peercert" else default


@pytest.mark.parametrize(
    ("common_name", "headers", "expected"),
    [
        ("front-proxy-client", {"X-Remote-User": "alice@x.test"}, "alice@x.test"),
        ("someone-else", {"X-Remote-User": "alice@x.test"}, None),  # not an allowed name
        (None, {"X-Remote-User": "alice@x.test"}, None),  # no client certificate
        ("front-proxy-client", {}, None),  # names nobody
    ],
    ids=["front-proxy", "other-name", "no-certificate", "no-user"],
)
def test_only_the_front_proxy_names_the_requester(
    common_name: str | None, headers: dict[str, str], expected: str | None
) -> None:
    proxy = FrontProxy.from_config_map(CONFIG_MAP)
    assert proxy is not None
    request = make_mocked_request("GET", "/", headers=headers, transport=_Transport(common_name))
    assert requester(request, proxy) == expected


def test_the_memberships_index_follows_adds_changes_and_deletes() -> None:
    async def run() -> None:
        informer: Informer[MemberRecord] = Informer(
            "Memberships",
            None,  # type: ignore[arg-type]
            MemberRecord.from_body,
            lambda _: None,
            index=lambda record: record.email_key,
        )

        def body(name: str, email: str, version: int) -> dict[str, Any]:
            meta = {"name": name, "namespace": "org-a", "resourceVersion": str(version)}
            return {"metadata": meta, "spec": {"email": email, "teams": []}}

        key = names.email_hash("alice@x.test")
        informer._take({"type": "ADDED", "object": body("m1", "Alice@x.test", 1)})
        informer._take({"type": "ADDED", "object": body("m2", "bob@x.test", 2)})
        assert [r.name for r in informer.indexed(key)] == ["m1"]
        informer._take({"type": "MODIFIED", "object": body("m1", "alice@x.test", 3)})
        assert [r.name for r in informer.indexed(key)] == ["m1"]
        informer._take({"type": "DELETED", "object": body("m1", "alice@x.test", 4)})
        assert informer.indexed(key) == []
        assert key not in informer._index  # no empty keys left behind

    asyncio.run(run())


def summary(phase: str, *, owner: bool = False, teams: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "name": "a",
        "phase": phase,
        "ssoOnly": False,
        "you": {
            "owner": owner,
            "teams": list(teams),
            "requestedTeams": list(teams or ("portal-admin",)),
            "membershipState": "Active",
        },
    }


def test_next_steps_fit_the_requester_and_the_state() -> None:
    member = views.next_steps(summary("Active", teams=("control-plane-admin",)))
    assert any("kubectl auth can-i --list -n org-a" in step for step in member)
    assert not any("kubectl delete organization" in step for step in member)
    admin = views.next_steps(summary("Active", teams=("organization-admin",)))
    assert any("kubectl get memberships -n org-a" in step for step in admin)
    owner = views.next_steps(summary("Active", owner=True, teams=("organization-admin",)))
    assert any("kubectl delete organization a" in step for step in owner)
    off = views.next_steps(summary("Deactivated"))
    assert off == [
        "Your teams (portal-admin) hold no roles while it is deactivated; its Owner can ask "
        "support to reactivate it."
    ]
    assert any("support" in step for step in views.next_steps(summary("Deactivated", owner=True)))
    assert views.next_steps({"name": "a", "phase": "Active"}) == []  # support: not a member


def docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_the_api_service_reaches_the_people_port_through_the_webhook_service() -> None:
    (api_service,) = docs(MANIFESTS / "operator" / "people-api.yaml")
    assert api_service["metadata"]["name"] == names.PEOPLE_API_SERVICE
    spec = api_service["spec"]
    assert (spec["group"], spec["version"]) == (names.PEOPLE_GROUP, names.PEOPLE_VERSION)
    assert "insecureSkipTLSVerify" not in spec  # the operator (or cert-manager) sets caBundle
    (service,) = [
        d for d in docs(MANIFESTS / "operator" / "webhook.yaml") if d["kind"] == "Service"
    ]
    assert spec["service"]["name"] == service["metadata"]["name"]
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == spec["service"]["port"]]
    (deployment, _) = docs(MANIFESTS / "operator" / "deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (served,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert f"--people-api-port={served['containerPort']}" in container["args"]


def test_every_signed_in_user_may_get_and_list_their_own_orgs_and_nothing_more() -> None:
    role, binding = docs(MANIFESTS / "rbac" / "people.yaml")
    assert role["rules"] == [
        {
            "apiGroups": [names.PEOPLE_GROUP],
            "resources": [names.MY_ORGANIZATIONS],
            "verbs": ["get", "list"],
        }
    ]
    assert binding["subjects"] == [
        {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Group",
            "name": "system:authenticated",
        }
    ]


def test_the_operator_reads_the_front_proxy_ca_with_the_built_in_role_only() -> None:
    found = [
        d
        for d in docs(MANIFESTS / "rbac" / "operator.yaml")
        if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == "kube-system"
    ]
    (binding,) = found
    assert binding["roleRef"]["name"] == "extension-apiserver-authentication-reader"
    rules = [
        rule
        for d in docs(MANIFESTS / "rbac" / "operator.yaml")
        if d["kind"] == "ClusterRole"
        for rule in d["rules"]
        if "apiservices" in rule["resources"]
    ]
    assert rules == [
        {
            "apiGroups": ["apiregistration.k8s.io"],
            "resources": ["apiservices"],
            "resourceNames": [names.PEOPLE_API_SERVICE],
            "verbs": ["get", "patch"],
        }
    ]
    assert json.dumps(rules).count("*") == 0


def org_body(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {"owner": f"owner@{name}.test", "region": "eu", "plan": "Free"},
        "status": {"phase": "Active"},
    }


def membership_body(org: str, name: str, email: str) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": f"org-{org}",
            "name": name,
            "resourceVersion": "1",
            "labels": {names.LABEL_EMAIL_HASH: names.email_hash("alice@x.test")},
        },
        "spec": {"email": email, "teams": ["analytics-viewer"]},
    }


def test_under_a_shard_the_switcher_reads_the_persons_memberships_from_the_api_server() -> None:
    """A shard holds only its orgs' Memberships: a person's may be in any shard's orgs."""
    from kubernetes import client

    from orgkeeper.controllers import caches as caches_module
    from orgkeeper.controllers.runtime import Runtime
    from orgkeeper.domain.shards import Shard
    from orgkeeper.kube import KubeApi
    from orgkeeper.settings import Settings

    shard = Shard.parse("0/2")
    mine = next(f"o{i}" for i in range(100) if shard.serves(f"o{i}"))
    theirs = next(f"o{i}" for i in range(100) if not shard.serves(f"o{i}"))
    runtime = Runtime(kube=KubeApi(client.ApiClient()), settings=Settings(shard=shard))
    for name in (mine, theirs, "forged"):
        runtime.caches.organizations._take({"type": "ADDED", "object": org_body(name)})
    asked: list[tuple[Any, ...]] = []

    async def list_memberships(*args: Any) -> list[dict[str, Any]]:
        asked.append(("list_memberships", *args))
        return [
            membership_body(mine, "alice", "Alice@X.test"),
            membership_body(theirs, "alice", "alice@x.test"),
            # A label copied onto someone else's Membership shows nothing: the e-mail counts.
            membership_body("forged", "mallory", "mallory@x.test"),
        ]

    reviews = mock.MagicMock(list_memberships=list_memberships)
    with mock.patch.object(caches_module, "Reviews", return_value=reviews):
        answer = asyncio.run(runtime.caches.my_organizations("alice@x.test"))
    assert names_of(answer) == sorted([mine, theirs])
    selector = f"{names.LABEL_EMAIL_HASH}={names.email_hash('alice@x.test')}"
    assert asked == [("list_memberships", None, selector)]
