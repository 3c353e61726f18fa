"""`make bench`: orgkeeper's convergence against size, side by side with a floor client.

Everything runs on a fresh local control plane in one run, so the ratios compare like with
like even though absolute times drift between machines and runs. The floor is a plain client
(the same Python kubernetes stack and write concurrency as the operator) that performs exactly
the minimal writes a scenario needs and nothing else. API calls come from the audit log, by
user: the operator runs as its own ServiceAccount.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
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
    COMPONENT_DATA_PLANE,
    GROUP,
    LABEL_COMPONENT,
    LABEL_MEMBERSHIP,
    LABEL_ORGANIZATION,
    LABEL_PRODUCT,
    MEMBERSHIPS,
    ORGANIZATIONS,
    VERSION,
    propagated_license_secret,
)
from orgkeeper_dev.localcluster import (
    REPO_ROOT,
    LocalCluster,
    free_port,
    install_orgkeeper,
    kubectl,
)

OUT = REPO_ROOT / "bench" / "out"
STATE = REPO_ROOT / ".cache" / "bench" / "cluster"
CONCURRENCY = 16  # the operator's WRITE_CONCURRENCY
DATA_PLANE_NAMESPACES = 20
# The copy of the gateway license in a data plane's namespace.
GATEWAY_COPY = propagated_license_secret("gateway-enterprise")
OPERATOR_USER = "system:serviceaccount:orgkeeper-system:orgkeeper-bench"


def now() -> datetime:
    return datetime.now(UTC)


def wait(
    what: str, probe: Callable[[], bool], timeout: float = 1800, interval: float = 0.5
) -> float:
    """Seconds until probe() is true."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if probe():
            return time.monotonic() - started
        time.sleep(interval)
    raise SystemExit(f"bench: timed out waiting for {what}")


def parallel(calls: Iterable[Callable[[], Any]]) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for future in [pool.submit(call) for call in calls]:
            future.result()
    return time.monotonic() - started


class Bench:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        configuration = client.Configuration()
        config.load_kube_config(str(cluster.kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = 64
        self.api = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.metrics_port = free_port()
        self.operator_kubeconfig = cluster.state_dir / "operator.kubeconfig"
        self.operator_token = ""

    # --- setup ----------------------------------------------------------------------------

    def install(self) -> None:
        install_orgkeeper(self.cluster)
        # The floor writes Memberships in namespaces orgkeeper ignores, which this admission
        # policy refuses; it guards users, and the bench's writers are the admin and the operator.
        kubectl(
            self.cluster,
            "delete",
            "validatingadmissionpolicybinding",
            "orgkeeper-org-namespace-only",
        )
        kubectl(self.cluster, "create", "namespace", "orgkeeper-system")
        kubectl(
            self.cluster, "create", "serviceaccount", "orgkeeper-bench", "-n", "orgkeeper-system"
        )
        # The bench measures speed, not RBAC (the test suite proves that): cluster-admin here.
        kubectl(
            self.cluster,
            "create",
            "clusterrolebinding",
            "orgkeeper-bench",
            "--clusterrole=cluster-admin",
            "--serviceaccount=orgkeeper-system:orgkeeper-bench",
        )
        token = self.core.create_namespaced_service_account_token(
            "orgkeeper-bench", "orgkeeper-system", {"spec": {"expirationSeconds": 86400}}
        ).status.token
        self.operator_token = str(token)  # cluster-admin: it may also read /metrics
        self.cluster.token_kubeconfig(self.operator_kubeconfig, self.operator_token)

    def start_operator(self) -> None:
        self.cluster.start_operator(
            # Periodic checks inside the idle window, so it shows what they cost.
            "--check-interval=60s",
            kubeconfig=self.operator_kubeconfig,
            metrics_port=self.metrics_port,
            # As the image (Dockerfile) runs it.
            environ={"MALLOC_ARENA_MAX": "2"},
        )

    def stop_operator(self) -> None:
        pid = self.cluster.pid("orgkeeper")
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait("the operator to stop", lambda: self.cluster.pid("orgkeeper") is None, timeout=60)

    def operator_rss_mib(self) -> float:
        pid = self.cluster.pid("orgkeeper")
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise SystemExit("bench: no VmRSS for the operator")

    def metric(self, sample: str) -> float:
        # /metrics is HTTPS with the operator's own certificate, for authorized tokens only.
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.metrics_port}/metrics",
            headers={"Authorization": f"Bearer {self.operator_token}"},
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as reply:
                text = str(reply.read().decode())
        except OSError:
            text = ""
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def operator_calls(self, since: datetime, until: datetime) -> list[audit.Call]:
        return list(audit.calls(self.cluster.audit_log, OPERATOR_USER, since, until))

    # --- objects --------------------------------------------------------------------------

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
        self.custom.create_cluster_custom_object(GROUP, VERSION, ORGANIZATIONS, body)

    def create_members(self, namespace: str, count: int, team: str = "analytics-viewer") -> None:
        def create(i: int) -> object:
            return self.custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                MEMBERSHIPS,
                {
                    "apiVersion": API_VERSION,
                    "kind": "Membership",
                    "metadata": {"name": f"m{i}"},
                    "spec": {"email": f"user{i}@{namespace}.bench", "teams": [team]},
                },
            )

        parallel(partial(create, i) for i in range(count))

    def data_planes(self, org: str, prefix: str) -> list[str]:
        namespaces = [f"{prefix}-{i}" for i in range(DATA_PLANE_NAMESPACES)]
        for namespace in namespaces:
            # Given to the org (the namespace label): data planes count only where it owns.
            labels = {LABEL_ORGANIZATION: org}
            self.core.create_namespace({"metadata": {"name": namespace, "labels": labels}})
            self.apps.create_namespaced_deployment(
                namespace,
                {
                    "metadata": {
                        "name": "gateway",
                        "labels": {
                            LABEL_ORGANIZATION: org,
                            LABEL_COMPONENT: COMPONENT_DATA_PLANE,
                            LABEL_PRODUCT: "gateway-enterprise",
                        },
                    },
                    "spec": {
                        "selector": {"matchLabels": {"app": "gw"}},
                        "template": {
                            "metadata": {"labels": {"app": "gw"}},
                            "spec": {"containers": [{"name": "gw", "image": "gw:1"}]},
                        },
                    },
                },
            )
        return namespaces

    def org(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_cluster_custom_object(GROUP, VERSION, ORGANIZATIONS, name))

    def ready(self, name: str) -> bool:
        conditions = (self.org(name).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def bindings(self, namespace: str) -> int:
        return len(
            self.rbac.list_namespaced_role_binding(namespace, label_selector=LABEL_MEMBERSHIP).items
        )

    def states(self, namespace: str) -> set[str | None]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, MEMBERSHIPS)[
            "items"
        ]
        return {(m.get("status") or {}).get("state") for m in items}

    def copies(self, namespaces: list[str]) -> int:
        return sum(
            bool(
                self.core.list_namespaced_secret(
                    ns, field_selector=f"metadata.name={GATEWAY_COPY}"
                ).items
            )
            for ns in namespaces
        )

    # --- scenario A: one org of N members ---------------------------------------------------

    def one_org(self, size: int) -> dict[str, Any]:
        name = f"org{size}"
        namespace = f"org-{name}"
        self.create_org(name)
        wait(f"{name} Ready", lambda: self.ready(name))
        planes = self.data_planes(name, f"edge{size}")
        creating = now()
        self.create_members(namespace, size)
        converge = wait(
            f"{name} converged",
            lambda: (
                self.bindings(namespace) == size + 1
                and self.states(namespace) == {"Active"}
                and self.copies(planes) == DATA_PLANE_NAMESPACES
            ),
        )
        converged = now()
        window = self.operator_calls(creating, converged)
        member_writes = sum(
            1 for c in window if c.kind == "write" and c.resource in (MEMBERSHIPS, "rolebindings")
        )

        self.custom.patch_cluster_custom_object(
            GROUP, VERSION, ORGANIZATIONS, name, {"spec": {"state": "Deactivated"}}
        )
        deactivate = wait(
            f"{name} deactivated",
            lambda: (
                (self.org(name).get("status") or {}).get("phase") == "Deactivated"
                and self.bindings(namespace) == 0
                and self.states(namespace) == {"Removed"}
            ),
        )
        self.custom.patch_cluster_custom_object(
            GROUP, VERSION, ORGANIZATIONS, name, {"spec": {"state": "Active"}}
        )
        reactivate = wait(
            f"{name} reactivated",
            lambda: (
                self.ready(name)
                and self.bindings(namespace) == size + 1
                and self.states(namespace) == {"Active"}
            ),
        )

        floor = self.floor(size)
        return {
            "size": size,
            "converge": converge,
            "deactivate": deactivate,
            "reactivate": reactivate,
            "floor_converge": floor["converge"],
            "floor_deactivate": floor["deactivate"],
            "floor_reactivate": floor["reactivate"],
            "writes_per_membership": member_writes / size,
            "operator_calls": audit.summary(window),
            "operator_writes": audit.writes_by_resource(window),
        }

    def floor(self, size: int) -> dict[str, float]:
        """The scenario's minimal writes, by a plain client, in a namespace orgkeeper ignores."""
        namespace = f"floor{size}"
        self.core.create_namespace({"metadata": {"name": namespace}})
        planes = [f"floor{size}-{i}" for i in range(DATA_PLANE_NAMESPACES)]
        for plane in planes:
            self.core.create_namespace({"metadata": {"name": plane}})
        self.create_members(namespace, size)

        def copy(plane: str) -> Callable[[], Any]:
            return lambda: self.core.create_namespaced_secret(
                plane,
                {
                    "metadata": {"name": GATEWAY_COPY},
                    "data": {"license": "eA=="},
                },
            )

        converge = parallel(
            [
                *(self._floor_binding(namespace, i) for i in range(size)),
                *(self._floor_state(namespace, i, "Active") for i in range(size)),
                *(copy(p) for p in planes),
            ]
        )
        deactivate = parallel(
            [
                *(
                    lambda i=i: self.rbac.delete_namespaced_role_binding(
                        f"m{i}-analytics-viewer", namespace
                    )
                    for i in range(size)
                ),
                *(self._floor_state(namespace, i, "Removed") for i in range(size)),
            ]
        )
        reactivate = parallel(
            [
                *(self._floor_binding(namespace, i) for i in range(size)),
                *(self._floor_state(namespace, i, "Active") for i in range(size)),
            ]
        )
        return {"converge": converge, "deactivate": deactivate, "reactivate": reactivate}

    def _floor_binding(self, namespace: str, i: int) -> Callable[[], Any]:
        return lambda: self.rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": f"m{i}-analytics-viewer", "labels": {"bench": "floor"}},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "orgkeeper-analytics-viewer",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": f"user{i}@{namespace}.bench",
                    }
                ],
            },
        )

    def _floor_state(self, namespace: str, i: int, value: str) -> Callable[[], Any]:
        return lambda: self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, MEMBERSHIPS, f"m{i}", {"status": {"state": value}}
        )

    # --- scenario B: many orgs, restart, idle ---------------------------------------------------

    def many_orgs(self, orgs: int, members: int, idle: float) -> dict[str, Any]:
        names = [f"many{i}" for i in range(orgs)]
        parallel([partial(self.create_org, n) for n in names])
        wait("every org Ready", lambda: all(self.ready(n) for n in names))
        creating = now()
        for name in names:
            self.create_members(f"org-{name}", members)
        created = now()
        total = orgs * (members + 1)
        converge = wait(
            "every member bound and Active",
            lambda: (
                len(
                    self.rbac.list_role_binding_for_all_namespaces(
                        label_selector=LABEL_MEMBERSHIP
                    ).items
                )
                >= total
                and all(self.states(f"org-{n}") == {"Active"} for n in names)
            ),
        )
        converged = now()
        window = self.operator_calls(creating, converged)
        member_writes = sum(
            1 for c in window if c.kind == "write" and c.resource in (MEMBERSHIPS, "rolebindings")
        )
        # Memory before the floor adds its own Memberships (which the operator caches too).
        rss, held = self.operator_rss_mib(), self.memberships_held()
        floor_create, floor_converge = self.floor_many(orgs, members)

        every = len(self.existing_orgs())
        self.stop_operator()
        restarted, started = now(), time.monotonic()
        self.start_operator()
        reconciled = 'orgkeeper_reconciles_total{kind="Organization",result="success"}'
        wait("every org reconciled after the restart", lambda: self.metric(reconciled) >= every)
        startup = time.monotonic() - started
        startup_calls = self.operator_calls(restarted, now())
        rss_restarted, held_restarted = self.operator_rss_mib(), self.memberships_held()

        idle_from = now()
        time.sleep(idle)  # the measurement itself: what the operator does when nothing changes
        idle_calls = self.operator_calls(idle_from, now())
        return {
            "orgs": orgs,
            "memberships": orgs * members,
            # Both sides from their first Membership create, at the same client concurrency.
            "converge": (created - creating).total_seconds() + converge,
            "floor_converge": floor_create + floor_converge,
            "converge_after_last_create": converge,
            "writes_per_membership": member_writes / (orgs * members),
            "rss_mib": rss,
            "memberships_held": held,
            "rss_after_restart_mib": rss_restarted,
            "memberships_held_after_restart": held_restarted,
            "rss_after_idle_mib": self.operator_rss_mib(),
            "startup_seconds": startup,
            "startup_calls": audit.summary(startup_calls),
            "startup_writes": audit.writes_by_resource(startup_calls),
            "idle_seconds": idle,
            "idle_calls": audit.summary(idle_calls),
            "idle_writes": audit.writes_by_resource(idle_calls),
        }

    def floor_many(self, orgs: int, members: int) -> tuple[float, float]:
        """Seconds to create `orgs` x `members` Memberships, then for their minimal writes."""
        namespaces = [f"floor-many{i}" for i in range(orgs)]
        for namespace in namespaces:
            self.core.create_namespace({"metadata": {"name": namespace}})
        started = time.monotonic()
        for namespace in namespaces:
            self.create_members(namespace, members)
        create = time.monotonic() - started
        return create, parallel(
            [
                call
                for namespace in namespaces
                for i in range(members)
                for call in (
                    self._floor_binding(namespace, i),
                    self._floor_state(namespace, i, "Active"),
                )
            ]
        )

    def memberships_held(self) -> int:
        """Every Membership in the cluster: the operator's informer holds them all."""
        listed = self.custom.list_cluster_custom_object(GROUP, VERSION, MEMBERSHIPS)
        return len(listed["items"])

    def existing_orgs(self) -> list[str]:
        return [
            o["metadata"]["name"]
            for o in self.custom.list_cluster_custom_object(GROUP, VERSION, ORGANIZATIONS)["items"]
        ]


# What a person types; each is timed as wall time of the installed `orgkeeper` script.
CLI_RUNS = 5


def cli_timings(bench: Bench) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds of each cluster command of `orgkeeper`, against the bench's
    cluster (after the scenarios, so its lists are the size they left). CPU time shows what the
    command costs; wall time also waits for the API server (and a busy machine)."""
    name, owner = "cli", "owner@cli.bench"
    bench.create_org(name)
    wait(f"{name} Ready", lambda: bench.ready(name))
    command = str(Path(sys.executable).with_name("orgkeeper"))
    env = {**os.environ, "KUBECONFIG": str(bench.cluster.kubeconfig)}
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


def table(results: dict[str, Any]) -> str:
    lines = []
    if results["one_org"]:
        lines += [
            "| members | converge (op / floor) | deactivate (op / floor) | reactivate (op / floor) "
            "| writes per membership |",
            "|---|---|---|---|---|",
        ]
    for row in results["one_org"]:
        cells = [
            f"{row[k]:.1f}s / {row['floor_' + k]:.1f}s = {row[k] / row['floor_' + k]:.2f}x"
            for k in ("converge", "deactivate", "reactivate")
        ]
        lines.append(
            f"| {row['size']} | " + " | ".join(cells) + f" | {row['writes_per_membership']:.2f} |"
        )
    many = results.get("many_orgs")
    if many:
        lines += [
            "",
            f"{many['orgs']} orgs, {many['memberships']} memberships: "
            f"converge {many['converge']:.1f}s / floor {many['floor_converge']:.1f}s = "
            f"{many['converge'] / many['floor_converge']:.2f}x, "
            f"{many['writes_per_membership']:.2f} writes per membership; "
            f"operator RSS {many['rss_mib']:.0f} MiB holding {many['memberships_held']} "
            f"Memberships ({many['rss_after_restart_mib']:.0f} MiB holding "
            f"{many['memberships_held_after_restart']} after a restart); "
            f"restart to converged {many['startup_seconds']:.1f}s "
            f"with {many['startup_calls']['writes']} writes; "
            f"{many['idle_calls']['writes']} writes and {many['idle_calls']['reads']} reads "
            f"in {many['idle_seconds']:.0f}s idle",
        ]
    cli = results.get("cli")
    if cli:
        lines += [""] if lines else []
        lines += [f"| orgkeeper command (median of {CLI_RUNS}) | wall | CPU |", "|---|---:|---:|"]
        lines += [
            f"| `orgkeeper {label}` | {t['wall']:.3f} s | {t['cpu']:.3f} s |"
            for label, t in cli.items()
        ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["one_org"]
    sizes = [r["size"] for r in rows]
    figure, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=False)
    for axis, key in zip(axes, ("converge", "deactivate", "reactivate"), strict=True):
        axis.plot(sizes, [r[key] for r in rows], "o-", label="orgkeeper")
        axis.plot(sizes, [r["floor_" + key] for r in rows], "s--", label="floor (minimal writes)")
        axis.set_title(key)
        axis.set_xlabel("memberships in one org")
        axis.set_ylabel("seconds")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("orgkeeper convergence against size (one run, local control plane)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def save(results: dict[str, Any]) -> None:
    """After every scenario, so a long run cut short keeps what it measured."""
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument(
        "--sizes",
        default="100,1000,5000",
        help="memberships in one org, comma-separated ('' for none)",
    )
    parser.add_argument("--orgs", type=int, default=200)
    parser.add_argument("--members-per-org", type=int, default=50)
    parser.add_argument("--idle", type=float, default=120.0, help="seconds of idleness to watch")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(STATE)
    cluster.stop()
    cluster.start()
    try:
        bench = Bench(cluster)
        bench.install()
        bench.start_operator()
        results: dict[str, Any] = {"when": now().isoformat(), "one_org": []}
        for size in (int(s) for s in args.sizes.split(",") if s):
            print(f"one org of {size} memberships ...", flush=True)
            results["one_org"].append(bench.one_org(size))
            save(results)
        if args.orgs:
            print(f"{args.orgs} orgs x {args.members_per_org} memberships ...", flush=True)
            results["many_orgs"] = bench.many_orgs(args.orgs, args.members_per_org, args.idle)
            save(results)
        print("orgkeeper commands ...", flush=True)
        results["cli"] = cli_timings(bench)
        save(results)
    finally:
        cluster.stop()
    if results["one_org"]:
        plot(results, OUT / "convergence.png")
    print(table(results))
    print(f"\nraw results: {OUT / 'results.json'}; plot: {OUT / 'convergence.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
