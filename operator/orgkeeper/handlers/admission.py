"""Validating admission webhooks: the rules one object's schema can't check by itself."""

from __future__ import annotations

from typing import Any

import kopf

from .. import names
from ..controllers.records import MemberRecord, OrgRecord, values
from ..controllers.runtime import Runtime
from ..domain import admission
from ..domain.membership import Member, same_email
from .indexes import MEMBERSHIPS, ORGANIZATIONS

# Below the webhooks' 10s timeout, so a request at startup gets this answer, not a timeout.
CACHE_WAIT_SECONDS = 5.0


def _refuse(message: str | None) -> None:
    if message is not None:
        raise kopf.AdmissionError(message, code=403)


async def _org(
    runtime: Runtime, organizations: kopf.Index[str, Any], name: str | None
) -> OrgRecord | None:
    if not name:
        return None
    # With --leader-elect, kopf's watches (and so its index) are paused on followers, which
    # serve admission too: the API server answers instead.
    if runtime.settings.leader_elect:
        body = await runtime.kube.run(runtime.kube.read_organization, name)
        return OrgRecord.from_body(body) if body else None
    found = values(organizations, name)
    return found[0] if found else None


async def _all_orgs(runtime: Runtime, organizations: kopf.Index[str, Any]) -> list[OrgRecord]:
    if runtime.settings.leader_elect:  # as in _org; Organizations are created rarely
        listed = await runtime.kube.run(runtime.kube.list_custom, "organizations")
        return [OrgRecord.from_body(body) for body in listed]
    return [record for store in organizations.values() for record in store]


async def _members(runtime: Runtime, namespace: str) -> list[Member]:
    """The namespace's Memberships, once the operator has listed them all."""
    if not await runtime.members.wait_synced(CACHE_WAIT_SECONDS):
        raise kopf.AdmissionError(
            "orgkeeper is still loading Memberships after a start; try again in a few seconds",
            code=503,
        )
    return [record.member() for record in runtime.members.in_namespace(namespace)]


async def validate_organization(
    spec: kopf.Spec,
    old: kopf.Body | None,
    name: str,
    operation: str,
    memo: kopf.Memo,
    organizations_by_name: kopf.Index[str, Any],
    **_: Any,
) -> None:
    runtime: Runtime = memo.runtime
    if not runtime.serves_region(spec.get("region")):
        return
    owner = str(spec.get("owner", ""))
    if operation == "CREATE":
        locking = [
            record.name
            for record in await _all_orgs(runtime, organizations_by_name)
            if record.owner_email_locked and same_email(record.owner, owner)
        ]
        _refuse(admission.locked_email_refusal(owner, locking))
    elif old is not None:
        previous = (old.get("status") or {}).get("owner") or old["spec"].get("owner")
        members = await _members(runtime, names.org_namespace(name))
        _refuse(admission.transfer_refusal(owner, previous, members))


def validate_organization_delete(
    body: kopf.Body, name: str, userinfo: kopf.UserInfo, memo: kopf.Memo, **_: Any
) -> None:
    runtime: Runtime = memo.runtime
    if not runtime.serves_region(body["spec"].get("region")):
        return
    owner = (body.get("status") or {}).get("owner") or body["spec"].get("owner")
    _refuse(
        admission.delete_organization_refusal(
            name,
            owner,
            userinfo.get("username", ""),
            userinfo.get("groups") or [],
            runtime.settings.sso_username_prefix,
        )
    )


async def validate_membership(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    operation: str,
    memo: kopf.Memo,
    organizations_by_name: kopf.Index[str, Any],
    **_: Any,
) -> None:
    runtime: Runtime = memo.runtime
    org = await _org(runtime, organizations_by_name, names.organization_of_namespace(namespace))
    if org is None or org.deleting or not runtime.serves_region(org.region):
        return  # no org (or it is going away): nothing to protect
    record = MemberRecord.from_body(body)
    if operation == "DELETE":
        _refuse(admission.owner_membership_delete_refusal(record.email, org.owner))
        return
    _refuse(
        admission.duplicate_email_refusal(
            record.email, name, await _members(runtime, namespace or "")
        )
    )
    _refuse(admission.owner_team_removal_refusal(record.email, record.teams, org.owner))


def register(registry: kopf.OperatorRegistry) -> None:
    # Each id is the webhook's URL path (kopf serves /<id>); a Service reference in a
    # ValidatingWebhookConfiguration only takes DNS-label paths, hence no underscores.
    on_org_write = kopf.on.validate(
        *ORGANIZATIONS,
        id="validate-organization",
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )
    on_org_delete = kopf.on.validate(
        *ORGANIZATIONS, id="validate-organization-delete", operations=["DELETE"], registry=registry
    )
    on_membership = kopf.on.validate(
        *MEMBERSHIPS,
        id="validate-membership",
        operations=["CREATE", "UPDATE", "DELETE"],
        registry=registry,
    )
    # kopf's callback protocols don't list index and review kwargs; they arrive all the same.
    on_org_write(validate_organization)  # type: ignore[arg-type]
    on_org_delete(validate_organization_delete)
    on_membership(validate_membership)  # type: ignore[arg-type]
