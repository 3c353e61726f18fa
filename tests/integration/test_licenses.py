"""Licenses: provisioned and signed, validated, delivered to data planes (rotation is a time
rule: test_time_rules.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orgkeeper import licensing, names
from support.kube import AsUser, Kube, wait_for
from support.licenses import (
    contract,
    delivered,
    license_body,
    license_status,
    namespace,
    public_key,
    secret_body,
    secret_document,
    signing_key,
    tampered,
)
from support.orgs import is_condition, new_ready_org
from support.workloads import create, read, workload

pytestmark = pytest.mark.usefixtures("operator")


def test_a_new_data_plane_gets_a_verifiable_license(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    org = f"lic-{unique}"
    new_ready_org(admin, as_user, org)
    edge = namespace(admin, f"edge-{unique}", org)
    create(admin, edge, workload("Deployment", "gateway", org, "data-plane", "mesh"))

    copy = wait_for("the license to reach the data plane", lambda: delivered(admin, edge, "mesh"))
    assert (copy.payload.organization, copy.payload.product) == (org, "mesh")
    status = wait_for(
        "the License status to show the delivery",
        lambda: (
            (s := license_status(admin, org, "mesh")).get("propagatedTo", {}).get("count") == 1
            and s
        ),
    )
    assert status["fingerprint"] == copy.fingerprint
    assert status["propagatedTo"]["refs"] == [f"{edge}/gateway"]
    assert status["active"] is True
    assert is_condition(admin.get("licenses", "mesh", f"org-{org}"), "Propagated", "True")
    assert datetime.fromisoformat(
        status["expiresAt"].replace("Z", "+00:00")
    ) - datetime.fromisoformat(status["issuedAt"].replace("Z", "+00:00")) == timedelta(days=365)

    deployment = read(admin, "Deployment", edge, "gateway")
    assert deployment is not None, f"Deployment {edge}/gateway is gone"
    assert deployment.metadata.annotations[names.ANNOTATION_LICENSE_FINGERPRINT] == copy.fingerprint
    (secret,) = admin.core.list_namespaced_secret(
        edge, field_selector="metadata.name=orgkeeper-license-mesh"
    ).items
    assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "orgkeeper"
    # Owned by the Organization: garbage collection removes it with the org.
    assert [(r.kind, r.name, r.controller) for r in secret.metadata.owner_references] == [
        ("Organization", org, True)
    ]

    # A Secret of that name that orgkeeper doesn't own is never touched.
    other = namespace(admin, f"taken-{unique}", org)
    admin.core.create_namespaced_secret(
        other, secret_body("orgkeeper-license-mesh", b"customer data")
    )
    create(admin, other, workload("Deployment", "gateway", org, "data-plane", "mesh"))
    found = wait_for(
        "the conflict to be reported",
        lambda: (
            is_condition(
                lic := admin.get("licenses", "mesh", f"org-{org}"),
                "Propagated",
                "False",
                "SecretConflict",
            )
            and lic
        ),
    )
    assert (
        other
        in next(c for c in found["status"]["conditions"] if c["type"] == "Propagated")["message"]
    )
    assert secret_document(admin, other, "orgkeeper-license-mesh") == b"customer data"

    # When no data plane there needs it any more, the copy goes.
    admin.apps.delete_namespaced_deployment("gateway", edge, propagation_policy="Foreground")
    wait_for(
        "the copy to be removed",
        lambda: secret_document(admin, edge, "orgkeeper-license-mesh") is None,
        timeout=60,
    )


def test_contract_licenses_newest_valid_wins_and_bad_ones_are_refused(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    org = f"contract-{unique}"
    ns = f"org-{org}"
    new_ready_org(admin, as_user, org)
    edge = namespace(admin, f"edge-{unique}", org)
    create(admin, edge, workload("StatefulSet", "kic", org, "data-plane", "ingress-controller"))
    provisioned = wait_for(
        "the provisioned license to be delivered",
        lambda: delivered(admin, edge, "ingress-controller"),
    )
    key, now = signing_key(admin), datetime.now(UTC).replace(microsecond=0)
    uid = admin.get("organizations", org)["metadata"]["uid"]

    # Tampered after signing: refused, and the delivered copy stays the good one.
    good = licensing.sign(
        contract(org, "ingress-controller", now, now + timedelta(days=30), uid=uid), key
    )
    admin.core.create_namespaced_secret(ns, secret_body("tampered", tampered(good)))
    admin.create("licenses", license_body("tampered", "ingress-controller", "tampered"), ns)
    lic = wait_for(
        "the tampered license to be refused",
        lambda: (
            is_condition(
                found := admin.get("licenses", "tampered", ns), "Valid", "False", "BadSignature"
            )
            and found
        ),
    )
    assert lic["status"]["active"] is False and "fingerprint" not in lic["status"]
    assert is_condition(lic, "Ready", "False", "BadSignature")

    expired = licensing.sign(
        contract(
            org, "ingress-controller", now - timedelta(days=400), now - timedelta(days=35), uid=uid
        ),
        key,
    )
    admin.core.create_namespaced_secret(ns, secret_body("expired", expired))
    admin.create("licenses", license_body("expired", "ingress-controller", "expired"), ns)
    wait_for(
        "the expired license to be refused",
        lambda: is_condition(admin.get("licenses", "expired", ns), "Valid", "False", "Expired"),
    )
    current = delivered(admin, edge, "ingress-controller")
    assert current is not None, f"the license copy in {edge} is gone"
    assert current.fingerprint == provisioned.fingerprint

    # A newer valid contract wins (issued two minutes ahead: newer than the provisioned one, and
    # within the clock skew a license may have).
    newer = licensing.sign(
        contract(
            org,
            "ingress-controller",
            now + timedelta(minutes=2),
            now + timedelta(days=365),
            uid=uid,
        ),
        key,
    )
    admin.core.create_namespaced_secret(ns, secret_body("contract-2026", newer))
    admin.create(
        "licenses", license_body("contract-2026", "ingress-controller", "contract-2026"), ns
    )
    expected = licensing.verify(newer, public_key(admin)).fingerprint
    wait_for(
        "the contract license to be delivered",
        lambda: (
            (copy := delivered(admin, edge, "ingress-controller")) and copy.fingerprint == expected
        ),
    )
    # Copies are written before statuses, and each License's status is its own write.
    wait_for(
        "the provisioned license to say it is superseded",
        lambda: is_condition(
            admin.get("licenses", "ingress-controller", ns), "Ready", "True", "Superseded"
        ),
    )
    assert license_status(admin, org, "ingress-controller")["active"] is False
    wait_for(
        "the contract license to say it is active",
        lambda: license_status(admin, org, "contract-2026").get("active") is True,
    )

    # Deleting the active one falls back to the next valid one.
    admin.delete("licenses", "contract-2026", ns)
    wait_for(
        "delivery to fall back to the provisioned license",
        lambda: (
            (copy := delivered(admin, edge, "ingress-controller"))
            and copy.fingerprint
            == license_status(admin, org, "ingress-controller").get("fingerprint")
        ),
    )
    wait_for(
        "the provisioned license to say it is active again",
        lambda: license_status(admin, org, "ingress-controller").get("active") is True,
    )


def test_a_provisioned_license_cannot_take_over_another_ones_secret(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """A second Provisioned License naming the Secret of the org's gateway license, for another
    product, is refused (SecretInUse) instead of rewriting that Secret at every reconcile."""
    org = f"shared-{unique}"
    ns = f"org-{org}"
    new_ready_org(admin, as_user, org)
    before = license_status(admin, org, "gateway-enterprise")["fingerprint"]
    admin.create(
        "licenses",
        {
            "apiVersion": names.API_VERSION,
            "kind": "License",
            "metadata": {"name": "mesh-too"},
            "spec": {
                "product": "mesh",
                "source": "Provisioned",
                "secretRef": {"name": "license-gateway-enterprise"},
            },
        },
        ns,
    )
    lic = wait_for(
        "the second License to be refused",
        lambda: (
            is_condition(found := admin.get("licenses", "mesh-too", ns), "Ready", "False") and found
        ),
    )
    ready = next(c for c in lic["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "SecretInUse", ready
    assert "License gateway-enterprise" in ready["message"], ready
    # A later reconcile (woken by a new member) leaves the gateway license as it was.
    admin.create(
        "memberships",
        {
            "apiVersion": names.API_VERSION,
            "kind": "Membership",
            "metadata": {"name": "late"},
            "spec": {"email": f"late@{org}.test", "teams": ["portal-admin"]},
        },
        ns,
    )
    wait_for(
        "the new member bound",
        lambda: (admin.get("memberships", "late", ns).get("status") or {}).get("state") == "Active",
    )
    # Its Membership's status comes before the Licenses are reconciled; the org's count after.
    wait_for(
        "the org to count the new member",
        lambda: (admin.get("organizations", org).get("status") or {}).get("members") == 2,
    )
    assert license_status(admin, org, "gateway-enterprise")["fingerprint"] == before
    assert is_condition(admin.get("licenses", "gateway-enterprise", ns), "Ready", "True", "Active")


def test_a_provisioned_license_in_a_secret_orgkeeper_may_not_write_is_reported(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    """orgkeeper may patch only the Secrets it names itself: a Provisioned License naming an
    existing Secret of the user's is Ready=False (SecretNotWritable), the Secret stays as it was,
    and the rest of the org keeps converging."""
    org = f"custom-{unique}"
    ns = f"org-{org}"
    new_ready_org(admin, as_user, org)
    admin.core.create_namespaced_secret(ns, secret_body("customer-data", b"not a license"))
    admin.create(
        "licenses",
        {
            "apiVersion": names.API_VERSION,
            "kind": "License",
            "metadata": {"name": "custom"},
            "spec": {
                "product": "mesh",
                "source": "Provisioned",
                "secretRef": {"name": "customer-data"},
            },
        },
        ns,
    )
    lic = wait_for(
        "the License to say its Secret can't be written",
        lambda: (
            is_condition(
                found := admin.get("licenses", "custom", ns), "Ready", "False", "SecretNotWritable"
            )
            and found
        ),
    )
    ready = next(c for c in lic["status"]["conditions"] if c["type"] == "Ready")
    assert "name the Secret license-mesh in spec.secretRef" in ready["message"], ready
    assert secret_document(admin, ns, "customer-data") == b"not a license"
    admin.create(
        "memberships",
        {
            "apiVersion": names.API_VERSION,
            "kind": "Membership",
            "metadata": {"name": "late"},
            "spec": {"email": f"late@{org}.test", "teams": ["portal-admin"]},
        },
        ns,
    )
    wait_for(
        "the org to keep converging",
        lambda: (admin.get("memberships", "late", ns).get("status") or {}).get("state") == "Active",
    )


def test_a_provisioned_secret_that_lost_its_document_is_issued_again(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    org = f"lost-{unique}"
    new_ready_org(admin, as_user, org)
    ns, secret = f"org-{org}", names.provisioned_license_secret("mesh")
    wait_for("the mesh license to be issued", lambda: secret_document(admin, ns, secret))

    admin.core.patch_namespaced_secret(secret, ns, [{"op": "remove", "path": "/data/license"}])
    # Secrets are not watched: the change is read at the org's next reconcile, which any change
    # to the Organization brings (README), as the session operator's check is 10 minutes away.
    admin.patch("organizations", org, {"metadata": {"annotations": {"example.com/nudge": "1"}}})

    def reissued() -> bool:
        data = admin.core.read_namespaced_secret(secret, ns).data or {}
        return "license" in data and is_condition(
            admin.get("licenses", "mesh", ns), "Valid", "True"
        )

    # The Secret exists without its key: it is patched, not created (a create answers 409).
    wait_for("the document to be written into the existing Secret", reissued, timeout=60)
    assert is_condition(admin.get("organizations", org), "Ready", "True")
