"""The `orgkeeper` command."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import yaml

# The commands that talk to a cluster load only this much: the stdlib client and the views.
# `run` and `crds` import the operator, the settings and the API models when they start.
from . import views
from .client import ApiError, Cluster, UnreachableError, connect
from .names import (
    EVENT_CONTROLLER,
    LABEL_EMAIL_HASH,
    LICENSES,
    MEMBERSHIPS,
    ORGANIZATIONS,
    SSO_USERNAME_PREFIX,
    email_hash,
    email_of_user,
    org_namespace,
    organization_of_namespace,
    same_email,
)

# Relative to where the command runs (a checkout's root, as `make crds` runs it): the installed
# package knows nothing of the checkout it was built from.
DEFAULT_CRD_DIR = Path("crds")


class _Parser(argparse.ArgumentParser):
    """Bad arguments get one clear line and exit code 2, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        flag = re.match(r"argument --([a-z-]+)", message)
        if flag and self.prog.endswith(" run"):  # every run flag also has its variable
            from .settings import flag_and_variable

            message = message.replace(f"--{flag[1]}", flag_and_variable(flag[1]), 1)
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class _EnvDefault(argparse.Action):
    """A flag whose default comes from an ORGKEEPER_* environment variable."""

    def __init__(self, env: str, required: bool = False, default: Any = None, **kwargs: Any):
        if env in os.environ:
            default = os.environ[env]
            required = False
        kwargs["help"] = f"{kwargs.get('help', '')} [env {env}]".strip()
        super().__init__(default=default, required=required, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)


def _duration(text: str) -> Any:
    from .settings import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


RUN_HELP = "run the operator against the current cluster"


def _add_run(commands: Any) -> None:
    from .settings import Settings

    run = commands.add_parser("run", help=RUN_HELP)
    defaults = Settings()

    def flag(name: str, help: str, *, default: Any, type: Callable[[str], Any] = str) -> None:
        env = "ORGKEEPER_" + name.upper().replace("-", "_")
        if default is not None:
            help = f"{help} (default: {default})"
        run.add_argument(
            f"--{name}", action=_EnvDefault, env=env, default=default, type=type, help=help
        )

    flag("region", "reconcile only organizations of this region (default: all)", default=None)
    flag(
        "shard",
        "serve shard i of N (i/N, e.g. 0/2): only its share of the organizations, on a Lease "
        "of its own (README: Scaling out)",
        default="0/1",
        type=_shard,
    )
    flag(
        "inactivity-window",
        "no activity for this long deactivates a Free org",
        default="30d",
        type=_duration,
    )
    flag("billing-cycle", "length of a billing cycle", default="30d", type=_duration)
    flag("check-interval", "how often periodic checks run", default="5m", type=_duration)
    flag(
        "license-validity",
        "how long a provisioned license is valid",
        default="365d",
        type=_duration,
    )
    flag(
        "license-rotate-after",
        "age at which a provisioned license is replaced",
        default="182d",
        type=_duration,
    )
    flag(
        "sso-username-prefix",
        "user-name prefix of the cluster's OIDC authenticator",
        default=defaults.sso_username_prefix,
    )
    flag("namespace", "the operator's own namespace (signing key)", default=defaults.namespace)
    flag(
        "listen-address",
        "address the webhook, health and metrics servers listen on",
        default=defaults.listen_address,
    )
    run.add_argument(
        "--webhook-mode",
        action=_EnvDefault,
        env="ORGKEEPER_WEBHOOK_MODE",
        default=defaults.webhook_mode,
        choices=["managed", "serve", "off"],
        help="managed: serve the admission webhooks and register them by URL (for a cluster "
        "that reaches this process directly); serve: serve them behind the Service of "
        "manifests/, whose two webhook configurations get this server's CA; off: no webhooks "
        f"(default: {defaults.webhook_mode})",
    )
    flag(
        "webhook-port",
        "port of the admission webhook server",
        default=defaults.webhook_port,
        type=int,
    )
    flag(
        "webhook-host",
        "host name the API server uses to reach the webhooks (default: the address; with "
        "serve, the Service's name)",
        default=None,
    )
    flag(
        "webhook-cert-dir",
        "directory with the webhook's tls.crt, tls.key and ca.crt, e.g. a cert-manager Secret "
        "(default: a CA generated at start)",
        default=None,
    )
    flag(
        "webhook-service",
        "with serve: the Service in --namespace in front of the webhooks (certificate names)",
        default=defaults.webhook_service,
    )
    flag(
        "health-port",
        "port of the liveness (/healthz) and readiness (/readyz) endpoints",
        default=defaults.health_port,
        type=int,
    )
    flag(
        "metrics-port",
        "port of the Prometheus /metrics endpoint (HTTPS; a bearer token allowed to get "
        "/metrics, e.g. by the orgkeeper-metrics-reader ClusterRole)",
        default=defaults.metrics_port,
        type=int,
    )
    flag(
        "metrics-cert-dir",
        "directory with the metrics endpoint's tls.crt and tls.key (default: self-signed)",
        default=None,
    )
    flag(
        "pod-security",
        "Pod Security level org namespaces enforce: restricted or baseline",
        default=defaults.pod_security,
    )
    flag(
        "membership-quota",
        "how many Memberships an org namespace may hold (a ResourceQuota)",
        default=defaults.membership_quota,
        type=int,
    )
    flag(
        "orgs-per-owner",
        "how many Organizations one owner e-mail may sign up (support may create more)",
        default=defaults.orgs_per_owner,
        type=int,
    )
    flag(
        "writes-per-turn",
        "how many writes one org's reconcile makes before it lets waiting orgs go first",
        default=defaults.writes_per_turn,
        type=int,
    )
    flag("log-format", "plain or json", default="plain")
    run.add_argument(
        "--leader-elect",
        action=_EnvDefault,
        env="ORGKEEPER_LEADER_ELECT",
        nargs="?",
        const=True,
        default=False,
        type=_boolean,
        help="elect one leader among replicas on the Lease orgkeeper (orgkeeper-<region> with "
        "--region) in --namespace; only the leader reconciles, every replica serves admission "
        "(default: false)",
    )
    flag(
        "identity",
        "this replica's name: the Lease holder and the User-Agent's comment (default: the pod "
        "name, else host name and process id)",
        default=None,
    )
    flag(
        "lease-duration",
        "how long a Lease not renewed stays the holder's",
        default="15s",
        type=_duration,
    )
    flag(
        "renew-deadline",
        "a leader that could not renew for this long stops writing (less than --lease-duration)",
        default="10s",
        type=_duration,
    )
    flag("retry-period", "how often replicas try the Lease", default="2s", type=_duration)
    run.add_argument(
        "--verbose",
        action=_EnvDefault,
        env="ORGKEEPER_VERBOSE",
        nargs="?",
        const=True,
        default=False,
        type=_boolean,
        help="log more (default: false)",
    )
    run.set_defaults(handler=_run)


def _shard(text: str) -> Any:
    from .domain.shards import Shard

    try:
        return Shard.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _boolean(text: str) -> bool:
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _run(args: argparse.Namespace) -> int:
    from .manager import run_operator  # kopf is heavy; import it only to run
    from .memory import limit_arenas
    from .preflight import check_cluster, check_tls_dirs, claim_ports
    from .settings import SettingError, Settings, check, default_identity

    settings = Settings(
        region=args.region,
        shard=args.shard,
        sso_username_prefix=args.sso_username_prefix,
        namespace=args.namespace,
        listen_address=args.listen_address,
        webhook_mode=args.webhook_mode,
        webhook_port=int(args.webhook_port),
        webhook_host=args.webhook_host,
        webhook_cert_dir=args.webhook_cert_dir,
        webhook_service=args.webhook_service,
        health_port=int(args.health_port),
        metrics_port=int(args.metrics_port),
        inactivity_window=args.inactivity_window,
        billing_cycle=args.billing_cycle,
        check_interval=args.check_interval,
        license_validity=args.license_validity,
        license_rotate_after=args.license_rotate_after,
        leader_elect=args.leader_elect,
        identity=args.identity or default_identity(os.environ),
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        pod_security=args.pod_security,
        membership_quota=int(args.membership_quota),
        orgs_per_owner=int(args.orgs_per_owner),
        writes_per_turn=int(args.writes_per_turn),
        metrics_cert_dir=args.metrics_cert_dir,
    )
    # Settings that can't work stop here, in one line (exit code 2), before anything runs.
    check(settings, args.log_format)
    check_tls_dirs(settings)
    limit_arenas()  # before any thread of the operator's starts
    listeners = claim_ports(settings)
    try:
        check_cluster(settings.identity)
    except SettingError:
        listeners.close()
        raise
    return run_operator(
        settings, verbose=args.verbose, log_format=args.log_format, listeners=listeners
    )


def _add_crds(commands: Any) -> None:
    crds = commands.add_parser("crds", help="write crds/*.yaml from the API models")
    crds.add_argument(
        "--dir", type=Path, default=DEFAULT_CRD_DIR, help="target directory (default: ./crds)"
    )
    crds.add_argument(
        "--check", action="store_true", help="fail if the files differ instead of writing"
    )
    crds.set_defaults(handler=_crds)


def _crds(args: argparse.Namespace) -> int:
    from . import crdgen  # the API models

    if args.check:
        stale = crdgen.drift(args.dir)
        if stale:
            print(
                f"CRDs in {args.dir} differ from the API models: {', '.join(stale)}; "
                "run `orgkeeper crds` and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"CRDs in {args.dir} match the API models")
        return 0
    for path in crdgen.write(args.dir):
        print(f"wrote {path}")
    return 0


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


def _add_activity(commands: Any) -> None:
    activity = commands.add_parser("activity", help="record activity that keeps an org active")
    kinds = activity.add_subparsers(dest="activity", required=True, metavar="KIND")
    login = kinds.add_parser("login", help="record a member's login now")
    login.add_argument("--org", required=True, help="organization name")
    login.add_argument(
        "--email", required=True, help="the member's e-mail (or their SSO user name)"
    )
    _add_sso_prefix(login)
    _add_kubeconfig(login)
    login.set_defaults(handler=_activity_login)
    requests = kinds.add_parser("requests", help="add API requests to the current billing cycle")
    requests.add_argument("--org", required=True, help="organization name")
    requests.add_argument("--count", required=True, type=_positive, help="how many requests")
    _add_kubeconfig(requests)
    requests.set_defaults(handler=_activity_requests)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


# Activity is written by its own field manager, so the audit log and managedFields tell it apart
# from the operator's status writes.
ACTIVITY_MANAGER = "orgkeeper-activity"


def _organization(cluster: Cluster, name: str) -> dict[str, Any]:
    org = cluster.get(ORGANIZATIONS, name)
    if org is None:
        raise CommandError(f"organization {name} not found")
    return org


def _active_org(cluster: Cluster, name: str) -> dict[str, Any]:
    org = _organization(cluster, name)
    if views.org_state(org) in ("Deactivating", "Deactivated"):
        raise CommandError(
            f"organization {name} is deactivated; activity is refused until it is reactivated"
        )
    return org


def _add_sso_prefix(command: Any) -> None:
    command.add_argument(
        "--sso-username-prefix",
        action=_EnvDefault,
        env="ORGKEEPER_SSO_USERNAME_PREFIX",
        default=SSO_USERNAME_PREFIX,
        help="user-name prefix of the cluster's OIDC authenticator, stripped from --email "
        f"(default: {SSO_USERNAME_PREFIX})",
    )


def _email(args: argparse.Namespace) -> str:
    """--email as an e-mail: an SSO user name (`<prefix><e-mail>`) names the same person."""
    return email_of_user(str(args.email).strip(), args.sso_username_prefix)


def _activity_login(args: argparse.Namespace) -> int:
    cluster = _connect(args)
    _active_org(cluster, args.org)
    namespace = org_namespace(args.org)
    email = _email(args)
    found = _memberships_of(cluster, namespace, email)
    if not found:
        raise CommandError(f"{email} has no Membership in organization {args.org}")
    stamp = _now()
    cluster.patch_status(
        MEMBERSHIPS,
        found[0]["metadata"]["name"],
        {"status": {"lastLoginTime": stamp}},
        namespace,
        field_manager=ACTIVITY_MANAGER,
    )
    print(f"recorded a login of {email} to {args.org} at {stamp}")
    return 0


def _memberships_of(cluster: Cluster, namespace: str, email: str) -> list[dict[str, Any]]:
    """By the e-mail-hash label (an org may hold thousands); the whole namespace only if
    none carries it, since the operator labels a new Membership a moment after its creation."""
    labelled = f"{LABEL_EMAIL_HASH}={email_hash(email)}"
    for selector in (labelled, None):
        found = [
            m
            for m in cluster.list(MEMBERSHIPS, namespace, label_selector=selector)
            if same_email(m["spec"].get("email"), email)
        ]
        if found:
            return found
    return []


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _activity_requests(args: argparse.Namespace) -> int:
    total = _add_api_requests(_connect(args), args.org, args.count)
    print(f"recorded {args.count} API request(s) for {args.org}; {total} in the current cycle")
    return 0


def _add_api_requests(cluster: Cluster, name: str, count: int, attempts: int = 5) -> int:
    """Adds to the current cycle's counter (compare-and-swap on resourceVersion); the total."""
    for _ in range(attempts):
        org = _active_org(cluster, name)
        requests = ((org.get("status") or {}).get("activity") or {}).get("apiRequests") or {}
        total = int(requests.get("currentCycle", 0)) + count
        body = {
            "metadata": {"resourceVersion": org["metadata"]["resourceVersion"]},
            "status": {"activity": {"apiRequests": {"currentCycle": total}}},
        }
        try:
            cluster.patch_status(ORGANIZATIONS, name, body, field_manager=ACTIVITY_MANAGER)
        except ApiError as error:
            if error.status == 409:  # the org changed since it was read: read it again
                continue
            raise
        return total
    raise CommandError(f"organization {name} kept changing; try again")


def _add_output(command: Any) -> None:
    command.add_argument(
        "-o", "--output", choices=["table", "json", "yaml"], default="table", help="output format"
    )
    _add_kubeconfig(command)


def _add_kubeconfig(command: Any) -> None:
    """kubectl's --kubeconfig and --context, on every command that talks to a cluster."""
    command.add_argument(
        "--kubeconfig", help="the kubeconfig file to use (default: $KUBECONFIG, ~/.kube/config)"
    )
    command.add_argument("--context", help="the kubeconfig context to use (default: its current)")


def _connect(args: argparse.Namespace) -> Cluster:
    return connect(kubeconfig=args.kubeconfig, context=args.context)


def _emit(data: Any, output: str, screen: str) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, default=str))
    elif output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
    else:
        print(screen)


def _add_orgs(commands: Any) -> None:
    orgs = commands.add_parser(
        "orgs", help="the org switcher: every org where an e-mail is a member"
    )
    orgs.add_argument("--email", required=True, help="the person's e-mail (or their SSO user name)")
    _add_sso_prefix(orgs)
    _add_output(orgs)
    orgs.set_defaults(handler=_orgs)


def _orgs(args: argparse.Namespace) -> int:
    cluster = _connect(args)
    email = _email(args)
    memberships = cluster.list(
        MEMBERSHIPS, label_selector=f"{LABEL_EMAIL_HASH}={email_hash(email)}"
    )
    # Only the orgs of these Memberships: a person is in a few, the cluster may hold thousands.
    named = {organization_of_namespace(m["metadata"].get("namespace")) for m in memberships}
    orgs = {name: org for name in named if name and (org := cluster.get(ORGANIZATIONS, name))}
    rows = views.switcher_rows(email, memberships, orgs)
    if not rows and args.output == "table":
        print(f"{email} is not a member of any organization")
        return 0
    screen = views.table(
        rows,
        [
            ("ORGANIZATION", "organization"),
            ("DISPLAY NAME", "displayName"),
            ("REGION", "region"),
            ("STATE", "state"),
            ("OWNER", "owner"),
            ("TEAMS", "teams"),
            ("SSO ONLY", "ssoOnly"),
        ],
    )
    if any(row["ssoOnly"] for row in rows):
        screen += (
            f"\nSSO ONLY: its roles are held only through the identity provider, signed in as "
            f"{args.sso_username_prefix}{email.lower()} (an SSO session)"
        )
    _emit(rows, args.output, screen)
    return 0


def _add_status(commands: Any) -> None:
    status = commands.add_parser("status", help="one organization at a glance")
    status.add_argument("org", metavar="ORG", help="organization name")
    _add_output(status)
    status.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    cluster = _connect(args)
    org = _organization(cluster, args.org)
    try:
        licenses: list[dict[str, Any]] | None = cluster.list(LICENSES, org_namespace(args.org))
    except ApiError as error:
        if error.status != 403:  # a deactivated org's Owner reads the org, not its namespace
            raise
        licenses = None
    summary = views.status_summary(org, licenses, datetime.now(UTC))
    summary["recentEvents"] = _recent_events(cluster, org_namespace(args.org))
    _emit(summary, args.output, views.status_screen(summary))
    return 0


def _recent_events(cluster: Cluster, namespace: str) -> list[dict[str, Any]] | None:
    """The org's history as the operator recorded it in org-<name> (about the Organization, its
    Licenses, Memberships...), with the caller's own rights; None if they may not list Events
    there."""
    try:
        listed = cluster.request(
            "GET",
            f"/api/v1/namespaces/{namespace}/events",
            query={"fieldSelector": f"source={EVENT_CONTROLLER}"},
        )
    except ApiError as error:
        if error.status == 403:
            return None
        raise
    return views.event_rows(listed["items"])


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line. Given the command about to run, `run`'s flags are defined only for
    `run` itself: their defaults and checks load the settings and the API models (0.1 s)."""
    root = _Parser(prog="orgkeeper", description="Account policy as Kubernetes custom resources.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in (None, "run"):
        _add_run(commands)
    else:
        commands.add_parser("run", help=RUN_HELP)
    _add_crds(commands)
    _add_orgs(commands)
    _add_status(commands)
    _add_activity(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = parser(command).parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (CommandError, ApiError, UnreachableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        failure = _operator_failure(error)
        if failure is None:
            raise
        message, code = failure
        print(f"error: {message}", file=sys.stderr)
        return code


def _operator_failure(error: Exception) -> tuple[str, int] | None:
    """How `run` reports what stops it: its modules are loaded only once it has started."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    from .settings import SettingError

    if isinstance(error, SettingError):
        return str(error), 2
    if isinstance(error, ApiException):
        return f"the API server refused ({error.status}): {_api_message(error)}", 1
    if isinstance(error, HTTPError):
        return f"can't reach the API server: {error}", 1
    return None


def _api_message(error: Any) -> str:
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(error.reason)


if __name__ == "__main__":
    sys.exit(main())
