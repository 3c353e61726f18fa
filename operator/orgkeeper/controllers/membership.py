"""Memberships: writes what the domain planned for the Memberships of an org namespace (their
labels, RoleBindings and status), and the Owner's Membership when they have none."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..api.v1alpha1 import API_VERSION, MEMBERSHIP
from ..api.v1alpha1.membership import MembershipStatus
from ..domain.fairness import take_turn, turn_order
from ..domain.membership import Binding, MembershipsPlan, plan_memberships
from ..domain.organization.ownership import OwnerMembership
from ..names import same_email
from ..resources import OwnerRef
from .informer import Informer
from .records import MemberRecord
from .runtime import Runtime
from .writes import Failure, Target, attempt, differs, status_wire

# The key of a stale RoleBinding's removal in a turn's costs (Membership names have no '/').
STALE = "rolebinding/"
# How many Memberships are prepared between two turns given to the event loop.
YIELD_EVERY = 200


async def create_owner_membership(
    runtime: Runtime, namespace: str, owner: OwnerMembership, failures: list[Failure]
) -> bool:
    """Whether the Owner has their Membership now (created, or found made earlier); a failure
    is added to `failures`."""
    target = Target(f"Membership {namespace}/{owner.member.name}")
    (done,) = await attempt([(target, _owner_membership(runtime, namespace, owner))], failures)
    return done


async def _owner_membership(runtime: Runtime, namespace: str, owner: OwnerMembership) -> None:
    """Creates the Owner's Membership as owner-<hash of the e-mail>. An org admin may create a
    Membership of any name, another e-mail's included: a name taken so is not the Owner's, so
    theirs then gets a generated name beside it (owner-<hash>-xxxxx). What is written is taken
    into the cache at once: the next reconcile finds it, by e-mail, and makes no other."""
    kube, member = runtime.kube, owner.member
    body = {
        "apiVersion": API_VERSION,
        "kind": MEMBERSHIP.kind,
        "metadata": {"name": member.name, "labels": dict(owner.labels)},
        "spec": {"email": member.email, "teams": list(member.teams)},
    }
    written = await kube.create_custom(MEMBERSHIP.plural, namespace, body)
    if written is None:  # the name is taken
        found = await kube.read_membership(namespace, member.name)
        if found is not None and same_email((found.get("spec") or {}).get("email"), member.email):
            runtime.caches.members.observe(found)
            return
        generated = {"generateName": f"{member.name}-", "labels": dict(owner.labels)}
        beside = {**body, "metadata": generated}
        written = await kube.create_custom(MEMBERSHIP.plural, namespace, beside)
    if written is not None:
        runtime.caches.members.observe(written)


async def sync_memberships(
    runtime: Runtime,
    namespace: str,
    plan: MembershipsPlan,
    memberships: Sequence[MemberRecord],
    failures: list[Failure],
    *,
    budget: int | None = None,
) -> bool:
    """Writes the plan for the Memberships of `namespace` (as the cache held them when it was
    made), at most `budget` writes' worth of whole Memberships (domain/fairness.py; None: all).
    A write that fails is added to `failures`; the others go on. True if some are left for
    the org's next turn."""
    kube = runtime.kube
    records = {record.name: record for record in memberships}
    bindings_of: dict[str, list[Binding]] = {}
    for binding in plan.bindings:
        bindings_of.setdefault(binding.membership, []).append(binding)
    patches: dict[str, dict[str, Any] | None] = {}
    for index, record in enumerate(memberships):
        patches[record.name] = _status_patch(record, plan.statuses[record.name])
        if index % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)  # admission answers on this loop too
    order = turn_order([(record.name, not record.has_status) for record in memberships])
    costs = [(f"{STALE}{name}", 1) for name in plan.stale_bindings] + [
        (
            name,
            len(bindings_of.get(name, ())) + (name in plan.labels) + (patches[name] is not None),
        )
        for name in order
    ]
    if budget is None:
        taken, more = [key for key, cost in costs if cost], False
    else:
        taken, more = take_turn(costs, budget)
    now = set(taken)

    # RoleBindings first: a Membership's status says its teams are bound only once they are.
    rbac: list[tuple[Target, Awaitable[Any]]] = []
    rbac_of: list[str] = []  # the Membership each RBAC write is for ("" for a removal)
    for binding in plan.bindings:
        if binding.membership not in now:
            continue
        record = records[binding.membership]
        owner = OwnerRef(API_VERSION, MEMBERSHIP.kind, record.name, record.uid)
        held = runtime.caches.bindings.get(namespace, binding.name) is not None
        put = kube.put_member_binding(namespace, binding, owner, exists=held)
        target = Target(f"RoleBinding {namespace}/{binding.name}", (_membership(record),))
        rbac.append((target, _taken_in(runtime.caches.bindings, put)))
        rbac_of.append(record.name)
    for binding_name in plan.stale_bindings:
        if f"{STALE}{binding_name}" not in now:
            continue
        target = Target(f"RoleBinding {namespace}/{binding_name}")
        rbac.append((target, _deleted_binding(runtime, namespace, binding_name)))
        rbac_of.append("")
    done = await attempt(rbac, failures)
    unbound = {name for name, ok in zip(rbac_of, done, strict=True) if name and not ok}

    writes: list[tuple[Target, Awaitable[Any]]] = []
    for record in memberships:
        if record.name not in now:
            continue
        target = Target(f"Membership {namespace}/{record.name}", (_membership(record),))
        labels = plan.labels.get(record.name)
        if labels is not None:
            label = kube.patch_labels(MEMBERSHIP.plural, namespace, record.name, dict(labels))
            writes.append((target, _taken_in(runtime.caches.members, label)))
        if record.name in unbound:
            continue  # its status waits until its RoleBindings are written (the org says why)
        patch = patches[record.name]
        if patch is not None:
            status_write = kube.patch_status(
                MEMBERSHIP.plural, record.name, patch, record.namespace
            )
            writes.append((target, _taken_in(runtime.caches.members, status_write)))
    await attempt(writes, failures)
    return more


async def mark_pending(runtime: Runtime, namespace: str, now: datetime) -> list[Failure]:
    """The Memberships of org-<name> while no Organization <name> exists: `Pending`, with a
    Ready=False condition saying why, and no member RoleBinding (left in a namespace made for
    an org that was then deleted). Once the org exists, its own reconcile takes over."""
    memberships = runtime.caches.members.in_namespace(namespace)
    plan = plan_memberships(
        None,
        memberships,
        runtime.caches.bindings.in_namespace(namespace),
        sso_prefix=runtime.settings.sso_username_prefix,
        now=now,
    )
    failures: list[Failure] = []
    await sync_memberships(runtime, namespace, plan, memberships, failures)
    return failures


def _status_patch(record: MemberRecord, status: MembershipStatus) -> dict[str, Any] | None:
    """The merge patch of a Membership's status, if it differs (lastLoginTime is the CLI's)."""
    wire = status_wire(status, omit=("lastLoginTime",))
    return wire if differs(wire, record.status) else None


def _membership(record: MemberRecord) -> dict[str, Any]:
    """A Membership as the object an Event is about."""
    return {
        "apiVersion": API_VERSION,
        "kind": MEMBERSHIP.kind,
        "metadata": {"name": record.name, "namespace": record.namespace, "uid": record.uid},
    }


async def _deleted_binding(runtime: Runtime, namespace: str, name: str) -> None:
    await runtime.kube.delete_role_binding(namespace, name)
    runtime.caches.bindings.forget(namespace, name)


async def _taken_in(informer: Informer[Any], write: Awaitable[Mapping[str, Any] | None]) -> None:
    """Awaits a write and puts its answer in the cache, so the next reconcile doesn't redo it."""
    written = await write
    if written is not None:
        informer.observe(written)
