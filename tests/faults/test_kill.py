"""SIGKILL of the operator at seeded random moments; after a restart the state must equal an
uninterrupted run's, object by object.

Each scenario first runs once without a fault (the control): its converged state is checked
against the policy and kept as the expected snapshot, and its duration bounds the window in
which the trials' kill moments are drawn (uniformly, from the trial's seeded generator; that
delay is the fault itself). Every org is deleted at the end and must be gone within a minute.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from functools import partial

from orgkeeper import names
from orgkeeper.api.v1alpha1 import PRODUCTS
from support.kube import AsUser, Kube
from support.orgs import new_org, unique_suffix

from .operators import Operators
from .report import MEMBERS, TALLY, TRIALS, Trials
from .scenarios import (
    active_problems,
    big_org,
    control_plane,
    data_plane,
    licenses_problems,
    provisioned_problems,
    wait_until,
)
from .state import (
    Plane,
    Snapshot,
    delete_and_wait_gone,
    delete_namespaces,
    identity_of,
    normalized,
    snapshot,
    wait_equal,
)

# How long a restarted operator may take to converge, beyond its own start.
RECOVERY_TIMEOUT = 60.0 + MEMBERS / 10


def test_kill_during_provisioning(fault_admin: Kube, as_user: AsUser, operators: Operators) -> None:
    admin, trials = fault_admin, Trials()
    leftovers: list[str] = []
    expected: Snapshot = {}
    undone = 0

    def provision(org: str, kill_after: float | None) -> tuple[list[Plane], float]:
        """The org, created where data planes of each product already wait for licenses."""
        nonlocal undone
        owner = f"owner@{org}.test"
        planes = [
            data_plane(admin, org, f"edge-{org}-{i}", product) for i, product in enumerate(PRODUCTS)
        ]
        leftovers.extend(plane.namespace for plane in planes)
        started = time.monotonic()
        new_org(as_user, org, owner)
        if kill_after is not None:
            time.sleep(kill_after)  # the seeded fault moment
            operators.kill()
            # What the kill left: work undone unless it already equals the converged state.
            undone += read(org, planes) != expected
            operators.start()
        return planes, started

    def read(org: str, planes: list[Plane]) -> Snapshot:
        # The edge namespaces are named after the org, so replacing its name covers them.
        return normalized(snapshot(admin, org, planes), identity_of(org, f"owner@{org}.test"))

    # The control: provisioning without a fault.
    org = f"prov-{unique_suffix()}"
    planes, started = provision(org, None)
    wait_until(
        "the control org provisioned",
        lambda: provisioned_problems(snapshot(admin, org, planes), PRODUCTS),
        timeout=60,
        interval=0.05,
    )
    window = time.monotonic() - started
    TALLY.note(
        "SIGKILL during provisioning",
        f"3 data planes waiting; kill at U(0, {window:.1f}s) after creation, the control's "
        "time to converge",
    )
    expected.update(read(org, planes))
    delete_and_wait_gone(admin, org)

    for index in range(TRIALS):
        with trials.trial("SIGKILL during provisioning", index) as rng:
            org = f"prov-{unique_suffix()}"
            planes, _ = provision(org, rng.uniform(0, window))
            wait_equal(
                f"org {org} after a kill",
                partial(read, org, planes),
                expected,
                timeout=RECOVERY_TIMEOUT,
            )
            delete_and_wait_gone(admin, org)
    TALLY.note("SIGKILL during provisioning", f"{undone} of {TRIALS} kills left work undone")
    delete_namespaces(admin, leftovers)
    trials.check()


def test_kill_during_deactivation_and_reactivation(
    fault_admin: Kube, as_user: AsUser, operators: Operators
) -> None:
    """One big org, deactivated and reactivated again and again; a kill during each."""
    admin, trials = fault_admin, Trials()
    big = big_org(admin, as_user, f"big-{unique_suffix()}", MEMBERS, PRODUCTS, RECOVERY_TIMEOUT)
    org, edge, dp, cp = big.name, big.edge, big.data_plane, big.control_plane
    read, bound, switch = big.read, big.bound, big.switch

    # The control cycle: deactivation, then reactivation, without a fault.
    started = switch("Deactivated")
    wait_until("the control deactivation", big.deactivated, timeout=120)
    deactivation_window = time.monotonic() - started
    expected_deactivated = read()
    started = switch("Active")
    wait_until(
        "the control reactivation",
        lambda: active_problems(read(), expected_members=MEMBERS + 1),
        timeout=120,
    )
    reactivation_window = time.monotonic() - started
    for fault, window in (
        (f"SIGKILL during deactivation ({MEMBERS} members)", deactivation_window),
        (f"SIGKILL during reactivation ({MEMBERS} members)", reactivation_window),
    ):
        TALLY.note(fault, f"kill at U(0, {window:.1f}s) after the change, the control's time")
    expected_active = read()
    assert expected_deactivated["workloads"][f"Deployment/{dp.namespace}/gateway"]["frozen"]
    assert not expected_active["workloads"][f"Deployment/{cp.namespace}/control"]["exists"]

    undone: Counter[str] = Counter()

    def kill_and_restart(expected: Snapshot, fault: str) -> None:
        operators.kill()
        undone[fault] += read() != expected  # the state the kill left, the operator dead
        operators.start()

    deactivation = f"SIGKILL during deactivation ({MEMBERS} members)"
    reactivation = f"SIGKILL during reactivation ({MEMBERS} members)"
    for index in range(TRIALS):
        # Control planes are decommissioned for good: each cycle gets a new one.
        control_plane(admin, org)
        wait_until("the control plane counted", bound, timeout=RECOVERY_TIMEOUT)
        with trials.trial(deactivation, index) as rng:
            switch("Deactivated")
            time.sleep(rng.uniform(0, deactivation_window))  # the seeded fault moment
            kill_and_restart(expected_deactivated, deactivation)
            wait_equal("the deactivated org", read, expected_deactivated, timeout=RECOVERY_TIMEOUT)
        with trials.trial(reactivation, index) as rng:
            switch("Active")
            time.sleep(rng.uniform(0, reactivation_window))  # the seeded fault moment
            kill_and_restart(expected_active, reactivation)
            wait_equal("the reactivated org", read, expected_active, timeout=RECOVERY_TIMEOUT)
    for fault in (deactivation, reactivation):
        TALLY.note(fault, f"{undone[fault]} of {TRIALS} kills left work undone")

    delete_and_wait_gone(admin, org)
    delete_namespaces(admin, [edge])
    trials.check()


def test_kill_during_license_rotation(
    fault_admin: Kube, as_user: AsUser, operators: Operators
) -> None:
    """An operator that rotates provisioned licenses 6 seconds after issuing them."""
    admin, trials = fault_admin, Trials()
    leftovers: list[str] = []
    rotate_after, undone = 6.0, 0
    operators.replace(license_rotate_after=f"{rotate_after:.0f}s")
    try:

        def issued(org: str) -> dict[str, str]:
            return {
                lic["metadata"]["name"]: (lic.get("status") or {}).get("issuedAt", "")
                for lic in admin.list("licenses", names.org_namespace(org))
            }

        def start(org: str) -> tuple[str, Plane, dict[str, str]]:
            owner, edge = f"owner@{org}.test", f"edge-{org}"
            plane = data_plane(admin, org, edge)
            leftovers.append(edge)
            new_org(as_user, org, owner)
            wait_until(
                f"org {org} provisioned",
                lambda: provisioned_problems(snapshot(admin, org, [plane]), PRODUCTS),
                timeout=60,
            )
            return owner, plane, issued(org)

        def rotated(org: str, plane: Plane, first: dict[str, str]) -> list[str]:
            now = issued(org)
            problems = [
                f"{name} not rotated" for name in first if not now.get(name, "") > first[name]
            ]
            return problems + licenses_problems(snapshot(admin, org, [plane]))

        def state(org: str, plane: Plane, replace: Mapping[str, str]) -> Snapshot:
            """The org's snapshot, with the names that differ between its trials replaced."""
            return normalized(snapshot(admin, org, [plane]), replace)

        # The control: one rotation without a fault.
        org = f"rot-{unique_suffix()}"
        owner, plane, first = start(org)
        window = wait_until(
            "the control rotation", lambda: rotated(org, plane, first), timeout=rotate_after + 30
        )
        expected = normalized(
            snapshot(admin, org, [plane]), identity_of(org, owner, plane.namespace)
        )
        delete_and_wait_gone(admin, org)
        TALLY.note(
            "SIGKILL during license rotation",
            f"rotation due {rotate_after:.0f}s after issuing, done {window:.1f}s after "
            f"provisioning in the control; kill at U({window / 2:.1f}s, {window * 1.2:.1f}s)",
        )

        for index in range(TRIALS):
            with trials.trial("SIGKILL during license rotation", index) as rng:
                org = f"rot-{unique_suffix()}"
                owner, plane, first = start(org)
                time.sleep(rng.uniform(window / 2, window * 1.2))  # the seeded fault moment
                operators.kill()
                undone += bool(rotated(org, plane, first))  # not rotated, or half-way
                operators.start()
                wait_until(
                    f"org {org} rotated after a kill",
                    partial(rotated, org, plane, first),
                    timeout=RECOVERY_TIMEOUT,
                )
                replace = identity_of(org, owner, plane.namespace)
                wait_equal(
                    f"org {org} after a kill",
                    partial(state, org, plane, replace),
                    expected,
                    timeout=RECOVERY_TIMEOUT,
                )
                delete_and_wait_gone(admin, org)
        TALLY.note(
            "SIGKILL during license rotation",
            f"{undone} of {TRIALS} kills came before the rotation was done",
        )
    finally:
        operators.replace()
    delete_namespaces(admin, leftovers)
    trials.check()
