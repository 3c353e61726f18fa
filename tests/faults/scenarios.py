"""Building the orgs the fault scenarios act on, and what "converged" means for them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from orgkeeper import names
from orgkeeper.api.v1alpha1 import TEAMS
from support.kube import AsUser, Kube, timed_wait_for
from support.orgs import membership, new_org
from support.workloads import create, workload

from .state import Plane, Snapshot, snapshot

OWNER_TEAM = "organization-admin"


def create_namespace(admin: Kube, name: str, org: str | None = None) -> str:
    """A namespace; with `org`, given to that org (labelled orgkeeper.dev/organization)."""
    labels = {names.LABEL_ORGANIZATION: org} if org else None
    admin.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    return name


def data_plane(admin: Kube, org: str, edge: str, product: str = "mesh") -> Plane:
    """A data-plane Deployment of `org` in the namespace `edge` (created too, given to `org`)."""
    create_namespace(admin, edge, org)
    create(admin, edge, workload("Deployment", "gateway", org, "data-plane", product))
    return Plane("Deployment", edge, "gateway", product)


def control_plane(admin: Kube, org: str) -> Plane:
    namespace = names.org_namespace(org)
    create(admin, namespace, workload("Deployment", "control", org, "control-plane"))
    return Plane("Deployment", namespace, "control")


def member_teams(index: int) -> list[str]:
    """A spread of team sets: every team, some members in two."""
    teams: list[str] = [TEAMS[index % len(TEAMS)]]
    if index % 3 == 0:
        teams.append(TEAMS[(index + 2) % len(TEAMS)])
    return teams


def add_members(admin: Kube, org: str, count: int, start: int = 0) -> dict[str, list[str]]:
    """`count` Memberships created concurrently by the admin; e-mail -> teams."""
    namespace = names.org_namespace(org)
    wanted = {f"member-{i}@{org}.test": member_teams(i) for i in range(start, start + count)}

    def one(item: tuple[str, list[str]]) -> None:
        email, teams = item
        name = email.split("@")[0]
        admin.create("memberships", membership(name, email, *teams), namespace)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, wanted.items()))
    return wanted


def wait_until(
    what: str, probe: Callable[[], list[str]], timeout: float, interval: float = 0.25
) -> float:
    """Polls a check that returns its problems until it has none; the seconds it took."""
    problems = ["not checked yet"]

    def solved() -> bool:
        nonlocal problems
        problems = probe()
        return not problems

    return timed_wait_for(
        what,
        solved,
        timeout=timeout,
        interval=interval,
        details=lambda: "; ".join(problems[:8]),
    )


# --- what the policy says the state must be -----------------------------------------------


def _ready(snap: Snapshot, type_: str = "Ready", reason: str | None = None) -> list[str]:
    found = snap["organization"]["conditions"].get(type_)
    if not found or found[0] != "True" or not found[2] or (reason and found[1] != reason):
        return [f"organization {type_} is {found}"]
    return []


def expected_bindings(members: dict[str, Any], owner: str) -> dict[str, tuple[str, list[str]]]:
    """Binding name -> (ClusterRole, users) for the teams every Membership holds."""
    wanted: dict[str, tuple[str, list[str]]] = {}
    for found in members.values():
        teams = set(found["teams"]) | ({OWNER_TEAM} if found["email"] == owner else set())
        for team in teams:
            binding = names.member_binding(found["email"], team)
            wanted[binding] = (names.team_cluster_role(team), users_of(found["email"]))
    return wanted


def users_of(email: str) -> list[str]:
    """The users an ordinary org binds for an e-mail, sorted (README "SSO")."""
    return sorted([email.lower(), f"oidc:{email.lower()}"])


def active_problems(snap: Snapshot, *, expected_members: int | None = None) -> list[str]:
    """Active and bound exactly as the Memberships say; the Owner alone on the org's RBAC."""
    if snap.get("organization") is None:
        return ["no organization"]
    org, members = snap["organization"], snap["memberships"]
    owner = org["owner"]
    problems = _ready(snap)
    if org["phase"] != "Active":
        problems.append(f"phase {org['phase']}")
    if expected_members is not None and len(members) != expected_members:
        problems.append(f"{len(members)} memberships, expected {expected_members}")
    for name, found in members.items():
        teams = sorted(set(found["teams"]) | ({OWNER_TEAM} if found["email"] == owner else set()))
        if found["state"] != "Active" or found["effectiveTeams"] != teams:
            problems.append(f"membership {name}: {found['state']} {found['effectiveTeams']}")
        if not found["ready"] or not found["ready"][2]:
            problems.append(f"membership {name}: Ready {found['ready']}")
    bindings = {
        name: (found["role"], found["users"]) for name, found in snap["roleBindings"].items()
    }
    wanted = expected_bindings(members, owner)
    if bindings != wanted:
        missing, extra = wanted.keys() - bindings.keys(), bindings.keys() - wanted.keys()
        problems.append(f"bindings: {len(missing)} missing, {len(extra)} left over")
    if owner is None or snap["ownerBinding"] != users_of(owner):
        problems.append(f"owner binding {snap['ownerBinding']}")
    if snap["ownerRole"] != ["delete", "get", "patch", "update"]:
        problems.append(f"owner role grants {snap['ownerRole']}")
    return problems


def deactivated_problems(snap: Snapshot) -> list[str]:
    if snap.get("organization") is None:
        return ["no organization"]
    org = snap["organization"]
    problems = _ready(snap, "Deactivated", "Requested")
    if org["phase"] != "Deactivated" or org["billing"] != "Stopped" or org["subscriptions"]:
        problems.append(f"phase {org['phase']}, billing {org['billing']} {org['subscriptions']}")
    if snap["roleBindings"]:
        problems.append(f"{len(snap['roleBindings'])} member bindings left")
    if snap["ownerBinding"] is not None and snap["ownerRole"] != ["get"]:
        problems.append(f"the Owner's role still grants {snap['ownerRole']}, not only get")
    removed = [m for m in snap["memberships"].values() if m["state"] != "Removed"]
    if removed:
        problems.append(f"{len(removed)} memberships not Removed")
    return problems


def licenses_problems(snap: Snapshot) -> list[str]:
    """One Ready, signed, consistent License per product; every data plane holds the active one."""
    if snap.get("organization") is None:
        return ["no organization"]
    problems = []
    for name, found in snap["licenses"].items():
        if (
            found["conditions"].get("Ready", [None])[0] != "True"
            or not found["secretMatchesStatus"]
        ):
            problems.append(f"license {name}: {found}")
    for name, found in snap["workloads"].items():
        delivered = found["copy"] == "active" and found["fingerprintAnnotated"]
        if found["exists"] and found["frozen"] is None and not delivered:
            problems.append(f"workload {name}: {found}")
    return problems


def provisioned_problems(snap: Snapshot, products: Sequence[str]) -> list[str]:
    problems = active_problems(snap) + licenses_problems(snap)
    if snap.get("organization") and sorted(
        found["product"] for found in snap["licenses"].values()
    ) != sorted(products):
        problems.append(f"licenses {sorted(snap['licenses'])}")
    return problems


@dataclass(frozen=True)
class BigOrg:
    """An org of many Memberships with a data plane and a control plane (the kill trials')."""

    admin: Kube
    name: str
    edge: str
    members: int
    data_plane: Plane
    control_plane: Plane

    def read(self) -> Snapshot:
        return snapshot(self.admin, self.name, [self.data_plane, self.control_plane])

    def bound(self) -> list[str]:
        """What keeps it from being converged and Active, its control plane counted."""
        found = self.read()
        problems = active_problems(found, expected_members=self.members + 1)
        if found["organization"] and found["organization"]["counts"][2] != 1:
            problems.append(f"control planes counted: {found['organization']['counts']}")
        return problems

    def deactivated(self) -> list[str]:
        """What keeps it from being deactivated and settled: its control plane, deleted by the
        deactivation, still counted (the status that says Deactivated is written before the
        deletion is seen; the deletion's own reconcile counts it out)."""
        found = self.read()
        problems = deactivated_problems(found)
        if found["organization"] and found["organization"]["counts"][2] != 0:
            problems.append(f"control planes counted: {found['organization']['counts']}")
        return problems

    def switch(self, state: str) -> float:
        """Requests a deactivation or reactivation; when it was asked (time.monotonic())."""
        self.admin.patch("organizations", self.name, {"spec": {"state": state}})
        return time.monotonic()


def big_org(
    admin: Kube, as_user: AsUser, org: str, members: int, products: Sequence[str], timeout: float
) -> BigOrg:
    """Signs up `org`, provisions it, adds `members` and both planes, and waits until bound."""
    owner, edge = f"owner@{org}.test", f"edge-{org}"
    new_org(as_user, org, owner)
    dp = data_plane(admin, org, edge)
    wait_until(
        "the org provisioned",
        lambda: provisioned_problems(snapshot(admin, org, [dp]), products),
        timeout=60,
    )
    add_members(admin, org, members)
    big = BigOrg(admin, org, edge, members, dp, control_plane(admin, org))
    wait_until(f"{members} members bound", big.bound, timeout=timeout)
    return big
