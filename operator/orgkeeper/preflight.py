"""What `orgkeeper run` checks before it starts anything: ports, certificates, the cluster.

Each failure is a SettingError (one line naming the flag, exit code 2), so a setting that can't
work never leaves a half-running operator behind.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .settings import SettingError, Settings

CLUSTER_TIMEOUT_SECONDS = 5.0
CLUSTER_RETRY_SECONDS = 0.5
_MESSAGE_LIMIT = 300
# ValidatingAdmissionPolicy v1 (with matchConditions, `authorizer` and CEL optionals) and the CRD
# rules' `reason` went GA in Kubernetes 1.30; the local control plane runs 1.37.
MINIMUM_KUBERNETES = (1, 30)
_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


@dataclass(frozen=True)
class Listeners:
    """The health and metrics ports, bound and listening before kopf starts."""

    health: socket.socket
    metrics: socket.socket
    people: socket.socket | None = None  # the people API's, when --people-api-port is given

    def close(self) -> None:
        self.health.close()
        self.metrics.close()
        if self.people is not None:
            self.people.close()


def claim_ports(settings: Settings) -> Listeners:
    """Binds the health and metrics ports, and checks the webhook port is free.

    kopf binds the webhook server with SO_REUSEPORT, which silently shares a port another
    process listens on; a bind without it fails instead, as it should.
    """
    address = settings.listen_address
    if settings.webhook_mode != "off":
        _listen("webhook-port", address, settings.webhook_port).close()
    health = _listen("health-port", address, settings.health_port)
    try:
        metrics = _listen("metrics-port", address, settings.metrics_port)
    except SettingError:
        health.close()
        raise
    people = None
    if settings.people_api_port is not None:
        try:
            people = _listen("people-api-port", address, settings.people_api_port)
        except SettingError:
            health.close()
            metrics.close()
            raise
    return Listeners(health=health, metrics=metrics, people=people)


def _listen(flag: str, address: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise SettingError("listen-address", f"{address!r}: {error.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not SO_REUSEPORT: no sharing
    try:
        sock.bind((address, port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise SettingError(
            flag, f"can't listen on {address}:{port}: {error.strerror}; choose a free port"
        ) from None
    sock.setblocking(False)
    return sock


def check_tls_dirs(settings: Settings) -> None:
    """A mounted certificate directory without a usable tls.crt and tls.key."""
    from .pki import mounted_webhook_tls

    dirs = {"metrics-cert-dir": settings.metrics_cert_dir}
    if settings.webhook_mode != "off":
        dirs["webhook-cert-dir"] = settings.webhook_cert_dir
    for flag, directory in dirs.items():
        if directory:
            try:
                mounted_webhook_tls(Path(directory))
            except (OSError, ValueError) as error:
                raise SettingError(flag, str(error)) from None


def check_cluster(identity: str, timeout: float = CLUSTER_TIMEOUT_SECONDS) -> None:
    """A quick /version call: no cluster (or credentials it refuses), or one older than
    MINIMUM_KUBERNETES, means no start.

    Any other answer, even an error status, shows a reachable API server; a dropped connection
    is tried again within `timeout`.
    """
    from kubernetes.client.rest import ApiException
    from kubernetes.config import ConfigException

    from .kube import server_version

    deadline = time.monotonic() + timeout
    while True:
        try:
            version = server_version(identity, max(deadline - time.monotonic(), 0.5))
        except ApiException as error:
            if error.status != 401:
                return
            problem = "the API server refused the credentials (401)"
            break
        except ConfigException as error:  # no kubeconfig, or not one: no point trying again
            problem = _one_line(error)
            break
        except Exception as error:  # the client raises many kinds for a bad kubeconfig or no server
            problem = _one_line(error)
            if time.monotonic() + CLUSTER_RETRY_SECONDS >= deadline:
                break
            time.sleep(CLUSTER_RETRY_SECONDS)
        else:
            check_version(version)
            return
    raise SettingError(
        "KUBECONFIG",
        f"no reachable cluster ({problem}); set KUBECONFIG to the kubeconfig of a running "
        "cluster, or run in a Pod with a ServiceAccount",
    )


def too_old(git_version: str) -> bool:
    """Whether a /version `gitVersion` ("v1.29.4", "v1.30.0+k3s1", "v1.31.2-gke.1") is older than
    MINIMUM_KUBERNETES. A version that doesn't parse is not refused: the API server answered."""
    match = _VERSION.match(git_version.strip())
    return match is not None and (int(match[1]), int(match[2])) < MINIMUM_KUBERNETES


def check_version(git_version: str) -> None:
    if too_old(git_version):
        major, minor = MINIMUM_KUBERNETES
        raise SettingError(
            "KUBECONFIG",
            f"the cluster runs Kubernetes {git_version}; orgkeeper needs {major}.{minor} or "
            "later (ValidatingAdmissionPolicy v1)",
        )


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if "Caused by" in text:  # urllib3 nests the cause in a long repr
        text = text[text.index("Caused by") :]
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."
