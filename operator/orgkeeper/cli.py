"""The `orgkeeper` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import NoneType
from typing import Any, NoReturn, get_args, get_type_hints

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
    MY_ORGANIZATIONS,
    ORGANIZATIONS,
    PEOPLE_API_PATH,
    PEOPLE_API_SERVICE,
    PEOPLE_GROUP,
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


def _parsed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A flag's type from a parse function: its ValueError is argparse's one-line refusal."""

    def parsed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parsed


def _duration(text: str) -> Any:
    from .settings import parse_duration

    return _parsed(parse_duration)(text)


RUN_HELP = "run the operator against the current cluster"


def _add_run(commands: Any) -> None:
    """`run`'s flags, one per field of Settings: its type, default, choices and help."""
    from .settings import Settings, duration_text, env_variable, flag_of

    run = commands.add_parser("run", help=RUN_HELP)
    hints = get_type_hints(Settings)
    for field in dataclasses.fields(Settings):
        flag, default = flag_of(field.name), field.default
        # `int | None`: an int flag whose absence means the setting is off.
        kind = next(
            (t for t in get_args(hints[field.name]) if t is not NoneType), hints[field.name]
        )
        options: dict[str, Any] = {"help": field.metadata["help"]}
        if field.metadata["parse"] is not None:
            options["type"] = _parsed(field.metadata["parse"])
        elif kind is bool:
            options.update(nargs="?", const=True, type=_boolean)
        elif kind is timedelta:
            options["type"] = _duration
        elif kind is int:
            options["type"] = int
        if field.metadata["choices"]:
            options["choices"] = field.metadata["choices"]
        shown = duration_text(default) if isinstance(default, timedelta) else default
        if shown not in (None, ""):
            options["help"] += f" (default: {str(shown).lower() if kind is bool else shown})"
        run.add_argument(
            f"--{flag}", action=_EnvDefault, env=env_variable(flag), default=default, **options
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

    given = {field.name: getattr(args, field.name) for field in dataclasses.fields(Settings)}
    settings = Settings(**{**given, "identity": args.identity or default_identity(os.environ)})
    # Settings that can't work stop here, in one line (exit code 2), before anything runs.
    check(settings)
    check_tls_dirs(settings)
    limit_arenas()  # before any thread of the operator's starts
    listeners = claim_ports(settings)
    try:
        check_cluster(settings.identity)
    except SettingError:
        listeners.close()
        raise
    return run_operator(settings, listeners=listeners)


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
        "orgs",
        help="the org switcher: every org where you (the logged-in user) are a member",
    )
    orgs.add_argument(
        "--email",
        help="support: the orgs of this e-mail (or SSO user name) instead, read with your own "
        "rights to list Memberships cluster-wide",
    )
    _add_sso_prefix(orgs)
    _add_output(orgs)
    orgs.set_defaults(handler=_orgs)


def _orgs(args: argparse.Namespace) -> int:
    cluster = _connect(args)
    if args.email is None:
        rows = views.my_rows(_my_organizations(cluster))
        if not rows and args.output == "table":
            print("you are not a member of any organization (as the user you are logged in as)")
            return 0
        screen = views.table(rows, views.SWITCHER_COLUMNS)
        if any(row["ssoOnly"] for row in rows):
            screen += (
                "\nSSO ONLY: its roles are held only through the identity provider (an SSO session)"
            )
        _emit(rows, args.output, screen)
        return 0
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
    screen = views.table(rows, views.SWITCHER_COLUMNS)
    if any(row["ssoOnly"] for row in rows):
        screen += (
            f"\nSSO ONLY: its roles are held only through the identity provider, signed in as "
            f"{args.sso_username_prefix}{email.lower()} (an SSO session)"
        )
    _emit(rows, args.output, screen)
    return 0


PEOPLE_API_MISSING = (
    f"the people API ({PEOPLE_GROUP}, APIService {PEOPLE_API_SERVICE}) does not answer on this "
    'cluster; the operator of manifests/ serves it (README "The org switcher")'
)


def _my_organizations(cluster: Cluster, name: str | None = None) -> Any:
    """The requester's MyOrganizations (or the one named; None if they are not its member),
    from the people API, with their own rights."""
    path = f"{PEOPLE_API_PATH}/{MY_ORGANIZATIONS}" + (f"/{name}" if name else "")
    try:
        found = cluster.request("GET", path)
    except ApiError as error:
        if error.status == 404 and name is not None and _people_api_served(cluster):
            return None
        if error.status in (404, 503):
            raise CommandError(f"{PEOPLE_API_MISSING} ({error})") from None
        raise
    return found if name else found.get("items", [])


def _people_api_served(cluster: Cluster) -> bool:
    try:
        cluster.request("GET", PEOPLE_API_PATH)
    except ApiError:
        return False
    return True


def _add_status(commands: Any) -> None:
    status = commands.add_parser("status", help="one organization at a glance")
    status.add_argument("org", metavar="ORG", help="organization name")
    _add_output(status)
    status.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    cluster = _connect(args)
    try:
        org = cluster.get(ORGANIZATIONS, args.org)
    except ApiError as denied:
        if denied.status != 403:
            raise
        return _member_status(cluster, args, denied)  # a member may not read the org itself
    if org is None:
        raise CommandError(f"organization {args.org} not found")
    try:
        licenses: list[dict[str, Any]] | None = cluster.list(LICENSES, org_namespace(args.org))
    except ApiError as error:
        if error.status != 403:  # a deactivated org's Owner reads the org, not its namespace
            raise
        licenses = None
    summary = views.status_summary(org, licenses, datetime.now(UTC))
    summary["you"] = _you(cluster, args.org)
    summary["recentEvents"] = _recent_events(cluster, org_namespace(args.org))
    summary["next"] = views.next_steps(summary)
    _emit(summary, args.output, views.status_screen(summary))
    return 0


def _you(cluster: Cluster, name: str) -> dict[str, Any] | None:
    """The requester's place in the org (people API); None if they are not a member (support)
    or the people API does not answer."""
    try:
        item = _my_organizations(cluster, name)
    except (CommandError, ApiError):
        return None
    return views.you(item) if item else None


def _member_status(cluster: Cluster, args: argparse.Namespace, denied: ApiError) -> int:
    """The org as the people API shows it to one of its members; for anyone else the API
    server's refusal (the same for every name, so it tells nothing of the org)."""
    try:
        item = _my_organizations(cluster, args.org)
    except CommandError:  # no people API on this cluster: the refusal as it came
        raise denied from None
    if item is None:
        raise CommandError(
            f"{denied}; nor is {args.org} among your organizations (orgkeeper orgs lists them)"
        )
    summary = views.member_summary(item)
    summary["recentEvents"] = _recent_events(cluster, org_namespace(args.org))
    summary["next"] = views.next_steps(summary)
    _emit(summary, args.output, views.member_status_screen(summary))
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
