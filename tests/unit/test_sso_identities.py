"""Identities (API.md "Identities (SSO)"): the user names behind an e-mail, as the commands see
them. The binding rules themselves are in test_domain_membership.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orgkeeper import names, views
from orgkeeper.settings import Settings


@pytest.mark.parametrize(
    ("user", "email"),
    [
        ("oidc:alice@acme.test", "alice@acme.test"),
        ("alice@acme.test", "alice@acme.test"),
        ("corp:alice@acme.test", "corp:alice@acme.test"),
    ],
    ids=["sso", "bare", "other-prefix"],
)
def test_email_of_user_strips_only_the_sso_prefix(user: str, email: str) -> None:
    assert names.email_of_user(user, "oidc:") == email


def test_the_commands_and_the_operator_share_the_default_sso_prefix() -> None:
    assert Settings().sso_username_prefix == names.SSO_USERNAME_PREFIX == "oidc:"


def org(name: str, *, sso_only: bool) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"displayName": name, "region": "eu", "ssoOnly": sso_only, "owner": "o@a.test"},
        "status": {"phase": "Active", "owner": "o@a.test"},
    }


def test_the_switcher_says_which_orgs_need_an_sso_session() -> None:
    memberships = [
        {"metadata": {"name": "m", "namespace": f"org-{name}"}, "spec": {"email": "a@a.test"}}
        for name in ("plain", "sso")
    ]
    orgs = {"plain": org("plain", sso_only=False), "sso": org("sso", sso_only=True)}
    rows = views.switcher_rows("A@a.test", memberships, orgs)
    assert {row["organization"]: row["ssoOnly"] for row in rows} == {"plain": False, "sso": True}


@pytest.mark.parametrize(
    ("sso_only", "line"),
    [
        (True, "  Sign-in:  SSO only: members act only through the identity provider"),
        (False, "  Sign-in:  any login the cluster offers (the e-mail, or through the identity"),
    ],
)
def test_status_says_how_members_sign_in(sso_only: bool, line: str) -> None:
    summary = views.status_summary(org("acme", sso_only=sso_only), [], datetime.now(UTC))
    assert summary["ssoOnly"] is sso_only
    assert line in views.status_screen(summary)
