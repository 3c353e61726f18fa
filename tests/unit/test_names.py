"""Names and labels orgkeeper derives from e-mails and organizations; its one vocabulary."""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterator
from pathlib import Path

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


# --- one vocabulary -------------------------------------------------------------------------

PACKAGE = Path(names.__file__).parent
KEYS = {
    value
    for key, value in vars(names).items()
    if key.startswith(("LABEL_", "ANNOTATION_")) and value.startswith(f"{names.GROUP}/")
}


def test_the_vocabulary_is_the_contracts() -> None:
    """Pinned here, spelt out, so that a change to names.py is a change to the API contract."""
    assert names.API_VERSION == "orgkeeper.dev/v1alpha1"
    assert (names.ORGANIZATIONS, names.MEMBERSHIPS, names.LICENSES) == (
        "organizations",
        "memberships",
        "licenses",
    )
    assert sorted(KEYS) == [
        "orgkeeper.dev/component",
        "orgkeeper.dev/decommissioned",
        "orgkeeper.dev/email-hash",
        "orgkeeper.dev/frozen",
        "orgkeeper.dev/lease",
        "orgkeeper.dev/license-fingerprint",
        "orgkeeper.dev/membership",
        "orgkeeper.dev/organization",
        "orgkeeper.dev/organization-uid",
        "orgkeeper.dev/product",
        "orgkeeper.dev/region",
        "orgkeeper.dev/released-from",
        "orgkeeper.dev/shard-slot",
        "orgkeeper.dev/team",
    ]


def _literals(source: str) -> Iterator[tuple[int, str]]:
    """The string constants of a module (f-strings' literal parts included), docstrings not."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


def test_the_package_spells_the_api_version_and_label_keys_only_in_names() -> None:
    restated = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module == "names.py":
            continue
        for line, text in sorted(_literals(path.read_text())):
            if (
                names.API_VERSION in text
                or text in (names.GROUP, names.VERSION)
                or any(key in text for key in KEYS)
            ):
                restated.append(f"{module}:{line}: {text!r}")
    assert restated == [], "use the constants of orgkeeper.names:\n" + "\n".join(restated)
