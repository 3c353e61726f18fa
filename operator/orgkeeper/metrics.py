"""Prometheus metrics, served on --metrics-port at /metrics (endpoints.py: who may read them)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PHASES = ("Provisioning", "Active", "Deactivating", "Deactivated")

# No `<name>_created` gauge beside each counter and histogram: it only repeats the help text and
# the process start time (a process-wide switch of prometheus_client).
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # Per-org facts, replaced whole by each reconcile and read at scrape time.
    phases: dict[str, str] = field(default_factory=dict)
    license_expiry: dict[str, dict[tuple[str, str], datetime]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reconciles = Counter(
            "orgkeeper_reconciles_total",
            "Reconciles by kind and result (success or error).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "orgkeeper_reconcile_duration_seconds",
            "Time one Organization reconcile took, memberships and licenses included.",
            ["kind"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.propagation_lag = Histogram(
            "orgkeeper_license_propagation_lag_seconds",
            "From the change that needs a license copy (new data plane, rotation) to its delivery.",
            ["product"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.leader = Gauge(
            "orgkeeper_leader",
            "1 while this replica holds the leader Lease (reconciles); 0 while it follows.",
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self))
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and the like

    def forget(self, organization: str) -> None:
        self.phases.pop(organization, None)
        self.license_expiry.pop(organization, None)


class _StateCollector(Collector):
    def __init__(self, metrics: OperatorMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_phase = GaugeMetricFamily(
            "orgkeeper_organizations",
            "Organizations reconciled by this operator, by phase.",
            labels=["phase"],
        )
        counts: Mapping[str, int] = {
            phase: sum(1 for p in self.metrics.phases.values() if p == phase) for phase in PHASES
        }
        for phase, count in counts.items():
            by_phase.add_metric([phase], count)
        yield by_phase
        expiry = GaugeMetricFamily(
            "orgkeeper_license_expiry_seconds",
            "Seconds until each valid license expires.",
            labels=["organization", "license", "product"],
        )
        now = datetime.now(UTC)
        for organization, licenses in sorted(self.metrics.license_expiry.items()):
            for (name, product), expires in sorted(licenses.items()):
                expiry.add_metric([organization, name, product], (expires - now).total_seconds())
        yield expiry
