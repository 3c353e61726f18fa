"""The org switcher (the people API's `myorganizations`): the orgs a logged-in user is a member
of, as that user, and nobody else's.

Pure: the caller hands in the Memberships of the user's e-mail (found by its hash) and the orgs
they name; this decides which count for the user name the cluster authenticated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..names import (
    MY_ORGANIZATION_KIND,
    PEOPLE_GROUP,
    PEOPLE_VERSION,
    email_of_user,
    org_namespace,
    organization_of_namespace,
)
from .membership import is_user

DEACTIVATED_PHASES = ("Deactivating", "Deactivated")


@dataclass(frozen=True)
class OrgFacts:
    """What the switcher shows of an Organization."""

    name: str
    display_name: str = ""
    region: str | None = None
    plan: str | None = None
    phase: str | None = None  # None: no operator has reconciled it yet
    sso_only: bool = False
    owner: str | None = None  # the effective Owner's e-mail


@dataclass(frozen=True)
class MemberFacts:
    """What the switcher shows of a Membership."""

    namespace: str
    name: str
    email: str
    teams: tuple[str, ...] = ()
    status: Mapping[str, Any] = field(default_factory=dict)


def email_of(user: str, sso_prefix: str) -> str:
    """The e-mail a user name stands for (the identity provider's prefix removed): the key the
    Memberships are looked up by (their e-mail-hash)."""
    return email_of_user(user.strip(), sso_prefix).lower()


def my_organizations(
    user: str,
    memberships: Iterable[MemberFacts],
    orgs: Mapping[str, OrgFacts],
    *,
    sso_prefix: str,
) -> list[dict[str, Any]]:
    """A MyOrganization for every org where `user` holds a Membership, sorted by name.

    A Membership counts only for the user names it binds (API.md "Identities (SSO)"): the bare
    e-mail and `<prefix><e-mail>` in an ordinary org, only `<prefix><e-mail>` in an SSO-only
    one. A Membership outside org-<name>, or of an org that doesn't exist, shows nothing.
    """
    found: dict[str, dict[str, Any]] = {}
    for member in memberships:
        name = organization_of_namespace(member.namespace)
        org = orgs.get(name or "")
        if org is None or member.namespace != org_namespace(org.name):
            continue
        if not is_user(user, member.email, sso_only=org.sso_only, sso_prefix=sso_prefix):
            continue
        found[org.name] = my_organization(user, member, org, sso_prefix=sso_prefix)
    return [found[name] for name in sorted(found)]


def my_organization(
    user: str, member: MemberFacts, org: OrgFacts, *, sso_prefix: str
) -> dict[str, Any]:
    status = member.status
    phase = org.phase or "Unreconciled"
    # Once reconciled, the teams actually held (none while the org is deactivated).
    held = status.get("effectiveTeams", []) if "state" in status else member.teams
    return {
        "apiVersion": f"{PEOPLE_GROUP}/{PEOPLE_VERSION}",
        "kind": MY_ORGANIZATION_KIND,
        "metadata": {"name": org.name},
        "organization": {
            "displayName": org.display_name,
            "region": org.region,
            "plan": org.plan,
            "state": phase,
            "deactivated": phase in DEACTIVATED_PHASES,
            "ssoOnly": org.sso_only,
            "namespace": org_namespace(org.name),
        },
        "membership": {
            "name": member.name,
            "state": status.get("state"),
            "owner": is_user(user, org.owner, sso_only=org.sso_only, sso_prefix=sso_prefix),
            "teams": list(held),
            "requestedTeams": list(member.teams),
        },
    }


def table(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The list as a meta.k8s.io/v1 Table, for `kubectl get myorganizations`."""
    columns = [
        ("Name", "string", "The organization"),
        ("Display Name", "string", "Its display name"),
        ("Region", "string", "Its region"),
        ("State", "string", "Active, Deactivated, ..."),
        ("Owner", "boolean", "Whether you are its Owner"),
        ("Teams", "string", "The teams you hold there"),
        ("SSO Only", "boolean", "Roles held only through the identity provider"),
    ]
    rows = []
    for item in items:
        org, membership = item["organization"], item["membership"]
        cells = [
            item["metadata"]["name"],
            org["displayName"],
            org["region"],
            org["state"],
            membership["owner"],
            ",".join(membership["teams"]) or "-",
            org["ssoOnly"],
        ]
        rows.append(
            {
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [
            {"name": name, "type": kind, "format": "", "description": text, "priority": 0}
            for name, kind, text in columns
        ],
        "rows": rows,
    }
