"""Operator settings: each a `orgkeeper run` flag and an ORGKEEPER_* environment variable."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
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
    # High availability: replicas elect a leader on a Lease; only the leader reconciles.
    leader_elect: bool = False
    identity: str = ""  # the Lease holder and the User-Agent's comment; see default_identity()
    lease_duration: timedelta = timedelta(seconds=15)
    renew_deadline: timedelta = timedelta(seconds=10)
    retry_period: timedelta = timedelta(seconds=2)

    @property
    def lease_name(self) -> str:
        return lease_name(self.region)


def lease_name(region: str | None) -> str:
    """The Lease of the operator serving `region` (all regions: None)."""
    return f"orgkeeper-{region}" if region else "orgkeeper"


def default_identity(environ: Mapping[str, str]) -> str:
    """The pod name (POD_NAME, or HOSTNAME inside a cluster), else host name and process id."""
    if environ.get("POD_NAME"):
        return environ["POD_NAME"]
    if environ.get("KUBERNETES_SERVICE_HOST") and environ.get("HOSTNAME"):
        return environ["HOSTNAME"]
    # Outside a Pod two processes share a host name: the pid tells them apart.
    return f"{socket.gethostname()}_{os.getpid()}"


def check_leader_election(settings: Settings) -> None:
    """client-go's rule: a leader must give up before another may take over."""
    if settings.renew_deadline >= settings.lease_duration:
        raise ValueError(
            "--renew-deadline (ORGKEEPER_RENEW_DEADLINE) must be shorter than --lease-duration "
            f"(ORGKEEPER_LEASE_DURATION): {settings.renew_deadline.total_seconds():g}s is not "
            f"less than {settings.lease_duration.total_seconds():g}s"
        )
    if settings.retry_period >= settings.renew_deadline:
        raise ValueError(
            "--retry-period (ORGKEEPER_RETRY_PERIOD) must be shorter than --renew-deadline "
            f"(ORGKEEPER_RENEW_DEADLINE): {settings.retry_period.total_seconds():g}s is not "
            f"less than {settings.renew_deadline.total_seconds():g}s"
        )
