"""Names and labels orgkeeper derives from e-mails and organizations."""

from __future__ import annotations

import hashlib

import pytest

from orgkeeper import names

# sha256("owner@example.com"), computed independently of the code under test.
OWNER_SHA256 = "c8cd3c6427301eaf6665bccacd65ddb614527acc843a15463e3faba57124c351"


def test_email_hash_is_the_first_16_hex_digits_of_sha256_of_the_email() -> None:
    assert names.email_hash("owner@example.com") == OWNER_SHA256[:16]


@pytest.mark.parametrize(
    "spelling",
    ["Owner@Example.COM", "  owner@example.com\n", "\tOWNER@EXAMPLE.COM "],
)
def test_email_hash_lower_cases_and_strips_the_email(spelling: str) -> None:
    assert names.email_hash(spelling) == OWNER_SHA256[:16]


def test_email_hash_differs_between_different_emails() -> None:
    other = hashlib.sha256(b"admin@example.com").hexdigest()[:16]
    assert names.email_hash("admin@example.com") == other
    assert other != OWNER_SHA256[:16]


def test_member_binding_is_named_after_the_email_hash_and_the_team() -> None:
    assert (
        names.member_binding("Owner@Example.com", "portal-admin")
        == f"orgkeeper-{OWNER_SHA256[:16]}-portal-admin"
    )


def test_team_cluster_role_is_prefixed_with_orgkeeper() -> None:
    assert names.team_cluster_role("analytics-viewer") == "orgkeeper-analytics-viewer"


def test_org_namespace_is_org_dash_name() -> None:
    assert names.org_namespace("acme") == "org-acme"


def test_owner_membership_is_named_after_the_email_hash() -> None:
    assert names.owner_membership("OWNER@example.com") == f"owner-{OWNER_SHA256[:16]}"
