"""Operator settings: each a `orgkeeper run` flag and an ORGKEEPER_* environment variable."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from . import names
from .api.v1alpha1 import REGIONS
from .domain.shards import Shard

UNSHARDED = Shard()
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


def duration_text(value: timedelta) -> str:
    """timedelta(days=1, hours=2) -> '1d2h', as the flags are written."""
    seconds = value.total_seconds()
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{int(count)}{unit}")
    if seconds or not parts:
        parts.append(f"{seconds:g}s")
    return "".join(parts)


@dataclass(frozen=True)
class Settings:
    """What `orgkeeper run` was told; handlers read it from kopf's memo."""

    region: str | None = None
    # --shard i/N: the share of the orgs this operator serves (default: all of them).
    shard: Shard = UNSHARDED
    inactivity_window: timedelta = timedelta(days=30)
    billing_cycle: timedelta = timedelta(days=30)
    check_interval: timedelta = timedelta(minutes=5)
    license_validity: timedelta = timedelta(days=365)
    license_rotate_after: timedelta = timedelta(days=182)
    sso_username_prefix: str = names.SSO_USERNAME_PREFIX
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

    # Org namespaces: the Pod Security level they enforce, and how many Memberships they hold.
    pod_security: str = "restricted"
    membership_quota: int = 10000
    # Self-service sign-up: how many Organizations one owner e-mail may hold (support exempt).
    orgs_per_owner: int = 10
    # How many writes one org's reconcile makes before it yields its slot to waiting orgs.
    writes_per_turn: int = 500
    # A directory with tls.crt and tls.key for the metrics endpoint; without it, self-signed.
    metrics_cert_dir: str | None = None

    @property
    def lease_name(self) -> str:
        return lease_name(self.region, self.shard)


def lease_name(region: str | None, shard: Shard | None = None) -> str:
    """The Lease of the operator serving `region` (all regions: None), and of its shard
    (`-shard-<i>-of-<N>`: the generation is in the name; unsharded, none)."""
    base = f"orgkeeper-{region}" if region else "orgkeeper"
    return base + (shard.lease_suffix() if shard is not None else "")


def default_identity(environ: Mapping[str, str]) -> str:
    """The pod name (POD_NAME, or HOSTNAME inside a cluster), else host name and process id."""
    if environ.get("POD_NAME"):
        return environ["POD_NAME"]
    if environ.get("KUBERNETES_SERVICE_HOST") and environ.get("HOSTNAME"):
        return environ["HOSTNAME"]
    # Outside a Pod two processes share a host name: the pid tells them apart.
    return f"{socket.gethostname()}_{os.getpid()}"


POD_SECURITY_LEVELS = ("restricted", "baseline")
WEBHOOK_MODES = ("managed", "serve", "off")
LOG_FORMATS = ("plain", "json")


class SettingError(ValueError):
    """A setting `orgkeeper run` can't work with: names the flag, printed as one line."""

    def __init__(self, flag: str, message: str) -> None:
        # A flag's name, or an environment variable of its own (KUBECONFIG) as it is.
        name = flag if flag.isupper() else flag_and_variable(flag)
        super().__init__(f"{name}: {message}")


def flag_and_variable(flag: str) -> str:
    """'webhook-port' -> '--webhook-port (ORGKEEPER_WEBHOOK_PORT)'."""
    return f"--{flag} ({env_variable(flag)})"


def env_variable(flag: str) -> str:
    return "ORGKEEPER_" + flag.upper().replace("-", "_")


def check(settings: Settings, log_format: str = "plain") -> None:
    """Refuses, with a SettingError, values that parse but can't work together."""

    def one_of(flag: str, value: object, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            raise SettingError(flag, f"{value!r} is not one of {', '.join(allowed)}")

    if settings.region is not None:
        one_of("region", settings.region, REGIONS)
    one_of("webhook-mode", settings.webhook_mode, WEBHOOK_MODES)
    one_of("pod-security", settings.pod_security, POD_SECURITY_LEVELS)
    one_of("log-format", log_format, LOG_FORMATS)
    ports = {
        "webhook-port": settings.webhook_port,
        "health-port": settings.health_port,
        "metrics-port": settings.metrics_port,
    }
    if settings.webhook_mode == "off":
        del ports["webhook-port"]
    for flag, port in ports.items():
        if not 1 <= port <= 65535:
            raise SettingError(flag, f"{port} is not a port; use 1 to 65535")
    taken: dict[int, str] = {}
    for flag, port in ports.items():
        if port in taken:
            raise SettingError(flag, f"{port} is also --{taken[port]}; give each server its own")
        taken[port] = flag
    if settings.license_rotate_after >= settings.license_validity:
        raise SettingError(
            "license-rotate-after",
            f"{duration_text(settings.license_rotate_after)} is not shorter than "
            f"--license-validity ({duration_text(settings.license_validity)}): licenses would "
            "expire before they are rotated",
        )
    if settings.membership_quota < 1:
        raise SettingError("membership-quota", f"{settings.membership_quota} is not positive")
    if settings.writes_per_turn < 1:
        raise SettingError("writes-per-turn", f"{settings.writes_per_turn} is not positive")
    if settings.orgs_per_owner < 1:
        raise SettingError("orgs-per-owner", f"{settings.orgs_per_owner} is not positive")
    if settings.shard.sharded and not settings.leader_elect:
        raise SettingError(
            "shard",
            f"{settings.shard.index}/{settings.shard.count} needs --leader-elect: each shard "
            "elects its leader on a Lease of its own, and changing the shard count waits for "
            "the other generation's Leases",
        )
    if settings.leader_elect:
        # client-go's rule: a leader must give up before another may take over.
        if settings.renew_deadline >= settings.lease_duration:
            raise SettingError(
                "renew-deadline",
                f"{duration_text(settings.renew_deadline)} is not shorter than --lease-duration "
                f"({duration_text(settings.lease_duration)})",
            )
        if settings.retry_period >= settings.renew_deadline:
            raise SettingError(
                "retry-period",
                f"{duration_text(settings.retry_period)} is not shorter than --renew-deadline "
                f"({duration_text(settings.renew_deadline)})",
            )
