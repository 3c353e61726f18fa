"""Validating admission webhooks: the rules one object's schema can't check by itself.

They read the Runtime's informers (Organizations, Memberships), never kopf's indexes, which
pause on replicas that don't lead. They check every region's objects, whatever --region the
operator serves (its informers are cluster-wide): so one webhook configuration, behind one
Service selecting every operator Pod of any region, works for regional operators side by side.
Until both informers have listed their kind, every webhook answers 503: an empty cache would
allow what the rules refuse.

The rules that need no cache (who may set which field) live in the API server itself, as
admission policies (manifests/policies/).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from .. import names
from ..access import Reviews
from ..controllers.records import MemberRecord, OrgRecord
from ..controllers.runtime import Runtime
from ..domain import admission
from ..domain.membership import Member, is_user, same_email
from ..domain.shards import lease_generation
from ..leader import LeaseRecord, held_until
from ..leases import Leases
from ..reviews import BusyError, user_key
from ..settings import lease_name
from .indexes import MEMBERSHIPS, ORGANIZATIONS

# Below the webhooks' 10s timeout, so a request at startup gets this answer, not a timeout.
CACHE_WAIT_SECONDS = 5.0


class RefusalsAreNotErrors(logging.Filter):
    """kopf logs every refused admission request as a handler that "failed permanently" at
    ERROR; a refusal is the webhook doing its job, so it is logged at INFO instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if (
            record.levelno == logging.ERROR
            and message.startswith("Webhook '")
            and " failed permanently: " in message
        ):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def log_refusals_as_info() -> None:
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, RefusalsAreNotErrors) for f in objects.filters):
        objects.addFilter(RefusalsAreNotErrors())


def _refuse(message: str | None) -> None:
    if message is not None:
        raise kopf.AdmissionError(message, code=403)


async def _synced(runtime: Runtime) -> None:
    """Refuses (503) until the Organization and Membership caches hold the whole cluster (the
    Memberships: this shard's)."""
    for informer in (runtime.caches.organizations, runtime.caches.members):
        if not await informer.wait_synced(CACHE_WAIT_SECONDS):
            raise kopf.AdmissionError(
                f"orgkeeper is still loading {informer.what} after a start, and checks this "
                "request against them; try again in a few seconds",
                code=503,
            )


async def _members(runtime: Runtime, namespace: str) -> list[Member]:
    """The namespace's Memberships: from the cache if this shard holds them, else read now (a
    shard holds only its orgs' Memberships; any replica of any shard answers admission). The
    read is served from the API server's watch cache, and sees what the informer would."""
    if runtime.settings.shard.serves_namespace(namespace):
        return [record.member() for record in runtime.caches.members.in_namespace(namespace)]
    try:
        bodies = await Reviews(runtime.kube).list_memberships(namespace)
    except Exception as error:
        raise kopf.AdmissionError(
            f"orgkeeper could not read the Memberships of {namespace} to check this request "
            f"({type(error).__name__}); try again in a few seconds",
            code=503,
        ) from None
    return [MemberRecord.from_body(body).member() for body in bodies]


def _owned_by(runtime: Runtime, email: str) -> list[str]:
    """The Organizations whose Owner (effective, else asked for) is `email` (from the index by
    Owner: a sign-up among 10,000 orgs reads a few records, not every one)."""
    return sorted(
        record.name
        for record in runtime.caches.organizations.indexed(email.strip().lower())
        if record.owner is not None and same_email(record.owner, email)
    )


def _locking(runtime: Runtime, email: str) -> list[str]:
    """Deactivated orgs whose owner e-mail lock holds `email`."""
    return sorted(
        record.name
        for record in runtime.caches.organizations.indexed(email.strip().lower())
        if record.owner_email_locked and same_email(record.owner, email)
    )


async def _is_support(
    runtime: Runtime, userinfo: kopf.UserInfo, name: str, *, known: bool = True
) -> bool:
    """A SubjectAccessReview for the verb `support`, kept briefly and asked with a bound
    (reviews.py): the webhook port is open, and a review posted to it names any user it likes.
    For an update (`known`), an org the cache doesn't hold is one the API server is not
    updating (the cache holds them all): nothing to ask."""
    if known and runtime.caches.organizations.get("", name) is None:
        return False
    reviews = Reviews(runtime.kube)
    try:
        return await runtime.support_access.ask(
            user_key(userinfo, "support", name),
            lambda: reviews.may_on_organization(userinfo, "support", name),
        )
    except BusyError:
        raise kopf.AdmissionError(
            "orgkeeper is checking too many requests for support rights now; try again in a "
            "few seconds",
            code=429,
        ) from None


async def validate_organization(
    spec: kopf.Spec,
    old: kopf.Body | None,
    name: str,
    operation: str,
    userinfo: kopf.UserInfo,
    memo: kopf.Memo,
    warnings: list[str],
    **_: Any,
) -> None:
    runtime: Runtime = memo.runtime
    await _synced(runtime)
    owner = str(spec.get("owner", ""))
    if operation == "CREATE":
        _refuse(admission.locked_email_refusal(owner, _locking(runtime, owner)))
        owned = _owned_by(runtime, owner)
        limit = runtime.settings.orgs_per_owner
        # Support is asked only beyond the limit: an ordinary sign-up costs no review.
        if admission.signup_limit_refusal(owner, owned, limit) is not None:
            support = await _is_support(runtime, userinfo, name, known=False)
            _refuse(admission.signup_limit_refusal(owner, owned, limit, support=support))
        warning = await unserved_region(runtime, str(spec.get("region", "")))
        if warning is not None:
            warnings.append(warning)  # kubectl prints it: "Warning: spec.region: ..."
        return
    if old is None:
        return
    previous = (old.get("status") or {}).get("owner") or old["spec"].get("owner")
    if previous is None or same_email(owner, previous):
        return
    members = await _members(runtime, names.org_namespace(name))
    support = admission.owner_left(previous, members) and await _is_support(runtime, userinfo, name)
    _refuse(
        admission.transfer_refusal(
            owner,
            previous,
            members,
            locking_organizations=_locking(runtime, owner),
            support=support,
        )
    )


async def unserved_region(runtime: Runtime, region: str) -> str | None:
    """The warning for an org of a region no operator serves; None when served or unknown."""
    settings = runtime.settings
    if settings.region is None or settings.region == region:
        return None  # this operator serves it: no need to read a Lease
    leases = [lease_name(None), lease_name(region)]
    # On kube's threads: a flood of reviews must not delay the Lease's renewals.
    lease_api = Leases(runtime.kube, runtime.kube.executor)
    try:  # both scopes, unsharded or shards (orgkeeper[-<region>]-shard-<i>-of-<N>)
        found = await lease_api.scope_leases(settings.namespace, leases, 2.0)
    except Exception:  # Leases that can't be read: say nothing rather than guess
        return None
    now = datetime.now(UTC)
    live = set()
    for name, lease in found.items():
        scope = next((base for base in leases if lease_generation(name, base)), None)
        until = held_until(LeaseRecord.of(lease))
        if scope is not None and until is not None and until > now:
            live.add(scope)
    return admission.unserved_region_warning(
        region, own_region=settings.region, live_leases=live, leases=leases
    )


async def validate_organization_delete(
    body: kopf.Body, name: str, userinfo: kopf.UserInfo, memo: kopf.Memo, **_: Any
) -> None:
    """The Owner, or support (a SubjectAccessReview for the verb `support`, asked only when
    the requester isn't the Owner)."""
    runtime: Runtime = memo.runtime
    await _synced(runtime)
    owner = (body.get("status") or {}).get("owner") or body["spec"].get("owner")
    user, prefix = userinfo.get("username", ""), runtime.settings.sso_username_prefix
    sso_only = bool(body["spec"].get("ssoOnly"))
    owner_asks = is_user(user, owner, sso_only=sso_only, sso_prefix=prefix)
    support = not owner_asks and await _is_support(runtime, userinfo, name, known=False)
    _refuse(
        admission.delete_organization_refusal(
            name, owner, user, prefix, support=support, sso_only=sso_only
        )
    )


async def validate_membership(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    operation: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    runtime: Runtime = memo.runtime
    await _synced(runtime)
    organization = names.organization_of_namespace(namespace)
    org: OrgRecord | None = (
        runtime.caches.organizations.get("", organization) if organization is not None else None
    )
    if org is None or org.deleting:
        return  # no org (the cache holds them all), or it is going away: nothing to protect
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
    # persistent: kopf leaves them registered when the operator stops (`managed` mode), so
    # they fail closed (failurePolicy Fail) while it is away instead of vanishing.
    on_org_write = kopf.on.validate(
        *ORGANIZATIONS,
        id="validate-organization",
        operations=["CREATE", "UPDATE"],
        persistent=True,
        registry=registry,
    )
    on_org_delete = kopf.on.validate(
        *ORGANIZATIONS,
        id="validate-organization-delete",
        operations=["DELETE"],
        persistent=True,
        registry=registry,
    )
    on_membership = kopf.on.validate(
        *MEMBERSHIPS,
        id="validate-membership",
        operations=["CREATE", "UPDATE", "DELETE"],
        persistent=True,
        registry=registry,
    )
    # kopf's callback protocols don't list the review's kwargs (old, operation); they arrive.
    on_org_write(validate_organization)  # type: ignore[arg-type]
    on_org_delete(validate_organization_delete)
    on_membership(validate_membership)  # type: ignore[arg-type]
