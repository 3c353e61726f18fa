"""Durations of `orgkeeper run` settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orgkeeper.settings import Settings, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("2h", timedelta(hours=2)),
        ("15m", timedelta(minutes=15)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5s", timedelta(seconds=1.5)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        (" 2h\n", timedelta(hours=2)),
    ],
)
def test_parse_duration_reads_units_d_h_m_s(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "   ", "10", "abc", "5x", "h", "2h1d", "1.5h", "-5s", "30 d"],
)
def test_parse_duration_rejects_text_that_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as raised:
        parse_duration(text)
    message = str(raised.value)
    assert repr(text) in message
    assert "30d" in message and "90s" in message, "the error should show valid examples"


@pytest.mark.parametrize("text", ["0s", "0d", "0h0m"])
def test_parse_duration_rejects_zero(text: str) -> None:
    with pytest.raises(ValueError, match="must be longer than zero"):
        parse_duration(text)


def test_settings_defaults_follow_the_api_contract() -> None:
    defaults = Settings()
    assert defaults.inactivity_window == timedelta(days=30)
    assert defaults.billing_cycle == timedelta(days=30)
    assert defaults.license_validity == timedelta(days=365)
    assert defaults.license_rotate_after == timedelta(days=182)
    assert defaults.sso_username_prefix == "oidc:"
    assert defaults.region is None
