"""Mutating admission: new objects of an org get their contract labels as they are created.

Memberships get their org, e-mail hash and shard slot; Organizations and Licenses their shard
slot (`names.shard_slot`): a shard (`--shard i/N`) lists and watches only its orgs' objects by
that label, so it is set here, where every object passes, not later. It saves the operator a
write per new object; the reconcile still sets any label that is missing (when webhooks are
off, or a label went missing) on what it sees. A slot label that names another slot is refused:
only the operator sets it (the API server keeps it from changing afterwards:
manifests/policies/reserved-labels.yaml).
"""

from __future__ import annotations

from typing import Any

import kopf

from .. import names
from .indexes import LICENSES, MEMBERSHIPS, ORGANIZATIONS


def _slot_labels(body: kopf.Body, organization: str) -> dict[str, str]:
    """The slot label of `organization`'s objects; refuses another value the requester set."""
    wanted = names.shard_slot_label(organization)
    found = (body.get("metadata", {}).get("labels") or {}).get(names.LABEL_SHARD_SLOT)
    if found is not None and found != wanted[names.LABEL_SHARD_SLOT]:
        raise kopf.AdmissionError(
            f"metadata.labels[{names.LABEL_SHARD_SLOT}]: {found!r} is not Organization "
            f"{organization}'s shard slot; only the orgkeeper operator sets this label (leave "
            "it out: it is added for you)",
            code=403,
        )
    return wanted


def _label(patch: kopf.Patch, labels: dict[str, str]) -> None:
    patch.setdefault("metadata", {}).setdefault("labels", {}).update(labels)


async def label_membership(
    body: kopf.Body, spec: kopf.Spec, namespace: str | None, patch: kopf.Patch, **_: Any
) -> None:
    organization = names.organization_of_namespace(namespace)
    email = spec.get("email")
    if organization and isinstance(email, str):
        slot = _slot_labels(body, organization)
        _label(
            patch,
            {
                names.LABEL_ORGANIZATION: organization,
                names.LABEL_EMAIL_HASH: names.email_hash(email),
                **slot,
            },
        )


async def label_license(
    body: kopf.Body, namespace: str | None, patch: kopf.Patch, **_: Any
) -> None:
    organization = names.organization_of_namespace(namespace)
    if organization:
        _label(patch, _slot_labels(body, organization))


async def label_organization(body: kopf.Body, name: str, patch: kopf.Patch, **_: Any) -> None:
    if name:
        _label(patch, _slot_labels(body, name))


def register(registry: kopf.OperatorRegistry) -> None:
    # Each id is the webhook's URL path (kopf serves /<id>): DNS-label characters only.
    on_create = kopf.on.mutate(
        *MEMBERSHIPS, id="label-membership", operations=["CREATE"], registry=registry
    )
    on_create(label_membership)
    kopf.on.mutate(*LICENSES, id="label-license", operations=["CREATE"], registry=registry)(
        label_license
    )
    kopf.on.mutate(
        *ORGANIZATIONS, id="label-organization", operations=["CREATE"], registry=registry
    )(label_organization)
