"""The shard slot label (`orgkeeper.dev/shard-slot`, README: "Scaling out") is the operator's:
a shard lists and watches its orgs' Organizations, Memberships and Licenses by it, so a tenant
who could set or change it could hand an object to another shard, or to none.

The attacker is the org's own Owner (impersonated), who may write every one of those objects;
beside each refusal, the same write without the label is the positive control.
"""

from __future__ import annotations

from typing import Any

import pytest

from orgkeeper import names
from support.kube import AsUser, Kube, rejection
from support.orgs import membership, new_ready_org, organization

pytestmark = pytest.mark.usefixtures("operator")

SLOT = names.LABEL_SHARD_SLOT
FIELD = f"metadata.labels[{SLOT}]"


def labelled(body: dict[str, Any], value: str) -> dict[str, Any]:
    body["metadata"].setdefault("labels", {})[SLOT] = value
    return body


def other_slot(organization: str) -> str:
    return str((names.shard_slot(organization) + 1) % names.SHARD_SLOTS)


def test_an_owner_cant_choose_the_slot_of_what_they_create(
    admin: Kube, as_user: AsUser, unique: str
) -> None:
    name = f"slot-{unique}"
    owner = f"owner@{name}.test"
    new_ready_org(admin, as_user, name)
    tenant, namespace = as_user(owner), f"org-{name}"
    slot = str(names.shard_slot(name))

    wrong = labelled(membership("dev", f"dev@{name}.test", "api-product-developer"), "0")
    if slot == "0":
        wrong = labelled(wrong, other_slot(name))
    status, message = rejection(lambda: tenant.create("memberships", wrong, namespace))
    assert status == 403
    assert FIELD in message and "only the orgkeeper operator sets this label" in message
    # Positive control: the same Membership without the label is created, with its org's slot.
    plain = membership("dev", f"dev@{name}.test", "api-product-developer")
    created = tenant.create("memberships", plain, namespace)
    assert created["metadata"]["labels"][SLOT] == slot
    # Signing up with another org's slot is refused too; without it, the slot is stamped.
    other = f"slot2-{unique}"
    sign_up = labelled(organization(other, owner, plan="Plus"), other_slot(other))
    status, message = rejection(lambda: tenant.create("organizations", sign_up))
    assert status == 403 and FIELD in message
    signed = tenant.create("organizations", organization(other, owner, plan="Plus"))
    assert signed["metadata"]["labels"][SLOT] == str(names.shard_slot(other))


def test_an_owner_cant_change_or_remove_the_slot(admin: Kube, as_user: AsUser, unique: str) -> None:
    name = f"reslot-{unique}"
    owner = f"owner@{name}.test"
    new_ready_org(admin, as_user, name)
    tenant, namespace = as_user(owner), f"org-{name}"
    tenant.create("memberships", membership("dev", f"dev@{name}.test"), namespace)
    moved = {"metadata": {"labels": {SLOT: other_slot(name)}}}
    removed = {"metadata": {"labels": {SLOT: None}}}
    for patch in (moved, removed):
        for plural, object_name, where in (
            ("memberships", "dev", namespace),
            ("organizations", name, None),
        ):
            status, message = rejection(
                lambda p=patch, k=plural, n=object_name, w=where: tenant.patch(k, n, p, w)  # type: ignore[misc]
            )
            assert status == 403, (plural, patch)
            assert f"{FIELD}: {owner} may not set, change or remove this label" in message
    # Positive control: the Owner's other labels are theirs to write.
    mine = {"metadata": {"labels": {"team.example.com/cost-center": "42"}}}
    assert tenant.patch("memberships", "dev", mine, namespace)["metadata"]["labels"][SLOT]
    assert tenant.patch("organizations", name, mine)["metadata"]["labels"][SLOT] == str(
        names.shard_slot(name)
    )
