"""Operator settings: each a `orgkeeper run` flag and an ORGKEEPER_* environment variable."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

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


POD_SECURITY_LEVELS = ("restricted", "baseline")
WEBHOOK_MODES = ("managed", "serve", "off")
LOG_FORMATS = ("plain", "json")


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] = (),
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """A field of Settings and the `orgkeeper run` flag that sets it: `--<name>` and
    ORGKEEPER_<NAME>, whose help and (shown by the flag) default and choices come from here;
    `parse` reads a value of a type of its own (a ValueError saying what is wrong). Help of a
    setting without a default says itself what happens without it."""
    return field(default=default, metadata={"help": help, "choices": choices, "parse": parse})


@dataclass(frozen=True)
class Settings:
    """What `orgkeeper run` was told (each field a flag: cli.py makes them from these);
    handlers read it from kopf's memo."""

    region: str | None = setting(
        None, "reconcile only organizations of this region (default: all)", choices=REGIONS
    )
    # --shard i/N: the share of the orgs this operator serves (default: all of them).
    shard: Shard = setting(
        UNSHARDED,
        "serve shard i of N (i/N, e.g. 0/2): only its share of the organizations, on a Lease "
        "of its own (README: Scaling out)",
        parse=Shard.parse,
    )
    inactivity_window: timedelta = setting(
        timedelta(days=30), "no activity for this long deactivates a Free org"
    )
    billing_cycle: timedelta = setting(timedelta(days=30), "length of a billing cycle")
    check_interval: timedelta = setting(timedelta(minutes=5), "how often periodic checks run")
    license_validity: timedelta = setting(
        timedelta(days=365), "how long a provisioned license is valid"
    )
    license_rotate_after: timedelta = setting(
        timedelta(days=182), "age at which a provisioned license is replaced"
    )
    sso_username_prefix: str = setting(
        names.SSO_USERNAME_PREFIX, "user-name prefix of the cluster's OIDC authenticator"
    )
    namespace: str = setting("orgkeeper-system", "the operator's own namespace (signing key)")
    listen_address: str = setting(
        "0.0.0.0", "address the webhook, health and metrics servers listen on"
    )
    webhook_mode: str = setting(
        "managed",
        "managed: serve the admission webhooks and register them by URL (for a cluster that "
        "reaches this process directly); serve: serve them behind the Service of manifests/, "
        "whose two webhook configurations get this server's CA; off: no webhooks",
        choices=WEBHOOK_MODES,
    )
    webhook_port: int = setting(9443, "port of the admission webhook server")
    webhook_host: str | None = setting(
        None,
        "host name the API server uses to reach the webhooks (default: the address; with "
        "serve, the Service's name)",
    )
    # As cert-manager mounts them; without it the webhook server generates a CA at start.
    webhook_cert_dir: str | None = setting(
        None,
        "directory with the webhook's tls.crt, tls.key and ca.crt, e.g. a cert-manager Secret "
        "(default: a CA generated at start)",
    )
    # Its DNS names go into the generated certificate.
    webhook_service: str = setting(
        "orgkeeper-webhook",
        "with serve: the Service in --namespace in front of the webhooks (certificate names)",
    )
    health_port: int = setting(
        8080, "port of the liveness (/healthz) and readiness (/readyz) endpoints"
    )
    metrics_port: int = setting(
        9090,
        "port of the Prometheus /metrics endpoint (HTTPS; a bearer token allowed to get "
        "/metrics, e.g. by the orgkeeper-metrics-reader ClusterRole)",
    )
    metrics_cert_dir: str | None = setting(
        None,
        "directory with the metrics endpoint's tls.crt and tls.key (default: self-signed)",
    )
    # The people API (people.py), on the webhook server's certificate: off unless given.
    people_api_port: int | None = setting(
        None,
        "port of the people API (people.orgkeeper.dev, the org switcher's `myorganizations`; "
        "with --webhook-mode serve, behind the APIService of manifests/) (default: not served)",
    )
    pod_security: str = setting(
        "restricted",
        "Pod Security level org namespaces enforce: restricted or baseline",
        choices=POD_SECURITY_LEVELS,
    )
    membership_quota: int = setting(
        10000, "how many Memberships an org namespace may hold (a ResourceQuota)"
    )
    orgs_per_owner: int = setting(
        10, "how many Organizations one owner e-mail may sign up (support may create more)"
    )
    writes_per_turn: int = setting(
        500, "how many writes one org's reconcile makes before it lets waiting orgs go first"
    )
    log_format: str = setting("plain", "plain or json", choices=LOG_FORMATS)
    # High availability: replicas elect a leader on a Lease; only the leader reconciles.
    leader_elect: bool = setting(
        False,
        "elect one leader among replicas on the Lease orgkeeper (orgkeeper-<region> with "
        "--region) in --namespace; only the leader reconciles, every replica serves admission",
    )
    identity: str = setting(
        "",
        "this replica's name: the Lease holder and the User-Agent's comment (default: the pod "
        "name, else host name and process id)",
    )
    lease_duration: timedelta = setting(
        timedelta(seconds=15), "how long a Lease not renewed stays the holder's"
    )
    renew_deadline: timedelta = setting(
        timedelta(seconds=10),
        "a leader that could not renew for this long stops writing (less than --lease-duration)",
    )
    retry_period: timedelta = setting(timedelta(seconds=2), "how often replicas try the Lease")
    verbose: bool = setting(False, "log more")

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


class SettingError(ValueError):
    """A setting `orgkeeper run` can't work with: names the flag, printed as one line."""

    def __init__(self, flag: str, message: str) -> None:
        # A flag's name, or an environment variable of its own (KUBECONFIG) as it is.
        name = flag if flag.isupper() else flag_and_variable(flag)
        super().__init__(f"{name}: {message}")


def flag_and_variable(flag: str) -> str:
    """'webhook-port' -> '--webhook-port (ORGKEEPER_WEBHOOK_PORT)'."""
    return f"--{flag} ({env_variable(flag)})"


def flag_of(name: str) -> str:
    """'webhook_port' (a field of Settings) -> 'webhook-port'."""
    return name.replace("_", "-")


def env_variable(flag: str) -> str:
    return "ORGKEEPER_" + flag.upper().replace("-", "_")


def check(settings: Settings) -> None:
    """Refuses, with a SettingError, values that parse but can't work together (a value from
    a variable is not checked against its choices by the flag)."""
    for each in fields(Settings):
        choices, value = each.metadata["choices"], getattr(settings, each.name)
        if choices and value is not None and value not in choices:
            raise SettingError(flag_of(each.name), f"{value!r} is not one of {', '.join(choices)}")
    ports = {
        "webhook-port": settings.webhook_port,
        "health-port": settings.health_port,
        "metrics-port": settings.metrics_port,
    }
    if settings.webhook_mode == "off":
        del ports["webhook-port"]
    if settings.people_api_port is not None:
        if settings.webhook_mode == "off":
            raise SettingError(
                "people-api-port",
                "the people API is served on the webhook server's certificate: it needs "
                "--webhook-mode serve (behind manifests/) or managed (registered for loopback)",
            )
        ports["people-api-port"] = settings.people_api_port
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
