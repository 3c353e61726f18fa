"""manifests/ agrees with the code: the Deployment's flags, the webhooks kopf serves, the names
the operator writes, the image's user. (tests/integration/test_security.py checks the RBAC and
Pod Security against a real API server.)"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kopf._cogs.structs.references import Resource
from kopf._core.engines.admission import build_webhooks
from kopf._core.intents.causes import WebhookType

from orgkeeper import names
from orgkeeper.api.v1alpha1 import GROUP, PRODUCTS, REGIONS, TEAMS, VERSION
from orgkeeper.handlers import admission, mutation
from orgkeeper.names import WEBHOOK_CONFIGURATION
from orgkeeper.settings import Settings, lease_name, parse_duration
from orgkeeper_dev.localcluster import INSTALL_MANIFESTS, install_arguments
from support.identity import render

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def base() -> list[dict[str, Any]]:
    """Every object of the kustomize base, file by file as kustomization.yaml lists them."""
    (kustomization,) = documents(MANIFESTS / "kustomization.yaml")
    return [doc for item in kustomization["resources"] for doc in documents(MANIFESTS / item)]


def the(kind: str, docs: list[dict[str, Any]] | None = None, name: str | None = None) -> Any:
    found = [
        doc
        for doc in (docs if docs is not None else base())
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container() -> dict[str, Any]:
    (only,) = the("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(only)


def flag(name: str) -> str:
    """The value the Deployment gives `orgkeeper run --<name>`."""
    values: list[str] = [
        arg.split("=", 1)[1] for arg in container()["args"] if arg.startswith(f"--{name}=")
    ]
    assert len(values) == 1, f"--{name} is not set once in the Deployment's args"
    return values[0]


def port(name: str) -> int:
    (found,) = [p["containerPort"] for p in container()["ports"] if p["name"] == name]
    return int(found)


def test_every_yaml_file_of_the_base_is_in_the_kustomization() -> None:
    (kustomization,) = documents(MANIFESTS / "kustomization.yaml")
    listed = {MANIFESTS / item for item in kustomization["resources"]}
    own_roots = {p.parent for p in MANIFESTS.rglob("kustomization.yaml")} - {MANIFESTS}
    skipped = {MANIFESTS / "samples", *own_roots}  # examples; other kustomize roots
    present = {
        path
        for path in MANIFESTS.rglob("*.yaml")
        if path.name != "kustomization.yaml" and not any(d in path.parents for d in skipped)
    }
    assert present == listed


def test_two_replicas_roll_one_at_a_time_with_none_down() -> None:
    spec = the("Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }


def test_replicas_elect_a_leader_with_client_gos_timings() -> None:
    assert "--leader-elect" in container()["args"]
    lease = Settings()
    assert parse_duration(flag("lease-duration")) == lease.lease_duration == timedelta(seconds=15)
    assert parse_duration(flag("renew-deadline")) == lease.renew_deadline == timedelta(seconds=10)
    assert parse_duration(flag("retry-period")) == lease.retry_period == timedelta(seconds=2)
    # The identity is the pod's name, from the downward API.
    (pod_name,) = [env for env in container()["env"] if env["name"] == "POD_NAME"]
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_replicas_spread_over_nodes_and_a_disruption_budget_keeps_one() -> None:
    deployment = the("Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["maxSkew"] == 1
    assert spread["labelSelector"]["matchLabels"] == selector
    budget = the("PodDisruptionBudget")
    assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}


def test_every_replica_is_probed_by_health_not_by_leadership() -> None:
    """A follower is ready once its caches are synced (/readyz): it serves admission too."""
    main = container()
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_lease_role_grants_create_list_and_by_name_get_and_update() -> None:
    role = the("Role", name="orgkeeper-leader-election")
    assert role["metadata"]["namespace"] == Settings().namespace
    by_name = {lease_name(None), *(lease_name(region) for region in REGIONS)}
    create, get_update = role["rules"]
    assert create == {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["create", "list"],  # list: the shard-count fence (leader.other_generation)
    }
    assert get_update["apiGroups"] == ["coordination.k8s.io"]
    assert get_update["resources"] == ["leases"]
    assert get_update["verbs"] == ["get", "update"]
    assert set(get_update["resourceNames"]) == by_name
    binding = the("RoleBinding", name="orgkeeper-leader-election")
    assert binding["roleRef"]["name"] == "orgkeeper-leader-election"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "orgkeeper", "namespace": "orgkeeper-system"}
    ]


def test_probes_use_the_health_port_and_readiness_waits_for_the_caches() -> None:
    main = container()
    assert int(flag("health-port")) == port("health")
    for probe in ("livenessProbe", "startupProbe"):
        assert main[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_resources_are_requested_and_limited() -> None:
    resources = container()["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_the_pod_is_hardened_as_pod_security_restricted_demands() -> None:
    pod = the("Deployment")["spec"]["template"]["spec"]
    main = container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = main["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security.get("privileged") is not True
    assert not any(pod.get(host) for host in ("hostNetwork", "hostPID", "hostIPC"))
    # The only writable path is an emptyDir on /tmp (the generated webhook certificate).
    (tmp,) = [m for m in main["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume


def test_the_pod_runs_as_the_images_numeric_user() -> None:
    dockerfile = (REPO / "Dockerfile").read_text().splitlines()
    (user,) = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    uid, gid = (int(part) for part in user.split(":"))
    context = the("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
    assert uid != 0


def test_no_generic_scrape_annotations_offer_the_scraper_s_token_to_look_alikes() -> None:
    """L7: `prometheus.io/*` annotations invite a generic job, which sends its token to any Pod
    that carries them; the scrape is pinned instead (manifests/prometheus)."""
    template = the("Deployment")["spec"]["template"]["metadata"]
    assert not [key for key in template.get("annotations") or {} if key.startswith("prometheus.io")]


def test_the_prometheus_option_pins_the_scrape_to_the_operator_and_verifies_its_certificate() -> (
    None
):
    folder = MANIFESTS / "prometheus"
    (component,) = documents(folder / "kustomization.yaml")
    added = [doc for item in component["resources"] for doc in documents(folder / item)]
    deployment, monitor = the("Deployment"), the("ServiceMonitor", added)
    service, cert = the("Service", added), the("Certificate", added, name="orgkeeper-metrics")
    namespace = deployment["metadata"]["namespace"]
    # Only the operator's Pods in the operator's namespace are scraped.
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == namespace
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [namespace]}
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (served,) = service["spec"]["ports"]
    assert (served["targetPort"], served["port"]) == ("metrics", port("metrics"))
    assert port("metrics") == int(flag("metrics-port"))
    # Over HTTPS, verifying the certificate the operator serves (--metrics-cert-dir) by its CA
    # and its name.
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["scheme"], endpoint["path"]) == (
        "metrics",
        "https",
        "/metrics",
    )
    tls = endpoint["tlsConfig"]
    assert tls["insecureSkipVerify"] is False
    assert tls["serverName"] in cert["spec"]["dnsNames"]
    assert tls["serverName"] == f"{service['metadata']['name']}.{namespace}.svc"
    assert tls["ca"]["secret"] == {"name": cert["spec"]["secretName"], "key": "ca.crt"}
    (patch,) = component["patches"]
    pod = yaml.safe_load(patch["patch"])["spec"]["template"]["spec"]
    (volume,) = pod["volumes"]
    assert volume["secret"]["secretName"] == cert["spec"]["secretName"]
    (patched,) = pod["containers"]
    (mount,) = patched["volumeMounts"]
    assert patched["env"] == [{"name": "ORGKEEPER_METRICS_CERT_DIR", "value": mount["mountPath"]}]
    assert "--metrics-cert-dir" not in " ".join(container()["args"])


def test_the_prometheus_option_renders_beside_the_cert_manager_one(tmp_path: Path) -> None:
    """`kubectl kustomize` of an overlay with both components: one Deployment serving both
    mounted certificates."""
    components = [os.path.relpath(MANIFESTS / c, tmp_path) for c in ("cert-manager", "prometheus")]
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS, tmp_path)],
        "components": components,
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    rendered = render(tmp_path)
    assert the("ServiceMonitor", rendered)["metadata"]["namespace"] == "orgkeeper-system"
    (operator,) = the("Deployment", rendered)["spec"]["template"]["spec"]["containers"]
    assert {e["name"] for e in operator["env"]} >= {
        "ORGKEEPER_WEBHOOK_CERT_DIR",
        "ORGKEEPER_METRICS_CERT_DIR",
    }
    assert {m["name"] for m in operator["volumeMounts"]} == {"tmp", "webhook-tls", "metrics-tls"}


def test_a_metrics_reader_role_grants_get_on_metrics_only() -> None:
    role = the("ClusterRole", name="orgkeeper-metrics-reader")
    assert role["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]


def test_the_webhook_service_reaches_the_operator_in_serve_mode() -> None:
    deployment, service = the("Deployment"), the("Service")
    assert flag("webhook-mode") == "serve"
    (service_port,) = [p for p in service["spec"]["ports"] if p["name"] == "webhook"]
    assert service_port["targetPort"] == "webhook"
    assert port("webhook") == int(flag("webhook-port"))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["metadata"]["name"] == Settings().webhook_service
    # The operator's own namespace comes from the Pod (certificate names, signing key).
    (namespace_env,) = [e for e in container()["env"] if e["name"] == "ORGKEEPER_NAMESPACE"]
    assert namespace_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "orgkeeper"


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("ValidatingWebhookConfiguration", WebhookType.VALIDATING),
        ("MutatingWebhookConfiguration", WebhookType.MUTATING),
    ],
)
def test_the_webhook_configurations_match_the_handlers_kopf_serves(
    kind: str, reason: WebhookType
) -> None:
    """Same names, paths and rules kopf itself would register, behind the Service."""
    registry = kopf.OperatorRegistry()
    admission.register(registry)
    mutation.register(registry)
    service = the("Service")
    client_config: Any = {
        "service": {
            "name": service["metadata"]["name"],
            "namespace": service["metadata"]["namespace"],
            "port": service["spec"]["ports"][0]["port"],
        }
    }
    resources = [
        Resource(GROUP, VERSION, "organizations", namespaced=False),
        Resource(GROUP, VERSION, "memberships", namespaced=True),
        Resource(GROUP, VERSION, "licenses", namespaced=True),
    ]
    expected = build_webhooks(
        [h for h in registry._webhooks.get_all_handlers() if h.reason == reason],
        resources=resources,
        name_suffix=WEBHOOK_CONFIGURATION,
        client_config=client_config,
    )
    configuration = the(kind)
    assert configuration["metadata"]["name"] == WEBHOOK_CONFIGURATION

    def essentials(hook: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": hook["name"],
            "service": hook["clientConfig"]["service"],
            "rules": [
                {key: rule[key] for key in ("apiGroups", "apiVersions", "resources", "operations")}
                for rule in hook["rules"]
            ],
            "sideEffects": hook["sideEffects"],
        }

    assert [essentials(h) for h in configuration["webhooks"]] == [essentials(h) for h in expected]
    for hook in configuration["webhooks"]:
        # The safety rules refuse what they can't check; labelling too: an object without its
        # shard slot would reach no shard (--shard).
        assert hook["failurePolicy"] == "Fail"
        assert 1 <= hook["timeoutSeconds"] <= 15  # an API request waits this long at most
        assert "caBundle" not in hook["clientConfig"]  # the operator or cert-manager fills it


def operator_rules() -> list[dict[str, Any]]:
    return [
        rule
        for kind in ("ClusterRole", "Role")
        for rule in the(kind, name="orgkeeper-operator")["rules"]
    ]


def named(resource: str, verb: str) -> set[str]:
    """resourceNames of the operator's rules that grant `verb` on `resource` by name only."""
    return {
        name
        for rule in operator_rules()
        if resource in rule["resources"] and verb in rule["verbs"]
        for name in rule.get("resourceNames") or ["<any>"]
    }


def test_the_secrets_it_may_patch_or_delete_are_the_ones_it_writes() -> None:
    written = {
        names.SIGNING_KEY_SECRET,
        *(names.provisioned_license_secret(product) for product in PRODUCTS),
        *(names.propagated_license_secret(product) for product in PRODUCTS),
    }
    assert named("secrets", "patch") == named("secrets", "delete") == written


def test_it_may_bind_exactly_the_team_roles() -> None:
    shipped = {doc["metadata"]["name"] for doc in documents(MANIFESTS / "rbac" / "teams.yaml")}
    teams = {names.team_cluster_role(team) for team in TEAMS}
    assert teams <= shipped
    assert named("clusterroles", "bind") == teams


def test_by_name_rules_name_what_the_code_uses() -> None:
    assert named("configmaps", "patch") == {names.VERIFICATION_KEY_CONFIG_MAP}
    assert named("validatingwebhookconfigurations", "patch") == {WEBHOOK_CONFIGURATION}
    assert named("mutatingwebhookconfigurations", "patch") == {WEBHOOK_CONFIGURATION}


@pytest.fixture
def component() -> dict[str, Any]:
    (kustomization,) = documents(MANIFESTS / "cert-manager" / "kustomization.yaml")
    return dict(kustomization)


def test_the_cert_manager_option_wires_certificate_secret_and_ca_injection(
    component: dict[str, Any],
) -> None:
    issued = documents(MANIFESTS / "cert-manager" / "certificate.yaml")
    cert = the("Certificate", issued)
    patches = {p["target"]["kind"]: yaml.safe_load(p["patch"]) for p in component["patches"]}
    namespace, name = cert["metadata"]["namespace"], cert["metadata"]["name"]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        annotations = patches[kind]["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == f"{namespace}/{name}"
    pod = patches["Deployment"]["spec"]["template"]["spec"]
    (volume,) = pod["volumes"]
    assert volume["secret"]["secretName"] == cert["spec"]["secretName"]
    (patched,) = pod["containers"]
    (mount,) = patched["volumeMounts"]
    (env,) = patched["env"]
    assert env == {"name": "ORGKEEPER_WEBHOOK_CERT_DIR", "value": mount["mountPath"]}
    service = the("Service")
    dns = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert dns in cert["spec"]["dnsNames"]


def test_support_is_a_shipped_cluster_role_with_the_support_verb() -> None:
    """`delete` too: support deletes any Organization (RBAC lets it reach the DELETE webhook,
    which asks for the verb `support`)."""
    support = the("ClusterRole", name="orgkeeper-support")
    assert support["rules"] == [
        {
            "apiGroups": [GROUP],
            "resources": ["organizations"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "support"],
        }
    ]


def policy_variable(policy: str, name: str) -> str:
    (expression,) = [
        v["expression"]
        for v in the("ValidatingAdmissionPolicy", name=policy)["spec"]["variables"]
        if v["name"] == name
    ]
    return str(expression)


def test_the_sign_up_policy_uses_the_operators_default_sso_prefix() -> None:
    prefix = policy_variable("orgkeeper-organization-authority", "ssoUsernamePrefix")
    assert prefix == f"'{Settings().sso_username_prefix}'"


@pytest.mark.parametrize(
    "policy", ["orgkeeper-organization-authority", "orgkeeper-namespace-organization-label"]
)
def test_each_admission_policy_is_bound_to_deny_and_fails_closed(policy: str) -> None:
    spec = the("ValidatingAdmissionPolicy", name=policy)["spec"]
    assert spec["failurePolicy"] == "Fail"
    binding = the("ValidatingAdmissionPolicyBinding", name=policy)["spec"]
    assert binding == {"policyName": policy, "validationActions": ["Deny"]}
    for validation in spec["validations"]:
        assert validation["reason"] == "Forbidden"
        message = validation.get("message") or validation["messageExpression"]
        assert "support (orgkeeper-support)" in message  # who may do it instead


def test_the_organization_policy_leaves_the_status_subresource_alone() -> None:
    """The operator writes status (a subresource): only the main resource is matched."""
    spec = the("ValidatingAdmissionPolicy", name="orgkeeper-organization-authority")["spec"]
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["organizations"]


def test_the_namespace_label_policy_guards_every_way_to_write_namespace_labels() -> None:
    """L4: status and finalize write labels too; the identity labels are support's and the
    operator's (the verb `adopt`, which only the operator's ClusterRole grants)."""
    spec = the("ValidatingAdmissionPolicy", name="orgkeeper-namespace-organization-label")["spec"]
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["namespaces", "namespaces/status", "namespaces/finalize"]
    watched = spec["matchConditions"][0]["expression"]
    for label in (
        names.LABEL_ORGANIZATION,
        names.LABEL_ORGANIZATION_UID,
        names.LABEL_RELEASED_FROM,
        names.LABEL_EMAIL_HASH,
    ):
        assert f"'{label}'" in watched
    granted = [
        (rule.get("resourceNames"), tuple(rule["resources"]))
        for doc in base()
        if doc["kind"] == "ClusterRole"
        for rule in doc.get("rules") or []
        if "adopt" in rule.get("verbs", [])
    ]
    assert granted == [(None, ("organizations",))]
    operator = the("ClusterRole", name="orgkeeper-operator")
    assert any("adopt" in r["verbs"] for r in operator["rules"])


def test_make_install_and_the_tests_apply_one_list_with_support_and_policies() -> None:
    arguments = install_arguments()
    files = [Path(arg) for arg in arguments if arg not in ("apply", "--server-side", "-f")]
    assert files == [REPO / path for path in INSTALL_MANIFESTS]
    assert {MANIFESTS / "rbac" / "support.yaml", MANIFESTS / "policies"} <= set(files)
    assert "localcluster install" in (REPO / "Makefile").read_text()


def test_the_validating_webhooks_stay_registered_when_the_operator_stops() -> None:
    """kopf's managed mode removes all but persistent webhooks when it exits (N1)."""
    registry = kopf.OperatorRegistry()
    admission.register(registry)
    hooks = registry._webhooks.get_all_handlers()
    assert hooks and all(h.persistent for h in hooks if h.reason == WebhookType.VALIDATING)
