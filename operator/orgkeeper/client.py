"""A small Kubernetes API client for the `orgkeeper` command: the kubeconfig, then stdlib HTTPS.

Why not the official client (kube.py, the operator's): a command that makes two or three calls
would spend most of its time importing that client and kopf (about 1 s); this module imports
in milliseconds and sends plain JSON requests. It picks credentials as kubectl does: the files
of $KUBECONFIG merged (the first that sets a name wins; relative paths are relative to the file
that holds them), else ~/.kube/config, and the Pod's ServiceAccount only when neither has a
context. Supported: client certificates, bearer tokens (also from a file), basic auth, exec
credential plugins, CA files and data, `insecure-skip-tls-verify`. What it can't honour it
refuses in one line rather than ignore: `proxy-url`, `tls-server-name`, impersonation (`as`,
`as-groups`, `as-uid`, `as-user-extra`) and auth-provider plugins.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import yaml

from .names import GROUP, VERSION

IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TIMEOUT = 30.0
# The C loader when PyYAML was built with libyaml (it is, in the wheels): quicker to load.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UnreachableError(Exception):
    """No usable kubeconfig, or no answer from the API server."""


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the API server refused ({status}): {message}")
        self.status = status


class Cluster:
    """One API server and the credentials to call it; one connection, reused."""

    def __init__(self, server: str, context: ssl.SSLContext, headers: Mapping[str, str]) -> None:
        self.server = server
        self._context = context
        self._headers = dict(headers)
        self._connection: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """The decoded JSON answer; ApiError for 4xx/5xx, UnreachableError if none came."""
        target = path + ("?" + urlencode(query) if query else "")
        headers = {**self._headers, "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            connection = self._connect()
            connection.request(method, target, payload, headers)
            reply = connection.getresponse()
            data = reply.read()
        except (OSError, http.client.HTTPException) as error:
            self._connection = None
            raise UnreachableError(
                f"can't reach the API server at {self.server}: {_reason(error)}"
            ) from None
        if reply.status >= 400:
            raise ApiError(reply.status, _status_message(data, reply.reason))
        return json.loads(data) if data else None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            url = urlsplit(self.server)
            if url.scheme == "https":
                self._connection = http.client.HTTPSConnection(
                    url.netloc, timeout=TIMEOUT, context=self._context
                )
            else:
                self._connection = http.client.HTTPConnection(url.netloc, timeout=TIMEOUT)
        return self._connection

    # --- orgkeeper.dev objects ------------------------------------------------------------

    def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None if it doesn't exist."""
        try:
            found: dict[str, Any] = self.request("GET", _path(plural, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return found

    def list(
        self, plural: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        listed = self.request("GET", _path(plural, namespace), query=query)
        return list(listed["items"])

    def patch_status(
        self,
        plural: str,
        name: str,
        body: Mapping[str, Any],
        namespace: str | None = None,
        *,
        field_manager: str,
    ) -> dict[str, Any]:
        """A JSON merge patch of the status subresource (`body` holds status, maybe metadata)."""
        patched: dict[str, Any] = self.request(
            "PATCH",
            _path(plural, namespace, name) + "/status",
            body,
            query={"fieldManager": field_manager},
            content_type="application/merge-patch+json",
        )
        return patched


def _path(plural: str, namespace: str | None, name: str | None = None) -> str:
    path = f"/apis/{GROUP}/{VERSION}"
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    return path + (f"/{quote(name, safe='')}" if name is not None else "")


def _status_message(data: bytes, fallback: str) -> str:
    try:
        return str(json.loads(data)["message"])
    except (ValueError, KeyError, TypeError):
        return fallback


def _reason(error: Exception) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


# --- configuration ------------------------------------------------------------------------


class NoKubeconfigError(UnreachableError):
    """No kubeconfig file with a context: the only case where kubectl uses in-cluster
    credentials instead (client-go's deferred loading treats an empty config so)."""


def connect(
    environ: Mapping[str, str] = os.environ,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> Cluster:
    """The kubeconfig's context, as kubectl picks it: `--kubeconfig` (that file only), else
    $KUBECONFIG (else ~/.kube/config); `--context`, else its current context. The Pod's
    ServiceAccount only when no kubeconfig has a context and none was asked for. So
    `KUBECONFIG=~/prod orgkeeper ...` in a CI Pod talks to prod, not to the Pod's cluster."""
    if kubeconfig:
        return from_kubeconfig({**environ, "KUBECONFIG": kubeconfig}, context)
    try:
        return from_kubeconfig(environ, context)
    except NoKubeconfigError:
        if (
            context is None
            and "KUBERNETES_SERVICE_HOST" in environ
            and (IN_CLUSTER / "token").is_file()
        ):
            return _in_cluster(environ)
        raise


def _in_cluster(environ: Mapping[str, str]) -> Cluster:
    host, port = environ["KUBERNETES_SERVICE_HOST"], environ.get("KUBERNETES_SERVICE_PORT", "443")
    context = ssl.create_default_context(cafile=str(IN_CLUSTER / "ca.crt"))
    token = (IN_CLUSTER / "token").read_text().strip()
    host = f"[{host}]" if ":" in host else host
    return Cluster(f"https://{host}:{port}", context, {"Authorization": f"Bearer {token}"})


def _kubeconfig_paths(environ: Mapping[str, str]) -> list[Path]:
    listed = [Path(p) for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return listed or [Path(environ.get("HOME", "~")).expanduser() / ".kube" / "config"]


def from_kubeconfig(
    environ: Mapping[str, str] = os.environ, context_name: str | None = None
) -> Cluster:
    """The current context of $KUBECONFIG, or the context named (files merged as kubectl does:
    the first one wins)."""
    paths = _kubeconfig_paths(environ)
    merged: dict[str, Any] = {"clusters": {}, "users": {}, "contexts": {}}
    current = None
    for path in paths:
        try:
            loaded = yaml.load(path.read_text(), Loader=_Loader) or {}
        except FileNotFoundError:
            continue
        except (OSError, yaml.YAMLError) as error:
            raise UnreachableError(f"can't read the kubeconfig {path}: {error}") from None
        current = current or loaded.get("current-context")
        for kind, entries in merged.items():
            for entry in loaded.get(kind) or []:
                # Relative file names in an entry are relative to the file that holds it.
                entries.setdefault(entry.get("name"), (entry.get(kind[:-1]) or {}, path.parent))
    if not merged["contexts"]:
        where = ", ".join(str(p) for p in paths)
        raise NoKubeconfigError(f"no kubeconfig with a context at {where}; set KUBECONFIG")
    if context_name is not None:
        if context_name not in merged["contexts"]:
            raise UnreachableError(f"the kubeconfig has no context {context_name!r}")
        current = context_name
    if current not in merged["contexts"]:
        raise UnreachableError(f"the kubeconfig has no current context {current!r}")
    context, _ = merged["contexts"][current]
    cluster, cluster_dir = merged["clusters"].get(context.get("cluster"), ({}, None))
    user, user_dir = merged["users"].get(context.get("user"), ({}, None))
    if not cluster.get("server"):
        raise UnreachableError(f"the kubeconfig's context {current} names no cluster server")
    _refuse_unsupported("cluster", context.get("cluster"), cluster, UNSUPPORTED_CLUSTER)
    _refuse_unsupported("user", context.get("user"), user, UNSUPPORTED_USER)
    if "exec" in user:
        user = {**user, **_exec_credential(user["exec"], user_dir)}
    return Cluster(
        cluster["server"],
        _tls(cluster, user, cluster_dir, user_dir),
        _authorization(user, user_dir),
    )


# Kubeconfig fields this client can't honour: ignoring them would connect another way than
# kubectl (no proxy, another TLS name) or as another user (impersonation).
UNSUPPORTED_CLUSTER = ("proxy-url", "tls-server-name")
UNSUPPORTED_USER = ("as", "as-groups", "as-uid", "as-user-extra")


def _refuse_unsupported(
    kind: str, name: str | None, entry: Mapping[str, Any], fields: tuple[str, ...]
) -> None:
    found = [field for field in fields if entry.get(field)]
    if found:
        raise UnreachableError(
            f"the kubeconfig's {kind} {name} sets {', '.join(found)}, which orgkeeper doesn't "
            f"support; use a context whose {kind} doesn't (kubectl --context, or KUBECONFIG)"
        )


def _file(entry: Mapping[str, Any], key: str, base: Path | None) -> Path | None:
    value = entry.get(key)
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() or base is None else base / path


def _data(entry: Mapping[str, Any], key: str) -> bytes | None:
    value = entry.get(key)
    return base64.b64decode(value) if value else None


def _tls(
    cluster: Mapping[str, Any],
    user: Mapping[str, Any],
    cluster_dir: Path | None,
    user_dir: Path | None,
) -> ssl.SSLContext:
    # Verifies the server's name and certificate; trusts the system's CAs only when the
    # kubeconfig names none, as kubectl does (loading them costs tens of milliseconds).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca_file = _file(cluster, "certificate-authority", cluster_dir)
    ca_data = _data(cluster, "certificate-authority-data")
    if cluster.get("insecure-skip-tls-verify"):
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    elif ca_file or ca_data:
        context.load_verify_locations(
            cafile=str(ca_file) if ca_file else None,
            cadata=ca_data.decode() if ca_data else None,
        )
    else:
        context.load_default_certs()
    cert = _data(user, "client-certificate-data") or _file(user, "client-certificate", user_dir)
    key = _data(user, "client-key-data") or _file(user, "client-key", user_dir)
    if cert and key:
        _load_client_certificate(context, cert, key)
    return context


def _load_client_certificate(
    context: ssl.SSLContext, cert: bytes | Path, key: bytes | Path
) -> None:
    if isinstance(cert, Path) and isinstance(key, Path):
        context.load_cert_chain(cert, key)
        return
    import tempfile  # only for inline keys (and it costs a few milliseconds to import)

    # ssl takes a certificate and key only from files: a private directory, gone right after.
    with tempfile.TemporaryDirectory(prefix="orgkeeper-") as directory:
        cert_file, key_file = Path(directory) / "tls.crt", Path(directory) / "tls.key"
        for path, content in ((cert_file, cert), (key_file, key)):
            path.touch(mode=0o600)
            path.write_bytes(content if isinstance(content, bytes) else content.read_bytes())
        context.load_cert_chain(cert_file, key_file)


def _authorization(user: Mapping[str, Any], user_dir: Path | None) -> dict[str, str]:
    token = user.get("token")
    token_file = _file(user, "tokenFile", user_dir)
    if not token and token_file:
        token = token_file.read_text().strip()
    if token:
        return {"Authorization": f"Bearer {token}"}
    if user.get("username") and user.get("password"):
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}
    if "auth-provider" in user:
        raise UnreachableError(
            "the kubeconfig's user uses an auth-provider, which orgkeeper doesn't support; "
            "use a token, a client certificate or an exec credential plugin"
        )
    return {}


def exec_command(command: str, base: Path | None) -> str:
    """The plugin to run, resolved as client-go does: a relative path (one with a separator,
    `./bin/token`) against the directory of the kubeconfig that names it, never the working
    directory; a bare name (`aws`) through PATH."""
    if os.sep in command and not Path(command).is_absolute() and base is not None:
        return str(base.absolute() / command)
    return command


def _exec_credential(spec: Mapping[str, Any], base: Path | None) -> dict[str, str]:
    """Runs a client-go credential plugin, as kubectl does: its token or client certificate,
    as the kubeconfig user fields they stand for. Its stderr goes to the terminal (as with
    kubectl); a failure names the plugin, never its arguments (they may hold secrets)."""
    info = {
        "apiVersion": spec.get("apiVersion", "client.authentication.k8s.io/v1"),
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }
    import subprocess  # only for credential plugins

    env = {**os.environ, "KUBERNETES_EXEC_INFO": json.dumps(info)}
    env.update({e["name"]: e["value"] for e in spec.get("env") or []})
    command = exec_command(str(spec.get("command") or ""), base)
    failed = f"the kubeconfig's credential plugin {command or '(no command)'}"
    try:
        done = subprocess.run(
            [command, *(spec.get("args") or [])],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise UnreachableError(f"{failed} didn't answer within 60 s") from None
    except OSError as error:
        raise UnreachableError(f"{failed} can't run: {_reason(error)}") from None
    if done.returncode != 0:
        raise UnreachableError(f"{failed} failed with exit status {done.returncode}") from None
    try:
        status = json.loads(done.stdout).get("status") or {}
        if not isinstance(status, dict):
            raise ValueError("status is not an object")
    except (ValueError, AttributeError):
        raise UnreachableError(f"{failed} printed no ExecCredential") from None
    fields = {"token": status.get("token")}
    for field, key in (
        ("client-certificate-data", "clientCertificateData"),
        ("client-key-data", "clientKeyData"),
    ):
        if status.get(key):
            fields[field] = base64.b64encode(status[key].encode()).decode()
    return {k: v for k, v in fields.items() if v}
