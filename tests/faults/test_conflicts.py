"""Conflicts: users writing while the operator writes, racing ownership transfers, and an org
deleted together with one of its Memberships."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from orgkeeper import names
from orgkeeper.api.v1alpha1 import GROUP, TEAMS, VERSION
from support.kube import AsUser, Kube, wait_for
from support.orgs import allowed, membership, new_org, unique_suffix, wait_org, wait_owner_rights

from .report import TALLY, TRIALS, Trials
from .scenarios import active_problems, add_members, wait_until
from .state import Snapshot, snapshot, wait_gone, wait_namespaces_gone

pytestmark = pytest.mark.usefixtures("operators")

EDIT_ROUNDS = 5
EDITED_MEMBERS = 8


def _together(*calls: Callable[[], Any]) -> list[Any]:
    """Runs the calls in threads released at the same instant; each one's result or error."""
    gate = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        gate.wait()
        try:
            results[index] = call()
        except ApiException as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def labels_problems(snap: Snapshot, org: str) -> list[str]:
    """Each Membership carries the two labels the contract names, whatever users wrote."""
    return [
        f"membership {name} labels {found['labels']}"
        for name, found in snap["memberships"].items()
        if found["labels"].get(names.LABEL_ORGANIZATION) != org
        or found["labels"].get(names.LABEL_EMAIL_HASH) != names.email_hash(found["email"])
    ]


def edit_trial(admin: Kube, as_user: AsUser, rng: random.Random) -> int:
    """One trial of concurrent edits; the number of 409s the user saw (and retried)."""
    org = f"edit-{unique_suffix()}"
    owner, namespace = f"owner@{org}.test", names.org_namespace(org)
    new_org(as_user, org, owner)
    wait_org(admin, org)
    wait_owner_rights(admin, org, owner)
    emails = add_members(admin, org, EDITED_MEMBERS)
    wanted: dict[str, list[str]] = {}
    conflicts: dict[str, int] = {}  # per editor thread, so no two threads add to one counter

    def edit(email: str, generator: random.Random) -> None:
        name = email.split("@")[0]
        conflicts[email] = 0
        for _ in range(EDIT_ROUNDS):
            teams: list[str] = sorted(generator.sample(TEAMS, generator.randint(0, 3)))
            while True:
                current = admin.get("memberships", name, namespace)
                current["spec"]["teams"] = teams
                try:
                    admin.custom.replace_namespaced_custom_object(
                        GROUP, VERSION, namespace, "memberships", name, current
                    )
                    break
                except ApiException as error:
                    if error.status != 409:
                        raise
                    conflicts[email] += 1
        wanted[email] = teams

    def rename() -> None:
        for round_ in range(EDIT_ROUNDS * 2):
            as_user(owner).patch(
                "organizations", org, {"spec": {"displayName": f"Renamed {round_}"}}
            )

    editors = [
        threading.Thread(target=edit, args=(email, random.Random(rng.random()))) for email in emails
    ] + [threading.Thread(target=rename)]
    for thread in editors:
        thread.start()
    for thread in editors:
        thread.join()
    assert sorted(wanted) == sorted(emails), "an editor failed"

    def converged() -> list[str]:
        snap = snapshot(admin, org)
        problems = active_problems(snap, expected_members=EDITED_MEMBERS + 1)
        problems += labels_problems(snap, org)
        for found in snap["memberships"].values():
            if found["email"] in wanted and found["teams"] != wanted[found["email"]]:
                problems.append(f"{found['email']}: an edit was lost: {found['teams']}")
        return problems

    wait_until(f"org {org} converged on every edit", converged, timeout=60)
    assert admin.get("organizations", org)["spec"]["displayName"] == (
        f"Renamed {EDIT_ROUNDS * 2 - 1}"
    )
    admin.delete("organizations", org)
    wait_gone(admin, org)
    return sum(conflicts.values())


def test_users_edit_while_the_operator_writes(fault_admin: Kube, as_user: AsUser) -> None:
    """A user edits Memberships as `kubectl edit` does (read, change, replace with the
    resourceVersion read, again on 409) while the operator keeps writing status and labels;
    the Owner renames the org meanwhile. Every edit lands and the operator converges on it."""
    trials, conflicts = Trials(), 0
    for index in range(TRIALS):
        with trials.trial("users edit while the operator writes", index) as rng:
            conflicts += edit_trial(fault_admin, as_user, rng)
    TALLY.note(
        "users edit while the operator writes",
        f"{EDITED_MEMBERS} members x {EDIT_ROUNDS} read-modify-replace edits plus renames; "
        f"{conflicts} edits got 409 and were retried by the user",
    )
    trials.check()


def transfer_trial(admin: Kube, as_user: AsUser, rng: random.Random) -> bool:
    """One race; True if both transfers were admitted (the later one won)."""
    org = f"race-{unique_suffix()}"
    owner, alice, bob = (f"{who}@{org}.test" for who in ("owner", "alice", "bob"))
    namespace = names.org_namespace(org)
    new_org(as_user, org, owner)
    wait_org(admin, org)
    wait_owner_rights(admin, org, owner)
    for name, email in (("alice", alice), ("bob", bob)):
        admin.create("memberships", membership(name, email, "organization-admin"), namespace)
    wait_until(
        "both admins bound",
        lambda: active_problems(snapshot(admin, org), expected_members=3),
        timeout=60,
    )
    # Which client transfers to whom comes from the seeded generator.
    targets = [alice, bob]
    rng.shuffle(targets)
    outcomes = _together(
        lambda: as_user(owner).patch("organizations", org, {"spec": {"owner": targets[0]}}),
        lambda: admin.patch("organizations", org, {"spec": {"owner": targets[1]}}),
    )
    for outcome in outcomes:
        # Both are allowed (each target is an admin), or one is refused for a clear reason.
        if isinstance(outcome, ApiException):
            assert outcome.status in (403, 409), outcome
    winner = admin.get("organizations", org)["spec"]["owner"]
    assert winner in (alice, bob)
    loser = bob if winner == alice else alice

    def one_owner() -> list[str]:
        snap = snapshot(admin, org)
        problems = active_problems(snap, expected_members=3)
        found = snap["organization"]
        valid = found["conditions"].get("OwnerValid", [""])[0] == "True"
        if found["owner"] != winner or not valid:
            problems.append(f"owner {found['owner']}, {found['conditions']}")
        return problems

    wait_until(f"one Owner ({winner}) in {org}", one_owner, timeout=60)
    assert admin.get("organizations", org)["status"]["owner"] == winner
    # The binding moved before the status; the API server's authorizer follows by its watch.
    wait_for(
        f"RBAC to let {winner} alone delete {org}",
        lambda: (
            allowed(admin, winner, "delete", "organizations", name=org)
            and not any(
                allowed(admin, other, "delete", "organizations", name=org)
                for other in (loser, owner)
            )
        ),
    )
    owner_binding = admin.rbac.read_cluster_role_binding(names.owner_role(org))
    assert [s.name for s in owner_binding.subjects] == [winner, f"oidc:{winner}"]
    admin.delete("organizations", org)
    wait_gone(admin, org)
    return not any(isinstance(outcome, ApiException) for outcome in outcomes)


def test_racing_ownership_transfers(fault_admin: Kube, as_user: AsUser) -> None:
    """The Owner and the platform admin transfer ownership at the same instant, to two
    different organization-admins: exactly one Owner results, an admin, with the RBAC to match."""
    trials, both = Trials(), 0
    for index in range(TRIALS):
        with trials.trial("two ownership transfers racing", index) as rng:
            both += transfer_trial(fault_admin, as_user, rng)
    TALLY.note(
        "two ownership transfers racing",
        f"the Owner and an admin patch spec.owner at once; both admitted in {both} of {TRIALS}",
    )
    trials.check()


def deletion_trial(admin: Kube, as_user: AsUser, owners_own: bool) -> str:
    """One trial; how the Membership's deletion was answered."""
    org = f"gone-{unique_suffix()}"
    owner, namespace = f"owner@{org}.test", names.org_namespace(org)
    new_org(as_user, org, owner)
    wait_org(admin, org)
    wait_owner_rights(admin, org, owner)
    add_members(admin, org, 3)
    wait_until(
        "members bound",
        lambda: active_problems(snapshot(admin, org), expected_members=4),
        timeout=60,
    )
    target = names.owner_membership(owner) if owners_own else "member-0"
    deleted_membership, deleted_org = _together(
        lambda: admin.delete("memberships", target, namespace),
        lambda: as_user(owner).delete("organizations", org),
    )
    assert not isinstance(deleted_org, ApiException), deleted_org
    if isinstance(deleted_membership, ApiException):
        # Only the Owner's Membership may be refused, and only by the Owner rule.
        assert owners_own and deleted_membership.status in (403, 404), deleted_membership
    wait_gone(admin, org, timeout=60)
    wait_namespaces_gone(admin, [namespace], timeout=120)
    for read in (admin.rbac.read_cluster_role_binding, admin.rbac.read_cluster_role):
        wait_for(
            f"the Owner's cluster RBAC of {org} to be collected",
            partial(_absent, partial(read, names.owner_role(org))),
            timeout=60,
        )
    if isinstance(deleted_membership, ApiException):
        return f"{'Owner' if owners_own else 'member'}: {deleted_membership.status}"
    return f"{'Owner' if owners_own else 'member'}: deleted"


def test_membership_and_org_deleted_together(fault_admin: Kube, as_user: AsUser) -> None:
    """The Owner deletes the org while an admin deletes a Membership (every other trial, the
    Owner's own): the org and its namespace go, nothing is left behind, no finalizer sticks."""
    trials, answers = Trials(), Counter[str]()
    for index in range(TRIALS):
        with trials.trial("Membership and Organization deleted together", index):
            answers[deletion_trial(fault_admin, as_user, owners_own=index % 2 == 1)] += 1
    TALLY.note(
        "Membership and Organization deleted together",
        "org and namespace gone, Owner RBAC collected; the Membership's deletion: "
        + ", ".join(f"{what} {n}x" for what, n in sorted(answers.items())),
    )
    trials.check()


def _absent(call: Callable[[], Any]) -> bool:
    try:
        call()
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False
