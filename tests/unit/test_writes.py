"""Writing only what differs: merge-patch semantics of the comparison."""

from orgkeeper.controllers.writes import differs


def test_equal_status_does_not_differ() -> None:
    current = {"phase": "Active", "activity": {"apiRequests": {"currentCycle": 0}}}
    desired = {
        "phase": "Active",
        "activity": {"lastLoginTime": None, "apiRequests": {"currentCycle": 0}},
    }
    assert not differs(desired, current)


def test_a_null_for_an_absent_field_does_not_differ() -> None:
    assert not differs({"deactivation": None}, {"phase": "Active"})


def test_a_null_for_a_present_field_differs() -> None:
    assert differs({"deactivation": None}, {"deactivation": {"reason": "Requested"}})


def test_a_nested_null_for_a_present_field_differs() -> None:
    current = {"activity": {"lastLoginTime": "2026-11-26T08:00:00Z"}}
    assert differs({"activity": {"lastLoginTime": None}}, current)


def test_a_partial_object_merges_without_change() -> None:
    current = {"activity": {"apiRequests": {"currentCycle": 3}, "lastLoginTime": "t"}}
    assert not differs({"activity": {"lastLoginTime": "t"}}, current)
    assert not differs({"activity": {}}, current)
    assert differs({"activity": {"lastLoginTime": "u"}}, current)


def test_a_list_is_replaced_whole() -> None:
    assert differs({"subscriptions": []}, {"subscriptions": [{"name": "x"}]})
    assert not differs(
        {"subscriptions": [{"name": "x", "note": None}]}, {"subscriptions": [{"name": "x"}]}
    )


def test_a_changed_value_differs() -> None:
    assert differs({"phase": "Deactivated"}, {"phase": "Active"})
    assert differs(
        {"conditions": [{"type": "Ready", "status": "False"}]},
        {"conditions": [{"type": "Ready", "status": "True"}]},
    )
