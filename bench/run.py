"""`make bench`: orgkeeper at scale (many orgs of a few Memberships, and a few large ones),
against a floor client.

Two runs, each on a fresh local control plane:

1. **operator**: orgkeeper runs; the bench creates the orgs, then their Memberships, and waits
   until every Membership is Active and bound; deactivates 100 orgs together, then one large
   org; restarts the operator (time to `/readyz`); watches it idle.
2. **floor**: no operator. A plain client creates the same Memberships with the same client,
   and does exactly the writes orgkeeper must (one RoleBinding and one status patch per
   Membership; a delete and a patch to deactivate) at the operator's write concurrency, and
   nothing else. The operator never holds the floor's objects.

The bench waits by watch (every Membership's state, every member RoleBinding, every org's
phase), never by polling lists. The operator's API calls come from the audit log, which audits
only the operator's ServiceAccount here. Ratios against the floor matter more than wall time:
both runs share the machine with whatever else runs on it (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client, config

# `audit` beside this file, and the development tooling (hack/orgkeeper_dev) of this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "hack"))
import audit

from orgkeeper.names import (
    API_VERSION,
    GROUP,
    LABEL_MEMBERSHIP,
    MEMBERSHIPS,
    ORGANIZATIONS,
    VERSION,
)
from orgkeeper_dev.localcluster import (
    REPO_ROOT,
    LocalCluster,
    free_port,
    install_orgkeeper,
    kubectl,
)

OUT = REPO_ROOT / "bench" / "out"
STATE = REPO_ROOT / ".cache" / "bench"
WRITE_CONCURRENCY = 16  # the operator's WRITE_CONCURRENCY: the floor's writers
CREATE_CONCURRENCY = 32  # the bench's creators, alike in both runs
DEACTIVATED_TOGETHER = 100
OPERATOR_SA = ("orgkeeper-system", "orgkeeper-bench")
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_SA[0]}:{OPERATOR_SA[1]}"
TEAM = "analytics-viewer"
# Only the operator's requests are audited: the log stays small at 100,000 Memberships, and
# the API server spends nothing on auditing the bench's own traffic.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": [OPERATOR_USER]}, {"level": "None"}],
}
# etcd's default quota (2 GiB) is too small for 100,000 Memberships and their history.
EXTRA_ARGS = {"etcd": ["--quota-backend-bytes=8589934592"]}
GONE = "-"  # the state of a deleted object


def now() -> datetime:
    return datetime.now(UTC)


def parallel(calls: Iterable[Callable[[], Any]], concurrency: int) -> float:
    """Seconds to run every call, `concurrency` at a time."""
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(call) for call in calls]:
            future.result()
    return time.monotonic() - started


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def process_rss_mib(pid: int | None) -> float:
    if pid is None:
        return 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def process_cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- completion by watch ----------------------------------------------------------------------


class Board:
    """The state of every watched object (by kind, namespace and name), counted per namespace
    and in total, kept current by watches; waits are on a condition, not polls."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.states: dict[str, dict[tuple[str, str], str]] = {}
        self.per_namespace: dict[str, Counter[tuple[str, str]]] = {}
        self.totals: dict[str, Counter[str]] = {}
        # Called (under the lock) after every change: the deactivation's per-org clocks.
        self.hooks: list[Callable[[str, str, str], None]] = []
        self.closed = threading.Event()  # its control plane is gone: the watches end

    def put(self, kind: str, namespace: str, name: str, state: str) -> None:
        with self.lock:
            states = self.states.setdefault(kind, {})
            counts = self.per_namespace.setdefault(kind, Counter())
            totals = self.totals.setdefault(kind, Counter())
            before = states.get((namespace, name))
            if before == state:
                return
            if before is not None:
                counts[(namespace, before)] -= 1
                totals[before] -= 1
            if state == GONE:
                states.pop((namespace, name), None)
            else:
                states[(namespace, name)] = state
                counts[(namespace, state)] += 1
                totals[state] += 1
            for hook in self.hooks:
                hook(kind, namespace, name)
            self.lock.notify_all()

    def count(self, kind: str, namespace: str, state: str) -> int:
        return self.per_namespace.get(kind, Counter())[(namespace, state)]

    def total(self, kind: str, state: str) -> int:
        return self.totals.get(kind, Counter())[state]

    def state(self, kind: str, namespace: str, name: str) -> str | None:
        return self.states.get(kind, {}).get((namespace, name))

    def wait(self, what: str, done: Callable[[], bool], timeout: float = 7200) -> float:
        """Seconds until done() holds (checked on every change)."""
        started = time.monotonic()
        with self.lock:
            if not self.lock.wait_for(done, timeout):
                raise SystemExit(f"bench: timed out waiting for {what}")
        return time.monotonic() - started


def membership_state(body: Mapping[str, Any]) -> str:
    return str((body.get("status") or {}).get("state") or "None")


def org_state(body: Mapping[str, Any]) -> str:
    """Ready (Active, and the Ready condition true), else its phase."""
    status = body.get("status") or {}
    phase = str(status.get("phase") or "None")
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return "Ready" if ready and phase == "Active" else phase


class Watch(threading.Thread):
    """Lists one kind once, then follows it by watch onto the board (relisting on 410)."""

    def __init__(
        self,
        api: client.ApiClient,
        board: Board,
        kind: str,
        path: str,
        state: Callable[[Mapping[str, Any]], str],
        selector: str = "",
    ) -> None:
        super().__init__(name=f"watch {kind}", daemon=True)
        self.api, self.board, self.kind, self.path = api, board, kind, path
        self.state, self.selector = state, selector
        self.synced = threading.Event()

    def _get(self, query: list[tuple[str, str]]) -> Any:
        if self.selector:
            query.append(("labelSelector", self.selector))
        method, url, headers, body, post = self.api.param_serialize(
            "GET",
            self.path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        # The raw urllib3 response: a watch streams.
        return self.api.call_api(method, url, headers, body, post).response

    def _take(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        meta = body["metadata"]
        state = GONE if deleted else self.state(body)
        self.board.put(self.kind, meta.get("namespace") or "", meta["name"], state)

    def _list(self) -> str:
        token = ""
        while True:
            query = [("limit", "500")] + ([("continue", token)] if token else [])
            page = json.loads(self._get(query).data)
            for body in page["items"]:
                self._take(body)
            token = page["metadata"].get("continue") or ""
            if not token:
                return str(page["metadata"]["resourceVersion"])

    def run(self) -> None:
        version = ""
        while not self.board.closed.is_set():
            try:
                if not version:
                    version = self._list()
                    self.synced.set()
                reply = self._get(
                    [
                        ("watch", "true"),
                        ("resourceVersion", version),
                        ("allowWatchBookmarks", "true"),
                        ("timeoutSeconds", "1800"),
                    ]
                )
                for line in reply:
                    event = json.loads(line)
                    body = event["object"]
                    if event["type"] == "ERROR":
                        version = ""  # 410 Gone: list again
                        break
                    version = body["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._take(body, deleted=event["type"] == "DELETED")
            except Exception as error:  # the bench's watch outlives a broken connection
                if self.board.closed.is_set():
                    return
                print(f"bench: watch {self.kind}: {error}; again", file=sys.stderr, flush=True)
                time.sleep(1)


# --- the cluster and its clients ------------------------------------------------------------


class Run:
    """One control plane, its admin client, and a board its watches keep current."""

    def __init__(self, name: str) -> None:
        self.cluster = LocalCluster(STATE / name, extra_args=EXTRA_ARGS, audit_policy=AUDIT_POLICY)
        self.cluster.stop()
        self.cluster.start()
        configuration = client.Configuration()
        config.load_kube_config(str(self.cluster.kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = 128  # keep-alive for every thread in flight
        self.api = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.board = Board()
        install_orgkeeper(self.cluster)
        # The floor writes Memberships where no Organization exists, which this admission
        # policy refuses; it guards users, and the bench's writers are the admin and the operator.
        kubectl(
            self.cluster,
            "delete",
            "validatingadmissionpolicybinding",
            "orgkeeper-org-namespace-only",
        )

    def watch(self) -> None:
        watches = [
            Watch(
                self.api,
                self.board,
                MEMBERSHIPS,
                f"/apis/{GROUP}/{VERSION}/{MEMBERSHIPS}",
                membership_state,
            ),
            Watch(
                self.api,
                self.board,
                "rolebindings",
                "/apis/rbac.authorization.k8s.io/v1/rolebindings",
                lambda _: "bound",
                selector=LABEL_MEMBERSHIP,
            ),
            Watch(
                self.api,
                self.board,
                ORGANIZATIONS,
                f"/apis/{GROUP}/{VERSION}/{ORGANIZATIONS}",
                org_state,
            ),
        ]
        for watch in watches:
            watch.start()
        for watch in watches:
            watch.synced.wait(120)

    # The server side: etcd's database and the API server's memory.
    def server_side(self) -> dict[str, float]:
        endpoints = json.loads((self.cluster.state_dir / "endpoints.json").read_text())
        with urllib.request.urlopen(endpoints["etcd"] + "/metrics", timeout=10) as reply:
            text = reply.read().decode()
        etcd = {}
        for line in text.splitlines():
            for metric in (
                "etcd_mvcc_db_total_size_in_bytes",
                "etcd_mvcc_db_total_size_in_use_in_bytes",
            ):
                if line.startswith(metric + " "):
                    etcd[metric] = float(line.split()[1])
        return {
            "etcd_db_bytes": etcd.get("etcd_mvcc_db_total_size_in_bytes", 0.0),
            "etcd_db_in_use_bytes": etcd.get("etcd_mvcc_db_total_size_in_use_in_bytes", 0.0),
            "apiserver_rss_mib": process_rss_mib(self.cluster.pid("kube-apiserver")),
            "etcd_rss_mib": process_rss_mib(self.cluster.pid("etcd")),
        }

    def wait_converged(self, total: int) -> None:
        """Until `total` Memberships are Active, each with its RoleBinding (by watch)."""
        board = self.board
        board.wait(
            "every Membership Active and bound",
            lambda: (
                board.total(MEMBERSHIPS, "Active") == total
                and board.total("rolebindings", "bound") == total
            ),
        )

    def create_namespaces(self, names: Sequence[str]) -> None:
        parallel(
            (
                partial(
                    self.core.create_namespace, {"metadata": {"name": n}}, _preload_content=False
                )
                for n in names
            ),
            CREATE_CONCURRENCY,
        )

    def create_membership(self, namespace: str, name: str) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            MEMBERSHIPS,
            {
                "apiVersion": API_VERSION,
                "kind": "Membership",
                "metadata": {"name": name},
                "spec": {"email": f"{name}@{namespace}.bench", "teams": [TEAM]},
            },
            _preload_content=False,
        )

    def stop(self) -> None:
        self.board.closed.set()
        # Stopping removes the state directory: the operator's log is kept beside the results.
        log = self.cluster.state_dir / "logs" / "orgkeeper.log"
        if log.is_file():
            shutil.copy(log, results_dir / f"{self.cluster.state_dir.name}-orgkeeper.log")
        self.cluster.stop()


def plan(orgs: int, members: int, large: Sequence[int]) -> dict[str, int]:
    """Org name -> the Memberships the bench creates in it (the Owner's comes on top)."""
    sizes = {f"big{i}": size for i, size in enumerate(large)}
    sizes.update({f"o{i}": members for i in range(orgs)})
    return sizes


def creations(sizes: Mapping[str, int]) -> list[tuple[str, str]]:
    """(namespace, name) of every Membership to create, the orgs interleaved in turn (as many
    clients would), large orgs taking one of each round."""
    queues = [[(f"org-{org}", f"m{i}") for i in range(size)] for org, size in sorted(sizes.items())]
    order: list[tuple[str, str]] = []
    depth = max((len(q) for q in queues), default=0)
    for i in range(depth):
        order.extend(q[i] for q in queues if i < len(q))
    return order


def deactivated_together(sizes: Mapping[str, int]) -> list[str]:
    small = [org for org in sizes if org.startswith("o")]
    step = max(1, len(small) // DEACTIVATED_TOGETHER)
    return small[::step][:DEACTIVATED_TOGETHER]


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "max": max(values),
        "count": len(values),
    }


# --- run 1: the operator ------------------------------------------------------------------------


class OperatorRun(Run):
    def __init__(self) -> None:
        super().__init__("operator")
        self.metrics_port, self.health_port = free_port(), free_port()
        self.operator_kubeconfig = self.cluster.state_dir / "operator.kubeconfig"
        namespace, account = OPERATOR_SA
        kubectl(self.cluster, "create", "namespace", namespace)
        kubectl(self.cluster, "create", "serviceaccount", account, "-n", namespace)
        # The bench measures speed, not RBAC (the test suite proves that): cluster-admin here.
        kubectl(
            self.cluster,
            "create",
            "clusterrolebinding",
            account,
            "--clusterrole=cluster-admin",
            f"--serviceaccount={namespace}:{account}",
        )
        token = self.core.create_namespaced_service_account_token(
            account, namespace, {"spec": {"expirationSeconds": 86400}}
        ).status.token
        self.operator_token = str(token)  # cluster-admin: it may also read /metrics
        self.cluster.token_kubeconfig(self.operator_kubeconfig, self.operator_token)

    def start_operator(self) -> float:
        """Starts the operator; seconds from its start to /readyz."""
        started = time.monotonic()
        self.cluster.start_operator(
            # Periodic checks inside the idle window, so it shows what they cost.
            "--check-interval=60s",
            kubeconfig=self.operator_kubeconfig,
            metrics_port=self.metrics_port,
            health_port=self.health_port,
            # As the image (Dockerfile) runs it.
            environ={"MALLOC_ARENA_MAX": "2"},
            timeout=600,
        )
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        while True:  # the operator's own endpoint, not the API server
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    if reply.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.1)

    def stop_operator(self) -> None:
        pid = self.cluster.pid("orgkeeper")
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 120
            while self.cluster.pid("orgkeeper") is not None and time.monotonic() < deadline:
                time.sleep(0.2)

    @property
    def operator_pid(self) -> int | None:
        return self.cluster.pid("orgkeeper")

    def exited(self) -> str:
        """The end of the operator's log (its last words, when it exited unasked)."""
        log = self.cluster.state_dir / "logs" / "orgkeeper.log"
        lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
        return "\n".join(lines[-20:])

    def metric(self, sample: str) -> float:
        # /metrics is HTTPS with the operator's own certificate, for authorized tokens only.
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.metrics_port}/metrics",
            headers={"Authorization": f"Bearer {self.operator_token}"},
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as reply:
                text = str(reply.read().decode())
        except OSError:
            text = ""
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def calls(self, since: datetime, until: datetime) -> list[audit.Call]:
        return list(audit.calls(self.cluster.audit_log, OPERATOR_USER, since, until))

    def create_org(self, name: str) -> None:
        body = {
            "apiVersion": API_VERSION,
            "kind": "Organization",
            "metadata": {"name": name},
            "spec": {
                "displayName": name,
                "plan": "Enterprise",
                "region": "eu",
                "owner": f"owner@{name}.bench",
            },
        }
        self.custom.create_cluster_custom_object(
            GROUP, VERSION, ORGANIZATIONS, body, _preload_content=False
        )

    def set_state(self, org: str, state: str) -> None:
        self.custom.patch_cluster_custom_object(
            GROUP, VERSION, ORGANIZATIONS, org, {"spec": {"state": state}}, _preload_content=False
        )

    def deactivate(self, orgs: Sequence[str], sizes: Mapping[str, int]) -> list[float]:
        """Seconds from each org's deactivation to its Memberships all Removed and unbound."""
        board, started, done = self.board, time.monotonic(), dict[str, float]()
        expected = {f"org-{org}": sizes[org] + 1 for org in orgs}

        def finished(namespace: str) -> bool:
            return (
                board.state(ORGANIZATIONS, "", namespace[len("org-") :]) == "Deactivated"
                and board.count(MEMBERSHIPS, namespace, "Removed") == expected[namespace]
                and board.count("rolebindings", namespace, "bound") == 0
            )

        def hook(kind: str, namespace: str, name: str) -> None:
            candidate = f"org-{name}" if kind == ORGANIZATIONS else namespace
            if candidate in expected and candidate not in done and finished(candidate):
                done[candidate] = time.monotonic() - started

        with board.lock:
            board.hooks.append(hook)
        parallel((partial(self.set_state, o, "Deactivated") for o in orgs), WRITE_CONCURRENCY)
        board.wait(f"{len(orgs)} orgs deactivated", lambda: len(done) == len(expected))
        with board.lock:
            board.hooks.remove(hook)
        return [done[f"org-{org}"] for org in orgs]

    def scenario(
        self, sizes: Mapping[str, int], idle: float, results: dict[str, Any]
    ) -> dict[str, Any]:
        board, out = self.board, dict[str, Any]()
        results["operator"] = out
        self.watch()
        out["start_to_ready"] = self.start_operator()
        cpu_started = process_cpu_seconds(self.operator_pid)
        parallel((partial(self.create_org, o) for o in sizes), CREATE_CONCURRENCY)
        out["orgs_ready"] = board.wait(
            "every org Ready", lambda: board.total(ORGANIZATIONS, "Ready") == len(sizes)
        )
        out["cpu_orgs"] = process_cpu_seconds(self.operator_pid) - cpu_started
        out["server_before"] = self.server_side()
        out["rss_orgs_mib"] = process_rss_mib(self.operator_pid)
        out["load_before"] = load_average()
        save(results)
        print(f"  {len(sizes)} orgs Ready in {out['orgs_ready']:.0f}s", flush=True)

        total = sum(sizes.values()) + len(sizes)  # and each org's Owner
        order = creations(sizes)
        cpu_before = process_cpu_seconds(self.operator_pid)
        creating, started = now(), time.monotonic()
        out["create"] = parallel(
            (partial(self.create_membership, *m) for m in order), CREATE_CONCURRENCY
        )
        self.wait_converged(total)
        out["converge"] = time.monotonic() - started
        converged = now()
        out["load_converged"] = load_average()
        out["cpu_converge"] = process_cpu_seconds(self.operator_pid) - cpu_before
        out["memberships"] = total
        out["rss_converged_mib"] = process_rss_mib(self.operator_pid)
        out["server_converged"] = self.server_side()
        window = self.calls(creating, converged)
        out["converge_calls"] = audit.summary(window)
        out["converge_writes"] = audit.writes_by_resource(window)
        member_writes = sum(
            1 for c in window if c.kind == "write" and c.resource in (MEMBERSHIPS, "rolebindings")
        )
        out["writes_per_membership"] = member_writes / len(order)
        save(results)
        print(f"  {total} Memberships converged in {out['converge']:.0f}s", flush=True)

        together = deactivated_together(sizes)
        out["deactivate_orgs"] = len(together)
        out["deactivate"] = spread(self.deactivate(together, sizes))
        big = next((org for org in sizes if org.startswith("big")), None)
        if big is not None:
            out["deactivate_large_members"] = sizes[big] + 1
            out["deactivate_large"] = self.deactivate([big], sizes)[0]
        save(results)
        print(f"  deactivations: {out['deactivate']}", flush=True)

        out["cpu_total"] = process_cpu_seconds(self.operator_pid)
        self.stop_operator()
        restarted = now()
        out["restart_to_ready"] = self.start_operator()
        out["rss_restarted_mib"] = process_rss_mib(self.operator_pid)
        print(f"  restart to /readyz in {out['restart_to_ready']:.1f}s", flush=True)
        # Settled: every org reconciled once since the restart (or 10 minutes).
        reconciled = 'orgkeeper_reconciles_total{kind="Organization",result="success"}'
        deadline = time.monotonic() + 600
        while self.metric(reconciled) < len(sizes) and time.monotonic() < deadline:
            if self.operator_pid is None:  # say so now, with its last words, not 10 min later
                out["operator_exited"] = self.exited()
                save(results)
                raise SystemExit(f"bench: the operator exited after its restart:\n{self.exited()}")
            time.sleep(2)  # the operator's own counter
        out["restart_settled"] = (now() - restarted).total_seconds()
        out["restart_calls"] = audit.summary(self.calls(restarted, now()))
        out["restart_writes"] = audit.writes_by_resource(self.calls(restarted, now()))
        out["rss_restart_settled_mib"] = process_rss_mib(self.operator_pid)
        save(results)

        idle_from, cpu_idle = now(), process_cpu_seconds(self.operator_pid)
        time.sleep(idle)  # the measurement itself: what the operator does when nothing changes
        idle_calls = self.calls(idle_from, now())
        out["idle_seconds"] = idle
        out["idle_calls"] = audit.summary(idle_calls)
        out["idle_by_call"] = dict(
            Counter(f"{c.verb} {c.resource}" for c in idle_calls).most_common()
        )
        out["idle_cpu"] = process_cpu_seconds(self.operator_pid) - cpu_idle
        out["rss_idle_mib"] = process_rss_mib(self.operator_pid)
        save(results)
        return out


# --- run 2: the floor ---------------------------------------------------------------------------


class FloorRun(Run):
    def __init__(self, name: str = "floor") -> None:
        super().__init__(name)

    def bind(self, namespace: str, name: str) -> None:
        self.rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": f"{name}-{TEAM}", "labels": {LABEL_MEMBERSHIP: name}},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": f"orgkeeper-{TEAM}",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": f"{name}@{namespace}.bench",
                    }
                ],
            },
            _preload_content=False,
        )

    def unbind(self, namespace: str, name: str) -> None:
        self.rbac.delete_namespaced_role_binding(
            f"{name}-{TEAM}", namespace, _preload_content=False
        )

    def set_state(self, namespace: str, name: str, state: str) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            MEMBERSHIPS,
            name,
            {"status": {"state": state}},
            _preload_content=False,
        )

    def scenario(self, sizes: Mapping[str, int], results: dict[str, Any]) -> dict[str, Any]:
        out = dict[str, Any]()
        results["floor"] = out
        self.watch()
        namespaces = [f"org-{org}" for org in sizes]
        self.create_namespaces(namespaces)
        # What the operator made when each org was provisioned (untimed there too): the
        # Owner's Membership, bound and Active.
        parallel(
            (partial(self.create_membership, ns, "owner") for ns in namespaces),
            CREATE_CONCURRENCY,
        )
        parallel(
            (
                call
                for ns in namespaces
                for call in (
                    lambda ns=ns: self.bind(ns, "owner"),
                    lambda ns=ns: self.set_state(ns, "owner", "Active"),
                )
            ),
            CREATE_CONCURRENCY,
        )
        out["server_before"] = self.server_side()
        out["load_before"] = load_average()

        # The same creations as the operator's run; each created Membership's two writes are
        # queued at once to the writers (the operator, too, starts as Memberships arrive).
        order = creations(sizes)
        total = len(order) + len(sizes)
        started = time.monotonic()
        with ThreadPoolExecutor(WRITE_CONCURRENCY) as writers:
            writes = []

            def create(namespace: str, name: str) -> None:
                self.create_membership(namespace, name)
                writes.append(writers.submit(self.bind, namespace, name))
                writes.append(writers.submit(self.set_state, namespace, name, "Active"))

            out["create"] = parallel((partial(create, *m) for m in order), CREATE_CONCURRENCY)
            for write in writes:
                write.result()
        self.wait_converged(total)
        out["converge"] = time.monotonic() - started
        out["load_converged"] = load_average()
        out["memberships"] = total
        out["server_converged"] = self.server_side()
        save(results)
        print(f"  floor: {total} Memberships in {out['converge']:.0f}s", flush=True)

        together = deactivated_together(sizes)
        out["deactivate"] = spread(self.deactivate(together, sizes))
        big = next((org for org in sizes if org.startswith("big")), None)
        if big is not None:
            out["deactivate_large"] = self.deactivate([big], sizes)[0]
        save(results)
        return out

    def deactivate(self, orgs: Sequence[str], sizes: Mapping[str, int]) -> list[float]:
        """Seconds from the start to each org's last write: its orgs in turn (first come,
        first served), each Membership's RoleBinding deleted and state set to Removed."""
        started, done = time.monotonic(), {}
        lock = threading.Lock()
        left = {org: 2 * (sizes[org] + 1) for org in orgs}

        def write(org: str, call: Callable[[], None]) -> None:
            call()
            with lock:
                left[org] -= 1
                if not left[org]:
                    done[org] = time.monotonic() - started

        calls = []
        for org in orgs:
            namespace = f"org-{org}"
            for name in ["owner", *(f"m{i}" for i in range(sizes[org]))]:
                calls.append(
                    lambda o=org, ns=namespace, n=name: write(o, lambda: self.unbind(ns, n))
                )
                calls.append(
                    lambda o=org, ns=namespace, n=name: write(
                        o, lambda: self.set_state(ns, n, "Removed")
                    )
                )
        parallel(calls, WRITE_CONCURRENCY)
        return [done[org] for org in orgs]


# --- the command line ---------------------------------------------------------------------------

# What a person types; each is timed as wall time of the installed `orgkeeper` script.
CLI_RUNS = 5


def cli_timings(run: OperatorRun) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds of each cluster command of `orgkeeper`, against the bench's
    cluster at its full size. CPU time shows what the command costs; wall time also waits for
    the API server (and a busy machine)."""
    name, owner = "cli", "owner@cli.bench"
    run.create_org(name)
    run.board.wait(f"{name} Ready", lambda: run.board.state(ORGANIZATIONS, "", name) == "Ready")
    command = str(Path(sys.executable).with_name("orgkeeper"))
    env = {**os.environ, "KUBECONFIG": str(run.cluster.kubeconfig)}
    timed = {
        "orgs": ["orgs", "--email", owner],
        "status": ["status", name],
        "status -o json": ["status", name, "-o", "json"],
        "activity login": ["activity", "login", "--org", name, "--email", owner],
        "activity requests": ["activity", "requests", "--org", name, "--count", "1"],
    }
    medians = {}
    for label, args in timed.items():
        walls, cpus = [], []
        for _ in range(CLI_RUNS):
            before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
            subprocess.run([command, *args], env=env, capture_output=True, check=True)
            walls.append(time.monotonic() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        medians[label] = {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}
    return medians


def derived(results: dict[str, Any]) -> dict[str, Any]:
    """The figures the targets are stated in (README, issue 23)."""
    op, floor = results.get("operator", {}), results.get("floor", {})
    found: dict[str, Any] = {}
    # The Memberships the bench created (each org's Owner's came with the org, before).
    members = op.get("memberships", 0) - results.get("orgs", 0)
    if members > 0 and "server_converged" in op:
        before, after = op["server_before"], op["server_converged"]
        found["etcd_bytes_per_membership"] = (
            after["etcd_db_in_use_bytes"] - before["etcd_db_in_use_bytes"]
        ) / members
        found["apiserver_bytes_per_membership"] = (
            (after["apiserver_rss_mib"] - before["apiserver_rss_mib"]) * 2**20 / members
        )
        found["operator_bytes_per_membership"] = (
            (op["rss_converged_mib"] - op["rss_orgs_mib"]) * 2**20 / members
        )
        found["operator_cpu_ms_per_membership"] = op["cpu_converge"] * 1000 / members
    if "cpu_orgs" in op:
        found["operator_cpu_ms_per_org"] = op["cpu_orgs"] * 1000 / results["orgs"]
    if "converge" in op and "converge" in floor:
        found["converge_ratio"] = op["converge"] / floor["converge"]
    if "deactivate" in op and "deactivate" in floor:
        for key in ("p50", "p99"):
            found[f"deactivate_{key}_ratio"] = op["deactivate"][key] / floor["deactivate"][key]
    if "deactivate_large" in op and "deactivate_large" in floor:
        found["deactivate_large_ratio"] = op["deactivate_large"] / floor["deactivate_large"]
    return found


def table(results: dict[str, Any]) -> str:
    op, floor, ratio = results.get("operator", {}), results.get("floor", {}), derived(results)

    def pair(key: str, ratio_key: str, sub: str | None = None) -> str:
        mine, base = op.get(key), floor.get(key)
        if sub and mine is not None:
            mine, base = mine[sub], (base or {}).get(sub)
        if mine is None:
            return "not measured"
        if base is None:
            return f"{mine:.1f} s / floor not measured"
        return f"{mine:.1f} s / {base:.1f} s = **{ratio[ratio_key]:.2f}x**"

    rows = [
        ("measure", "orgkeeper (/ floor)", "target"),
        (
            f"converge {op.get('memberships', 0) - results['orgs']:,} new Memberships "
            f"({op.get('memberships', 0):,} with the Owners') in {results['orgs']:,} orgs",
            pair("converge", "converge_ratio"),
            "≤ 1.2x",
        ),
        (
            f"deactivate {op.get('deactivate_orgs', 0)} orgs together, per org p50",
            pair("deactivate", "deactivate_p50_ratio", "p50"),
            "≤ 1.1x",
        ),
        (
            "the same, p99",
            pair("deactivate", "deactivate_p99_ratio", "p99"),
            "≤ 1.3x",
        ),
        (
            f"deactivate one org of {op.get('deactivate_large_members', 0):,} Memberships",
            pair("deactivate_large", "deactivate_large_ratio"),
            "",
        ),
        (
            "operator RSS: converged / after a restart",
            f"{op.get('rss_converged_mib', 0):.0f} MiB / {op.get('rss_restarted_mib', 0):.0f} MiB"
            + (
                f" (settled {op['rss_restart_settled_mib']:.0f} MiB)"
                if op.get("rss_restart_settled_mib")
                else ""
            ),
            "≤ 450 MiB",
        ),
        (
            "operator per Membership created: RSS growth / CPU",
            f"{ratio.get('operator_bytes_per_membership', 0):,.0f} B / "
            f"{ratio.get('operator_cpu_ms_per_membership', 0):.1f} ms",
            "≤ 1 KB per record",
        ),
        (
            "operator per org (provisioning): CPU",
            f"{ratio.get('operator_cpu_ms_per_org', 0):.0f} ms",
            "",
        ),
        (
            "restart to /readyz",
            f"{op.get('restart_to_ready', 0):.1f} s"
            + (
                f" (all orgs reconciled: {op['restart_settled']:.0f} s, "
                f"{op['restart_calls']['writes']} writes)"
                if "restart_settled" in op
                else ""
            ),
            "≤ 20 s",
        ),
        (
            "operator CPU-seconds: orgs / Memberships converging / whole run",
            f"{op.get('cpu_orgs', 0):.0f} / {op.get('cpu_converge', 0):.0f} / "
            f"{op.get('cpu_total', 0):.0f}",
            "",
        ),
        (
            "writes per Membership",
            f"{op.get('writes_per_membership', 0):.2f}",
            "2.00",
        ),
        (
            "server side per Membership: etcd in use / API server RSS",
            f"{ratio.get('etcd_bytes_per_membership', 0):,.0f} B / "
            f"{ratio.get('apiserver_bytes_per_membership', 0):,.0f} B",
            "",
        ),
        (
            f"idle {op.get('idle_seconds', 0):.0f} s: writes / reads",
            f"{op['idle_calls']['writes']} / {op['idle_calls']['reads']}"
            if "idle_calls" in op
            else "not measured",
            "0 / 0",
        ),
        (
            "load average (1, 5, 15 min) at converge: operator run / floor run",
            f"{op.get('load_converged')} / {floor.get('load_converged')}",
            "",
        ),
    ]
    lines = [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.insert(1, "|---|---|---|")
    cli = results.get("cli")
    if cli:
        lines += [
            "",
            f"| orgkeeper command (median of {CLI_RUNS}) | wall | CPU |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| `orgkeeper {label}` | {t['wall']:.3f} s | {t['cpu']:.3f} s |"
            for label, t in cli.items()
        ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    op, floor = results["operator"], results["floor"]
    bars = [
        ("converge", op.get("converge"), floor.get("converge")),
        (
            "deactivate p50",
            op.get("deactivate", {}).get("p50"),
            floor.get("deactivate", {}).get("p50"),
        ),
        (
            "deactivate p99",
            op.get("deactivate", {}).get("p99"),
            floor.get("deactivate", {}).get("p99"),
        ),
        ("deactivate large", op.get("deactivate_large"), floor.get("deactivate_large")),
    ]
    bars = [b for b in bars if b[1] is not None and b[2] is not None]
    figure, axes = plt.subplots(1, len(bars), figsize=(3.2 * len(bars), 4))
    for axis, (label, mine, base) in zip(axes, bars, strict=True):
        axis.bar(["orgkeeper", "floor"], [mine, base], color=["tab:blue", "tab:gray"])
        axis.set_title(f"{label}: {mine / base:.2f}x")
        axis.set_ylabel("seconds")
        axis.grid(alpha=0.3, axis="y")
    figure.suptitle(
        f"{op.get('memberships', 0):,} Memberships in {results['orgs']:,} orgs "
        f"(one process, local control plane, load {op.get('load_converged')})"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def save(results: dict[str, Any]) -> None:
    """After every step, so a long run cut short keeps what it measured."""
    results["derived"] = derived(results)
    (results_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))


results_dir = OUT  # --out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--orgs", type=int, default=1000, help="orgs of --members each")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument(
        "--large",
        default="1000",
        help="sizes of the large orgs, comma-separated; the first is deactivated alone",
    )
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idleness to watch")
    parser.add_argument("--no-floor", action="store_true", help="the operator's run only")
    parser.add_argument("--floor-only", action="store_true", help="the floor's run only")
    parser.add_argument("--out", type=Path, default=OUT, help="where results.json and the plot go")
    parser.add_argument("--no-cli", action="store_true", help="don't time orgkeeper commands")
    parser.add_argument(
        "--report",
        type=Path,
        help="run nothing: print the table and plot (beside it) of a saved results.json",
    )
    args = parser.parse_args(argv)
    if args.report:
        saved = json.loads(args.report.read_text())
        saved["derived"] = derived(saved)
        args.report.write_text(json.dumps(saved, indent=2, default=str))
        if "floor" in saved:
            plot(saved, args.report.with_suffix(".png"))
        print(table(saved))
        return 0
    global results_dir
    results_dir = args.out
    results_dir.mkdir(parents=True, exist_ok=True)
    sizes = plan(args.orgs, args.members, [int(s) for s in args.large.split(",") if s])
    results: dict[str, Any] = {
        "when": now().isoformat(),
        "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "orgs": len(sizes),
        "cpus": os.cpu_count(),
    }
    if not args.floor_only:
        print(f"operator run: {len(sizes)} orgs ...", flush=True)
        run = OperatorRun()
        try:
            run.scenario(sizes, args.idle, results)
            if not args.no_cli:
                results["cli"] = cli_timings(run)
            save(results)
        finally:
            run.stop()
    if not args.no_floor:
        print("floor run ...", flush=True)
        # A control plane of its own (--floor-only may run beside an operator run).
        floor = FloorRun("floor-only" if args.floor_only else "floor")
        try:
            floor.scenario(sizes, results)
        finally:
            floor.stop()
        save(results)
    if "operator" in results and "floor" in results:
        plot(results, results_dir / "scale.png")
    print(table(results))
    print(f"\nraw results: {results_dir / 'results.json'}; plot: {results_dir / 'scale.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
