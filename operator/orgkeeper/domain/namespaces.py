"""Which namespaces an org owns, and what is said about workloads outside them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .. import names

# A condition or Event names this many targets, then a count of the rest.
SHOWN = 3
DETAIL = 160


@dataclass(frozen=True)
class Claim:
    """A Namespace labelled orgkeeper.dev/organization=<label> (or org-<name> as found), the
    Organizations owning it, and the identity labels it carries."""

    namespace: str
    label: str
    owners: Sequence[tuple[str, str]] = ()  # (name, uid) of each owning Organization
    uid: str = ""  # orgkeeper.dev/organization-uid: the org it was adopted or served for
    released: str = ""  # orgkeeper.dev/released-from: the org that released it when deleted
    owner_hash: str = ""  # orgkeeper.dev/email-hash: the Owner it was made ahead for

    @classmethod
    def of(
        cls, namespace: str, labels: Mapping[str, str], owners: Sequence[tuple[str, str]] = ()
    ) -> Claim:
        return cls(
            namespace,
            labels.get(names.LABEL_ORGANIZATION, ""),
            owners,
            uid=labels.get(names.LABEL_ORGANIZATION_UID, ""),
            released=labels.get(names.LABEL_RELEASED_FROM, ""),
            owner_hash=labels.get(names.LABEL_EMAIL_HASH, ""),
        )


def belongs_to(claim: Claim, organization: str, uid: str, owner: str) -> bool:
    """A namespace owned by an Organization belongs to that one alone. Otherwise its label must
    name the org, it must not be released, and it must be held for this org's UID; one no org
    was recorded on yet is the org's unless it was made ahead for another Owner (`owner`: the
    e-mail of spec.owner)."""
    if claim.owners:
        return any(owner_uid == uid for _, owner_uid in claim.owners)
    if claim.label != organization or claim.released:
        return False
    if claim.uid:
        return claim.uid == uid
    return not claim.owner_hash or claim.owner_hash == names.email_hash(owner)


def made_for(
    claim: Claim, organization: str, uid: str, owner: str, *, served: bool = False
) -> bool:
    """Whether an org-<name> that orgkeeper didn't make is the org's all the same: owned by
    nothing, labelled orgkeeper.dev/organization=<name> (a label only the org's Owner or support
    may set), not released, and either held for this org's UID already or made ahead for its
    Owner (orgkeeper.dev/email-hash of spec.owner, which self-service sign-up can't forge: a
    sign-up's Owner is the requester). `served`: the org served it already before orgkeeper
    recorded UIDs (its status says Active; only the operator writes status), so an upgrade
    doesn't take it away. It is served as the org's but stays its maker's (no ownerReference:
    that would need `delete` on namespaces); anything else is a conflict."""
    if claim.owners or claim.label != organization or claim.released:
        return False
    if claim.uid:
        return claim.uid == uid
    return served or claim.owner_hash == names.email_hash(owner)


def org_namespace_ready(
    claim: Claim, organization: str, uid: str, owner: str, *, served: bool = False
) -> bool:
    """Whether an org-<name> found in place serves the org: it owns it, or it was made for it."""
    return any(owner_uid == uid for _, owner_uid in claim.owners) or made_for(
        claim, organization, uid, owner, served=served
    )


def to_stamp(claim: Claim, organization: str, uid: str, owner: str) -> bool:
    """A namespace the org serves that doesn't record its UID yet: orgkeeper labels it
    orgkeeper.dev/organization-uid=<uid> when it first serves it."""
    return not claim.uid and belongs_to(claim, organization, uid, owner)


def to_release(claim: Claim, organization: str, uid: str, owner: str) -> bool:
    """What a deleted Organization releases: a namespace it served without owning it (garbage
    collection takes the owned ones): its made-ahead org-<name>, or one labelled for it. One it
    never served (held for another UID, made ahead for another Owner) is left as it is."""
    if claim.namespace == names.org_namespace(organization):
        return made_for(claim, organization, uid, owner)
    return not claim.owners and belongs_to(claim, organization, uid, owner)


def release_labels(organization: str, uid: str) -> dict[str, str | None]:
    """The labels that release a namespace: the org label goes, released-from says which org
    released it, and the UID stays (kubectl get ns --show-labels tells it from a served one)."""
    return {
        names.LABEL_ORGANIZATION: None,
        names.LABEL_RELEASED_FROM: organization,
        names.LABEL_ORGANIZATION_UID: uid,
    }


def hand_back_command(namespace: str, organization: str, uid: str) -> str:
    """The one step with which support gives a namespace to the Organization of that UID."""
    return (
        f"kubectl label namespace {namespace} --overwrite "
        f"{names.LABEL_ORGANIZATION}={organization} {names.LABEL_ORGANIZATION_UID}={uid} "
        f"{names.LABEL_RELEASED_FROM}-"
    )


def conflict(claim: Claim | None, organization: str, uid: str, owner: str) -> str:
    """Why org-<name> isn't the org's, who may release it and how (NamespaceConflict)."""
    namespace = names.org_namespace(organization)
    if claim is None:
        why = "belongs to something else"
    elif claim.owners:
        why = "belongs to something else (another object owns it)"
    elif claim.released:
        why = (
            f"was released when Organization {claim.released} (UID {claim.uid or 'unknown'}) "
            f"was deleted ({names.LABEL_RELEASED_FROM}={claim.released})"
        )
    elif claim.uid and claim.uid != uid:
        why = f"is held for another Organization ({names.LABEL_ORGANIZATION_UID}={claim.uid})"
    elif claim.label != organization:
        label = f"{names.LABEL_ORGANIZATION}={organization}"
        why = f"belongs to something else (it is not labelled {label})"
    else:
        why = (
            f"was made ahead for another Owner ({names.LABEL_EMAIL_HASH}="
            f"{claim.owner_hash or 'none'}, not {names.email_hash(owner)} of {owner})"
        )
    return (
        f"namespace {namespace} {why}; nothing is written into it. Delete it, or have support "
        f"(orgkeeper-support) hand it to this organization if it is meant for it: "
        f"{hand_back_command(namespace, organization, uid)} (a deleted one is noticed at the "
        "next periodic check (--check-interval))"
    )


def owned_namespaces(
    organization: str,
    uid: str,
    owner: str,
    claims: Iterable[Claim],
    *,
    org_namespace_owned: bool,
) -> frozenset[str]:
    """org-<name> when the org owns it, and the namespaces labelled for the org that belong to it.

    An org-<name> someone else created is never the org's, unless made for it (made_for)."""
    owned = {c.namespace for c in claims if belongs_to(c, organization, uid, owner)}
    if org_namespace_owned:
        owned.add(names.org_namespace(organization))
    else:
        owned.discard(names.org_namespace(organization))
    return frozenset(owned)


def ignored_message(
    namespace: str, organization: str, owner: str | None, uid: str | None = None
) -> str:
    """Why a workload labelled for `organization` in `namespace` is ignored, and what to do
    (`owner`: the org the namespace belongs to or is labelled for; `uid`: the org's UID, given
    when the namespace is labelled for it but held for another UID, released or made ahead for
    another Owner)."""
    if uid is not None and owner == organization:
        return (
            f"namespace {namespace} is labelled for Organization {organization} but is held for "
            f"another Organization of that name, or made ahead for another Owner: this workload "
            f"is ignored; support (orgkeeper-support) may hand the namespace to this one: "
            f"{hand_back_command(namespace, organization, uid)}"
        )
    if owner is not None and owner != organization:
        return (
            f"namespace {namespace} belongs to Organization {owner}, not {organization}: "
            f"this workload is ignored; run {organization}'s workloads in org-{organization} "
            f"or in a namespace labelled {names.LABEL_ORGANIZATION}={organization}"
        )
    return (
        f"namespace {namespace} does not belong to Organization {organization}: this workload "
        f"is ignored (no license, not counted); its Owner can label the namespace "
        f"{names.LABEL_ORGANIZATION}={organization}"
    )


def summary(items: Sequence[str], *, shown: int = SHOWN) -> str:
    """The first few items and how many more: a message that stays short whatever the count."""
    head = ", ".join(item[:DETAIL] for item in items[:shown])
    rest = len(items) - shown
    return f"{head} and {rest} more" if rest > 0 else head
