"""An org is its UID: the pure rules of which namespace an org serves, stamps and releases
(domain/namespaces.py), and what the license check says of an earlier org's document."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orgkeeper import licensing, names
from orgkeeper.controllers.records import NamespaceRecord
from orgkeeper.domain.license.evaluation import evaluate
from orgkeeper.domain.namespaces import (
    Claim,
    belongs_to,
    conflict,
    hand_back_command,
    ignored_message,
    made_for,
    owned_namespaces,
    release_labels,
    to_release,
    to_stamp,
)

ORG, UID, OWNER = "beta", "uid-beta-2", "owner@beta.test"
EARLIER, STRANGER = "uid-beta-1", "mallory@evil.test"
HASH = names.email_hash(OWNER)
LABEL, UID_LABEL, RELEASED = (
    names.LABEL_ORGANIZATION,
    names.LABEL_ORGANIZATION_UID,
    names.LABEL_RELEASED_FROM,
)


def claim(namespace: str = "edge", **labels: str) -> Claim:
    return Claim.of(namespace, {LABEL: ORG, **labels})


# -- labelled namespaces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("found", "owner", "serves"),
    [
        (claim(), OWNER, True),  # the Owner labelled it for their org: stamped at first serve
        (claim(**{UID_LABEL: UID}), OWNER, True),
        (claim(**{UID_LABEL: EARLIER}), OWNER, False),  # held for an earlier org of the name
        (claim(**{UID_LABEL: UID, RELEASED: ORG}), OWNER, False),
        (claim(**{names.LABEL_EMAIL_HASH: HASH}), OWNER, True),  # made ahead for this Owner
        (claim(**{names.LABEL_EMAIL_HASH: HASH}), STRANGER, False),  # ... not for a squatter
        (Claim.of("edge", {LABEL: "other"}), OWNER, False),
    ],
    ids=[
        "labelled",
        "held-for-it",
        "held-for-an-earlier-org",
        "released",
        "made-ahead-for-its-owner",
        "made-ahead-for-another-owner",
        "labelled-for-another-name",
    ],
)
def test_a_labelled_namespace_serves_the_org_whose_uid_it_records(
    found: Claim, owner: str, serves: bool
) -> None:
    assert belongs_to(found, ORG, UID, owner) is serves
    assert (
        found.namespace in owned_namespaces(ORG, UID, owner, [found], org_namespace_owned=True)
    ) is serves


def test_a_namespace_owned_by_an_organization_is_that_ones_whatever_its_labels() -> None:
    owned = Claim.of("edge", {LABEL: ORG, UID_LABEL: EARLIER}, [("beta", UID)])
    assert belongs_to(owned, ORG, UID, OWNER)
    assert not belongs_to(owned, ORG, EARLIER, OWNER)


def test_a_served_namespace_is_stamped_once_with_the_uid() -> None:
    assert to_stamp(claim(), ORG, UID, OWNER)
    assert not to_stamp(claim(**{UID_LABEL: UID}), ORG, UID, OWNER)
    assert not to_stamp(claim(**{UID_LABEL: EARLIER}), ORG, UID, OWNER), "not ours to stamp"
    assert not to_stamp(claim(**{names.LABEL_EMAIL_HASH: HASH}), ORG, UID, STRANGER)


# -- org-<name> made ahead ------------------------------------------------------------------------


def test_a_made_ahead_org_namespace_goes_only_to_the_owner_it_names() -> None:
    ahead = claim("org-beta", **{names.LABEL_EMAIL_HASH: HASH})
    assert made_for(ahead, ORG, UID, OWNER)
    assert not made_for(ahead, ORG, "uid-squat", STRANGER)
    assert not made_for(claim("org-beta"), ORG, UID, OWNER), "names no Owner: support hands it"
    assert made_for(claim("org-beta", **{UID_LABEL: UID}), ORG, UID, STRANGER), "handed to it"
    assert not made_for(claim("org-beta", **{UID_LABEL: UID, RELEASED: ORG}), ORG, UID, OWNER)


# -- deletion releases --------------------------------------------------------------------------


def test_deletion_releases_what_the_org_served_without_owning_it() -> None:
    assert to_release(claim(**{UID_LABEL: UID}), ORG, UID, OWNER)
    assert to_release(claim("org-beta", **{UID_LABEL: UID}), ORG, UID, OWNER)
    # Never what it didn't serve: held for another UID, made ahead for another Owner, released.
    assert not to_release(claim(**{UID_LABEL: EARLIER}), ORG, UID, OWNER)
    ahead = claim("org-beta", **{names.LABEL_EMAIL_HASH: HASH})
    assert not to_release(ahead, "beta", "uid-squat", STRANGER)
    assert not to_release(claim(**{UID_LABEL: UID, RELEASED: ORG}), ORG, UID, OWNER)
    # Nor what it owns: garbage collection takes that.
    assert not to_release(Claim.of("org-beta", {LABEL: ORG}, [("beta", UID)]), ORG, UID, OWNER)
    assert release_labels(ORG, UID) == {LABEL: None, RELEASED: ORG, UID_LABEL: UID}


def test_a_released_namespace_is_no_ones_until_support_hands_it_over() -> None:
    released = Claim.of("org-beta", {RELEASED: ORG, UID_LABEL: EARLIER})
    assert not made_for(released, ORG, UID, OWNER)
    message = conflict(released, ORG, UID, OWNER)
    assert message.startswith(
        f"namespace org-beta was released when Organization beta (UID {EARLIER}) was deleted"
    )
    step = hand_back_command("org-beta", ORG, UID)
    assert step == (
        "kubectl label namespace org-beta --overwrite orgkeeper.dev/organization=beta "
        f"orgkeeper.dev/organization-uid={UID} orgkeeper.dev/released-from-"
    )
    assert (
        "have support (orgkeeper-support) hand it to this organization if it is meant for it: "
        f"{step}" in message
    )
    # The labels that step writes make it the org's.
    handed = Claim.of("org-beta", {LABEL: ORG, UID_LABEL: UID})
    assert made_for(handed, ORG, UID, OWNER)


@pytest.mark.parametrize(
    ("labels", "why"),
    [
        (
            {LABEL: ORG, UID_LABEL: EARLIER},
            f"is held for another Organization ({UID_LABEL}={EARLIER})",
        ),
        (
            {LABEL: ORG, names.LABEL_EMAIL_HASH: HASH},
            f"was made ahead for another Owner ({names.LABEL_EMAIL_HASH}={HASH}",
        ),
        ({}, f"belongs to something else (it is not labelled {LABEL}=beta)"),
    ],
)
def test_a_conflict_says_why(labels: dict[str, str], why: str) -> None:
    message = conflict(Claim.of("org-beta", labels), ORG, UID, STRANGER)
    assert message.startswith(f"namespace org-beta {why}")


def test_the_namespace_cache_keeps_the_identity_labels_only() -> None:
    record = NamespaceRecord.from_body(
        {
            "metadata": {
                "name": "edge",
                "labels": {LABEL: ORG, UID_LABEL: UID, "team": "x" * 1000},
            }
        }
    )
    assert dict(record.labels) == {LABEL: ORG, UID_LABEL: UID}
    assert record.claim() == Claim("edge", ORG, (), uid=UID)


# -- licenses ---------------------------------------------------------------------------------


def test_a_license_of_an_earlier_org_of_the_same_name_does_not_verify() -> None:
    key, now = licensing.new_signing_key(), datetime(2026, 12, 7, tzinfo=UTC)

    def reason(uid: str) -> str:
        payload = licensing.LicensePayload(
            ORG, "mesh", "Plus", "eu", now, now + timedelta(days=30), organization_uid=uid
        )
        return evaluate(
            "mesh",
            "mesh",
            "SecretRef",
            "",
            licensing.sign(payload, key),
            organization=ORG,
            organization_uid=UID,
            public_key=key.public_key(),
            now=now,
        ).reason

    assert reason(UID) == "Verified"
    assert reason(EARLIER) == "WrongOrganization"
    assert reason("") == "WrongOrganization"


def test_the_payload_round_trips_its_uid_and_reads_documents_without_one() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    payload = licensing.LicensePayload(ORG, "mesh", "Plus", "eu", now, now, organization_uid=UID)
    assert licensing.LicensePayload.from_bytes(payload.to_bytes()) == payload
    old = b'{"organization":"beta","product":"mesh","plan":"Plus","region":"eu",' + (
        b'"issuedAt":"2026-12-07T00:00:00Z","expiresAt":"2026-12-07T00:00:00Z"}'
    )
    assert licensing.LicensePayload.from_bytes(old).organization_uid == ""


def test_a_workload_in_a_namespace_held_for_another_org_of_the_name_is_told_why() -> None:
    message = ignored_message("edge", ORG, ORG, UID)
    assert message.startswith(
        "namespace edge is labelled for Organization beta but is held for another Organization"
    )
    assert hand_back_command("edge", ORG, UID) in message
    assert "its Owner can label" in ignored_message("edge", ORG, None, UID)


def test_an_org_namespace_served_before_uids_were_recorded_stays_the_orgs() -> None:
    """An upgrade: org-<name> made ahead without an Owner's hash, served (status Active)."""
    before = claim("org-beta")
    assert made_for(before, ORG, UID, OWNER, served=True)
    assert not made_for(before, ORG, UID, OWNER)
    # Never one held for another UID or released, served or not.
    assert not made_for(claim("org-beta", **{UID_LABEL: EARLIER}), ORG, UID, OWNER, served=True)
    assert not made_for(claim("org-beta", **{RELEASED: ORG}), ORG, UID, OWNER, served=True)
