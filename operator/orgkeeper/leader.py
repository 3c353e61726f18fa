"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

Acquire and renew are compare-and-swap updates (the Lease's resourceVersion), so two replicas
never both win. Expiry is judged on this replica's own clock: a Lease held by another is taken
over only after its record stayed unchanged for `leaseDurationSeconds` since this replica saw
it change (clocks of different hosts are never compared). A leader that could not renew within
the renew deadline stops writing at once; the deadline is shorter than the lease duration, so
it has stopped before anyone else can take over.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.rest import ApiException

from . import names
from .api.v1alpha1 import REGIONS
from .domain.shards import lease_generation, lease_scope
from .kube import is_status
from .leases import Leases
from .settings import SettingError, Settings, lease_name

logger = logging.getLogger(__name__)

# Acquire retries wait the retry period plus up to this share of it, so replicas that started
# together don't ask in lockstep (client-go's jitter is 1.2; smaller keeps takeover near 15 s).
JITTER = 0.2


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    duration: float  # seconds
    renew_deadline: float
    retry_period: float

    @classmethod
    def of(cls, settings: Settings) -> LeaseConfig:
        return cls(
            namespace=settings.namespace,
            name=settings.lease_name,
            identity=settings.identity,
            duration=settings.lease_duration.total_seconds(),
            renew_deadline=settings.renew_deadline.total_seconds(),
            retry_period=settings.retry_period.total_seconds(),
        )


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec: who holds it, for how long, since when."""

    holder: str
    duration: float
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration=float(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": int(self.duration),
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


def micro_time(at: datetime) -> str:
    """RFC 3339 with microseconds, as Kubernetes' MicroTime."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def labelled(metadata: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The Lease's metadata with orgkeeper's label (names.LABEL_LEASE: its scope), by which the
    fence of shard counts and the start-up check of scopes select orgkeeper's Leases. A Lease
    taken by an earlier version gets it at its next acquire or renewal (the same write)."""
    labels = {**(metadata.get("labels") or {}), names.LABEL_LEASE: lease_scope(name)}
    return {**metadata, "labels": labels}


def rewritten(lease: Mapping[str, Any], name: str, record: LeaseRecord) -> dict[str, Any]:
    """The Lease as read, with `record` in its spec and orgkeeper's label: the body of a renewal,
    a takeover or a release (an update on the resourceVersion read)."""
    return {
        **lease,
        "metadata": labelled(lease.get("metadata") or {}, name),
        "spec": {**(lease.get("spec") or {}), **record.to_spec()},
    }


def held_until(record: LeaseRecord) -> datetime | None:
    """When the holder's claim runs out by the Lease's own renewTime; None if nobody holds it."""
    if not record.holder or not record.renew_time:
        return None
    renewed = datetime.fromisoformat(record.renew_time.replace("Z", "+00:00"))
    return renewed + timedelta(seconds=record.duration)


class Elector:
    """Campaigns for the Lease, renews it while leading, and reports each change of leadership."""

    def __init__(
        self,
        leases: Leases,
        config: LeaseConfig,
        *,
        on_started_leading: Callable[[], Awaitable[None]],
        on_stopped_leading: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
        fence: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        """`fence()`: what keeps this replica from leading now (a live Lease of another shard
        generation, say), or None; asked before taking the Lease and again after."""
        self.leases = leases
        self.config = config
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.clock = clock
        # The last record seen, and when (this replica's clock) it was first seen like that.
        self.observed: LeaseRecord | None = None
        self.observed_at = 0.0
        # When the request of the last successful acquire or renew was sent.
        self.renewed_at: float | None = None
        self.leading = False
        self.resigned = False
        self.fence = fence
        self.blocked: str | None = None  # what the fence said last (logged when it changes)

    async def _fenced(self) -> bool:
        if self.fence is None:
            return False
        blocked = await self.fence()
        if blocked is not None and blocked != self.blocked:
            logger.info("Lease %s: not taken: %s", self._ref(), blocked)
        self.blocked = blocked
        return blocked is not None

    def holds_lease(self) -> bool:
        """The write gate: True only while a renewal within the renew deadline stands."""
        if self.resigned or self.renewed_at is None:
            return False
        return self.clock() < self.renewed_at + self.config.renew_deadline

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True if this replica holds the Lease now. Never raises an API error."""
        started = self.clock()
        try:
            return await asyncio.wait_for(self._attempt(started), timeout=self._attempt_timeout())
        except Exception as error:  # timeouts, API errors, urllib3's: the next attempt retries
            logger.warning("Lease %s: attempt failed: %s", self._ref(), _short(error))
            return False

    def _attempt_timeout(self) -> float:
        if self.renewed_at is None:
            return self.config.renew_deadline
        return max(0.1, self.renewed_at + self.config.renew_deadline - self.clock())

    async def _attempt(self, started: float) -> bool:
        leases, config = self.leases, self.config
        now = micro_time(datetime.now(UTC))
        timeout = self.config.retry_period * 2
        lease = await leases.read_lease(config.namespace, config.name, timeout)
        if lease is None:
            if await self._fenced():
                return False
            record = LeaseRecord(config.identity, config.duration, now, now, 0)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": labelled(
                    {"name": config.name, "namespace": config.namespace}, config.name
                ),
                "spec": record.to_spec(),
            }
            try:
                await leases.create_lease(config.namespace, body, timeout)
            except ApiException as error:
                if is_status(error, 409):
                    return False  # another replica created it first
                raise
            return await self._won_unless_fenced(record, started)
        current = LeaseRecord.of(lease)
        if current != self.observed:
            self.observed, self.observed_at = current, self.clock()
        mine = current.holder == config.identity
        if current.holder and not mine and self.clock() < self.observed_at + current.duration:
            return False  # held by another, and not expired as far as this replica has seen
        if not mine and await self._fenced():
            return False
        record = LeaseRecord(
            holder=config.identity,
            duration=config.duration,
            acquire_time=current.acquire_time if mine else now,
            renew_time=now,
            transitions=current.transitions if mine else current.transitions + 1,
        )
        body = rewritten(lease, config.name, record)
        try:
            await leases.replace_lease(config.namespace, body, timeout)
        except ApiException as error:
            if is_status(error, 409):
                return False  # changed meanwhile: somebody else renewed or took it
            raise
        if mine:
            self._won(record, started)
            return True
        logger.info(
            "Lease %s: taken over from %r (transition %d).",
            self._ref(),
            current.holder or "nobody",
            record.transitions,
        )
        return await self._won_unless_fenced(record, started)

    async def _won_unless_fenced(self, record: LeaseRecord, started: float) -> bool:
        """Taken: leads unless the fence closed meanwhile (another generation took its Lease
        between the first look and this one), in which case it hands this one back. Of two
        that take Leases at once, at least the later one sees the other: never two lead."""
        if await self._fenced():
            await self.release()
            return False
        self._won(record, started)
        return True

    def _won(self, record: LeaseRecord, started: float) -> None:
        self.observed, self.observed_at = record, self.clock()
        if not self.resigned:
            self.renewed_at = started

    async def run(self) -> None:
        """Campaign, lead while renewals succeed, and campaign again after losing the Lease."""
        while not self.resigned:
            while not await self.try_acquire_or_renew():
                if self.resigned:
                    return
                await asyncio.sleep(self.config.retry_period * (1 + random.random() * JITTER))
            if self.resigned:
                return
            logger.info("Lease %s: leading as %r.", self._ref(), self.config.identity)
            self.leading = True
            await self.on_started_leading()
            await self._renew_while_valid()
            self.leading = False
            if self.resigned:
                return
            logger.error(
                "Lease %s: not renewed within the renew deadline (%gs); stopped every write "
                "and stepped down.",
                self._ref(),
                self.config.renew_deadline,
            )
            self.renewed_at = None
            await self.on_stopped_leading()

    async def _renew_while_valid(self) -> None:
        while not self.resigned:
            await asyncio.sleep(self.config.retry_period)
            if self.resigned:
                return
            renewed = await self.try_acquire_or_renew()
            if not renewed and not self.holds_lease():
                return

    async def resign(self) -> None:
        """Stops writing at once; the caller releases the Lease once writes in flight ended."""
        self.resigned = True
        if self.leading:
            self.leading = False
            await self.on_stopped_leading()

    async def release(self) -> None:
        """Hands the Lease back (client-go: no holder, a 1 s duration) if this replica holds it."""
        leases, config = self.leases, self.config
        try:
            lease = await leases.read_lease(config.namespace, config.name, 5.0)
            if lease is None or LeaseRecord.of(lease).holder != config.identity:
                return
            current = LeaseRecord.of(lease)
            now = micro_time(datetime.now(UTC))
            record = LeaseRecord("", 1, now, now, current.transitions)
            await leases.replace_lease(config.namespace, rewritten(lease, config.name, record), 5.0)
            logger.info("Lease %s: released.", self._ref())
        except Exception as error:  # it then expires by itself within the lease duration
            logger.warning("Lease %s: could not release it: %s", self._ref(), _short(error))

    def _ref(self) -> str:
        return f"{self.config.namespace}/{self.config.name}"


async def other_generation(leases: Leases, settings: Settings) -> str | None:
    """A live Lease (held, renewTime + leaseDurationSeconds in the future) of this operator's
    scope (`orgkeeper`, `orgkeeper-<region>`) but another shard count: while one is held, a
    shard of this count may not lead (README: Scaling out, changing N)."""
    base = lease_name(settings.region)
    now = datetime.now(UTC)
    for name, lease in (await leases.scope_leases(settings.namespace, [base])).items():
        generation = lease_generation(name, base)
        if generation is None or generation == settings.shard.count:
            continue
        record = LeaseRecord.of(lease)
        until = held_until(record)
        if until is not None and until > now and record.holder != settings.identity:
            return (
                f"Lease {settings.namespace}/{name} of {generation} shard(s) is held by "
                f"{record.holder!r} until {micro_time(until)}; this one serves "
                f"{settings.shard.count} shard(s) and waits until no other generation leads"
            )
    return None


class LeaseHeldError(SettingError):
    """Another operator holds a Lease this one can't share the cluster with (`--region`)."""


def check_sharing(leases: Leases, settings: Settings) -> None:
    """An all-regions operator and a regional one never run side by side (API.md).

    Raises LeaseHeldError, naming the holder and the Lease, when one that conflicts is held now
    (renewTime + leaseDurationSeconds in the future). Blocking: call it before the loop runs.
    """
    if settings.region is None:
        others = [(lease_name(region), f"region {region}") for region in REGIONS]
        me = "serves every region (no --region)"
    else:
        others = [(lease_name(None), "every region")]
        me = f"serves region {settings.region} (--region)"
    now = datetime.now(UTC)
    try:
        found = leases.scope_leases.blocking(settings.namespace, [name for name, _ in others])
    except ApiException as error:
        # Without --leader-elect an operator may run without the Lease Role (older RBAC).
        if is_status(error, 403) and not settings.leader_elect:
            logger.warning(
                "Not allowed to read Leases in %s: can't check that no operator of another "
                "scope shares this cluster (grant the Role of manifests/rbac/operator.yaml).",
                settings.namespace,
            )
            return
        raise
    for name, lease in found.items():
        # Unsharded, or a shard of any count (`<scope>-shard-<i>-of-<N>`).
        serving = next(
            (what for base, what in others if lease_generation(name, base) is not None), None
        )
        if serving is None:
            continue
        record = LeaseRecord.of(lease)
        until = held_until(record)
        if until is not None and until > now and record.holder != settings.identity:
            raise LeaseHeldError(
                "region",
                f"this operator {me}, but operator {record.holder!r}, serving {serving}, holds "
                f"Lease {settings.namespace}/{name} (valid until {micro_time(until)}); an "
                "all-regions operator and regional ones can't share a cluster: stop that one "
                "or change this setting",
            )


def check_one_installation(leases: Leases, settings: Settings) -> None:
    """One operator serves a scope: a second one started by mistake stops at start (API.md).

    Raises LeaseHeldError when this scope's Lease is held (renewTime + leaseDurationSeconds in
    the future) by another operator that this one would write beside: in this namespace while
    this one does not elect (with --leader-elect it follows as a replica), or in another
    namespace (another installation, with a signing key of its own: each would re-sign the
    other's licenses). Blocking: call it before the loop runs.
    """
    now = datetime.now(UTC)
    name, here = settings.lease_name, settings.namespace
    if not settings.leader_elect:
        try:
            lease = leases.read_lease.blocking(here, name, 10.0)
        except ApiException as error:
            if not is_status(error, 403):  # without the Lease Role check_sharing said so
                raise
            lease = None
        record = LeaseRecord.of(lease) if lease is not None else None
        until = held_until(record) if record is not None else None
        if record and until and until > now and record.holder != settings.identity:
            raise LeaseHeldError(
                "leader-elect",
                f"operator {record.holder!r} holds Lease {here}/{name} (valid until "
                f"{micro_time(until)}): orgkeeper already runs for these orgs, and this one, "
                "not electing, would write beside it; stop that one, or join it as a "
                "replica with --leader-elect",
            )
    for lease in leases.leases_named.blocking([name]) or []:  # None: not allowed to look elsewhere
        namespace = lease["metadata"].get("namespace")
        record = LeaseRecord.of(lease)
        until = held_until(record)
        if namespace == here or until is None or until <= now:
            continue
        raise LeaseHeldError(
            "namespace",
            f"orgkeeper is installed in namespace {namespace}: operator {record.holder!r} "
            f"holds Lease {namespace}/{name} (valid until {micro_time(until)}) for the same "
            f"orgs, with a signing key of its own; this one (in {here}) would re-sign their "
            f"licenses: stop that installation, or run this one with --namespace {namespace}",
        )


def _short(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return str(error) or type(error).__name__
