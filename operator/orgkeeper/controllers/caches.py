"""The caches every replica keeps warm, leader or not: admission, the people API and the
reconciles read them, and a new leader starts with them synced (controllers/informer.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import names
from ..access import Reviews
from ..domain.people import email_of, my_organizations
from ..domain.wakes import may_own
from ..kube import KubeApi
from ..settings import Settings
from . import listwatch
from .informer import Informer
from .records import BindingRecord, MemberRecord, NamespaceRecord, OrgRecord

Changed = Callable[[str], None]


class Caches:
    """Organizations (every region's), Memberships and member RoleBindings (in org-<name>
    namespaces, under --shard its orgs' only), and Namespaces labelled orgkeeper.dev/organization
    with the org each label names as last seen. Each informer calls back with the name (or
    namespace) that changed: controllers/runtime.py turns that into wake-ups."""

    def __init__(
        self,
        kube: KubeApi,
        settings: Settings,
        *,
        organization_changed: Changed,
        member_changed: Changed,
        namespace_changed: Changed,
    ) -> None:
        self.kube, self.settings = kube, settings
        # What each labelled namespace names, and the namespaces labelled for each org, as
        # last seen (a relabelled namespace leaves the org it named: relabel says which).
        self.claims: dict[str, str] = {}
        self.claimed_by: dict[str, set[str]] = {}
        # kopf's own handlers follow each org; this cache answers admission, and tells when an
        # org is gone (its namespace may stay, made for it: its Memberships are then Pending).
        self.organizations = Informer(
            "Organizations",
            listwatch.organizations(kube),
            OrgRecord.from_body,
            organization_changed,
            index=OrgRecord.owner_key,  # admission finds an Owner's orgs by it, not by a scan
        )
        # Memberships and member RoleBindings serve only in org-<name> namespaces: nothing
        # elsewhere is held (a policy keeps them there; this bounds what slips past it).
        # Under --shard i/N, only its orgs' (the API server selects them by the slot label;
        # `keep` drops any whose label names a slot its namespace doesn't have).
        shard = settings.shard
        self.members = Informer(
            "Memberships",
            listwatch.memberships(kube, shard.selector()),
            MemberRecord.from_body,
            member_changed,
            keep=shard.serves_namespace,
            index=lambda record: record.email_key,  # the people API finds a person's by it
        )
        self.bindings = Informer(
            "member RoleBindings",
            listwatch.member_role_bindings(kube, shard.selector()),
            BindingRecord.from_body,
            member_changed,
            keep=shard.serves_namespace,
        )
        self.namespaces = Informer(
            "labelled Namespaces",
            listwatch.labelled_namespaces(kube),
            NamespaceRecord.from_body,
            namespace_changed,
        )

    def informers(self) -> tuple[Informer[Any], ...]:
        return (self.organizations, self.members, self.bindings, self.namespaces)

    async def synced(self) -> None:
        """Returns once every informer has listed its kind (their first sync)."""
        for informer in self.informers():
            await informer.synced.wait()

    def relabel(self, namespace: str) -> tuple[str | None, str | None]:
        """A labelled Namespace changed (or lost its label): the org it named as last seen, and
        the one it names now; the claims are updated."""
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
        return before, now

    def may_own(self, organization: str, namespace: str) -> bool:
        """Whether the namespace is org-<name> or labelled for the org (the reconcile decides)."""
        return may_own(organization, namespace, self.claims)

    def claimed(self, organization: str) -> list[NamespaceRecord]:
        """The Namespaces whose label names the org (whoever owns them)."""
        held = (self.namespaces.get("", n) for n in sorted(self.claimed_by.get(organization, ())))
        return [record for record in held if record is not None]

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
