"""Every `orgkeeper` command end to end against the API server: outputs, writes, errors."""

from __future__ import annotations

import base64
import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from orgkeeper_dev.localcluster import LocalCluster
from support import identity
from support.cli import orgkeeper
from support.identity import ServiceAccountIdentity
from support.kube import AsUser, Kube, wait_for
from support.licenses import license_body
from support.metrics import service_account_token
from support.orgs import condition, membership, organization, wait_members_bound, wait_org

pytestmark = pytest.mark.usefixtures("operator")

REPO = Path(__file__).resolve().parents[2]


def plus_org(admin: Kube, as_user: AsUser, name: str) -> str:
    """A Plus org signed up by its Owner (Plus: never deactivated for inactivity mid-test)."""
    owner = f"owner@{name}.test"
    as_user(owner).create("organizations", organization(name, owner, plan="Plus", region="au"))
    wait_org(admin, name)
    return owner


def test_orgs_lists_the_orgs_of_an_email_as_a_table_json_and_yaml(
    admin: Kube, as_user: AsUser, cluster: LocalCluster, unique: str
) -> None:
    name = f"listed-{unique}"
    plus_org(admin, as_user, name)
    dana = f"dana@{unique}.test"
    admin.create("memberships", membership("dana", dana, "portal-admin"), f"org-{name}")
    wait_members_bound(admin, name, {dana: ["portal-admin"]})
    row = {
        "organization": name,
        "displayName": name.title(),
        "region": "au",
        "state": "Active",
        "deactivated": False,
        "owner": False,
        "ssoOnly": False,
        "teams": ["portal-admin"],
    }

    as_json = orgkeeper(cluster, "orgs", "--email", dana.upper(), "-o", "json")
    assert (as_json.returncode, as_json.stderr) == (0, "")
    assert json.loads(as_json.stdout) == [row]
    as_yaml = orgkeeper(cluster, "orgs", "--email", dana, "--output", "yaml")
    assert (as_yaml.returncode, yaml.safe_load(as_yaml.stdout)) == (0, [row])
    table = orgkeeper(cluster, "orgs", "--email", dana)
    assert table.returncode == 0
    assert [line.split() for line in table.stdout.splitlines()] == [
        ["ORGANIZATION", "DISPLAY", "NAME", "REGION", "STATE", "OWNER", "TEAMS", "SSO", "ONLY"],
        [name, name.title(), "au", "Active", "portal-admin"],
    ]
    # The Owner's row says so.
    owner = orgkeeper(cluster, "orgs", "--email", f"owner@{name}.test", "-o", "json")
    assert json.loads(owner.stdout)[0]["owner"] is True

    nobody = f"nobody@{unique}.test"
    assert orgkeeper(cluster, "orgs", "--email", nobody).stdout == (
        f"{nobody} is not a member of any organization\n"
    )
    assert json.loads(orgkeeper(cluster, "orgs", "--email", nobody, "-o", "json").stdout) == []
    assert yaml.safe_load(orgkeeper(cluster, "orgs", "--email", nobody, "-o", "yaml").stdout) == []


def test_status_shows_a_new_plus_trial_and_why_a_license_is_not_valid(
    admin: Kube, as_user: AsUser, cluster: LocalCluster, unique: str
) -> None:
    name = f"why-{unique}"
    owner = plus_org(admin, as_user, name)
    summary = json.loads(orgkeeper(cluster, "status", name, "-o", "json").stdout)
    assert summary["trialDaysLeft"] == 30  # the trial ends 30 days after creation
    assert all(lic["valid"] and lic["reason"] is None for lic in summary["licenses"])
    assert "Trial:    30 day(s) of credits left" in orgkeeper(cluster, "status", name).stdout

    # A contract License whose Secret doesn't exist: not valid, and `status` says why.
    namespace = f"org-{name}"
    admin.create("licenses", license_body("contract", "mesh", "no-such-secret"), namespace)
    found = wait_for(
        "the contract License to be judged",
        lambda: condition(lic := admin.get("licenses", "contract", namespace), "Valid") and lic,
    )
    valid = condition(found, "Valid")
    assert valid is not None and valid["status"] == "False"
    expected = {
        "name": "contract",
        "product": "mesh",
        "source": "SecretRef",
        "valid": False,
        "active": False,
        "reason": valid["reason"],
        "message": valid["message"],
    }

    for output, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        shown = orgkeeper(cluster, "status", name, "-o", output)
        assert shown.returncode == 0, shown.stderr
        summary = load(shown.stdout)
        assert summary["owner"] == owner and summary["plan"] == "Plus"
        (contract,) = [lic for lic in summary["licenses"] if lic["name"] == "contract"]
        assert expected.items() <= contract.items()

    screen = orgkeeper(cluster, "status", name).stdout.splitlines()
    header = screen.index("Licenses:") + 1
    assert screen[header].split() == [
        "NAME",
        "PRODUCT",
        "SOURCE",
        "VALID",
        "ACTIVE",
        "EXPIRES",
        "DATA",
        "PLANES",
        "REASON",
    ]
    row = ["contract", "mesh", "SecretRef", "-", "0", valid["reason"]]
    assert screen[header + 1].split() == row
    assert f"  contract: {valid['message']}" in screen


def test_activity_login_is_recorded_on_the_membership_and_the_org(
    admin: Kube, as_user: AsUser, cluster: LocalCluster, unique: str
) -> None:
    name = f"login-{unique}"
    plus_org(admin, as_user, name)
    erin = f"erin@{unique}.test"
    admin.create("memberships", membership("erin", erin, "analytics-viewer"), f"org-{name}")
    wait_members_bound(admin, name, {erin: ["analytics-viewer"]})

    recorded = orgkeeper(cluster, "activity", "login", "--org", name, "--email", erin.title())
    assert recorded.returncode == 0, recorded.stderr
    prefix = f"recorded a login of {erin.title()} to {name} at "
    assert recorded.stdout.startswith(prefix)
    stamp = recorded.stdout.strip().removeprefix(prefix)

    assert admin.get("memberships", "erin", f"org-{name}")["status"]["lastLoginTime"] == stamp
    wait_for(
        "the org to count the login",
        lambda: (
            admin.get("organizations", name)["status"]["activity"].get("lastLoginTime") == stamp
        ),
    )
    # The operator's own status writes keep the recorded login.
    wait_org(admin, name)
    assert admin.get("memberships", "erin", f"org-{name}")["status"]["lastLoginTime"] == stamp


def test_activity_requests_add_up_in_the_current_cycle(
    admin: Kube, as_user: AsUser, cluster: LocalCluster, unique: str
) -> None:
    name = f"busy-{unique}"
    plus_org(admin, as_user, name)
    first = orgkeeper(cluster, "activity", "requests", "--org", name, "--count", "3")
    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout == f"recorded 3 API request(s) for {name}; 3 in the current cycle\n"
    second = orgkeeper(cluster, "activity", "requests", "--org", name, "--count", "4")
    assert second.stdout == f"recorded 4 API request(s) for {name}; 7 in the current cycle\n"
    requests = admin.get("organizations", name)["status"]["activity"]["apiRequests"]
    assert requests["currentCycle"] == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "no-such-org"], "organization no-such-org not found"),
        (["status", "no-such-org", "-o", "json"], "organization no-such-org not found"),
        (
            ["activity", "login", "--org", "no-such-org", "--email", "a@b.test"],
            "organization no-such-org not found",
        ),
        (
            ["activity", "requests", "--org", "no-such-org", "--count", "1"],
            "organization no-such-org not found",
        ),
    ],
    ids=["status", "status-json", "login", "requests"],
)
def test_an_unknown_org_is_one_line_and_exit_code_1(
    cluster: LocalCluster, args: list[str], message: str
) -> None:
    result = orgkeeper(cluster, *args)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"error: {message}\n")


def test_a_login_of_someone_without_a_membership_is_refused(
    admin: Kube, as_user: AsUser, cluster: LocalCluster, unique: str
) -> None:
    name = f"nomember-{unique}"
    owner = plus_org(admin, as_user, name)
    stranger = f"stranger@{unique}.test"
    refused = orgkeeper(cluster, "activity", "login", "--org", name, "--email", stranger)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == f"error: {stranger} has no Membership in organization {name}\n"
    # Positive control: the Owner's login in the same org is recorded.
    assert orgkeeper(cluster, "activity", "login", "--org", name, "--email", owner).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["orgs", "--email", "a@b.test", "-o", "xml"],
            "argument -o/--output: invalid choice: 'xml' (choose from table, json, yaml) "
            "(see `orgkeeper orgs --help`)",
        ),
        (["status"], "the following arguments are required: ORG (see `orgkeeper status --help`)"),
        (
            ["activity", "requests", "--org", "x", "--count", "0"],
            "argument --count: '0' is not a positive whole number "
            "(see `orgkeeper activity requests --help`)",
        ),
        (
            ["activity", "login", "--org", "x"],
            "the following arguments are required: --email (see `orgkeeper activity login --help`)",
        ),
        (
            ["nope"],
            "argument COMMAND: invalid choice: 'nope' (choose from run, crds, orgs, status, "
            "activity) (see `orgkeeper --help`)",
        ),
    ],
    ids=["bad-output", "status-no-org", "zero-count", "login-no-email", "nope"],
)
def test_bad_flags_are_one_line_and_exit_code_2(
    cluster: LocalCluster, args: list[str], message: str
) -> None:
    result = orgkeeper(cluster, *args)
    assert (result.returncode, result.stdout) == (2, "")
    # Python 3.12 stopped quoting argparse's choices; the rest of the line is the same.
    assert result.stderr.replace("'", "") == f"error: {message}\n".replace("'", "")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


ADMIN_FILES = {"client-certificate": "admin.crt", "client-key": "admin.key"}


@pytest.mark.parametrize(
    "commands",
    [["orgs", "--email", "a@b.test"], ["status", "x"], ["activity", "login", "--org", "x"]],
    ids=["orgs", "status", "login"],
)
def test_no_cluster_is_one_line_and_exit_code_1(
    cluster: LocalCluster, tmp_path: Path, commands: list[str]
) -> None:
    if commands[0] == "activity":
        commands = [*commands, "--email", "a@b.test"]
    missing = tmp_path / "missing"
    nothing = orgkeeper(cluster, *commands, kubeconfig=missing)
    assert (nothing.returncode, nothing.stdout) == (1, "")
    assert nothing.stderr == f"error: no kubeconfig with a context at {missing}; set KUBECONFIG\n"

    server = f"https://127.0.0.1:{_closed_port()}"
    files = {k: str(cluster.pki / v) for k, v in ADMIN_FILES.items()}
    down = _kubeconfig(tmp_path / "down", {"server": server}, files)
    refused = orgkeeper(cluster, *commands, kubeconfig=down)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == f"error: can't reach the API server at {server}: connection refused\n"


def test_a_server_certificate_from_another_ca_is_refused(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # The client's own certificate is no CA of the server's: verification must fail.
    files = {k: str(cluster.pki / v) for k, v in ADMIN_FILES.items()}
    wrong = _kubeconfig(
        tmp_path / "wrong-ca",
        {"server": cluster.server, "certificate-authority": str(cluster.pki / "admin.crt")},
        files,
    )
    result = orgkeeper(cluster, "orgs", "--email", "a@b.test", kubeconfig=wrong)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: can't reach the API server at {cluster.server}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr


def test_a_refused_request_names_the_status_and_the_server_s_message(
    admin: Kube, cluster: LocalCluster, tmp_path: Path, unique: str
) -> None:
    token = service_account_token(admin, identity.NAMESPACE, f"nobody-{unique}")
    ca = {"server": cluster.server, "certificate-authority": str(cluster.pki / "ca.crt")}
    nobody = _kubeconfig(tmp_path / "nobody", ca, {"token": token})
    # Support's look-up by e-mail lists Memberships cluster-wide, which no one else may.
    result = orgkeeper(cluster, "orgs", "--email", "a@b.test", kubeconfig=nobody)
    user = f"system:serviceaccount:{identity.NAMESPACE}:nobody-{unique}"
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "error: the API server refused (403): memberships.orgkeeper.dev is forbidden: User "
        f'"{user}" cannot list resource "memberships" in API group "orgkeeper.dev" at the '
        "cluster scope\n"
    )


def _pem(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.mark.parametrize(
    "credentials",
    ["files", "inline-data", "insecure-skip-tls-verify", "token", "token-file", "exec"],
)
def test_every_kind_of_kubeconfig_credentials_reaches_the_cluster(
    admin: Kube,
    as_user: AsUser,
    cluster: LocalCluster,
    operator_identity: ServiceAccountIdentity,
    tmp_path: Path,
    credentials: str,
    unique: str,
) -> None:
    name = f"creds-{unique}"
    owner = plus_org(admin, as_user, name)
    pki = cluster.pki
    ca_file = {"server": cluster.server, "certificate-authority": str(pki / "ca.crt")}
    # The operator's ServiceAccount may list organizations and memberships everywhere.
    operator_user = yaml.safe_load(operator_identity.kubeconfig.read_text())["users"][0]["user"]
    token = str(operator_user["token"])
    # Relative file names are relative to the kubeconfig.
    for stem in ("ca.crt", "admin.crt", "admin.key"):
        shutil.copy(pki / stem, tmp_path / stem)
    (tmp_path / "token").write_text(token + "\n")
    plugin = tmp_path / "plugin"
    credential = {"kind": "ExecCredential", "status": {"token": token}}
    plugin.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(credential)}\nEOF\n")
    plugin.chmod(0o700)
    variants: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "files": (
            {"server": cluster.server, "certificate-authority": "ca.crt"},
            {"client-certificate": "admin.crt", "client-key": "admin.key"},
        ),
        "inline-data": (
            {"server": cluster.server, "certificate-authority-data": _pem(pki / "ca.crt")},
            {
                "client-certificate-data": _pem(pki / "admin.crt"),
                "client-key-data": _pem(pki / "admin.key"),
            },
        ),
        "insecure-skip-tls-verify": (
            {"server": cluster.server, "insecure-skip-tls-verify": True},
            {"token": token},
        ),
        "token": (ca_file, {"token": token}),
        "token-file": (ca_file, {"tokenFile": "token"}),
        "exec": (
            ca_file,
            {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)}},
        ),
    }
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", *variants[credentials])
    listed = orgkeeper(cluster, "orgs", "--email", owner, "-o", "json", kubeconfig=kubeconfig)
    assert listed.returncode == 0, listed.stderr
    assert [row["organization"] for row in json.loads(listed.stdout)] == [name]


def test_crds_check_passes_on_the_committed_crds_and_names_a_drifted_file(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    fine = orgkeeper(cluster, "crds", "--check", cwd=REPO)  # ./crds by default
    assert (fine.returncode, fine.stderr) == (0, "")
    assert fine.stdout == "CRDs in crds match the API models\n"

    drifted = tmp_path / "crds"
    shutil.copytree(REPO / "crds", drifted)
    (stale,) = [p for p in drifted.iterdir() if "licenses" in p.name]
    stale.write_text(stale.read_text().replace("shortNames", "shortnames"))
    refused = orgkeeper(cluster, "crds", "--check", "--dir", str(drifted))
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"CRDs in {drifted} differ from the API models: {stale.name}; "
        "run `orgkeeper crds` and commit the result\n"
    )
