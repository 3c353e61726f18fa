"""A real OpenID Connect provider beside the local control plane: Ory Hydra, on loopback.

Hydra (OpenID Certified) is built once from the Go module in hack/oidc (its own module: its
dependencies would move the control plane's) and cached per machine in
~/.cache/orgkeeper/oidc/<fingerprint>/ ($ORGKEEPER_OIDC_CACHE). It serves https with its own CA;
kube-apiserver trusts it through `--authentication-config` (authentication_config). Nobody
clicks anything: `login` plays Hydra's login and consent app through its admin API, then
redeems the code for an ID token, as a browser and kubelogin would.

`python -m orgkeeper_dev.oidc kubeconfig EMAIL` is what `make sso-kubeconfig` calls.
"""

from __future__ import annotations

import argparse
import hashlib
import http.cookiejar
import json
import os
import secrets
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orgkeeper.names import SSO_USERNAME_PREFIX, email_hash
from orgkeeper.pki import certificate, pem_key, subject_name

from .localcluster import (
    DEFAULT_STATE_DIR,
    REPO_ROOT,
    ControlPlaneError,
    LocalCluster,
    free_port,
    go_build,
)

GO_MODULE = REPO_ROOT / "hack" / "oidc"
HYDRA_VERSION = "v2.3.0"
HYDRA_PACKAGE = "github.com/ory/hydra/v2"
# sqlite serves the in-memory database (`dsn: memory`); it needs cgo.
BUILD_TAGS = "sqlite,sqlite_omit_load_extension"
CACHE_ROOT = Path(
    os.environ.get("ORGKEEPER_OIDC_CACHE", Path.home() / ".cache" / "orgkeeper" / "oidc")
)
CLIENT_ID = "kubernetes"  # the ID token's audience, as kube-apiserver expects it
# Never served: the login and consent app is `login` below, through the admin API.
APP = "http://127.0.0.1:9"
REDIRECT_URI = f"{APP}/callback"
SCOPES = ("openid", "email")
DEFAULT_ID_TOKEN_TTL = "1h"


# --- the binary -----------------------------------------------------------------------------


def _fingerprint() -> str:
    digest = hashlib.sha256(f"{HYDRA_VERSION} {BUILD_TAGS}".encode())
    for name in ("go.mod", "go.sum"):
        digest.update(name.encode())
        digest.update((GO_MODULE / name).read_bytes())
    return digest.hexdigest()


def hydra_binary(*, build: bool = True) -> Path:
    """The cached Hydra binary; built if missing (once per machine, minutes of CPU)."""
    directory = CACHE_ROOT / _fingerprint()[:16]
    binary = directory / "hydra"
    if binary.is_file():
        return binary
    if not build:
        raise ControlPlaneError(f"Hydra is not built; run `make oidc` (it builds into {directory})")
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        raise ControlPlaneError(
            "a C compiler (gcc) is needed to build Hydra: its in-memory sqlite database uses cgo "
            "(apt-get install gcc)"
        )
    ldflags = f"-s -w -X github.com/ory/hydra/v2/driver/config.Version={HYDRA_VERSION}"
    go_build(
        GO_MODULE,
        directory,
        [f"-ldflags={ldflags}", f"-tags={BUILD_TAGS}", "-o", "{staging}/hydra", HYDRA_PACKAGE],
        what=f"Hydra {HYDRA_VERSION}",
        env={"CGO_ENABLED": "1"},
    )
    return binary


# --- the provider ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """A running Hydra, as recorded in the cluster's state directory (oidc/provider.json)."""

    issuer: str  # https://127.0.0.1:<port>/, byte for byte as the tokens carry it
    admin: str  # http://127.0.0.1:<port>, loopback only
    ca_file: Path
    client_secret: str

    @classmethod
    def of(cls, cluster: LocalCluster) -> Provider:
        recorded = _directory(cluster) / "provider.json"
        if not recorded.is_file():
            raise ControlPlaneError(
                "the local control plane runs without an identity provider; start it with "
                "`make cluster-down cluster-up SSO=1`"
            )
        data = json.loads(recorded.read_text())
        return cls(data["issuer"], data["admin"], Path(data["caFile"]), data["clientSecret"])

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def set_id_token_lifespan(self, lifespan: str) -> None:
        """How long the ID tokens minted from now on are valid (Hydra's per-client lifespans,
        e.g. "20s"); DEFAULT_ID_TOKEN_TTL is the provider's own."""
        _call(
            f"{self.admin}/admin/clients/{CLIENT_ID}/lifespans",
            "PUT",
            {"authorization_code_grant_id_token_lifespan": lifespan},
        )

    def login(self, email: str, *, verified: bool = True, groups: Sequence[str] = ()) -> str:
        """`email` logs in through the provider (the authorization-code flow, the login and
        consent accepted through the admin API); returns their ID token."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(
            _NoRedirects(),
            urllib.request.HTTPCookieProcessor(jar),
            urllib.request.HTTPSHandler(context=self._context()),
        )
        query = urllib.parse.urlencode(
            {
                "client_id": CLIENT_ID,
                "response_type": "code",
                "scope": " ".join(SCOPES),
                "redirect_uri": REDIRECT_URI,
                "state": secrets.token_urlsafe(12),
                "nonce": secrets.token_urlsafe(12),
            }
        )
        login_challenge = _param(_redirect(opener, f"{self.issuer}oauth2/auth?{query}"), "login")
        accepted = _call(
            f"{self.admin}/admin/oauth2/auth/requests/login/accept?"
            + urllib.parse.urlencode({"login_challenge": login_challenge}),
            "PUT",
            {"subject": email},
        )
        consent_challenge = _param(_redirect(opener, accepted["redirect_to"]), "consent")
        claims = {"email": email, "email_verified": verified, "groups": list(groups)}
        accepted = _call(
            f"{self.admin}/admin/oauth2/auth/requests/consent/accept?"
            + urllib.parse.urlencode({"consent_challenge": consent_challenge}),
            "PUT",
            {"grant_scope": list(SCOPES), "session": {"id_token": claims}},
        )
        code = _param(_redirect(opener, accepted["redirect_to"]), "code")
        form = urllib.parse.urlencode(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "client_id": CLIENT_ID,
                "client_secret": self.client_secret,
            }
        ).encode()
        request = urllib.request.Request(f"{self.issuer}oauth2/token", data=form, method="POST")
        with opener.open(request, timeout=10) as reply:
            return str(json.loads(reply.read())["id_token"])


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _redirect(opener: urllib.request.OpenerDirector, url: str) -> str:
    """Where `url` redirects to (the flow's next step), with the cookies kept."""
    try:
        with opener.open(url, timeout=10) as reply:
            body = reply.read()[:300]
            raise ControlPlaneError(
                f"{url} answered {reply.status} instead of a redirect: {body!r}"
            )
    except urllib.error.HTTPError as error:
        if error.code in (302, 303) and error.headers.get("Location"):
            return str(error.headers["Location"])
        raise ControlPlaneError(f"{url} answered {error.code}: {error.read()[:300]!r}") from None


def _param(url: str, step: str) -> str:
    """The parameter `url` carries for the next step (login, consent or code)."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    key = {"login": "login_challenge", "consent": "consent_challenge"}.get(step, step)
    if key not in query:
        error = query.get("error_description") or query.get("error") or [url]
        raise ControlPlaneError(f"the provider's {step} step failed: {error[0]}")
    return query[key][0]


def _call(url: str, method: str, body: Mapping[str, Any] | None = None) -> Any:
    """A JSON call to Hydra's admin API (plain http on loopback)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            payload = reply.read()
    except urllib.error.HTTPError as error:
        raise ControlPlaneError(
            f"Hydra's admin API refused {method} {url}: {error.code} {error.read()[:300]!r}"
        ) from None
    return json.loads(payload) if payload else None


def _directory(cluster: LocalCluster) -> Path:
    return cluster.state_dir / "oidc"


def start_provider(
    cluster: LocalCluster, *, id_token_ttl: str = DEFAULT_ID_TOKEN_TTL, timeout: float = 60.0
) -> Provider:
    """Starts Hydra beside `cluster` (it stops with it): its CA, https serving certificate,
    config and client; returns once discovery answers. Call before kube-apiserver starts."""
    binary = hydra_binary()
    directory = _directory(cluster)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate(subject_name("orgkeeper-local-oidc-ca"), ca_key, None, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    serving = certificate(
        subject_name("hydra"), key, (ca_cert, ca_key), server_names=("127.0.0.1", "localhost")
    )
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.crt").write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(pem_key(key))
    (directory / "tls.key").chmod(0o600)
    public_port, admin_port = free_port(), free_port()
    issuer = f"https://127.0.0.1:{public_port}/"
    config = {
        "dsn": "memory",
        "serve": {
            "public": {
                "host": "127.0.0.1",
                "port": public_port,
                "tls": {
                    "enabled": True,
                    "cert": {"path": str(directory / "tls.crt")},
                    "key": {"path": str(directory / "tls.key")},
                },
            },
            "admin": {"host": "127.0.0.1", "port": admin_port, "tls": {"enabled": False}},
        },
        "urls": {
            "self": {"issuer": issuer},
            "login": f"{APP}/login",
            "consent": f"{APP}/consent",
        },
        "secrets": {"system": [secrets.token_urlsafe(32)]},
        "oidc": {"subject_identifiers": {"supported_types": ["public"]}},
        "ttl": {"id_token": id_token_ttl},
        "log": {"level": "warn"},
    }
    config_file = directory / "hydra.yaml"
    config_file.write_text(yaml.safe_dump(config))
    config_file.chmod(0o600)  # the system secret
    # No telemetry (Hydra reports usage to its vendor unless told not to), and no setting from
    # the caller's environment: Hydra reads every config key from variables too (DSN, ...).
    environment = {key: os.environ[key] for key in ("PATH", "HOME", "TMPDIR") if key in os.environ}
    cluster.spawn(
        "hydra",
        [str(binary), "serve", "all", "--config", str(config_file), "--sqa-opt-out"],
        env={**environment, "SQA_OPT_OUT": "true"},
    )
    provider = Provider(issuer, f"http://127.0.0.1:{admin_port}", ca_file, secrets.token_hex(16))
    _wait_discovery(cluster, provider, timeout)
    # The database is in memory: the client is made anew on every start.
    _call(
        f"{provider.admin}/admin/clients",
        "POST",
        {
            "client_id": CLIENT_ID,
            "client_secret": provider.client_secret,
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "scope": " ".join(SCOPES),
            "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "client_secret_post",
        },
    )
    recorded = directory / "provider.json"
    recorded.write_text(
        json.dumps(
            {
                "issuer": issuer,
                "admin": provider.admin,
                "caFile": str(ca_file),
                "clientSecret": provider.client_secret,
            }
        )
    )
    recorded.chmod(0o600)
    return provider


def _wait_discovery(cluster: LocalCluster, provider: Provider, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    url = f"{provider.issuer}.well-known/openid-configuration"
    while time.monotonic() < deadline:
        if cluster.pid("hydra") is None:
            log = (cluster.state_dir / "logs" / "hydra.log").read_text(errors="replace")
            raise ControlPlaneError(f"Hydra exited; the end of its log:\n{log[-2000:]}")
        try:
            with urllib.request.urlopen(url, context=provider._context(), timeout=5) as reply:
                if json.loads(reply.read()).get("issuer") == provider.issuer:
                    return
        except (OSError, ValueError) as error:
            last = str(error)
        time.sleep(0.25)
    raise ControlPlaneError(f"Hydra's discovery {url} not ready after {timeout:.0f}s ({last})")


def authentication_config(
    provider: Provider, username_prefix: str = SSO_USERNAME_PREFIX
) -> dict[str, Any]:
    """kube-apiserver's AuthenticationConfiguration trusting `provider`: the user is the
    prefix + the lower-cased, verified `email` claim; groups prefixed; no `system:` users."""
    return {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AuthenticationConfiguration",
        "jwt": [
            {
                "issuer": {
                    "url": provider.issuer,
                    "audiences": [CLIENT_ID],
                    "certificateAuthority": provider.ca_file.read_text(),
                },
                "claimValidationRules": [
                    {
                        "expression": "claims.?email_verified.orValue(false) == true",
                        "message": "the e-mail must be verified",
                    }
                ],
                "claimMappings": {
                    "username": {
                        "expression": f"{json.dumps(username_prefix)} + claims.email.lowerAscii()"
                    },
                    "groups": {"claim": "groups", "prefix": username_prefix},
                },
                "userValidationRules": [
                    {
                        "expression": "!user.username.startsWith('system:')",
                        "message": "no system: users from the identity provider",
                    }
                ],
            }
        ],
    }


PROBE = "probe@oidc.invalid"


def wait_trusted(cluster: LocalCluster, timeout: float = 60.0) -> None:
    """Returns once kube-apiserver takes the provider's ID tokens: its JWT authenticator
    fetches discovery and keys in the background (retrying every 10 s), and `/readyz` doesn't
    wait for it. Asks who a probe login is (a SelfSubjectReview) until it is oidc:<probe>."""
    token = Provider.of(cluster).login(PROBE)
    context = ssl.create_default_context(cafile=str(cluster.pki / "ca.crt"))
    body = json.dumps(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    ).encode()
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"{cluster.server}/apis/authentication.k8s.io/v1/selfsubjectreviews",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as reply:
                user = json.loads(reply.read())["status"]["userInfo"]["username"]
            if user == f"{SSO_USERNAME_PREFIX}{PROBE}":
                return
            last = f"signed in as {user}"
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
        except OSError as error:
            last = str(error)
        time.sleep(0.5)
    raise ControlPlaneError(
        f"kube-apiserver did not take the provider's ID tokens after {timeout:.0f}s ({last}); "
        f"see {cluster.state_dir / 'logs' / 'kube-apiserver.log'}"
    )


def kubeconfig(cluster: LocalCluster, email: str) -> Path:
    """`email` logs in through the cluster's provider; a kubeconfig acting with their ID
    token (readable by its owner only)."""
    token = Provider.of(cluster).login(email)
    path = _directory(cluster) / f"{email_hash(email)}.kubeconfig"
    return cluster.token_kubeconfig(path, token)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orgkeeper_dev.oidc", description=__doc__)
    parser.add_argument("action", choices=["build", "kubeconfig"])
    parser.add_argument("email", nargs="?", help="with `kubeconfig`: who logs in")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    try:
        if args.action == "build":
            print(f"hydra: {hydra_binary()}")
        else:
            if not args.email:
                parser.error(
                    "kubeconfig needs the e-mail that logs in (make sso-kubeconfig EMAIL=...)"
                )
            cluster = LocalCluster(args.state_dir)
            if not cluster.running():
                raise ControlPlaneError(
                    "the local control plane is not running; `make cluster-up SSO=1`"
                )
            print(kubeconfig(cluster, args.email))
    except ControlPlaneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
