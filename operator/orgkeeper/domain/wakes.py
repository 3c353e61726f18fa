"""What wakes an Organization's reconcile: every event and timer, in one table (`WAKES`).

One scheduler (handlers/organization.py: take_turns) gives each org woken a turn; an org
sleeps until poked or until its next timer (controllers/turns.py keeps the table of turns).
The rules here are pure: they say which orgs an event wakes (`Wake`), and which namespaces it
leaves unserved (their Memberships are then marked Pending); controllers/wakeups.py's
`Wakeups` keeps the state they read (which orgs are served, who counted which workload, what each
labelled namespace names) and does the poking. Read the table as "this event, on this kind,
wakes these orgs".
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from .. import names


@dataclass(frozen=True)
class Wake:
    """What one event does: the orgs it pokes, the orgs it forgets (gone), and the org-<name>
    namespaces it leaves unserved here (their Memberships wait: Pending)."""

    orgs: frozenset[str] = frozenset()
    forget: frozenset[str] = frozenset()
    unserved: frozenset[str] = frozenset()


NOTHING = Wake()


def poke(*orgs: str | None) -> Wake:
    return Wake(orgs=frozenset(org for org in orgs if org))


def organization_event(name: str, deleted: bool) -> Wake:
    """kopf's watch of this operator's Organizations: a change wakes the org; a deletion
    forgets it (no turn of it is queued or timed any more)."""
    return Wake(forget=frozenset({name})) if deleted else poke(name)


def organization_cached(name: str, present: bool) -> Wake:
    """The Organizations informer (every region's): one gone, also when kopf missed the
    deletion (it watched nothing while this replica followed), is forgotten, and what is left
    in org-<name> waits for an org (Pending)."""
    if present:
        return NOTHING
    return Wake(forget=frozenset({name}), unserved=frozenset({names.org_namespace(name)}))


def tells_region_unserved(leader_elect: bool, reconciled: bool, serves_region: bool) -> bool:
    """An Organization of a region this operator doesn't serve, that no operator has
    reconciled, is told whether its region is served (by the leader; only a --leader-elect
    operator can tell, its peers' Leases say who runs). No org wakes for it."""
    return leader_elect and not (reconciled or serves_region)


def license_event(namespace: str | None) -> Wake:
    """A License in org-<name> created, changed or deleted: <name> judges it, picks the active
    one of its product and delivers it."""
    return poke(names.organization_of_namespace(namespace))


def member_event(namespace: str, served: Container[str]) -> Wake:
    """A Membership or member RoleBinding in org-<name> changed (their informers): <name>
    reconciles if it is served here; if not, its namespace is left to the Pending loop."""
    organization = names.organization_of_namespace(namespace)
    if not organization:
        return NOTHING
    if organization in served:
        return poke(organization)
    return Wake(unserved=frozenset({namespace}))


def namespace_relabelled(before: str | None, now: str | None) -> Wake:
    """A Namespace labelled orgkeeper.dev/organization changed (or lost its label): the org it
    names now and the one it named before (it left that one) both reconcile."""
    return poke(before, now)


def may_own(organization: str, namespace: str, claims: Mapping[str, str]) -> bool:
    """Whether the namespace is org-<name> or labelled for the org (its reconcile decides)."""
    return namespace == names.org_namespace(organization) or claims.get(namespace) == organization


def workload_event(
    uid: str,
    namespace: str,
    organization: str | None,
    *,
    deleted: bool,
    counted_by: Mapping[str, str],
    claims: Mapping[str, str],
) -> tuple[Wake, bool]:
    """A workload labelled for an org changed, or left the org that counted it. It wakes the org
    its label names, in a namespace that org may own, and the org that counted it if it left
    (label removed or changed, or deleted) from such a namespace; and says whether the count
    forgets it there and then (so its later events wake nothing). A workload in a namespace
    the org can't own wakes nothing: patching it over and over can't keep reconciles busy."""
    wakes: set[str] = set()
    if organization and may_own(organization, namespace, claims):
        wakes.add(organization)
    left = counted_by.get(uid)
    leaves = left is not None and (deleted or left != organization)
    if left is not None and leaves and may_own(left, namespace, claims):
        wakes.add(left)
    return poke(*wakes), leaves


def earliest(moments: Iterable[datetime | None]) -> datetime | None:
    """Of the moments a reconcile found due next (a time rule: inactivity, billing, a license
    to re-sign), the one that wakes the org."""
    found = [moment for moment in moments if moment is not None]
    return min(found) if found else None


def next_wait(due: datetime | None, interval: float, now: datetime) -> float:
    """How long an org sleeps without a poke: the check interval (drift is repaired at
    least that often), or less if a time rule is due sooner."""
    if due is None:
        return interval
    return min(interval, max(0.0, (due - now).total_seconds()))


@dataclass(frozen=True)
class Turn:
    """After a reconcile: whether the org wakes again at once, after how long, and the backoff
    of the next failure."""

    again: bool
    sleep: float
    backoff: float


def after_turn(*, failed: bool, unfinished: bool, backoff: float, max_backoff: float) -> Turn:
    """A turn that left writes for the next (domain/fairness.py) queues again at once, behind
    the orgs waiting for a slot; a failed one retries after a backoff that doubles up to
    `max_backoff`; a turn that ends resets the backoff."""
    if failed:
        return Turn(again=True, sleep=backoff, backoff=min(backoff * 2, max_backoff))
    return Turn(again=unfinished, sleep=0.0, backoff=1.0)


@dataclass(frozen=True)
class WakeRule:
    """One row of the table: what happens (`event`) to which kind or timer (`source`), which
    orgs it wakes, and the rule that says so."""

    source: str
    event: str
    wakes: str
    rule: Callable[..., object]


WAKES: tuple[WakeRule, ...] = (
    WakeRule("Organization (kopf watch)", "added or changed", "the org", organization_event),
    WakeRule("Organization (kopf watch)", "deleted", "none: it is forgotten", organization_event),
    WakeRule(
        "Organization (informer)",
        "gone",
        "none: forgotten, org-<name> left Pending",
        organization_cached,
    ),
    WakeRule(
        "Organization (informer)",
        "of another region, unreconciled",
        "none: the leader tells it RegionNotServed",
        tells_region_unserved,
    ),
    WakeRule("License in org-<name>", "any", "<name>", license_event),
    WakeRule(
        "Membership or member RoleBinding in org-<name> (informers)",
        "any",
        "<name> if served here; else org-<name> is left Pending",
        member_event,
    ),
    WakeRule(
        f"Namespace labelled {names.LABEL_ORGANIZATION} (informer)",
        "any",
        "the org it names and the org it named before",
        namespace_relabelled,
    ),
    WakeRule(
        "Deployment, StatefulSet, DaemonSet labelled for an org (kopf watch)",
        "any",
        "the org labelled, in a namespace it may own; the org that counted it, if it left",
        workload_event,
    ),
    WakeRule("timer", "a time rule due", "the org, at the earliest moment due", earliest),
    WakeRule("timer", "the check interval", "the org (drift repair)", next_wait),
    WakeRule(
        "the org's own turn",
        "writes left, or failed",
        "the org: at once, or after a backoff",
        after_turn,
    ),
)
