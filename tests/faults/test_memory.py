"""The operator's memory: flat under churn, untouched by what strangers create, and what an org
and a Membership cost. Resident memory is measured at rest (tests/faults/memory.py).

- Soak: a stationary population of orgs churned (one created with members and workloads, members
  changed, the oldest deleted) for ORGKEEPER_FAULT_SOAK_SECONDS (`make faults`: an hour; `make
  test`: a couple of minutes). Memory at rest must stay within 8 MiB of its warm trough; over a
  run of 20 minutes or more, its least-squares slope must stay under 5 MiB an hour (over two
  minutes the slope is below what the measurement resolves, so the bounded run checks the band).
  The operator's thread pools are started whole (orgkeeper/memory.py, `full_pool`): started
  lazily, they grew a thread at each new height of burst for hours, part of the creep this
  checks; so was cyclic garbage left in CPython's oldest generation for minutes, now collected
  at each trim (`collect_and_trim`). README, Footprint, gives the figures. With MEMPROBE_DIR
  set (hack/memprobe), each rest sample is written to rest.txt and followed by a probe.
- Strangers: 2,000 unlabelled Deployments and 60 RoleBindings of 2,000 subjects each in a
  namespace admin's own namespace (the review's H2 and M1 c) move the operator by under 16 MiB.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from orgkeeper import names
from support.kube import AsUser, Kube, wait_for
from support.orgs import membership, new_org, unique_suffix, wait_members_bound, wait_org
from support.workloads import create, workload

from .memory import (
    SOAK_SECONDS,
    STRANGER_BINDINGS,
    STRANGER_DEPLOYMENTS,
    RestSamples,
    probe,
    rest_rss_mib,
)
from .operators import Operators
from .report import TALLY, once
from .scenarios import OWNER_TEAM, create_namespace
from .state import delete_and_wait_gone

SOAK = "memory at rest under churn"
STRANGERS = "a stranger's Deployments and fat RoleBindings"
POPULATION = 4  # orgs alive at once
MEMBERS = 8  # per org
BAND_MIB = 8.0
SLOPE_MIB_PER_HOUR = 5.0
SLOPE_CHECKED_FROM = 1200.0  # seconds of soak
STRANGER_BOUND_MIB = 16.0
RBAC = "rbac.authorization.k8s.io"


@pytest.fixture(scope="module", autouse=True)
def _no_periodic_check(operators: Operators) -> Iterator[None]:
    """The suite's operator with its periodic check 10 minutes away while these tests run (the
    suite's 2 s reconciles every org every 2 s: CPU, and garbage in the rest windows); what
    they wait for comes from events. The suite's settings again after them."""
    operators.replace(check_interval="10m")
    yield
    operators.replace()


def _quiet(body: dict[str, Any]) -> dict[str, Any]:
    body["spec"]["replicas"] = 0  # no Pods to make: the control plane has no nodes
    return body


def _org_lifecycle_start(admin: Kube, as_user: AsUser, org: str) -> int:
    """Creates an org with members and workloads, and changes some: API writes made."""
    owner = f"owner@{org}.test"
    namespace = names.org_namespace(org)
    new_org(as_user, org, owner)
    wait_org(admin, org, timeout=60)
    emails = {f"m{i}@{org}.test": ["analytics-viewer"] for i in range(MEMBERS)}
    for i, email in enumerate(emails):
        admin.create("memberships", membership(f"m{i}", email, "analytics-viewer"), namespace)
    create(admin, namespace, _quiet(workload("Deployment", "cp", org, "control-plane")))
    create(admin, namespace, _quiet(workload("Deployment", "dp", org, "data-plane", "mesh")))
    wait_members_bound(admin, org, {owner: [OWNER_TEAM], **emails}, timeout=60)
    admin.patch("memberships", "m0", {"spec": {"teams": ["portal-admin"]}}, namespace)
    admin.delete("memberships", "m1", namespace)
    admin.patch("organizations", org, {"spec": {"displayName": f"{org} renamed"}})
    del emails[f"m1@{org}.test"]
    emails[f"m0@{org}.test"] = ["portal-admin"]
    wait_members_bound(admin, org, {owner: [OWNER_TEAM], **emails}, timeout=60)
    return MEMBERS + 6


@pytest.mark.timeout(SOAK_SECONDS + 900)
def test_memory_at_rest_stays_flat_under_churn(
    fault_admin: Kube, as_user: AsUser, operators: Operators
) -> None:
    admin = fault_admin
    alive: deque[str] = deque()
    samples = RestSamples()
    writes = cycles = 0
    burst = max(10.0, SOAK_SECONDS / 20)  # churn this long between two rest samples

    def cycle() -> None:
        nonlocal writes, cycles
        org = f"soak-{unique_suffix()}"
        writes += _org_lifecycle_start(admin, as_user, org)
        alive.append(org)
        while len(alive) > POPULATION:
            delete_and_wait_gone(admin, alive.popleft())
            writes += 1
        cycles += 1

    with once(SOAK):
        for _ in range(POPULATION + 1):  # warm-up: the population, then one turn of it
            cycle()
        started = time.monotonic()
        while time.monotonic() - started < SOAK_SECONDS or len(samples.points) < 2:
            until = time.monotonic() + burst
            cycle()
            while time.monotonic() < until:
                cycle()
            samples.add(time.monotonic() - started, rest_rss_mib(operators.pid))
            probe(operators.pid, *samples.points[-1])
        elapsed = time.monotonic() - started
        slope_checked = elapsed >= SLOPE_CHECKED_FROM
        TALLY.note(
            SOAK,
            f"{elapsed / 60:.1f} min, {cycles} org lifecycles, about {writes} writes, "
            f"{len(samples.points)} rest samples: trough {samples.trough():.1f} MiB, "
            f"highest +{samples.above_trough():.1f} MiB (bound {BAND_MIB:.0f}), slope "
            f"{samples.slope_per_hour():+.1f} MiB/h "
            + (
                f"(bound {SLOPE_MIB_PER_HOUR:.0f})"
                if slope_checked
                else f"(not checked: under {SLOPE_CHECKED_FROM / 60:.0f} min)"
            ),
        )
        assert operators.alive()
        assert samples.above_trough() <= BAND_MIB, samples.points
        if slope_checked:
            assert samples.slope_per_hour() < SLOPE_MIB_PER_HOUR, samples.points
    for org in alive:
        delete_and_wait_gone(admin, org)


def _namespace_admin(admin: Kube, namespace: str, user: str) -> None:
    admin.rbac.create_namespaced_role_binding(namespace, _binding("ns-admin", "admin", [user], {}))


def _binding(name: str, role: str, users: list[str], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": user} for user in users],
    }


def _plain_deployment(name: str) -> dict[str, Any]:
    body = _quiet(workload("Deployment", name, "none", "data-plane"))
    body["metadata"]["labels"] = {"app": name}
    return body


@pytest.mark.timeout(1200)
def test_a_strangers_objects_do_not_reach_the_operators_memory(
    fault_admin: Kube, as_user: AsUser, operators: Operators
) -> None:
    admin = fault_admin
    mallory = f"mallory@evil-{unique_suffix()}.test"
    theirs = create_namespace(admin, f"mallory-{unique_suffix()}")
    _namespace_admin(admin, theirs, mallory)
    attacker = as_user(mallory)
    wait_for(
        "the namespace admin's rights",
        lambda: attacker.apps.list_namespaced_deployment(theirs) is not None,
    )
    subjects = [f"u{i:05d}-" + "x" * 200 + "@e.example" for i in range(2000)]
    forged = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_MEMBERSHIP: "x"}
    with once(STRANGERS):
        before = rest_rss_mib(operators.pid)
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda i: attacker.apps.create_namespaced_deployment(
                        theirs, _plain_deployment(f"d{i:05d}")
                    ),
                    range(STRANGER_DEPLOYMENTS),
                )
            )
        refused = 0
        for i in range(STRANGER_BINDINGS):
            try:
                attacker.rbac.create_namespaced_role_binding(
                    theirs, _binding(f"forged-{i}", "view", subjects, forged)
                )
            except ApiException as error:
                refused += error.status in (403, 422)
            # The same without orgkeeper's labels: admitted, and never selected for it.
            attacker.rbac.create_namespaced_role_binding(
                theirs, _binding(f"fat-{i}", "view", subjects, {})
            )
        created = time.monotonic() - started
        after = rest_rss_mib(operators.pid)
        moved = after - before
        TALLY.note(
            STRANGERS,
            f"{STRANGER_DEPLOYMENTS} Deployments and {STRANGER_BINDINGS} unlabelled RoleBindings "
            f"of 2,000 subjects created in {created:.0f}s, {refused} of {STRANGER_BINDINGS} "
            f"labelled ones refused; operator at rest {before:.1f} -> {after:.1f} MiB "
            f"({moved:+.1f})",
        )
        assert refused == STRANGER_BINDINGS
        assert moved < STRANGER_BOUND_MIB, (before, after)
        assert operators.alive()
    admin.core.delete_namespace(theirs)


@pytest.mark.timeout(900)
def test_what_an_org_and_a_membership_cost(
    fault_admin: Kube, as_user: AsUser, operators: Operators
) -> None:
    """Not a limit: the figures the README gives (resident memory at rest, per org and per
    Membership), measured on the fault suite's operator."""
    admin = fault_admin
    orgs = [f"cost-{unique_suffix()}" for _ in range(10)]
    members = 50
    with once("memory per org and per Membership"):
        empty = rest_rss_mib(operators.pid)
        for org in orgs:
            new_org(as_user, org, f"owner@{org}.test")
        for org in orgs:
            wait_org(admin, org, timeout=60)
        with_orgs = rest_rss_mib(operators.pid)

        def add(org: str) -> None:
            for i in range(members):
                admin.create(
                    "memberships",
                    membership(f"m{i}", f"m{i}@{org}.test", "analytics-viewer"),
                    names.org_namespace(org),
                )

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(add, orgs))
        for org in orgs:
            wanted = {f"m{i}@{org}.test": ["analytics-viewer"] for i in range(members)}
            wait_members_bound(admin, org, wanted, timeout=120)
        with_members = rest_rss_mib(operators.pid)
        per_org = (with_orgs - empty) * 1024 / len(orgs)
        per_member = (with_members - with_orgs) * 1024 / (members * len(orgs))
        TALLY.note(
            "memory per org and per Membership",
            f"{len(orgs)} orgs: {empty:.1f} -> {with_orgs:.1f} MiB ({per_org:.0f} KiB per org, "
            f"its namespace, Owner, RBAC and 3 Licenses); {members * len(orgs)} Memberships: "
            f"-> {with_members:.1f} MiB ({per_member:.1f} KiB per Membership and its binding)",
        )
        assert operators.alive()
    for org in orgs:
        delete_and_wait_gone(admin, org)
