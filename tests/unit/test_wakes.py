"""What wakes an org (domain/wakes.py): every row of the table, with its cases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orgkeeper.domain import wakes
from orgkeeper.domain.wakes import NOTHING, WAKES, Turn, Wake, poke

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
LOOPING = {"acme"}  # orgs whose loop runs here
CLAIMS = {"edge": "acme"}  # a namespace labelled for acme
COUNTED = {"u-acme": "acme", "u-beta": "beta"}  # the org that counted each workload


def workload(uid: str, namespace: str, org: str | None, deleted: bool = False) -> Any:
    return wakes.workload_event(
        uid, namespace, org, deleted=deleted, counted_by=COUNTED, claims=CLAIMS
    )


# Per rule of the table: (what happens, the call, what it must answer).
CASES: dict[Callable[..., object], list[tuple[str, Callable[[], object], object]]] = {
    wakes.organization_event: [
        ("changed: the org", lambda: wakes.organization_event("acme", deleted=False), poke("acme")),
        (
            "deleted: forgotten, nothing woken",
            lambda: wakes.organization_event("acme", deleted=True),
            Wake(forget=frozenset({"acme"})),
        ),
    ],
    wakes.organization_cached: [
        ("still there: nothing", lambda: wakes.organization_cached("acme", present=True), NOTHING),
        (
            "gone: forgotten, org-acme left Pending",
            lambda: wakes.organization_cached("acme", present=False),
            Wake(forget=frozenset({"acme"}), unserved=frozenset({"org-acme"})),
        ),
    ],
    wakes.tells_region_unserved: [
        (
            "another region's, unreconciled",
            lambda: wakes.tells_region_unserved(True, False, False),
            True,
        ),
        ("reconciled by its region", lambda: wakes.tells_region_unserved(True, True, False), False),
        (
            "of this operator's region",
            lambda: wakes.tells_region_unserved(True, False, True),
            False,
        ),
        (
            "not electing: can't tell",
            lambda: wakes.tells_region_unserved(False, False, False),
            False,
        ),
    ],
    wakes.license_event: [
        ("in org-acme: acme", lambda: wakes.license_event("org-acme"), poke("acme")),
        ("elsewhere: nothing", lambda: wakes.license_event("default"), NOTHING),
        ("cluster-scoped: nothing", lambda: wakes.license_event(None), NOTHING),
    ],
    wakes.member_event: [
        (
            "in org-acme, its loop here",
            lambda: wakes.member_event("org-acme", LOOPING),
            poke("acme"),
        ),
        (
            "in org-beta, no loop here: Pending's",
            lambda: wakes.member_event("org-beta", LOOPING),
            Wake(unserved=frozenset({"org-beta"})),
        ),
        ("outside any org-<name>", lambda: wakes.member_event("default", LOOPING), NOTHING),
    ],
    wakes.namespace_relabelled: [
        ("labelled for acme", lambda: wakes.namespace_relabelled(None, "acme"), poke("acme")),
        (
            "from acme to beta: both",
            lambda: wakes.namespace_relabelled("acme", "beta"),
            poke("acme", "beta"),
        ),
        (
            "label removed: the org it left",
            lambda: wakes.namespace_relabelled("acme", None),
            poke("acme"),
        ),
        ("unlabelled, still: nothing", lambda: wakes.namespace_relabelled(None, None), NOTHING),
    ],
    wakes.workload_event: [
        (
            "labelled in org-acme",
            lambda: workload("new", "org-acme", "acme"),
            (poke("acme"), False),
        ),
        (
            "labelled in a claimed namespace",
            lambda: workload("new", "edge", "acme"),
            (poke("acme"), False),
        ),
        (
            "labelled in a stranger's namespace",
            lambda: workload("new", "default", "acme"),
            (NOTHING, False),
        ),
        ("counted, changed", lambda: workload("u-acme", "org-acme", "acme"), (poke("acme"), False)),
        (
            "counted, deleted",
            lambda: workload("u-acme", "org-acme", "acme", True),
            (poke("acme"), True),
        ),
        (
            "counted, label removed",
            lambda: workload("u-acme", "org-acme", None),
            (poke("acme"), True),
        ),
        (
            "counted, relabelled for beta",
            lambda: workload("u-acme", "org-acme", "beta"),
            (poke("acme"), True),
        ),
        (
            "counted by beta, left from acme's namespace: beta can't own it, nothing",
            lambda: workload("u-beta", "org-acme", None),
            (NOTHING, True),
        ),
    ],
    wakes.earliest: [
        (
            "the soonest moment",
            lambda: wakes.earliest([None, NOW + timedelta(seconds=20), NOW + timedelta(seconds=5)]),
            NOW + timedelta(seconds=5),
        ),
        ("none due", lambda: wakes.earliest([None]), None),
    ],
    wakes.next_wait: [
        ("nothing due: the check", lambda: wakes.next_wait(None, 300.0, NOW), 300.0),
        ("due sooner", lambda: wakes.next_wait(NOW + timedelta(seconds=5), 300.0, NOW), 5.0),
        (
            "due later: the check",
            lambda: wakes.next_wait(NOW + timedelta(hours=1), 300.0, NOW),
            300.0,
        ),
        ("past: at once", lambda: wakes.next_wait(NOW - timedelta(seconds=1), 300.0, NOW), 0.0),
    ],
    wakes.after_turn: [
        (
            "done",
            lambda: wakes.after_turn(failed=False, unfinished=False, backoff=4.0, max_backoff=60),
            Turn(again=False, sleep=0.0, backoff=1.0),
        ),
        (
            "writes left: again at once",
            lambda: wakes.after_turn(failed=False, unfinished=True, backoff=1.0, max_backoff=60),
            Turn(again=True, sleep=0.0, backoff=1.0),
        ),
        (
            "failed: again after the backoff, doubled",
            lambda: wakes.after_turn(failed=True, unfinished=False, backoff=4.0, max_backoff=60),
            Turn(again=True, sleep=4.0, backoff=8.0),
        ),
        (
            "failed again: the backoff stops at its bound",
            lambda: wakes.after_turn(failed=True, unfinished=True, backoff=40.0, max_backoff=60),
            Turn(again=True, sleep=40.0, backoff=60),
        ),
    ],
}


def test_every_row_of_the_table_has_cases_and_every_rule_a_row() -> None:
    assert {row.rule for row in WAKES} == set(CASES)
    for row in WAKES:
        assert row.source and row.event and row.wakes, row


@pytest.mark.parametrize(
    ("rule", "case", "call", "expected"),
    [
        pytest.param(rule, case, call, expected, id=f"{rule.__name__}: {case}")
        for rule, cases in CASES.items()
        for case, call, expected in cases
    ],
)
def test_what_wakes_an_org(
    rule: Callable[..., object], case: str, call: Callable[[], object], expected: object
) -> None:
    assert call() == expected, case
