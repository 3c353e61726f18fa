"""Operator settings: each a `orgkeeper run` flag and an ORGKEEPER_* environment variable."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> timedelta:
    """'30d', '2h', '90s', '1h30m' -> a positive timedelta; a clear ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(
            f"{text!r} is not a duration; write a number with a unit, such as 30d, 2h, 15m or 90s"
        )
    days, hours, minutes, seconds = match.groups()
    value = timedelta(
        days=int(days or 0),
        hours=int(hours or 0),
        minutes=int(minutes or 0),
        seconds=float(seconds or 0),
    )
    if value <= timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    return value


@dataclass(frozen=True)
class Settings:
    """What `orgkeeper run` was told; handlers read it from kopf's memo."""

    region: str | None = None
    inactivity_window: timedelta = timedelta(days=30)
    billing_cycle: timedelta = timedelta(days=30)
    check_interval: timedelta = timedelta(minutes=5)
    license_validity: timedelta = timedelta(days=365)
    license_rotate_after: timedelta = timedelta(days=182)
    sso_username_prefix: str = "oidc:"
    namespace: str = "orgkeeper-system"
    listen_address: str = "0.0.0.0"
    webhook_mode: str = "managed"
    webhook_port: int = 9443
    webhook_host: str | None = None
    # A directory with tls.crt and tls.key (and ca.crt), as cert-manager mounts them; without it
    # the webhook server generates a CA of its own at start.
    webhook_cert_dir: str | None = None
    # The Service in `namespace` that fronts the webhook server in a cluster (`serve` mode): its
    # DNS names go into the generated certificate.
    webhook_service: str = "orgkeeper-webhook"
    health_port: int = 8080
    metrics_port: int = 9090
