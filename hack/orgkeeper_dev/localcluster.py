"""The embedded local control plane: etcd, kube-apiserver and kube-controller-manager on loopback.

Binaries come from $KUBEBUILDER_ASSETS when it has them, otherwise they are built once from the
Go module in hack/controlplane and cached per machine in
~/.cache/orgkeeper/controlplane/<fingerprint>/ ($ORGKEEPER_CONTROLPLANE_CACHE). `python -m
orgkeeper_dev.localcluster build|up|down|status|kubectl|install` is what `make cluster-up` and
friends call.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from orgkeeper.api.v1alpha1 import GROUP
from orgkeeper.names import WEBHOOK_CONFIGURATION
from orgkeeper.pki import certificate, pem_key, subject_name

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: this is hack/orgkeeper_dev/
GO_MODULE = REPO_ROOT / "hack" / "controlplane"
# Machine-wide, so every clone on this machine (CI's fresh one too) reuses one build.
BIN_CACHE_ROOT = Path(
    os.environ.get(
        "ORGKEEPER_CONTROLPLANE_CACHE", Path.home() / ".cache" / "orgkeeper" / "controlplane"
    )
)
DEFAULT_STATE_DIR = REPO_ROOT / ".cache" / "cluster"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
KUBERNETES_VERSION = "v1.37.2"
ADMIN_USER = "orgkeeper-admin"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# What `make install` applies, and every local cluster of the demo, the bench and the tests
# (install_orgkeeper): CRDs, the team, sign-up, support and org-switcher ClusterRoles, and the
# admission policies that hold without the operator.
INSTALL_MANIFESTS = (
    "crds",
    "manifests/rbac/teams.yaml",
    "manifests/rbac/support.yaml",
    "manifests/rbac/people.yaml",
    "manifests/policies",
)

ATTACHED = ("orgkeeper", "hydra")  # processes `spawn`ed beside the control plane

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


class ControlPlaneError(RuntimeError):
    """The local control plane could not be built or started; the message says why."""


class KubectlError(RuntimeError):
    """kubectl failed; the message is the command and what kubectl said."""


# --- binaries ---------------------------------------------------------------------------


def _build_fingerprint() -> str:
    digest = hashlib.sha256(KUBERNETES_VERSION.encode())
    for path in sorted(GO_MODULE.rglob("*")):
        if path.is_file() and path.suffix in (".go", ".mod", ".sum"):
            digest.update(path.relative_to(GO_MODULE).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def binaries(*, build: bool = True) -> dict[str, Path]:
    """Paths of the four binaries; builds the missing ones (once per machine)."""
    found: dict[str, Path] = {}
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        for name in BINARIES:
            candidate = Path(assets) / name
            if candidate.is_file():
                found[name] = candidate
    missing = [name for name in BINARIES if name not in found]
    if not missing:
        return found
    # Keyed by what goes into the build, so a version bump builds anew beside the old one.
    directory = BIN_CACHE_ROOT / _build_fingerprint()[:16]
    if not all((directory / name).is_file() for name in missing):
        if not build:
            raise ControlPlaneError(
                f"control-plane binaries {missing} are not built; run `make controlplane`"
            )
        _go_build(directory)
    return found | {name: directory / name for name in missing}


def _go_build(directory: Path) -> None:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    ldflags = " ".join(
        ["-s", "-w"]
        + [
            f"-X {package}.{var}={value}"
            for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for var, value in (
                ("gitVersion", KUBERNETES_VERSION),
                ("gitMajor", major),
                ("gitMinor", minor),
                ("gitTreeState", "clean"),
            )
        ]
    )
    go_build(
        GO_MODULE,
        directory,
        [f"-ldflags={ldflags}", "-o", "{staging}/", "./cmd/..."],
        what=f"{', '.join(BINARIES)} {KUBERNETES_VERSION}",
        missing_go=(
            "Go is needed to build the control plane (or set KUBEBUILDER_ASSETS to envtest "
            "binaries plus kube-controller-manager)"
        ),
    )


def go_build(
    module: Path,
    directory: Path,
    arguments: list[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    missing_go: str | None = None,
) -> None:
    """`go build -trimpath ARGUMENTS` in `module` into `directory` (a "{staging}" in an
    argument is the staging directory), which appears only once the build succeeded."""
    if shutil.which("go") is None:
        raise ControlPlaneError(missing_go or f"Go is needed to build {what}")
    staging = directory.with_name(directory.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"building {what} from Go modules ...", flush=True)
    result = subprocess.run(
        ["go", "build", "-trimpath", *(a.replace("{staging}", str(staging)) for a in arguments)],
        cwd=module,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if result.returncode != 0:
        raise ControlPlaneError(f"go build in {module} failed with exit code {result.returncode}")
    # An interrupted build never leaves a directory that looks complete.
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    print(f"built in {time.monotonic() - started:.0f}s into {directory}", flush=True)


# --- certificates ---------------------------------------------------------------------------


def _write_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate(subject_name("orgkeeper-local-ca"), ca_key, None, ca=True)
    issued = {
        "apiserver": (subject_name("kube-apiserver"), {"server_names": ("127.0.0.1", "localhost")}),
        "admin": (subject_name(ADMIN_USER, "system:masters"), {"client": True}),
        # Its own user name keeps its calls apart in the audit log; the group gives it the
        # rights of every controller without service-account credentials.
        "controller-manager": (
            subject_name(CONTROLLER_MANAGER_USER, "system:masters"),
            {"client": True},
        ),
    }
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (pki / "ca.key").write_bytes(pem_key(ca_key))
    for stem, (subject, options) in issued.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(subject, key, (ca_cert, ca_key), **options)  # type: ignore[arg-type]
        (pki / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (pki / f"{stem}.key").write_bytes(pem_key(key))
    _write_front_proxy_pki(pki)
    service_account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "sa.key").write_bytes(pem_key(service_account_key))
    (pki / "sa.pub").write_bytes(
        service_account_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


# The API aggregation layer, as kubeadm sets it up: kube-apiserver proxies requests for an
# APIService (orgkeeper's people API, README "The org switcher") to the server behind it with a
# client certificate of its own CA (the front proxy's) and the requester in X-Remote-* headers;
# kube-apiserver publishes that CA and the header names in ConfigMap
# kube-system/extension-apiserver-authentication.
FRONT_PROXY_CLIENT = "front-proxy-client"


def _write_front_proxy_pki(pki: Path) -> None:
    """front-proxy-ca.crt and front-proxy-client.{crt,key}: a CA of their own (only the
    aggregator's certificate must pass as the front proxy, never a user's client certificate)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate(subject_name("orgkeeper-local-front-proxy-ca"), ca_key, None, ca=True)
    (pki / "front-proxy-ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(subject_name(FRONT_PROXY_CLIENT), key, (ca_cert, ca_key), client=True)
    (pki / "front-proxy-client.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / "front-proxy-client.key").write_bytes(pem_key(key))


def aggregation_flags(pki: Path) -> list[str]:
    """kube-apiserver's flags for the aggregation layer (kubeadm's values)."""
    return [
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
    ]


# --- the cluster ----------------------------------------------------------------------------


# The ports servers started here are given come from below the kernel's ephemeral range: a
# port there (what bind(0) hands out) may become the local port of any outgoing connection
# before the server binds it, and the server then fails with "address already in use" (a
# control plane of the suite did, with five lanes connecting at once).
FIRST_PORT = 10000


def free_port() -> int:
    """A loopback port free now, below the ephemeral range (see FIRST_PORT), picked at random so
    that processes picking at once rarely pick the same one."""
    ephemeral = max(_ephemeral_ports_start(), FIRST_PORT + 1000)
    for _ in range(200):
        port = secrets.randbelow(ephemeral - FIRST_PORT) + FIRST_PORT
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port between {FIRST_PORT} and {ephemeral}")


def _ephemeral_ports_start() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 where it can't be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def kubeconfig_for(server: str, ca_file: Path, credentials: Mapping[str, str]) -> dict[str, object]:
    """A kubeconfig for `server` whose one user has `credentials`: a client certificate and key
    (`client-certificate`, `client-key`) or a bearer `token`."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "orgkeeper-local",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": "user", "user": dict(credentials)}],
        "contexts": [
            {"name": "orgkeeper-local", "context": {"cluster": "orgkeeper-local", "user": "user"}}
        ],
        "current-context": "orgkeeper-local",
    }


@dataclass
class LocalCluster:
    """A control plane whose files (pki, etcd data, logs, kubeconfig) live in state_dir.

    `extra_args` adds flags to a component's command line (by name: "etcd", "kube-apiserver",
    "kube-controller-manager"), and `audit_policy` replaces the default one (everything at
    Metadata): the benchmark raises etcd's quota and audits only the operator's requests.
    """

    state_dir: Path
    extra_args: Mapping[str, Sequence[str]] = field(default_factory=dict)
    audit_policy: Mapping[str, Any] | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "logs" / "audit.log"

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def server(self) -> str:
        return str(json.loads((self.state_dir / "endpoints.json").read_text())["server"])

    def _pidfile(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        """The process id of a running component (or spawned process), None if it isn't."""
        return int(self._pidfile(name).read_text()) if self._alive(name) else None

    def running(self) -> bool:
        return all(
            self._alive(name) for name in ("etcd", "kube-apiserver", "kube-controller-manager")
        )

    def _alive(self, name: str) -> bool:
        pidfile = self._pidfile(name)
        return pidfile.is_file() and _pid_alive(int(pidfile.read_text()))

    def start(self, *, timeout: float = 120.0, sso: bool = False) -> None:
        """Starts etcd, kube-apiserver and kube-controller-manager; returns once they serve.
        With `sso`, a real OpenID Connect provider (oidc.py) first, which kube-apiserver trusts
        through `--authentication-config`."""
        if self.running():
            return
        self.stop()
        paths = binaries()
        for sub in ("pki", "etcd", "logs", "run"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        _write_pki(self.pki)
        (self.state_dir / "audit-policy.yaml").write_text(
            yaml.safe_dump(dict(self.audit_policy or AUDIT_POLICY))
        )
        etcd_port, peer_port, api_port, kcm_port = (free_port() for _ in range(4))
        server = f"https://127.0.0.1:{api_port}"
        (self.state_dir / "endpoints.json").write_text(
            json.dumps({"server": server, "etcd": f"http://127.0.0.1:{etcd_port}"})
        )
        pki = self.pki
        authentication: list[str] = []
        if sso:
            from . import oidc  # it builds on this module

            provider = oidc.start_provider(self)
            config = self.state_dir / "authentication-config.yaml"
            config.write_text(yaml.safe_dump(oidc.authentication_config(provider)))
            authentication = [f"--authentication-config={config}"]
        kcm_kubeconfig = self.state_dir / "controller-manager.kubeconfig"
        for path, stem in ((self.kubeconfig, "admin"), (kcm_kubeconfig, "controller-manager")):
            credentials = {
                "client-certificate": str(pki / f"{stem}.crt"),
                "client-key": str(pki / f"{stem}.key"),
            }
            path.write_text(yaml.safe_dump(kubeconfig_for(server, pki / "ca.crt", credentials)))
        self.spawn(
            "etcd",
            [
                str(paths["etcd"]),
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                *self.extra_args.get("etcd", ()),
            ],
        )
        self.spawn(
            "kube-apiserver",
            [
                str(paths["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",  # loopback is not a routable endpoint
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=RBAC",
                # As in hardened clusters: setting blockOwnerDeletion needs update on the owner's
                # finalizers, so the operator's RBAC is proven against it.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                f"--audit-policy-file={self.state_dir / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=0",
                f"--cert-dir={pki}",
                *aggregation_flags(pki),
                *authentication,
                *self.extra_args.get("kube-apiserver", ()),
            ],
        )
        self._wait_ready(server, "/readyz", timeout)
        self.spawn(
            "kube-controller-manager",
            [
                str(paths["kube-controller-manager"]),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--controllers=*,-node-ipam-controller,-node-lifecycle-controller",
                "--concurrent-gc-syncs=20",
                *self.extra_args.get("kube-controller-manager", ()),
            ],
        )
        self._wait_for_controllers(timeout)
        if sso:
            oidc.wait_trusted(self, timeout)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Path:
        """Starts a process that outlives the caller and stops with the cluster; its log path."""
        log_path = self.state_dir / "logs" / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # outlives `make cluster-up`; stopped by pid file
            )
        self._pidfile(name).write_text(str(process.pid))
        # What `restart` needs to start it again as it was.
        self._argvfile(name).write_text(json.dumps({"argv": argv, "env": env}))
        return log_path

    def start_operator(
        self,
        *flags: str,
        kubeconfig: Path | None = None,
        metrics_port: int | None = None,
        health_port: int | None = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = 120.0,
    ) -> Path:
        """`orgkeeper run` beside the cluster (it stops with it), on loopback and free ports, as
        the user of `kubeconfig` (the admin's unless given), with `flags` and `environ` added.

        Returns its log path once it is healthy and has registered its admission webhooks.
        """
        health_port = health_port or free_port()
        log_path = self.spawn(
            "orgkeeper",
            [
                sys.executable,
                "-m",
                "orgkeeper.cli",
                "run",
                "--listen-address=127.0.0.1",
                f"--webhook-port={free_port()}",
                f"--health-port={health_port}",
                f"--metrics-port={metrics_port or free_port()}",
                *flags,
            ],
            env={
                **os.environ,
                "KUBECONFIG": str(kubeconfig or self.kubeconfig),
                **(environ or {}),
            },
        )
        webhooks = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"

        def started() -> bool:
            if not self._alive("orgkeeper"):
                tail = log_path.read_text(errors="replace")[-2000:]
                raise ControlPlaneError(f"orgkeeper exited; the end of its log:\n{tail}")
            return (
                healthy(health_port) and self.get(f"{webhooks}/{WEBHOOK_CONFIGURATION}")[0] == 200
            )

        _wait(f"orgkeeper to start ({log_path})", started, timeout)
        return log_path

    def token_kubeconfig(self, path: Path, token: str) -> Path:
        """Writes a kubeconfig for this cluster that authenticates with a bearer token (a
        ServiceAccount's from the TokenRequest API), readable by its owner only."""
        config = kubeconfig_for(self.server, self.pki / "ca.crt", {"token": token})
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def user_kubeconfig(self, path: Path, user: str, *groups: str) -> Path:
        """Writes a kubeconfig for this cluster as `user` (in `groups`), with a client
        certificate from the cluster's CA, as kubeadm's `kubeconfig user` does: a person with
        their own rights only (kubeadm's admin is in `kubeadm:cluster-admins`)."""
        ca_cert = x509.load_pem_x509_certificate((self.pki / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((self.pki / "ca.key").read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, user)]
            + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
        )
        cert = certificate(subject, key, (ca_cert, ca_key), client=True)
        stem = path.with_suffix("")
        cert_file, key_file = stem.with_suffix(".crt"), stem.with_suffix(".key")
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(pem_key(key))
        key_file.chmod(0o600)
        credentials = {"client-certificate": str(cert_file), "client-key": str(key_file)}
        path.write_text(
            yaml.safe_dump(kubeconfig_for(self.server, self.pki / "ca.crt", credentials))
        )
        path.chmod(0o600)
        return path

    def _argvfile(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.json"

    def restart(self, name: str, *, grace: float = 5.0, timeout: float = 120.0) -> None:
        """Stops one spawned process (TERM, KILL after `grace` seconds) and starts it again with
        the same flags and ports, as a supervisor would.

        For etcd and kube-apiserver, returns once the API server is ready again (it checks etcd).
        """
        pidfile = self._pidfile(name)
        if not pidfile.is_file():
            raise ControlPlaneError(f"{name} was not started by this cluster")
        started = json.loads(self._argvfile(name).read_text())
        _terminate(int(pidfile.read_text()), grace)
        self.spawn(name, started["argv"], started["env"])
        if name in ("etcd", "kube-apiserver"):
            self._wait_ready(self.server, "/readyz", timeout)

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        return context

    def get(self, path: str) -> tuple[int, bytes]:
        """A GET as the admin, for readiness checks."""
        request = urllib.request.Request(self.server + path)
        try:
            with urllib.request.urlopen(
                request, context=self._ssl_context(), timeout=5
            ) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read()

    def _wait_ready(self, server: str, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            self._check_processes()
            with contextlib.suppress(OSError):
                status, body = self.get(path)
                if status == 200:
                    return
                last = f"HTTP {status}: {body[-300:].decode(errors='replace')}"
            time.sleep(0.25)
        raise ControlPlaneError(f"{server}{path} not ready after {timeout:.0f}s ({last})")

    def _wait_for_controllers(self, timeout: float) -> None:
        """The service-account controller made `default` in `default`: controllers run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_processes()
            with contextlib.suppress(OSError):
                status, _ = self.get("/api/v1/namespaces/default/serviceaccounts/default")
                if status == 200:
                    return
            time.sleep(0.25)
        raise ControlPlaneError(f"kube-controller-manager not working after {timeout:.0f}s")

    def _check_processes(self) -> None:
        for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
            if self._pidfile(name).is_file() and not self._alive(name):
                tail = (self.state_dir / "logs" / f"{name}.log").read_text(errors="replace")[-2000:]
                raise ControlPlaneError(f"{name} exited; the end of its log:\n{tail}")

    def stop(self) -> None:
        """Stops the processes (TERM, then KILL) and removes the state directory."""
        # One after the other, each gone before the next: anything started beside the cluster
        # (the demo's operator) first, etcd last. A kube-apiserver whose etcd went away first
        # spends its whole grace period retrying before it exits.
        for name in (*ATTACHED, "kube-controller-manager", "kube-apiserver", "etcd"):
            if self._alive(name):
                _terminate(int(self._pidfile(name).read_text()))
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)


def _terminate(pid: int, grace: float = 15.0) -> None:
    """TERM to the process group, KILL after `grace` seconds; returns once the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our own child, now reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def healthy(port: int, path: str = "/healthz") -> bool:
    """Whether an `orgkeeper run` on this machine answers 200 on `path` (/healthz: it serves;
    /readyz: its caches are synced) at `port`."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def _wait(what: str, probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def kubectl(
    cluster: LocalCluster | None,
    *args: str,
    stdin: str | None = None,
    check: bool = True,
    kubeconfig: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """The built kubectl; with `kubeconfig`, or against `cluster` as its admin when given. With
    `check`, a failure raises KubectlError with kubectl's own message."""
    env = dict(os.environ)
    config = kubeconfig or (cluster.kubeconfig if cluster is not None else None)
    if config is not None:
        env["KUBECONFIG"] = str(config)
    done = subprocess.run(
        [str(binaries(build=False)["kubectl"]), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if check and done.returncode != 0:
        raise KubectlError(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
    return done


def install_arguments() -> list[str]:
    """`kubectl` arguments that install orgkeeper's cluster-wide pieces (INSTALL_MANIFESTS)."""
    files = [arg for path in INSTALL_MANIFESTS for arg in ("-f", str(REPO_ROOT / path))]
    return ["apply", "--server-side", *files]


def wait_arguments() -> list[str]:
    """`kubectl` arguments that wait until the installed CRDs are served."""
    return ["wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO_ROOT / "crds")]


def install_orgkeeper(cluster: LocalCluster) -> None:
    """`make install`'s manifests on a local cluster, ready for use: the CRDs served,
    kube-controller-manager counting Memberships, and the README's sign-up binding (every
    signed-in user may sign up an org). What the demo, the bench and the tests start from."""
    kubectl(cluster, *install_arguments())
    kubectl(cluster, *wait_arguments())
    _wait_membership_quota_counted(cluster)
    kubectl(
        cluster,
        "create",
        "clusterrolebinding",
        "orgkeeper-organization-creators",
        "--clusterrole=orgkeeper-organization-creator",
        "--group=system:authenticated",
    )


def _wait_membership_quota_counted(cluster: LocalCluster, timeout: float = 120.0) -> None:
    """Waits until kube-controller-manager counts Memberships in a ResourceQuota.

    It finds new CRDs by discovery every 30 s, and a quota made before that counts them only at
    its 5-minute resync: meanwhile the API server refuses every Membership create in an org
    namespace ("status unknown for quota"). A fresh probe quota is counted at once afterwards.
    A controller manager this cluster started is restarted instead of waited for: its first
    discovery, at start, finds the CRDs.
    """
    namespace, resource = "orgkeeper-quota-probe", f"count/memberships.{GROUP}"
    probe = f"/api/v1/namespaces/{namespace}/resourcequotas/probe"
    kubectl(cluster, "create", "namespace", namespace)
    deadline = time.monotonic() + timeout
    restart = cluster.pid("kube-controller-manager") is not None
    try:
        while True:
            kubectl(cluster, "create", "quota", "probe", f"--hard={resource}=1", "-n", namespace)
            for _ in range(10):
                code, body = cluster.get(probe)
                quota = json.loads(body) if code == 200 else {}
                if resource in (quota.get("status") or {}).get("used", {}):
                    return
                time.sleep(0.2)
            kubectl(cluster, "delete", "quota", "probe", "-n", namespace)
            if restart:
                cluster.restart("kube-controller-manager")
                restart = False
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"kube-controller-manager never counted {resource}")
    finally:
        kubectl(cluster, "delete", "namespace", namespace, "--wait=false")


def install_kubectl() -> str:
    """`make install`'s kubectl: the one on PATH (any recent kubectl applies these), else the
    one built for the local control plane (built now if it isn't yet)."""
    return shutil.which("kubectl") or str(binaries()["kubectl"])


def kubeconfig_environment(cluster: LocalCluster, environ: Mapping[str, str]) -> dict[str, str]:
    """KUBECONFIG for `install` and `kubectl`: as given, else the local control plane's while it
    is up (its kubeconfig exists), else nothing, so kubectl uses ~/.kube/config's context."""
    if environ.get("KUBECONFIG") or not cluster.kubeconfig.is_file():
        return {}
    return {"KUBECONFIG": str(cluster.kubeconfig)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orgkeeper_dev.localcluster", description=__doc__
    )
    parser.add_argument("action", choices=["build", "up", "down", "status", "kubectl", "install"])
    parser.add_argument("kubectl_args", nargs="*", help="with `kubectl`: its arguments, after --")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument(
        "--sso", action="store_true", help="with `up`: a real OpenID Connect provider too"
    )
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.state_dir)
    try:
        if args.action == "build":
            for name, path in binaries().items():
                print(f"{name}: {path}")
        elif args.action == "up":
            cluster.start(sso=args.sso)
            print(f"control plane up at {cluster.server}")
            if args.sso:
                print(
                    "OpenID Connect provider up; log someone in: make -s sso-kubeconfig EMAIL=..."
                )
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.action == "down":
            cluster.stop()
            print("control plane stopped")
        elif args.action == "kubectl":
            kubectl = str(binaries(build=False)["kubectl"])
            os.environ.update(kubeconfig_environment(cluster, os.environ))
            os.execv(kubectl, [kubectl, *args.kubectl_args])
        elif args.action == "install":
            os.environ.update(kubeconfig_environment(cluster, os.environ))
            command = [install_kubectl()]
            print(f"using {command[0]}", flush=True)
            for given in (install_arguments(), wait_arguments()):
                if subprocess.run([*command, *given], check=False).returncode != 0:
                    return 1
        else:
            print("running" if cluster.running() else "stopped")
            return 0 if cluster.running() else 1
    except ControlPlaneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
