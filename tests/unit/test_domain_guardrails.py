"""The quota rules in the domain (domain/guardrails.py), without a client: quantities read as
the API server writes them, and when a quota counts, waits, or is made anew."""

from __future__ import annotations

from datetime import timedelta

import pytest
from kubernetes.utils.quantity import parse_quantity

from orgkeeper.domain.guardrails import (
    MEMBERSHIP_COUNT,
    QUOTA_COUNT_GRACE,
    Guardrails,
    QuotaSeen,
    quantity,
    same_quantities,
)

RULES = Guardrails("restricted", 10000)
HARD = RULES.hard()


@pytest.mark.parametrize(
    "text", ["10000", "10k", "1Ki", "2Mi", "1e3", "1E3", "500m", "1.5", ".5k", "3E", "7", "+4"]
)
def test_a_quantity_reads_as_the_official_client_reads_it(text: str) -> None:
    assert quantity(text) == parse_quantity(text)


@pytest.mark.parametrize("text", ["", "k", "10 k", "10kk", "1e", "ten"])
def test_what_is_no_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        quantity(text)


def test_the_canonical_form_is_the_same_limit() -> None:
    assert same_quantities({MEMBERSHIP_COUNT: "10k"}, HARD)
    assert not same_quantities({MEMBERSHIP_COUNT: "10k", "pods": "1"}, HARD)
    assert not same_quantities(None, HARD)


def seen(age: float, *, synced: bool = True, used: str | None = None) -> QuotaSeen:
    return QuotaSeen(
        hard={MEMBERSHIP_COUNT: "10k"},
        status_hard={MEMBERSHIP_COUNT: "10k"} if synced else None,
        used={MEMBERSHIP_COUNT: used} if used is not None else None,
        age=timedelta(seconds=age),
    )


def test_an_uncounted_quota_is_made_anew_only_past_the_grace() -> None:
    grace = QUOTA_COUNT_GRACE.total_seconds()
    assert not seen(grace - 1).to_remake(HARD)
    assert seen(grace + 1).to_remake(HARD)
    assert not seen(grace + 1, synced=False).to_remake(HARD), "not synced yet: wait"
    assert not seen(grace + 1, used="0").to_remake(HARD)
    assert seen(1, used="0").counts(HARD) and not seen(1).counts(HARD)


def test_pod_security_differs_only_when_a_label_of_ours_does() -> None:
    assert not RULES.pod_security_differs({**RULES.labels(), "other": "kept"})
    assert RULES.pod_security_differs({**RULES.labels(), next(iter(RULES.labels())): "baseline"})
