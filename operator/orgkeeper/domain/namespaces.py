"""Which namespaces an org owns, and what is said about workloads outside them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .. import names

# A condition or Event names this many targets, then a count of the rest.
SHOWN = 3
DETAIL = 160


@dataclass(frozen=True)
class Claim:
    """A Namespace labelled orgkeeper.dev/organization=<label>, and the Organizations owning it."""

    namespace: str
    label: str
    owners: Sequence[tuple[str, str]] = ()  # (name, uid) of each owning Organization


def belongs_to(claim: Claim, organization: str, uid: str) -> bool:
    """A namespace owned by an Organization belongs to that one alone; otherwise its label says."""
    if claim.owners:
        return any(owner_uid == uid for _, owner_uid in claim.owners)
    return claim.label == organization


def made_for(organization: str, owners: int, label: str | None) -> bool:
    """Whether an org-<name> that orgkeeper didn't make is the org's all the same: one made
    ahead of it (by GitOps, or `kubectl apply -f` of a folder), owned by nothing and labelled
    orgkeeper.dev/organization=<name>, a label only the org's Owner or support may set (the
    namespace label admission policy). It is served as the org's but stays its maker's (no
    ownerReference: that would need `delete` on namespaces); anything else is a conflict."""
    return owners == 0 and label == organization


def org_namespace_ready(
    organization: str, uid: str, owner_uids: Sequence[str], label: str | None
) -> bool:
    """Whether an org-<name> found in place serves the org: it owns it, or it was made for it."""
    return uid in owner_uids or made_for(organization, len(owner_uids), label)


def owned_namespaces(
    organization: str, uid: str, claims: Iterable[Claim], *, org_namespace_owned: bool
) -> frozenset[str]:
    """org-<name> when the org owns it, and the namespaces labelled for the org.

    An org-<name> someone else created is never the org's, unless made for it (made_for)."""
    owned = {c.namespace for c in claims if belongs_to(c, organization, uid)}
    if org_namespace_owned:
        owned.add(names.org_namespace(organization))
    else:
        owned.discard(names.org_namespace(organization))
    return frozenset(owned)


def ignored_message(namespace: str, organization: str, owner: str | None) -> str:
    """Why a workload labelled for `organization` in `namespace` is ignored, and what to do."""
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
