"""Organizations: one reconcile loop per org, woken by anything that concerns it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf

from .. import names
from ..controllers.organization import reconcile_organization
from ..controllers.records import values
from ..controllers.runtime import Event, Runtime
from .indexes import MEMBER_BINDING_LABELS, MEMBERSHIPS, ORGANIZATIONS, ROLE_BINDINGS

MAX_BACKOFF = 60.0


def organization_of_namespace(namespace: str | None) -> str | None:
    prefix = names.org_namespace("")
    return namespace[len(prefix) :] if namespace and namespace.startswith(prefix) else None


def post(body: kopf.Body, events: list[Event]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def in_region(spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> bool:
    runtime: Runtime = memo.runtime
    return runtime.serves_region(spec.get("region"))


async def organization_loop(
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    memberships_by_namespace: kopf.Index[str, Any],
    member_bindings_by_namespace: kopf.Index[str, Any],
    licenses_by_namespace: kopf.Index[str, Any],
    **_: Any,
) -> None:
    """Reconciles whenever poked, and every check interval to repair drift."""
    runtime: Runtime = memo.runtime
    interval = runtime.settings.check_interval.total_seconds()
    trigger = runtime.trigger(name)
    trigger.set()
    backoff = 1.0
    namespace = names.org_namespace(name)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(trigger.wait(), timeout=interval)
        trigger.clear()
        try:
            events = await reconcile_organization(
                runtime,
                body,
                values(memberships_by_namespace, namespace),
                values(member_bindings_by_namespace, namespace),
                values(licenses_by_namespace, namespace),
            )
        except Exception as error:  # the loop must outlive any single failure
            logger.warning("reconcile failed, retrying in %.0fs: %s", backoff, error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            trigger.set()
            continue
        backoff = 1.0
        post(body, events)


def organization_changed(name: str, type: str, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        memo.runtime.triggers.pop(name, None)
    else:
        memo.runtime.poke(name)


def namespaced_object_changed(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A Membership or member RoleBinding changed: its org reconciles."""
    organization = organization_of_namespace(namespace)
    if organization:
        memo.runtime.poke(organization)


def register(registry: kopf.OperatorRegistry) -> None:
    loop = kopf.daemon(*ORGANIZATIONS, when=in_region, registry=registry)
    loop(organization_loop)  # type: ignore[arg-type]  # index kwargs aren't in kopf's protocol
    kopf.on.event(*ORGANIZATIONS, registry=registry)(organization_changed)
    on_membership = kopf.on.event(*MEMBERSHIPS, id="membership_changed", registry=registry)
    on_membership(namespaced_object_changed)
    on_binding = kopf.on.event(
        *ROLE_BINDINGS, labels=MEMBER_BINDING_LABELS, id="member_binding_changed", registry=registry
    )
    on_binding(namespaced_object_changed)
