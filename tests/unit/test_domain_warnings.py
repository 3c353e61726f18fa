"""What a reconcile tells of what went wrong: each trouble once while it lasts, again if it
comes back; and the status of a spec the policy can't act on."""

from __future__ import annotations

from datetime import UTC, datetime

from orgkeeper.domain.conditions import find
from orgkeeper.domain.organization.warnings import (
    failed_write,
    ignored_workload,
    invalid_spec,
    tell_once,
)

REF = {"kind": "Deployment", "namespace": "edge", "name": "gw"}
NOW = datetime(2026, 12, 7, tzinfo=UTC)


def test_a_trouble_is_told_once_while_it_lasts_and_again_when_it_comes_back() -> None:
    ignored = ignored_workload("uid-gw", "namespace edge does not belong to acme", REF)
    events, told = tell_once(frozenset(), [ignored])
    assert [(e.reason, e.involved) for e in events] == [("NamespaceNotOwned", REF)]
    again, still = tell_once(told, [ignored])
    assert again == [] and still == told
    _, forgotten = tell_once(still, [])
    assert forgotten == frozenset()
    back, _ = tell_once(forgotten, [ignored])
    assert [e.reason for e in back] == ["NamespaceNotOwned"]


def test_a_failed_write_is_told_on_each_object_it_was_for_else_on_the_org() -> None:
    other = {"kind": "Deployment", "namespace": "edge", "name": "gw-2"}
    on_both = failed_write(
        "acme", "Secret edge/x", "Forbidden", "Secret edge/x (Forbidden)", [REF, other]
    )
    on_org = failed_write("acme", "namespace org-acme", "Invalid", "namespace (Invalid)", [])
    events, _ = tell_once(frozenset(), [on_both, on_org])
    assert [(e.reason, e.involved) for e in events] == [
        ("ApplyFailed", REF),
        ("ApplyFailed", other),
        ("ApplyFailed", None),
    ]
    assert events[0].message == "orgkeeper could not apply acme's policy: Secret edge/x (Forbidden)"


def test_a_secret_in_the_way_keeps_its_reason_and_one_failure_is_told_once() -> None:
    conflict = failed_write("acme", "Secret edge/x", "SecretConflict", "in the way", [REF])
    events, told = tell_once(frozenset(), [conflict, conflict])
    assert [e.reason for e in events] == ["SecretConflict"] and len(told) == 1


def test_an_invalid_spec_names_each_field_and_what_to_do() -> None:
    found, event = invalid_spec(
        [(("plan",), "Input should be 'Free' or 'Plus'"), (("owner",), "not an e-mail")],
        [],
        generation=3,
        now=NOW,
    )
    ready = find(found, "Ready")
    assert ready is not None and ready.status == "False" and ready.reason == "InvalidSpec"
    assert ready.observed_generation == 3
    assert ready.message == (
        "the spec can't be reconciled (spec.plan: Input should be 'Free' or 'Plus'; "
        "spec.owner: not an e-mail); correct it and apply again"
    )
    assert (event.type, event.reason, event.message) == ("Warning", "InvalidSpec", ready.message)
