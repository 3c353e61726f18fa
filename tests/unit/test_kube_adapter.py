"""The adapter's "already so" answers: 404 on what is gone, 409 on what exists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from orgkeeper.kube import absent_ok, exists_ok


def failing(status: int) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise ApiException(status=status, reason=f"status {status}")

    return call


def answering(*args: Any, **kwargs: Any) -> Any:
    return {"args": args, "kwargs": kwargs}


@pytest.mark.parametrize(
    ("helper", "tolerated"), [(absent_ok, 404), (exists_ok, 409)], ids=["absent_ok", "exists_ok"]
)
def test_each_helper_swallows_its_own_status_and_no_other(
    helper: Callable[..., Any], tolerated: int
) -> None:
    assert helper(answering, "a", 1, field_manager="orgkeeper") == {
        "args": ("a", 1),
        "kwargs": {"field_manager": "orgkeeper"},
    }
    assert helper(failing(tolerated)) is None
    for status in {400, 403, 404, 409, 410, 422, 500} - {tolerated}:
        with pytest.raises(ApiException) as raised:
            helper(failing(status))
        assert raised.value.status == status


@pytest.mark.parametrize("helper", [absent_ok, exists_ok], ids=["absent_ok", "exists_ok"])
def test_errors_other_than_api_statuses_go_on_up(helper: Callable[..., Any]) -> None:
    def unreachable() -> None:
        raise OSError("connection refused")

    with pytest.raises(OSError, match="connection refused"):
        helper(unreachable)
