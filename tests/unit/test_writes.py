"""Writing only what differs (merge-patch semantics), a bounded number at a time."""

import asyncio
import json

from kubernetes.client.rest import ApiException

from orgkeeper.controllers.writes import Failure, Target, attempt, bounded, differs


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


def test_bounded_runs_every_call_at_most_limit_at_a_time() -> None:
    running, most, done = 0, 0, []

    async def call(index: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.001)
        running -= 1
        done.append(index)

    asyncio.run(bounded([call(i) for i in range(50)], limit=4))
    assert most == 4
    assert sorted(done) == list(range(50))


def test_bounded_finishes_every_call_and_returns_each_error() -> None:
    done: list[int] = []

    async def call(index: int) -> None:
        await asyncio.sleep(0)
        if index in (3, 7):
            raise ValueError(f"call {index} failed")
        done.append(index)

    errors = asyncio.run(bounded([call(i) for i in range(10)], limit=2))
    assert sorted(done) == [0, 1, 2, 4, 5, 6, 8, 9]
    assert [str(e) if e else None for e in errors] == [
        None if i not in (3, 7) else f"call {i} failed" for i in range(10)
    ]


def test_attempt_reports_each_failing_target_shortly_and_runs_the_rest() -> None:
    body = json.dumps({"kind": "Status", "message": "metadata.annotations: Too long"})
    refused = ApiException(status=422, reason="Unprocessable Entity")
    refused.body = body
    refused.headers = {"Audit-Id": "secret-header-value"}
    done: list[str] = []

    async def ok(name: str) -> None:
        done.append(name)

    async def fails() -> None:
        raise refused

    failures: list[Failure] = []
    worked = asyncio.run(
        attempt(
            [
                (Target("Deployment a/one"), ok("one")),
                (Target("Deployment b/fat"), fails()),
                (Target("Deployment c/two"), ok("two")),
            ],
            failures,
        )
    )
    assert worked == [True, False, True]
    assert sorted(done) == ["one", "two"]
    (failure,) = failures
    assert failure.describe() == "Deployment b/fat (Invalid: metadata.annotations: Too long)"
    assert "secret-header-value" not in failure.describe()
