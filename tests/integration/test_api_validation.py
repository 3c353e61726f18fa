"""The CRDs in the real kube-apiserver: samples are accepted, bad input is refused by field."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from support.kube import Kube, load_yaml_documents, rejection

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


def sample(kind: str) -> dict[str, Any]:
    (document,) = load_yaml_documents(SAMPLES / f"{kind}.yaml")
    return document


@pytest.fixture
def org_namespace(admin: Kube, unique: str) -> Iterator[str]:
    name = f"org-validation-{unique}"
    admin.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    admin.core.delete_namespace(name)


def organization(unique: str, **spec: Any) -> dict[str, Any]:
    body = sample("organization")
    body["metadata"] = {"name": f"v-{unique}"}
    body["spec"].update(spec)
    return body


def membership(**spec: Any) -> dict[str, Any]:
    body = sample("membership")
    body["metadata"].pop("namespace")
    body["spec"].update(spec)
    return body


def test_every_sample_is_accepted(admin: Kube, unique: str, org_namespace: str) -> None:
    created = admin.create("organizations", organization(unique))
    assert created["spec"]["ssoOnly"] is False, "defaults come from the schema"
    assert created["spec"]["state"] == "Active"
    admin.create("memberships", membership(), org_namespace)
    license_body = sample("license")
    license_body["metadata"].pop("namespace")
    admin.create("licenses", license_body, org_namespace)
    admin.delete("organizations", f"v-{unique}")


@pytest.mark.parametrize(
    ("spec", "field", "hint"),
    [
        ({"owner": "not-an-email"}, "spec.owner", "must be an e-mail address such as"),
        ({"plan": "Gold"}, "spec.plan", 'supported values: "Free", "Plus", "Enterprise"'),
        ({"region": "mars"}, "spec.region", "supported values"),
        ({"displayName": "x" * 101}, "spec.displayName", "may not be more than 100"),
        ({"displayName": ""}, "spec.displayName", "at least 1"),
    ],
    ids=[
        "malformed-email",
        "unknown-plan",
        "unknown-region",
        "display-name-too-long",
        "empty-display-name",
    ],
)
def test_bad_organization_is_refused_naming_the_field(
    admin: Kube, unique: str, spec: dict[str, Any], field: str, hint: str
) -> None:
    status, message = rejection(lambda: admin.create("organizations", organization(unique, **spec)))
    assert status == 422
    assert field in message and hint in message, message


def test_region_cannot_change(admin: Kube, unique: str) -> None:
    admin.create("organizations", organization(unique, region="eu"))
    try:
        status, message = rejection(
            lambda: admin.patch("organizations", f"v-{unique}", {"spec": {"region": "us"}})
        )
        assert status == 422
        assert "spec.region" in message and "region is immutable" in message, message
    finally:
        admin.delete("organizations", f"v-{unique}")


@pytest.mark.parametrize(
    ("spec", "field", "hint"),
    [
        ({"email": "alice@"}, "spec.email", "must be an e-mail address such as"),
        ({"teams": ["wizards"]}, "spec.teams[0]", "supported values"),
        ({"teams": ["portal-admin", "portal-admin"]}, "spec.teams[1]", "Duplicate value"),
    ],
    ids=["malformed-email", "unknown-team", "team-listed-twice"],
)
def test_bad_membership_is_refused_naming_the_field(
    admin: Kube, org_namespace: str, spec: dict[str, Any], field: str, hint: str
) -> None:
    status, message = rejection(
        lambda: admin.create("memberships", membership(**spec), org_namespace)
    )
    assert status == 422
    assert field in message and hint in message, message


def test_membership_email_cannot_change(admin: Kube, org_namespace: str) -> None:
    admin.create("memberships", membership(), org_namespace)
    status, message = rejection(
        lambda: admin.patch(
            "memberships", "alice", {"spec": {"email": "mallory@acme.example"}}, org_namespace
        )
    )
    assert status == 422
    assert "spec.email" in message and "email is immutable" in message, message


def test_bad_license_is_refused_naming_the_field(admin: Kube, org_namespace: str) -> None:
    unknown = copy.deepcopy(sample("license"))
    unknown["metadata"].pop("namespace")
    unknown["spec"]["product"] = "teleporter"
    status, message = rejection(lambda: admin.create("licenses", unknown, org_namespace))
    assert status == 422
    assert "spec.product" in message and "supported values" in message, message

    without_ref = copy.deepcopy(sample("license"))
    without_ref["metadata"].pop("namespace")
    del without_ref["spec"]["secretRef"]
    status, message = rejection(lambda: admin.create("licenses", without_ref, org_namespace))
    assert status == 422
    assert "spec.secretRef is required when source is SecretRef" in message, message

    # A Secret name or key no Secret can have would only fail later, in the operator.
    for ref, field in (
        ({"name": "Not A Name"}, "spec.secretRef.name"),
        ({"name": "contract", "key": "a key"}, "spec.secretRef.key"),
        ({"name": "contract", "key": ".."}, "spec.secretRef.key"),
    ):
        bad_ref = copy.deepcopy(sample("license"))
        bad_ref["metadata"].pop("namespace")
        bad_ref["spec"]["secretRef"] = ref
        status, message = rejection(partial(admin.create, "licenses", bad_ref, org_namespace))
        assert status == 422
        assert field in message and "should match" in message, message
