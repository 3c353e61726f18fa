"""Mutating admission: Memberships get their contract labels as they are created.

It saves the operator a write per new Membership; the reconcile still sets any label that is
missing (when webhooks are off, or a user removed one).
"""

from __future__ import annotations

from typing import Any

import kopf

from .. import names
from .indexes import MEMBERSHIPS


async def label_membership(
    spec: kopf.Spec, namespace: str | None, patch: kopf.Patch, **_: Any
) -> None:
    organization = names.organization_of_namespace(namespace)
    email = spec.get("email")
    if organization and isinstance(email, str):
        patch.setdefault("metadata", {}).setdefault("labels", {}).update(
            {
                names.LABEL_ORGANIZATION: organization,
                names.LABEL_EMAIL_HASH: names.email_hash(email),
            }
        )


def register(registry: kopf.OperatorRegistry) -> None:
    # Each id is the webhook's URL path (kopf serves /<id>): DNS-label characters only.
    on_create = kopf.on.mutate(
        *MEMBERSHIPS, id="label-membership", operations=["CREATE"], registry=registry
    )
    on_create(label_membership)
