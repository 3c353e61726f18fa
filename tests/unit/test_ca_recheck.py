"""`serve` mode's CA keeper looks again soon for a webhook configuration that is missing (applied
after the operator started), backing off to its interval; one that exists waits the interval."""

from __future__ import annotations

from orgkeeper.webhook_server import MISSING_FIRST_RECHECK_SECONDS, next_ca_check


def test_a_missing_configuration_is_looked_for_soon_then_less_often() -> None:
    waits, soon = [], MISSING_FIRST_RECHECK_SECONDS
    for _ in range(8):
        wait, soon = next_ca_check(60.0, soon, missing=True)
        waits.append(wait)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


def test_present_configurations_wait_the_interval_and_reset_the_backoff() -> None:
    assert next_ca_check(60.0, 32.0, missing=False) == (60.0, MISSING_FIRST_RECHECK_SECONDS)
    assert next_ca_check(2.0, 1.0, missing=True) == (1.0, 2.0)
