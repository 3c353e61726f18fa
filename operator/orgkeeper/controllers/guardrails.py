"""An org namespace's guardrails: Pod Security and the Membership quota (kube.py writes them)."""

from __future__ import annotations

import asyncio
import time

from kubernetes import client

from ..resources import OwnerRef
from .runtime import Runtime

# A new quota is counted by kube-controller-manager within about a second; until then the API
# server refuses every Membership create in the namespace, so the org is not reported ready.
QUOTA_WAIT_SECONDS = 5.0
QUOTA_POLL_SECONDS = 0.2


class QuotaNotCountedError(Exception):
    """The reconcile fails, and is retried with backoff, until the quota counts Memberships."""


async def ensure_guardrails(
    runtime: Runtime,
    namespace: str,
    organization: str,
    owner: OwnerRef,
    found: client.V1Namespace | None,
) -> None:
    """Pod Security labels and the Membership quota; `found` is the namespace as just read
    (None when this reconcile created it, with the labels)."""
    kube = runtime.kube
    if found is not None:
        await kube.ensure_pod_security(namespace, found.metadata.labels or {})
    deadline = time.monotonic() + QUOTA_WAIT_SECONDS
    while not await kube.ensure_membership_quota(namespace, organization, owner):
        if time.monotonic() > deadline:
            raise QuotaNotCountedError(
                f"kube-controller-manager has not counted the Memberships of ResourceQuota "
                f"{namespace}/orgkeeper yet, so Membership creates there are refused meanwhile"
            )
        await asyncio.sleep(QUOTA_POLL_SECONDS)
