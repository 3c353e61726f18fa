"""`make demo`: orgkeeper's story, told with real objects on the embedded local control plane.

It starts a fresh control plane (etcd, kube-apiserver, kube-controller-manager on loopback),
installs orgkeeper as `make install` does, starts the operator beside it, and walks through
sign-up, members, a data plane's license, ownership transfer, the org switcher, deactivation
for inactivity and reactivation, one method per chapter. The operator keeps running afterwards
(`--stop` ends everything).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from orgkeeper_dev import oidc
from orgkeeper_dev.localcluster import (
    DEFAULT_STATE_DIR,
    LocalCluster,
    binaries,
    install_orgkeeper,
    kubectl,
)
from orgkeeper_dev.objects import membership, organization, workload

# For the demo, 20 seconds without activity stand for the policy's 30 days.
DEMO_SETTINGS = ("--inactivity-window=20s", "--billing-cycle=20s", "--check-interval=2s")


class Demo:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    # --- telling ------------------------------------------------------------------------

    @staticmethod
    def chapter(title: str) -> None:
        print(f"\n== {title} ==", flush=True)

    @staticmethod
    def say(text: str) -> None:
        print(f"   {text}", flush=True)

    def run(
        self, *args: str, show: bool = True, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command as the user would type it, and what it printed; as the cluster admin, or
        with `kubeconfig` (shown as KUBECONFIG=... before the command)."""
        shown = " ".join(args)
        if kubeconfig is not None:
            shown = f"KUBECONFIG={kubeconfig.name} {shown}"
        result = (
            kubectl(self.cluster, *args[1:], check=False, kubeconfig=kubeconfig)
            if args[0] == "kubectl"
            else subprocess.run(
                [sys.executable, "-m", "orgkeeper.cli", *args[1:]],
                env={**os.environ, "KUBECONFIG": str(kubeconfig or self.cluster.kubeconfig)},
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
        )
        if show:
            print(f"\n$ {shown}")
            # kubectl warns that organizations are cluster-scoped on every `auth can-i`.
            lines = (result.stdout + result.stderr).splitlines()
            output = "\n".join(line for line in lines if not line.startswith("Warning:")).rstrip()
            if output:
                print(output)
        if check and result.returncode != 0:
            raise SystemExit(f"demo step failed: {shown}\n{result.stderr}")
        return result

    def create(
        self,
        body: dict[str, Any],
        *,
        namespace: str | None = None,
        as_user: str | None = None,
        show: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl create -f` of the body, written to a file as a user would have it."""
        path = (
            self.cluster.state_dir / f"demo-{body['kind'].lower()}-{body['metadata']['name']}.yaml"
        )
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        where = ("-n", namespace) if namespace else ()
        return self.run(
            "kubectl",
            "create",
            "-f",
            str(path),
            *where,
            *impersonated(as_user),
            show=show,
            check=False,
        )

    def get(self, *args: str) -> dict[str, Any]:
        result = self.run("kubectl", "get", *args, "-o", "json", show=False, check=False)
        return json.loads(result.stdout) if result.returncode == 0 else {}

    def wait(self, what: str, probe: Callable[[], Any], timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = probe()
            if value:
                return value
            time.sleep(0.5)
        raise SystemExit(f"demo: timed out waiting for {what}")

    def can_i_delete(self, org: str, user: str, *, show: bool = True) -> bool:
        """`kubectl auth can-i delete organization/<org> --as <user>`."""
        args = ("kubectl", "auth", "can-i", "delete", f"organization/{org}", f"--as={user}")
        return self.run(*args, show=show, check=False).returncode == 0

    @staticmethod
    def refused(result: subprocess.CompletedProcess[str]) -> None:
        """A step that must be refused (its message is what the demo shows)."""
        if result.returncode == 0:
            raise SystemExit(f"demo: {' '.join(result.args)} was not refused")

    def patch_org(
        self, name: str, spec: dict[str, Any], *, as_user: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl patch organization` of its spec; as the cluster admin (who holds support's
        rights) unless `as_user` is given."""
        patch = json.dumps({"spec": spec}, separators=(",", ":"))
        return self.run(
            "kubectl",
            "patch",
            "organization",
            name,
            "--type=merge",
            "-p",
            patch,
            *impersonated(as_user),
            check=check,
        )

    def ready(self, org: str) -> bool:
        conditions = (self.get("organization", org).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def phase(self, org: str) -> str:
        return str((self.get("organization", org).get("status") or {}).get("phase", ""))

    # --- setting up ---------------------------------------------------------------------

    def install(self) -> None:
        self.chapter("A local control plane with orgkeeper installed")
        install_orgkeeper(self.cluster)
        log = self.cluster.start_operator(*DEMO_SETTINGS)
        self.say(f"control plane at {self.cluster.server}; operator log in {log}")
        self.say("For the demo, 20 seconds without activity stand for the policy's 30 days.")

    # --- the story ----------------------------------------------------------------------

    def story(self) -> None:
        """The chapters in order; tests/integration/test_demo.py checks their headings."""
        for chapter in (
            self.sign_up,
            self.boundary,
            self.members,
            self.data_plane,
            self.transfer,
            self.switcher,
            self.single_sign_on,
            self.inactivity,
            self.reactivation,
        ):
            chapter()

    def sign_up(self) -> None:
        self.chapter("Two organizations sign up")
        self.say(
            "Sign-up is self-service: owner@acme.example creates ACME (Plus, eu); "
            "founder@tiny.example creates Tiny (Free, us)."
        )
        self.create(
            organization("acme", "owner@acme.example", plan="Plus", displayName="ACME Corporation"),
            as_user="owner@acme.example",
        )
        self.create(
            organization(
                "tiny", "founder@tiny.example", plan="Free", region="us", displayName="Tiny Start"
            ),
            as_user="founder@tiny.example",
        )
        self.wait("both to be Ready", lambda: self.ready("acme") and self.ready("tiny"))
        self.say("Each got a namespace, the Owner's Membership and three signed Licenses:")
        self.run("kubectl", "get", "orgkeeper", "-A")

    def boundary(self) -> None:
        self.chapter("The boundary: a stranger can't act for someone else")
        self.say("mallory@evil.example tries to sign up an org owned by owner@acme.example:")
        self.refused(
            self.create(
                organization("acme-2", "owner@acme.example", plan="Free", displayName="Not ACME"),
                as_user="mallory@evil.example",
            )
        )
        self.say("The Owner may not choose Enterprise either: that is a contract, support's call.")
        self.refused(
            self.patch_org(
                "acme", {"plan": "Enterprise"}, as_user="owner@acme.example", check=False
            )
        )
        self.say("Support (here the cluster admin, who holds the verb `support`) may:")
        self.patch_org("acme", {"plan": "Enterprise"})

    def members(self) -> None:
        self.chapter("Members join, and their teams become RBAC")
        for name, email, team in (
            ("alice", "alice@acme.example", "organization-admin"),
            ("bob", "bob@acme.example", "analytics-viewer"),
            ("carol", "carol@example.com", "portal-admin"),
        ):
            self.create(
                membership(name, email, team),
                namespace="org-acme",
                as_user="owner@acme.example",
                show=False,
            )
        self.create(
            membership("carol", "carol@example.com", "api-product-developer"),
            namespace="org-tiny",
            as_user="founder@tiny.example",
            show=False,
        )
        self.wait(
            "memberships to be bound",
            lambda: all(
                (m.get("status") or {}).get("effectiveTeams")
                for m in self.get("memberships", "-n", "org-acme").get("items", [])
            ),
        )
        self.run("kubectl", "get", "memberships", "-n", "org-acme")
        self.run(
            "kubectl", "get", "rolebindings", "-n", "org-acme", "-l", "orgkeeper.dev/membership"
        )
        self.say("Only the Owner may delete the organization; an admin may not:")
        self.can_i_delete("acme", "owner@acme.example")
        self.can_i_delete("acme", "alice@acme.example")

    def data_plane(self) -> None:
        self.chapter("A data plane receives its license, implicitly")
        self.say(
            "Workloads count only in namespaces the org owns: org-acme, and namespaces its "
            "Owner or support labels orgkeeper.dev/organization=acme. The platform team gives "
            "the Owner the namespace edge-eu, and mallory the namespace mallory:"
        )
        for namespace, user in (
            ("edge-eu", "owner@acme.example"),
            ("mallory", "mallory@evil.example"),
        ):
            self.run("kubectl", "create", "namespace", namespace, show=False)
            self.run(
                "kubectl",
                "create",
                "clusterrole",
                f"label-{namespace}",
                "--verb=get,patch",
                "--resource=namespaces",
                f"--resource-name={namespace}",
                show=False,
            )
            self.run(
                "kubectl",
                "create",
                "clusterrolebinding",
                f"label-{namespace}",
                f"--clusterrole=label-{namespace}",
                f"--user={user}",
                show=False,
            )
        self.say("mallory labels their namespace for ACME, to collect its license:")
        self.refused(
            self.run(
                "kubectl",
                "label",
                "namespace",
                "mallory",
                "orgkeeper.dev/organization=acme",
                *impersonated("mallory@evil.example"),
                check=False,
            )
        )
        self.say("ACME's Owner labels edge-eu, and it joins the org:")
        self.run(
            "kubectl",
            "label",
            "namespace",
            "edge-eu",
            "orgkeeper.dev/organization=acme",
            *impersonated("owner@acme.example"),
        )
        self.create(workload("Deployment", "gateway", "acme", "data-plane"), namespace="edge-eu")
        self.wait(
            "the license copy",
            lambda: self.get("secret", "orgkeeper-license-gateway-enterprise", "-n", "edge-eu"),
        )
        self.run(
            "kubectl", "get", "secret", "-n", "edge-eu", "-l", "orgkeeper.dev/organization=acme"
        )
        self.run(
            "kubectl",
            "get",
            "deployment",
            "gateway",
            "-n",
            "edge-eu",
            "-o",
            'jsonpath={.metadata.annotations.orgkeeper\\.dev/license-fingerprint}{"\\n"}',
        )
        self.run("kubectl", "get", "licenses", "-n", "org-acme")
        self.say(
            "The Secret holds a signed payload; "
            "status shows only its fingerprint, never the payload."
        )

    def transfer(self) -> None:
        self.chapter("Ownership transfer: only to an Organization Admin")
        self.say("The Owner tries to hand ACME to bob, an analytics-viewer:")
        self.refused(
            self.patch_org(
                "acme", {"owner": "bob@acme.example"}, as_user="owner@acme.example", check=False
            )
        )
        self.say("...and to alice, an organization-admin:")
        self.patch_org("acme", {"owner": "alice@acme.example"}, as_user="owner@acme.example")
        self.wait(
            "the transfer",
            lambda: (
                (self.get("organization", "acme").get("status") or {}).get("owner")
                == "alice@acme.example"
            ),
        )
        self.run("kubectl", "get", "organization", "acme")
        self.wait(
            "RBAC to follow",
            lambda: self.can_i_delete("acme", "alice@acme.example", show=False),
        )
        self.can_i_delete("acme", "alice@acme.example")
        self.can_i_delete("acme", "owner@acme.example")

    def switcher(self) -> None:
        self.chapter("The org switcher")
        self.say("carol belongs to both organizations:")
        self.run("orgkeeper", "orgs", "--email", "carol@example.com")

    def single_sign_on(self) -> None:
        self.chapter("An SSO-only organization: a real login")
        self.say(
            "kube-apiserver trusts an OpenID Connect provider (Ory Hydra, on loopback). "
            "sam@secure.example logs in through it (make -s sso-kubeconfig EMAIL=...):"
        )
        sso = oidc.kubeconfig(self.cluster, "sam@secure.example")
        sso = sso.rename(sso.with_name("sam-sso.kubeconfig"))
        self.run("kubectl", "auth", "whoami", kubeconfig=sso)
        self.say("With that session Sam signs up an SSO-only organization:")
        body = organization("secure", "sam@secure.example", plan="Plus", ssoOnly=True)
        path = self.cluster.state_dir / "demo-organization-secure.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        self.run("kubectl", "create", "-f", str(path), kubeconfig=sso)
        self.wait("Secure to be Ready", lambda: self.ready("secure"))
        status = ("orgkeeper", "status", "secure")
        self.wait(
            "Sam's SSO session to hold the Owner's rights",
            lambda: self.run(*status, show=False, check=False, kubeconfig=sso).returncode == 0,
        )
        self.run(*status, kubeconfig=sso)
        self.say(
            "The same e-mail without the provider (a client certificate the cluster's CA issued) "
            "holds nothing there:"
        )
        certificate = self.cluster.user_kubeconfig(
            self.cluster.state_dir / "sam-certificate.kubeconfig", "sam@secure.example"
        )
        self.run("kubectl", "auth", "whoami", kubeconfig=certificate)
        self.refused(self.run(*status, check=False, kubeconfig=certificate))
        self.run("orgkeeper", "orgs", "--email", "oidc:sam@secure.example")

    def inactivity(self) -> None:
        self.chapter("Tiny goes quiet and is deactivated for inactivity")
        self.create(
            workload("Deployment", "tiny-control-plane", "tiny", "control-plane"),
            namespace="org-tiny",
            show=False,
        )
        self.create(
            workload("Deployment", "tiny-gateway", "tiny", "data-plane"),
            namespace="org-tiny",
            show=False,
        )
        self.say(
            "Tiny runs a control plane and a data plane; "
            "nobody logs in and no API request arrives..."
        )
        self.wait(
            "Tiny to be deactivated", lambda: self.phase("tiny") == "Deactivated", timeout=120
        )
        self.run("orgkeeper", "status", "tiny")
        self.say(
            "Every effect, object by object: the control plane is gone, "
            "the data plane keeps running, frozen;"
        )
        self.run("kubectl", "get", "deployments", "-n", "org-tiny", "-L", "orgkeeper.dev/component")
        self.run(
            "kubectl",
            "get",
            "deployment",
            "tiny-gateway",
            "-n",
            "org-tiny",
            "-o",
            'jsonpath={.metadata.annotations.orgkeeper\\.dev/frozen}{"\\n"}',
        )
        self.say("members lost their teams and roles there (and only there):")
        self.run("kubectl", "get", "memberships", "-n", "org-tiny")
        self.run("orgkeeper", "orgs", "--email", "carol@example.com")
        self.say("and the owner e-mail is locked:")
        self.refused(
            self.create(
                organization("tiny-again", "founder@tiny.example", plan="Free", region="us"),
                as_user="founder@tiny.example",
            )
        )

    def reactivation(self) -> None:
        self.chapter("Support reactivates Tiny")
        now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        self.patch_org("tiny", {"reactivationRequestedAt": now})
        self.wait(
            "Tiny to be active", lambda: self.phase("tiny") == "Active" and self.ready("tiny")
        )
        self.wait(
            "roles to come back",
            lambda: all(
                (m.get("status") or {}).get("state") == "Active"
                for m in self.get("memberships", "-n", "org-tiny").get("items", [])
            ),
        )
        self.run("kubectl", "get", "organizations")
        self.run("kubectl", "get", "memberships", "-n", "org-tiny")
        self.say(
            "Billing and roles are back and the data plane is unfrozen; "
            "the decommissioned control plane is not recreated."
        )

    def closing(self, stopped: bool) -> None:
        self.chapter("Your turn")
        if stopped:
            self.say("The demo's control plane and operator have been stopped.")
            return
        self.say(f"export KUBECONFIG={self.cluster.kubeconfig}")
        self.say(f"alias kubectl={binaries(build=False)['kubectl']}")
        self.say("kubectl get orgkeeper -A")
        self.say(".venv/bin/orgkeeper status acme")
        self.say("export KUBECONFIG=$(make -s sso-kubeconfig EMAIL=sam@secure.example)  # a login")
        self.say(
            "When done: make cluster-down   "
            "(stops the operator and the control plane, and removes their data)"
        )


def impersonated(user: str | None) -> tuple[str, ...]:
    """kubectl flags that act as a signed-in `user` (none: as the cluster admin)."""
    return (f"--as={user}", "--as-group=system:authenticated") if user else ()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orgkeeper_dev.demo", description=__doc__)
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="where the cluster lives"
    )
    parser.add_argument(
        "--stop", action="store_true", help="stop the control plane and operator at the end"
    )
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.state_dir)
    cluster.stop()  # a demo always starts from a fresh control plane
    print(
        "starting a local control plane (the first run builds it from Go modules) ...", flush=True
    )
    cluster.start(sso=True)  # with an OpenID Connect provider (the first run builds it too)
    demo = Demo(cluster)
    try:
        demo.install()
        demo.story()
    except BaseException:
        print(f"\noperator log: {cluster.state_dir / 'logs' / 'orgkeeper.log'}", file=sys.stderr)
        if args.stop:
            cluster.stop()
        raise
    if args.stop:
        cluster.stop()
    demo.closing(stopped=args.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
