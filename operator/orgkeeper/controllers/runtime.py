"""What every reconcile needs at hand: the API adapter and the settings, and, apart, the caches
(controllers/caches.py), the wake-ups (controllers/wakeups.py, by the rules of domain/wakes.py)
and what reconciles remember between turns (ReconcileMemory)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..domain import wakes
from ..domain.wakes import Wake
from ..kube import REVIEW_CONCURRENCY, KubeApi
from ..metrics import OperatorMetrics
from ..reviews import Verdicts, metrics_ttl, support_ttl
from ..settings import Settings
from .caches import Caches
from .wakeups import Wakeups

RECONCILE_CONCURRENCY = 8


@dataclass
class ReconcileMemory:
    """What an org's reconciles remember between turns (forgotten with the org)."""

    # Per org, the warnings already told (ignored workloads, failing targets): each is posted
    # once as an Event while it lasts, not at every reconcile.
    told: dict[str, frozenset[str]] = field(default_factory=dict)
    # Per org, the lifecycle transition last posted as an Event (lifecycle.untold_transitions).
    transitions: dict[str, str | None] = field(default_factory=dict)
    # Per (org, product), where its license copies were at the last reconcile: the License
    # statuses record it too, but their cache may lag the write by a moment.
    copies: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    def forget(self, organization: str) -> None:
        self.told.pop(organization, None)
        self.transitions.pop(organization, None)
        for key in [key for key in self.copies if key[0] == organization]:
            del self.copies[key]


@dataclass
class Runtime:
    kube: KubeApi
    settings: Settings
    signing_key: Ed25519PrivateKey | None = None  # loaded (or created) on leading
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
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
    wakes: Wakeups = field(default_factory=Wakeups)
    memory: ReconcileMemory = field(default_factory=ReconcileMemory)
    # Started by the always-on part on every replica, leader or not (manager.py).
    caches: Caches = field(init=False)

    def __post_init__(self) -> None:
        self.caches = Caches(
            self.kube,
            self.settings,
            organization_changed=self.organization_cached,
            member_changed=self.member_changed,
            namespace_changed=self.namespace_relabelled,
        )

    # Events -> wake rule (domain/wakes.py) -> poke. kopf's watches: handlers/organization.py.

    def organization_cached(self, organization: str) -> None:
        """The Organizations informer saw the org change, or go."""
        record = self.caches.organizations.get("", organization)
        self.wake(wakes.organization_cached(organization, present=record is not None))
        if record is not None and wakes.tells_region_unserved(
            self.settings.leader_elect,
            record.reconciled,
            self.serves_region(record.region),
        ):
            self.wakes.tell_region_unserved(organization)

    def member_changed(self, namespace: str) -> None:
        """A Membership or member RoleBinding changed (their informers)."""
        self.wake(wakes.member_event(namespace, self.wakes.triggers))

    def namespace_relabelled(self, namespace: str) -> None:
        """A labelled Namespace changed, or lost its label (their informer)."""
        self.wake(wakes.namespace_relabelled(*self.caches.relabel(namespace)))

    def wake(self, wake: Wake) -> None:
        for organization in wake.forget:
            self.forget(organization)
        self.wakes.apply(wake)

    def forget(self, organization: str) -> None:
        """The org is gone, or served elsewhere now: nothing of it is kept."""
        self.wakes.forget(organization)
        self.memory.forget(organization)
        self.metrics.forget(organization)

    def serves_region(self, region: str | None) -> bool:
        return self.settings.region is None or self.settings.region == region
