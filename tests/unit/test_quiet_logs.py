"""Without --verbose the operator logs no line per event or admission review that went right:
at scale those lines cost a sixth of its CPU. Refusals and failures are still logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from orgkeeper.handlers.admission import log_refusals_as_info
from orgkeeper.handlers.startup import quiet_routine_logs


@pytest.fixture
def objects() -> Iterator[logging.Logger]:
    logger = logging.getLogger("kopf.objects")
    access = logging.getLogger("aiohttp.access")
    before = (logger.level, access.level, list(logger.filters))
    log_refusals_as_info()
    yield logger
    logger.setLevel(before[0])
    access.setLevel(before[1])
    logger.filters[:] = before[2]


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    return [(r.name, r.levelno, r.getMessage()) for r in caplog.records]


def test_routine_successes_are_not_logged_refusals_and_failures_are(
    objects: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    quiet_routine_logs(verbose=False)
    with caplog.at_level(logging.DEBUG):
        objects.info("Handler 'organization_changed' succeeded.")
        objects.info("Webhook 'validate-membership' succeeded.")
        logging.getLogger("aiohttp.access").info('127.0.0.1 "POST /validate-membership" 200')
        objects.error("Webhook 'validate-membership' failed permanently: e-mail locked")
        objects.warning("Handler 'organization_deleted' failed temporarily: 409")
    assert logged(caplog) == [
        (
            "kopf.objects",
            logging.INFO,
            "Webhook 'validate-membership' failed permanently: e-mail locked",
        ),
        ("kopf.objects", logging.WARNING, "Handler 'organization_deleted' failed temporarily: 409"),
    ]


def test_verbose_logs_them_all(objects: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    quiet_routine_logs(verbose=True)
    with caplog.at_level(logging.DEBUG):
        objects.info("Handler 'organization_changed' succeeded.")
        logging.getLogger("aiohttp.access").info('127.0.0.1 "POST /validate-membership" 200')
    assert [name for name, _, _ in logged(caplog)] == ["kopf.objects", "aiohttp.access"]
