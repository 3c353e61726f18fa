"""What every reconcile needs at hand: the API adapter, the settings, and the wake-up calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import names
from ..access import Reviews
from ..domain.people import email_of, my_organizations
from ..kube import REVIEW_CONCURRENCY, KubeApi
from ..metrics import OperatorMetrics
from ..reviews import Verdicts, metrics_ttl, support_ttl
from ..settings import Settings
from . import listwatch
from .informer import Informer
from .records import BindingRecord, MemberRecord, NamespaceRecord, OrgRecord

RECONCILE_CONCURRENCY = 8


@dataclass
class Runtime:
    kube: KubeApi
    settings: Settings
    signing_key: Ed25519PrivateKey | None = None  # loaded (or created) at startup
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    # One wake-up per Organization: anything that touches an org sets it, its loop reconciles.
    triggers: dict[str, asyncio.Event] = field(default_factory=dict)
    # When the oldest change not yet reconciled arrived, per org (for propagation lag).
    changed_at: dict[str, float] = field(default_factory=dict)
    # How many orgs reconcile at once: a restart wakes them all, and each holds API answers.
    reconcile_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(RECONCILE_CONCURRENCY)
    )
    # Verdicts of the reviews that callers of /metrics and of the webhook port make the
    # operator ask, kept briefly and asked with a bound (reviews.py).
    metrics_access: Verdicts[str, int] = field(
        default_factory=lambda: Verdicts(metrics_ttl, concurrency=REVIEW_CONCURRENCY)
    )
    support_access: Verdicts[str, bool] = field(
        default_factory=lambda: Verdicts(support_ttl, concurrency=REVIEW_CONCURRENCY)
    )
    # Organizations (for admission), Memberships and member RoleBindings, cluster-wide
    # (started by the startup handler on every replica, leader or not).
    organizations: Informer[OrgRecord] = field(init=False)
    members: Informer[MemberRecord] = field(init=False)
    bindings: Informer[BindingRecord] = field(init=False)
    # Namespaces labelled orgkeeper.dev/organization, and the org each label names as last
    # seen (a relabelled namespace wakes the org it left as well as the one it joins).
    namespaces: Informer[NamespaceRecord] = field(init=False)
    claims: dict[str, str] = field(default_factory=dict)
    claimed_by: dict[str, set[str]] = field(default_factory=dict)  # org -> its labelled ones
    # Per org, the uids of the workloads its last reconcile counted, and the org of each uid:
    # a workload that leaves (label removed or changed, or deleted) wakes the org it left,
    # which kopf's label filter and index (both on the new body only) can't tell.
    counted: dict[str, frozenset[str]] = field(default_factory=dict)
    counted_by: dict[str, str] = field(default_factory=dict)
    # Per org, the warnings already told (ignored workloads, failing targets): each is posted
    # once as an Event while it lasts, not at every reconcile.
    told: dict[str, frozenset[str]] = field(default_factory=dict)
    # Per (org, product), where its license copies were at the last reconcile: the License
    # statuses record it too, but their cache may lag the write by a moment.
    copies: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    # Per org, the lifecycle transition last posted as an Event (see lifecycle.untold_transitions).
    transitions: dict[str, str | None] = field(default_factory=dict)
    # Per org, the next moment a time rule may change what its reconcile decides (next_due in
    # domain/organization/plan.py and domain/license/evaluation.py): its loop wakes then, not at
    # the check.
    due: dict[str, datetime] = field(default_factory=dict)
    # org-<name> namespaces whose Memberships changed while no loop of <name> runs here: the
    # pending loop (handlers/organization.py) marks them Pending if no such org exists.
    unserved: set[str] = field(default_factory=set)
    # Orgs whose last turn left writes for the next (domain/fairness.py): their loop queues
    # again at once, behind the orgs already waiting for a slot.
    unfinished: set[str] = field(default_factory=set)
    unserved_changed: asyncio.Event = field(default_factory=asyncio.Event)
    # The org-<name> namespaces of orgs whose loop ran here until they were deleted: known to
    # be of this operator's region (domain/regions.py), until the pending loop has served them.
    released: set[str] = field(default_factory=set)
    # Organizations of regions this operator doesn't serve that no operator has reconciled yet
    # (the Organizations informer holds every region's; kopf watches this region's only): the
    # leader tells them whether their region is served (handlers/organization.py).
    unreconciled_elsewhere: set[str] = field(default_factory=set)
    unreconciled_elsewhere_changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        kube = self.kube
        # kopf's own handlers follow each org; this cache answers admission, and tells when an
        # org is gone (its namespace may stay, made for it: its Memberships are then Pending).
        self.organizations = Informer(
            "Organizations", listwatch.organizations(kube), OrgRecord.from_body, self.org_changed
        )
        # Memberships and member RoleBindings serve only in org-<name> namespaces: nothing
        # elsewhere is held (a policy keeps them there; this bounds what slips past it).
        # Under --shard i/N, only its orgs' (the API server selects them by the slot label;
        # `keep` drops any whose label names a slot its namespace doesn't have).
        shard = self.settings.shard
        self.members = Informer(
            "Memberships",
            listwatch.memberships(kube, shard.selector()),
            MemberRecord.from_body,
            self.namespace_changed,
            keep=shard.serves_namespace,
            index=lambda record: record.email_key,  # the people API finds a person's by it
        )
        self.bindings = Informer(
            "member RoleBindings",
            listwatch.member_role_bindings(kube, shard.selector()),
            BindingRecord.from_body,
            self.namespace_changed,
            keep=shard.serves_namespace,
        )
        self.namespaces = Informer(
            "labelled Namespaces",
            listwatch.labelled_namespaces(kube),
            NamespaceRecord.from_body,
            self.namespace_labelled,
        )

    def namespace_labelled(self, namespace: str) -> None:
        """A labelled Namespace changed (or lost its label): the orgs it names reconcile."""
        held = self.namespaces.get("", namespace)
        now = held.organization if held else None
        before = self.claims.pop(namespace, None)
        if before is not None:
            held_by = self.claimed_by.get(before, set())
            held_by.discard(namespace)
            if not held_by:
                self.claimed_by.pop(before, None)
        if now:
            self.claims[namespace] = now
            self.claimed_by.setdefault(now, set()).add(namespace)
        for organization in {before, now} - {None}:
            self.poke(str(organization))

    def claimed(self, organization: str) -> list[NamespaceRecord]:
        """The Namespaces whose label names the org (whoever owns them)."""
        held = (self.namespaces.get("", n) for n in sorted(self.claimed_by.get(organization, ())))
        return [record for record in held if record is not None]

    def may_own(self, organization: str, namespace: str) -> bool:
        """Whether the namespace is org-<name> or labelled for the org (the reconcile decides)."""
        return (
            namespace == names.org_namespace(organization)
            or self.claims.get(namespace) == organization
        )

    def count_workloads(self, organization: str, uids: Iterable[str]) -> None:
        """The workloads the org's reconcile found labelled for it now (see workload_wakes)."""
        now = frozenset(uids)
        for uid in self.counted.get(organization, frozenset()) - now:
            if self.counted_by.get(uid) == organization:
                del self.counted_by[uid]
        for uid in now:
            self.counted_by[uid] = organization
        if now:
            self.counted[organization] = now
        else:
            self.counted.pop(organization, None)

    def workload_wakes(
        self, uid: str, namespace: str, organization: str | None, *, deleted: bool
    ) -> set[str]:
        """The orgs a workload's event wakes, by the rules of handlers/organization.py's
        workload_changed: the org its label names, in a namespace that org may own, and the org
        that counted it if it left (label removed or changed, or deleted) from such a namespace.
        The count forgets it there and then, so its later events wake nothing. (A workload in a
        namespace the org can't own is told so without waking it.)"""
        wakes: set[str] = set()
        if organization and self.may_own(organization, namespace):
            wakes.add(organization)
        left = self.counted_by.get(uid)
        if left is not None and (deleted or left != organization):
            del self.counted_by[uid]  # its next reconcile counts it no more
            if self.may_own(left, namespace):
                wakes.add(left)
        return wakes

    def schedule(self, organization: str, moments: Iterable[datetime | None]) -> None:
        """The moments the org's last reconcile found due next; the earliest wakes it."""
        found = [moment for moment in moments if moment is not None]
        if found:
            self.due[organization] = min(found)
        else:
            self.due.pop(organization, None)

    def take_wait(self, organization: str, interval: float, now: datetime) -> float:
        """How long the org's loop sleeps without a poke: the check interval, or less if a
        time rule is due sooner. The moment is taken: only a reconcile that ends schedules
        another (one that fails retries, a stalled spec waits for a change or the check)."""
        due = self.due.pop(organization, None)
        if due is None:
            return interval
        return min(interval, max(0.0, (due - now).total_seconds()))

    def org_changed(self, organization: str) -> None:
        """An Organization changed; once gone, what is left in its namespace waits (Pending).
        One of another region that nothing has reconciled waits to be told whether its region
        is served (only a --leader-elect operator can tell: its peers' Leases say who runs)."""
        record = self.organizations.get("", organization)
        if record is None:
            # Also when kopf missed the deletion (paused as a follower meanwhile).
            self.forget(organization)
            self.unserved.add(names.org_namespace(organization))
            self.unserved_changed.set()
        elif self.settings.leader_elect and not (
            record.reconciled or self.serves_region(record.region)
        ):
            self.unreconciled_elsewhere.add(organization)
            self.unreconciled_elsewhere_changed.set()

    def namespace_changed(self, namespace: str) -> None:
        """A Membership or member RoleBinding changed: the org of its namespace reconciles."""
        organization = names.organization_of_namespace(namespace)
        if organization and organization in self.triggers:
            self.poke(organization)
        elif organization:
            self.unserved.add(namespace)
            self.unserved_changed.set()

    def informers(self) -> tuple[Informer[Any], ...]:
        return (self.organizations, self.members, self.bindings, self.namespaces)

    async def my_organizations(self, user: str) -> list[dict[str, Any]]:
        """The people API's answer for `user` (domain/people.py): the Memberships of the
        user's e-mail by its hash, and the orgs they name. From this replica's caches; under
        --shard, which holds only its orgs' Memberships, the API server selects them by the
        e-mail-hash label instead (read on the reviews' bounded threads, as admission reads
        another shard's; the domain matches each one's e-mail, so a forged label shows
        nothing)."""
        prefix = self.settings.sso_username_prefix
        key = names.email_hash(email_of(user, prefix))
        members: list[MemberRecord]
        if self.settings.shard.sharded:
            selector = f"{names.LABEL_EMAIL_HASH}={key}"
            bodies = await Reviews(self.kube).list_memberships(None, selector)
            members = [MemberRecord.from_body(body) for body in bodies]
        else:
            members = list(self.members.indexed(key))
        orgs = {}
        for member in members:
            name = names.organization_of_namespace(member.namespace)
            org = self.organizations.get("", name) if name else None
            if org is not None:
                orgs[org.name] = org.facts()
        return my_organizations(user, [m.facts() for m in members], orgs, sso_prefix=prefix)

    async def caches_synced(self) -> None:
        """Returns once every informer has listed its kind (their first sync)."""
        for informer in self.informers():
            await informer.synced.wait()

    def trigger(self, organization: str) -> asyncio.Event:
        self.released.discard(names.org_namespace(organization))  # served again
        return self.triggers.setdefault(organization, asyncio.Event())

    def poke(self, organization: str) -> None:
        """Wakes the org's loop; a name with no loop (no such org here) is ignored, so labels
        naming orgs that don't exist leave nothing behind."""
        trigger = self.triggers.get(organization)
        if trigger is None:
            return
        self.changed_at.setdefault(organization, time.monotonic())
        trigger.set()

    def take_change_time(self, organization: str) -> float:
        """The moment of the oldest change this reconcile answers (now, for a timed check)."""
        return self.changed_at.pop(organization, time.monotonic())

    def forget(self, organization: str) -> None:
        if self.triggers.pop(organization, None) is not None:  # served here until now
            namespace = names.org_namespace(organization)
            self.released.add(namespace)
            self.unserved.add(namespace)
            self.unserved_changed.set()
        self.changed_at.pop(organization, None)
        self.told.pop(organization, None)
        self.transitions.pop(organization, None)
        self.due.pop(organization, None)
        self.unfinished.discard(organization)
        self.count_workloads(organization, ())
        for key in [key for key in self.copies if key[0] == organization]:
            del self.copies[key]
        self.metrics.forget(organization)

    def serves_region(self, region: str | None) -> bool:
        return self.settings.region is None or self.settings.region == region
