"""`orgkeeper run` settings: every flag has its variable, and what can't work stops at start."""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter

from orgkeeper import cli
from orgkeeper.domain.guardrails import MEMBERSHIP_COUNT, Guardrails
from orgkeeper.domain.shards import Shard, default_map
from orgkeeper.endpoints import health_app, metrics_app
from orgkeeper.kube import DEFAULT_GUARDRAILS
from orgkeeper.preflight import check_cluster, claim_ports, too_old
from orgkeeper.settings import SettingError, Settings, check, duration_text


def run_parser() -> argparse.ArgumentParser:
    commands = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = commands.choices["run"]
    return found


def run_flags() -> list[str]:
    return [
        option[2:]
        for action in run_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    ]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for variable in list(os.environ):
        if variable.startswith("ORGKEEPER_"):
            monkeypatch.delenv(variable)
    return monkeypatch


EXAMPLES = {
    "region": ("eu", "eu"),
    "shard": ("1/3", Shard(1, 3, default_map(3))),
    "inactivity-window": ("2h", timedelta(hours=2)),
    "billing-cycle": ("3d", timedelta(days=3)),
    "check-interval": ("90s", timedelta(seconds=90)),
    "license-validity": ("100d", timedelta(days=100)),
    "license-rotate-after": ("50d", timedelta(days=50)),
    "webhook-port": ("19443", 19443),
    "health-port": ("18080", 18080),
    "metrics-port": ("19090", 19090),
    "people-api-port": ("19444", 19444),
    "pod-security": ("baseline", "baseline"),
    "membership-quota": ("5", 5),
    "orgs-per-owner": ("3", 3),
    "writes-per-turn": ("50", 50),
    "verbose": ("true", True),
    "leader-elect": ("true", True),
    "lease-duration": ("20s", timedelta(seconds=20)),
    "renew-deadline": ("12s", timedelta(seconds=12)),
    "retry-period": ("3s", timedelta(seconds=3)),
    "webhook-mode": ("off", "off"),
    "log-format": ("json", "json"),
}


def test_every_run_flag_reads_its_orgkeeper_variable(clean_env: pytest.MonkeyPatch) -> None:
    for flag in run_flags():
        variable = "ORGKEEPER_" + flag.upper().replace("-", "_")
        text, expected = EXAMPLES.get(flag, ("some-value", "some-value"))
        clean_env.setenv(variable, text)
        args = cli.parser().parse_args(["run"])
        assert getattr(args, flag.replace("-", "_")) == expected, variable
        clean_env.delenv(variable)


def test_help_shows_each_default_and_variable(clean_env: pytest.MonkeyPatch) -> None:
    text = " ".join(run_parser().format_help().split())
    for shown in (
        "(default: 30d)",
        "(default: 182d)",
        "(default: 9443)",
        "(default: restricted)",
        "(default: 10000)",
        "(default: managed)",
        "(default: false)",
        "[env ORGKEEPER_VERBOSE]",
        "[env ORGKEEPER_POD_SECURITY]",
    ):
        assert shown in text


def test_the_defaults_follow_the_contract(clean_env: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.pod_security, defaults.membership_quota) == ("restricted", 10000)
    check(defaults)  # the defaults work


@pytest.mark.parametrize(
    ("settings", "flag", "says"),
    [
        (Settings(region="mars"), "--region (ORGKEEPER_REGION)", "us, eu, au, me, in, sg"),
        (Settings(webhook_mode="bogus"), "--webhook-mode (ORGKEEPER_WEBHOOK_MODE)", "managed"),
        (Settings(pod_security="privileged"), "--pod-security", "restricted, baseline"),
        (Settings(health_port=70000), "--health-port (ORGKEEPER_HEALTH_PORT)", "1 to 65535"),
        (Settings(metrics_port=0), "--metrics-port", "1 to 65535"),
        (Settings(webhook_port=8080), "--health-port", "also --webhook-port"),
        (Settings(membership_quota=0), "--membership-quota", "not positive"),
        (
            Settings(license_rotate_after=timedelta(days=400)),
            "--license-rotate-after (ORGKEEPER_LICENSE_ROTATE_AFTER)",
            "not shorter than --license-validity",
        ),
        (
            Settings(license_rotate_after=timedelta(days=365)),
            "--license-rotate-after",
            "expire before they are rotated",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused_naming_the_flag(
    settings: Settings, flag: str, says: str
) -> None:
    with pytest.raises(SettingError) as refused:
        check(settings)
    assert str(refused.value).startswith(flag) and says in str(refused.value)


def test_the_rotation_refusal_writes_durations_as_flags_do() -> None:
    expected = r": 400d is not shorter than --license-validity \(365d\)"
    with pytest.raises(SettingError, match=expected):
        check(Settings(license_rotate_after=timedelta(days=400)))
    assert duration_text(timedelta(hours=1, minutes=30, seconds=1.5)) == "1h30m1.5s"


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(SettingError, match=r"^--log-format \(ORGKEEPER_LOG_FORMAT\)"):
        check(Settings(log_format="xml"))


def test_with_webhooks_off_their_port_is_not_checked() -> None:
    check(Settings(webhook_mode="off", webhook_port=8080))


def one_line_exit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = cli.main(["run", *argv])
    except SystemExit as stopped:  # argparse's own refusals
        code = int(stopped.code or 0)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return code, lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ORGKEEPER_INACTIVITY_WINDOW", "5x", "--inactivity-window (ORGKEEPER_INACTIVITY_WINDOW)"),
        ("ORGKEEPER_WEBHOOK_PORT", "abc", "--webhook-port (ORGKEEPER_WEBHOOK_PORT)"),
        ("ORGKEEPER_WEBHOOK_MODE", "bogus", "--webhook-mode (ORGKEEPER_WEBHOOK_MODE)"),
        ("ORGKEEPER_REGION", "mars", "--region (ORGKEEPER_REGION): 'mars'"),
        ("ORGKEEPER_HEALTH_PORT", "70000", "--health-port (ORGKEEPER_HEALTH_PORT): 70000"),
        ("ORGKEEPER_LICENSE_ROTATE_AFTER", "400d", "--license-rotate-after"),
        ("ORGKEEPER_VERBOSE", "maybe", "--verbose (ORGKEEPER_VERBOSE)"),
    ],
)
def test_bad_values_stop_run_with_one_line_and_exit_code_2(
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    says: str,
) -> None:
    clean_env.setenv(variable, value)
    code, line = one_line_exit(capsys)
    assert code == 2
    assert line.startswith("error: ") and says in line


def test_a_bad_duration_flag_names_the_flag_and_its_variable(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, line = one_line_exit(capsys, "--billing-cycle", "soon")
    assert code == 2 and "--billing-cycle (ORGKEEPER_BILLING_CYCLE)" in line


@pytest.fixture
def shared_port() -> Iterator[int]:
    """A port another process listens on with SO_REUSEPORT, as kopf's webhook server does."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


@pytest.mark.parametrize("flag", ["webhook-port", "health-port", "metrics-port"])
def test_a_busy_port_is_refused_even_one_shared_with_reuse_port(
    shared_port: int, flag: str
) -> None:
    webhook, health, metrics = free_ports(3)
    ports = {"webhook-port": webhook, "health-port": health, "metrics-port": metrics}
    ports[flag] = shared_port
    settings = Settings(
        listen_address="127.0.0.1",
        webhook_port=ports["webhook-port"],
        health_port=ports["health-port"],
        metrics_port=ports["metrics-port"],
    )
    with pytest.raises(SettingError, match=f"^--{flag} .*can't listen on 127.0.0.1:{shared_port}"):
        claim_ports(settings)
    # Nothing stays bound: the refused start let go of the ports it had taken.
    for port in (health, metrics):
        if port != shared_port:
            probe = socket.socket()
            probe.bind(("127.0.0.1", port))
            probe.close()


def test_free_ports_are_claimed_for_health_and_metrics() -> None:
    webhook, health, metrics = free_ports(3)
    settings = Settings(
        listen_address="127.0.0.1", webhook_port=webhook, health_port=health, metrics_port=metrics
    )
    listeners = claim_ports(settings)
    try:
        assert listeners.health.getsockname()[1] == health
        assert listeners.metrics.getsockname()[1] == metrics
    finally:
        listeners.close()


def test_no_reachable_cluster_is_one_line_naming_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (closed,) = free_ports(1)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{closed}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SettingError) as refused:
        check_cluster("test", timeout=2)
    message = str(refused.value)
    assert message.startswith("KUBECONFIG: no reachable cluster") and "\n" not in message


def test_a_kubeconfig_that_is_not_one_is_refused_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SettingError, match=r"^KUBECONFIG: no reachable cluster"):
        check_cluster("test", timeout=2)


# --- org namespace guardrails ------------------------------------------------------------


def test_org_namespaces_enforce_restricted_by_default_and_baseline_when_set() -> None:
    assert DEFAULT_GUARDRAILS.labels() == {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    assert (
        Guardrails("baseline", DEFAULT_GUARDRAILS.membership_quota).labels()[
            "pod-security.kubernetes.io/enforce"
        ]
        == "baseline"
    )


def test_the_quota_limits_memberships_to_the_setting() -> None:
    assert DEFAULT_GUARDRAILS.hard() == {MEMBERSHIP_COUNT: "10000"}
    assert Guardrails(DEFAULT_GUARDRAILS.pod_security, 3).hard() == {
        "count/memberships.orgkeeper.dev": "3"
    }


def test_pod_security_and_quota_settings_reach_the_guardrails(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("ORGKEEPER_POD_SECURITY", "baseline")
    args = cli.parser().parse_args(["run", "--membership-quota", "7"])
    assert Guardrails(args.pod_security, args.membership_quota) == Guardrails("baseline", 7)


# --- the health and metrics endpoints ----------------------------------------------------


async def answers(
    app: web.Application, path: str, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    server: TestServer = TestServer(app)
    async with TestClient[web.Request, web.Application](server) as http:
        reply = await http.get(path, headers=headers or {})
        return reply.status, await reply.text()


def test_readyz_answers_503_until_the_caches_are_synced_and_healthz_200_meanwhile() -> None:
    synced = [False]

    def app() -> web.Application:
        return health_app(lambda: synced[0])

    assert asyncio.run(answers(app(), "/healthz"))[0] == 200
    status, text = asyncio.run(answers(app(), "/readyz"))
    assert status == 503 and "caches" in text
    synced[0] = True
    assert asyncio.run(answers(app(), "/readyz"))[0] == 200


def test_metrics_answer_only_authorized_tokens() -> None:
    registry = CollectorRegistry()
    Counter("orgkeeper_probe_total", "A probe.", registry=registry).inc()
    verdicts = {"reader": 200, "stranger": 403}

    async def authorize(token: str) -> int:
        return verdicts.get(token, 401)

    def get(headers: dict[str, str] | None) -> tuple[int, str]:
        return asyncio.run(answers(metrics_app(registry, authorize), "/metrics", headers))

    assert get(None)[0] == 401
    assert get({"Authorization": "Basic dXNlcjpwdw=="})[0] == 401
    assert get({"Authorization": "Bearer forged"})[0] == 401
    status, text = get({"Authorization": "Bearer stranger"})
    assert status == 403 and "orgkeeper_probe_total" not in text
    status, text = get({"Authorization": "Bearer reader"})
    assert status == 200 and "orgkeeper_probe_total 1.0" in text


def test_metrics_say_503_when_the_token_cannot_be_checked() -> None:
    async def authorize(token: str) -> int:
        raise ConnectionError("no API server")

    app = metrics_app(CollectorRegistry(), authorize)
    status, text = asyncio.run(answers(app, "/metrics", {"Authorization": "Bearer x"}))
    assert status == 503 and "no API server" not in text


# --- the minimum Kubernetes version ------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "old"),
    [
        ("v1.29.15", True),
        ("v1.29.4+k3s1", True),
        ("v1.30.0", False),
        ("v1.30.0+k3s1", False),
        ("v1.31.2-gke.1079000", False),
        ("v1.37.2", False),
        ("v2.0.0", False),
        ("v1.100.0", False),
        ("1.28", True),
        ("unknown", False),
    ],
)
def test_a_cluster_older_than_1_30_is_too_old(version: str, old: bool) -> None:
    assert too_old(version) is old


def test_an_old_cluster_stops_orgkeeper_run_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("orgkeeper.kube.server_version", lambda identity, timeout: "v1.29.4")
    with pytest.raises(SettingError) as refused:
        check_cluster("test", timeout=2)
    assert str(refused.value) == (
        "KUBECONFIG: the cluster runs Kubernetes v1.29.4; orgkeeper needs 1.30 or later "
        "(ValidatingAdmissionPolicy v1)"
    )
    monkeypatch.setattr("orgkeeper.kube.server_version", lambda identity, timeout: "v1.30.1")
    check_cluster("test", timeout=2)
