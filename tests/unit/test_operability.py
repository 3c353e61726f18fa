"""The newcomer review's operability findings that need no cluster (8, 9, 12, 14, 16-21)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import kopf
import pytest
import yaml
from prometheus_client import generate_latest
from pydantic import ValidationError

from orgkeeper import crdgen, names
from orgkeeper.api.v1alpha1 import LICENSE, MEMBERSHIP, ORGANIZATION
from orgkeeper.api.v1alpha1.common import EMAIL_PATTERN, EMAIL_RULE
from orgkeeper.api.v1alpha1.membership import MembershipSpec
from orgkeeper.controllers.runtime import Runtime
from orgkeeper.domain.namespaces import Claim, made_for
from orgkeeper.handlers.startup import configure_kopf
from orgkeeper.metrics import OperatorMetrics
from orgkeeper.names import email_hash
from orgkeeper.settings import Settings
from orgkeeper_dev.localcluster import LocalCluster, kubeconfig_environment
from support.identity import render

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"


def make_variable(tmp_path: Path, name: str, *, environ: dict[str, str] | None = None) -> str:
    """The value `make` gives a variable when run in `tmp_path` (the Makefile's CURDIR)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "MAKEFLAGS")}
    show = f"show: ; @echo '[$({name})]'"
    printed = subprocess.run(
        ["make", "-s", "-f", str(REPO / "Makefile"), "--eval", show, "show"],
        cwd=tmp_path,
        env={**env, **(environ or {})},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return printed[1:-1]


# Finding 14: the current kube context unless the local control plane is up.


def test_make_leaves_kubeconfig_alone_without_a_local_control_plane(tmp_path: Path) -> None:
    assert make_variable(tmp_path, "KUBECONFIG") == ""


def test_make_uses_the_local_control_planes_kubeconfig_while_it_is_up(tmp_path: Path) -> None:
    local = tmp_path / ".cache" / "cluster" / "kubeconfig"
    local.parent.mkdir(parents=True)
    local.write_text("{}")
    assert make_variable(tmp_path, "KUBECONFIG") == str(local)


def test_make_keeps_a_kubeconfig_the_user_exported(tmp_path: Path) -> None:
    local = tmp_path / ".cache" / "cluster" / "kubeconfig"
    local.parent.mkdir(parents=True)
    local.write_text("{}")
    mine = str(tmp_path / "kind.kubeconfig")
    assert make_variable(tmp_path, "KUBECONFIG", environ={"KUBECONFIG": mine}) == mine


def test_localcluster_install_uses_the_local_kubeconfig_only_while_it_exists(
    tmp_path: Path,
) -> None:
    cluster = LocalCluster(tmp_path)
    assert kubeconfig_environment(cluster, {}) == {}, "kubectl then uses ~/.kube/config"
    cluster.kubeconfig.write_text("{}")
    assert kubeconfig_environment(cluster, {}) == {"KUBECONFIG": str(cluster.kubeconfig)}
    assert kubeconfig_environment(cluster, {"KUBECONFIG": "/mine"}) == {}


# Finding 16: `make run` is not verbose unless asked.


def test_make_run_does_not_force_verbose(tmp_path: Path) -> None:
    dry = subprocess.run(
        ["make", "-n", "-f", str(REPO / "Makefile"), "run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (command,) = [line for line in dry.splitlines() if "orgkeeper run" in line]
    assert "--verbose" not in command
    verbose = subprocess.run(
        ["make", "-n", "-f", str(REPO / "Makefile"), "run", "ARGS=--verbose"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "orgkeeper run --verbose" in verbose


# Finding 8: the samples folder applies in one go.


def sample_documents() -> list[tuple[str, dict[str, Any]]]:
    """The samples in the order `kubectl apply -f manifests/samples/` sends them (file names)."""
    return [
        (path.name, document)
        for path in sorted((MANIFESTS / "samples").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def test_the_samples_create_the_org_namespace_before_anything_in_it() -> None:
    documents = sample_documents()
    kinds = [document["kind"] for _, document in documents]
    assert kinds[0] == "Namespace"
    namespace = documents[0][1]
    organization = next(d for _, d in documents if d["kind"] == "Organization")
    name = organization["metadata"]["name"]
    assert namespace["metadata"]["name"] == f"org-{name}"
    # What makes orgkeeper serve it as the org's (and nothing else does): the org label, and
    # the e-mail hash of the Owner it is made for (a squatter's sign-up can't match it); and the
    # region whose operator marks its Memberships Pending while the org doesn't exist.
    owner = organization["spec"]["owner"]
    labels = namespace["metadata"]["labels"]
    assert labels == {
        names.LABEL_ORGANIZATION: name,
        names.LABEL_EMAIL_HASH: email_hash(owner),
        names.LABEL_REGION: organization["spec"]["region"],
    }
    claim = Claim.of(namespace["metadata"]["name"], labels)
    assert made_for(claim, name, "uid-of-the-new-org", owner)
    assert not made_for(claim, name, "uid-of-a-squatter", "mallory@evil.example")
    for _, document in documents[1:]:
        assert document["metadata"].get("namespace") in (None, f"org-{name}")


def test_only_an_unowned_org_namespace_labelled_for_the_org_is_made_for_it() -> None:
    owner, hashed = "owner@acme.test", email_hash("owner@acme.test")
    ours = {names.LABEL_ORGANIZATION: "acme", names.LABEL_EMAIL_HASH: hashed}

    def made(labels: dict[str, str], owners: tuple[tuple[str, str], ...] = ()) -> bool:
        return made_for(Claim.of("org-acme", labels, owners), "acme", "uid-acme", owner)

    assert made(ours)
    assert not made({}), "someone else's namespace: NamespaceConflict"
    assert not made({**ours, names.LABEL_ORGANIZATION: "other"})
    assert not made(ours, (("x", "uid-x"),)), "owned by something else"


# Finding 9: Memberships in an org namespace whose org isn't served here are noticed.


def test_a_membership_change_in_a_namespace_without_an_org_loop_is_kept_for_pending() -> None:
    runtime = Runtime(kube=MagicMock(), settings=Settings())
    runtime.wakes.trigger("acme")  # acme's loop runs
    runtime.member_changed("org-acme")
    runtime.member_changed("org-ghost")
    runtime.member_changed("default")
    assert runtime.wakes.unserved == {"org-ghost"}
    assert runtime.wakes.unserved_changed.is_set()
    assert runtime.wakes.trigger("acme").is_set()


def test_memberships_outside_org_namespaces_are_refused_by_an_installed_policy() -> None:
    path = MANIFESTS / "policies" / "org-namespace-only.yaml"
    policy, binding = yaml.safe_load_all(path.read_text())
    assert policy["spec"]["failurePolicy"] == "Fail"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert set(rule["resources"]) == {"memberships", "licenses"}
    (validation,) = policy["spec"]["validations"]
    assert validation["messageExpression"].startswith("'metadata.namespace: ")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert "policies/org-namespace-only.yaml" in kustomization["resources"]


# Finding 12: manifests/gitops joins Argo CD's own kustomization.


def test_the_health_checks_merge_into_argo_cds_own_argocd_cm(tmp_path: Path) -> None:
    overlay = tmp_path / "argocd"
    overlay.mkdir()
    (overlay / "argocd-cm.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "argocd-cm"},
                "data": {"url": "https://argocd.example"},
            }
        )
    )
    gitops = os.path.relpath(MANIFESTS / "gitops", overlay)  # kustomize takes relative paths
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "argocd",
                "resources": ["argocd-cm.yaml"],
                "components": [gitops],
            }
        )
    )
    (config,) = render(overlay)
    assert config["metadata"] == {"name": "argocd-cm", "namespace": "argocd"}
    health = (MANIFESTS / "gitops" / "health.lua").read_text()
    assert config["data"] == {
        "url": "https://argocd.example",  # Argo CD's own settings stay
        **{
            f"resource.customizations.health.orgkeeper.dev_{kind}": health
            for kind in ("Organization", "Membership", "License")
        },
    }


def test_the_standalone_health_checks_render_alone() -> None:
    (config,) = render(MANIFESTS / "gitops-standalone")
    assert (config["kind"], config["metadata"]["namespace"]) == ("ConfigMap", "argocd")
    assert len(config["data"]) == 3


# Finding 18: -o wide adds columns; the Membership shows the teams asked for.


@pytest.mark.parametrize("kind", [ORGANIZATION, MEMBERSHIP, LICENSE], ids=lambda k: k.kind)
def test_wide_output_has_columns_of_its_own(kind: Any) -> None:
    (version,) = crdgen.custom_resource_definition(kind)["spec"]["versions"]
    wide = [c for c in version["additionalPrinterColumns"] if c.get("priority", 0) > 0]
    assert wide, f"kubectl get {kind.plural} -o wide would print the default columns"


def test_the_membership_teams_column_reads_spec_and_wide_adds_the_effective_ones() -> None:
    (version,) = crdgen.custom_resource_definition(MEMBERSHIP)["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Teams"]["jsonPath"] == ".spec.teams"
    assert columns["Effective Teams"]["jsonPath"] == ".status.effectiveTeams"
    assert columns["Effective Teams"]["priority"] == 1


# Finding 17: a bad e-mail is refused in words.


def test_a_bad_email_is_refused_with_a_sentence_not_a_regex() -> None:
    crd = crdgen.custom_resource_definition(ORGANIZATION)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    owner = schema["properties"]["spec"]["properties"]["owner"]
    assert "pattern" not in owner
    assert owner["x-kubernetes-validations"] == [EMAIL_RULE]
    assert "owner@example.com" in EMAIL_RULE["message"]
    assert EMAIL_PATTERN in EMAIL_RULE["rule"]
    with pytest.raises(ValidationError, match="must be an e-mail address"):
        MembershipSpec.model_validate({"email": "alice@"})
    assert MembershipSpec.model_validate({"email": "alice@acme.example"}).email


# Finding 20: no duplicate `_created` gauges.


def test_metrics_have_no_created_gauges() -> None:
    metrics = OperatorMetrics()
    metrics.reconciles.labels("Organization", "success").inc()
    metrics.reconcile_seconds.labels("Organization").observe(0.1)
    text = generate_latest(metrics.registry).decode()
    assert "orgkeeper_reconciles_total" in text
    assert not re.search(r"^orgkeeper_\w+_created", text, re.MULTILINE)
    assert "process_resident_memory_bytes" in text


# Finding 21: small text mismatches.


def test_make_help_and_localcluster_help_say_what_the_readme_says() -> None:
    readme = (REPO / "README.md").read_text()
    makefile = (REPO / "Makefile").read_text()
    # `make bench`'s duration, the same in `make help` and the README.
    (minutes,) = re.findall(r"^bench:.*## .*\(about (\d+) min\)", makefile, re.MULTILINE)
    assert f"about {minutes} minutes" in readme
    from orgkeeper_dev import localcluster

    assert "~/.cache/orgkeeper/controlplane/<fingerprint>/" in (localcluster.__doc__ or "")
    header = (MANIFESTS / "kustomization.yaml").read_text()
    assert "kubectl apply --server-side -f crds/" in header


# Findings 4, 6, 13, 15, 21: the README says what the code does.

README = (REPO / "README.md").read_text()


def test_the_readme_gives_the_exact_workload_labels_and_the_frozen_annotation() -> None:
    from orgkeeper import names

    for label in (names.LABEL_ORGANIZATION, names.LABEL_COMPONENT, names.LABEL_PRODUCT):
        assert f"    {label}: " in README, f"the Workloads example lacks {label}"
    assert f"{names.LABEL_COMPONENT}=control-plane" in README
    assert f"{names.LABEL_COMPONENT}=data-plane" in README
    assert "`component=" not in README, "a label without its prefix matches nothing"
    assert f'the annotation `{names.ANNOTATION_FROZEN}: "true"`' in README
    assert f"`{names.ANNOTATION_FROZEN}=true`" not in README


def test_the_readme_tells_how_sign_up_works() -> None:
    teams = list(yaml.safe_load_all((MANIFESTS / "rbac" / "teams.yaml").read_text()))
    (creator,) = [d for d in teams if d["metadata"]["name"] == "orgkeeper-organization-creator"]
    assert creator["rules"] == [
        {"apiGroups": [names.GROUP], "resources": ["organizations"], "verbs": ["create"]}
    ]
    assert "--clusterrole=orgkeeper-organization-creator --group=system:authenticated" in README
    assert "for themselves only" in README and "on `Free` or `Plus`" in README


def test_the_gitops_paragraph_lists_every_write_on_an_organization() -> None:
    prefix = names.kopf_prefix(None)
    settings = kopf.OperatorSettings()
    configure_kopf(settings, Settings(webhook_mode="off"))
    gitops = README[README.index("### GitOps") : README.index("## API reference")]
    assert f"`{settings.persistence.finalizer}`" in gitops
    assert f"`{prefix}/kopf-managed`" in gitops
    assert f"`{prefix}/last-handled-configuration`" in gitops
    assert "namespace\nfrom your manifests, the Pod Security labels" in gitops
    assert "dependsOn" in gitops and "sync-wave" in gitops


def test_the_readme_documents_what_managed_mode_registers_and_every_run_flag() -> None:
    assert "`failurePolicy: Fail` and kopf's `timeoutSeconds: 30`" in README
    assert "ARGS=--webhook-host=host.k3d.internal" in README
    for flag in ("--webhook-host", "--listen-address` (0.0.0.0"):
        assert flag in README
    settings_text = README[README.index("`orgkeeper run` settings") :]
    defaults = Settings()
    assert f"`--webhook-port` ({defaults.webhook_port})" in settings_text
    assert f"`--membership-quota` ({defaults.membership_quota}" in settings_text
