"""Issuing: which Provisioned Licenses get a fresh signed document, and which one may write
into a Secret several of them name."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ...licensing import LicensePayload
from .evaluation import PROVISIONED, Evaluated, evaluate_seen, needs_issuing
from .observation import LicenseObservation, LicenseSeen, W


@dataclass(frozen=True)
class Issue:
    """Sign `payload` and write it into the License's Secret."""

    license: str
    secret_name: str
    secret_key: str
    payload: LicensePayload
    why: str  # issued, reissued or rotated
    exists: bool  # patch the Secret (else create it)


@dataclass(frozen=True)
class Issuing:
    evaluated: Mapping[str, Evaluated]  # by License name, as found
    issues: Sequence[Issue]


@dataclass(frozen=True)
class Refused:
    """The API server refused to write an issued document into the Secret."""

    status: int  # HTTP


def plan_issuing(observation: LicenseObservation[W]) -> Issuing:
    """Each License as found, and the Provisioned ones that get a fresh document.

    One Secret holds one provisioned payload. Of the Provisioned Licenses naming the same
    Secret, one issues into it: the one whose payload it holds, else the oldest (then by name).
    The others never do (each would otherwise overwrite the other's payload at every
    reconcile); while invalid they say SecretInUse.
    """
    spec, now = observation.spec, observation.now
    evaluated = {seen.name: evaluate_seen(seen, observation) for seen in observation.licenses}
    issuers: dict[str, LicenseSeen] = {}
    for seen in sorted(
        observation.licenses,
        key=lambda s: (not evaluated[s.name].valid, s.created, s.name),
    ):
        if seen.source == PROVISIONED and seen.secret_name:
            issuers.setdefault(seen.secret_name, seen)
    issues: list[Issue] = []
    for seen in observation.licenses:
        issuer = issuers.get(seen.secret_name or "")
        if seen.source != PROVISIONED or issuer is None or seen.secret_name is None:
            continue
        item = evaluated[seen.name]
        if issuer.name != seen.name:
            if not item.valid:
                evaluated[seen.name] = dataclasses.replace(
                    item,
                    reason="SecretInUse",
                    message=f"Secret {seen.secret_name} holds the provisioned license of License "
                    f"{issuer.name}; name a Secret of its own in spec.secretRef",
                )
            continue
        why = needs_issuing(
            item, now=now, rotate_after=observation.rotate_after, plan=spec.plan, region=spec.region
        )
        if why is None:
            continue
        payload = LicensePayload(
            organization=observation.organization,
            product=seen.product,
            plan=spec.plan,
            region=spec.region,
            issued_at=now,
            expires_at=now + observation.validity,
            organization_uid=observation.organization_uid,
        )
        issues.append(
            Issue(seen.name, seen.secret_name, seen.secret_key, payload, why, seen.secret_exists)
        )
    return Issuing(evaluated, issues)
