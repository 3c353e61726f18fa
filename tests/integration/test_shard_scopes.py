"""An all-regions operator and a regional one never share a cluster, shards included: a regional
shard's leader keeps an all-regions operator from starting, and an all-regions shard's leader
keeps a regional one out (API.md "Sharing a cluster", README "Scaling out").

As the operator's ServiceAccount (manifests/' RBAC): the start-up check reads the unsharded
Leases by name and lists shard Leases by orgkeeper's label (names.LEASE_SELECTOR). The shard
Leases here are made as a shard's leader makes them (labelled, held); a follower of the same
scope beside them starts (the positive control) and is stopped before it could lead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from orgkeeper import names
from orgkeeper.domain.shards import lease_scope
from orgkeeper.leader import micro_time
from orgkeeper_dev.localcluster import free_port, healthy
from support.cli import refused_in_one_line, run_orgkeeper
from support.identity import ServiceAccountIdentity
from support.kube import Kube, wait_for

NAMESPACE = "orgkeeper-system"


def held(name: str, holder: str, *, labelled: bool = True) -> dict[str, Any]:
    now = datetime.now(UTC)
    labels = {names.LABEL_LEASE: lease_scope(name)} if labelled else {}
    return {
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 3600,  # held all along the test
            "acquireTime": micro_time(now - timedelta(seconds=5)),
            "renewTime": micro_time(now),
            "leaseTransitions": 0,
        },
    }


class Leases:
    """Leases made as their holders would make them; deleted after the test (a held one would
    stop operators that later tests start)."""

    def __init__(self, admin: Kube) -> None:
        self.api = client.CoordinationV1Api(admin.api)
        self.made: list[str] = []

    def hold(self, name: str, holder: str) -> None:
        self.api.create_namespaced_lease(NAMESPACE, held(name, holder))
        self.made.append(name)

    def holder(self, name: str) -> str:
        return str(self.api.read_namespaced_lease(name, NAMESPACE).spec.holder_identity)


@pytest.fixture
def leases(admin: Kube) -> Iterator[Leases]:
    made = Leases(admin)
    yield made
    for name in made.made:
        try:
            made.api.delete_namespaced_lease(name, NAMESPACE)
        except client.ApiException as error:
            if error.status != 404:
                raise


def electing(*args: str) -> tuple[str, ...]:
    return (
        "--leader-elect",
        "--webhook-mode=off",
        f"--health-port={free_port()}",
        f"--metrics-port={free_port()}",
        *args,
    )


@pytest.mark.parametrize(
    ("shard_lease", "holder", "starting", "serving"),
    [
        ("orgkeeper-eu-shard-0-of-2", "eu-shard-0-a", ("--identity=all-1",), "region eu"),
        (
            "orgkeeper-shard-1-of-2",
            "all-shard-1-a",
            ("--region=eu", "--identity=eu-1"),
            "every region",
        ),
    ],
    ids=["all-regions beside a regional shard", "regional beside an all-regions shard"],
)
def test_a_shard_leader_of_another_scope_refuses_the_start_in_one_line(
    leases: Leases,
    operator_identity: ServiceAccountIdentity,
    shard_lease: str,
    holder: str,
    starting: tuple[str, ...],
    serving: str,
) -> None:
    leases.hold(shard_lease, holder)
    line = refused_in_one_line(run_orgkeeper(operator_identity.kubeconfig, *electing(*starting)))
    assert f"operator {holder!r}, serving {serving}, holds Lease {NAMESPACE}/{shard_lease}" in line
    assert "--region" in line


def test_a_replica_of_the_same_scope_starts_beside_its_shard_leases(
    leases: Leases,
    operator_identity: ServiceAccountIdentity,
) -> None:
    """The control: eu shards lead, and a regional eu operator (one that follows: its own Lease
    is held too) is not refused; it is stopped once it serves /healthz."""
    leases.hold("orgkeeper-eu-shard-0-of-2", "eu-shard-0-a")
    leases.hold("orgkeeper-eu", "eu-replica-a")
    health = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orgkeeper.cli",
            "run",
            "--listen-address=127.0.0.1",
            "--leader-elect",
            "--webhook-mode=off",
            "--region=eu",
            "--identity=eu-2",
            f"--health-port={health}",
            f"--metrics-port={free_port()}",
        ],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ORGKEEPER_")},
            "KUBECONFIG": str(operator_identity.kubeconfig),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            "the eu replica to serve /healthz (not refused)",
            lambda: process.poll() is None and healthy(health),
            timeout=60,  # as long as any operator's start is given (support/operator.py)
        )
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert "LeaseHeld" not in stderr and "can't share a cluster" not in stderr
    # It followed: the eu Lease is still the other replica's.
    assert leases.holder("orgkeeper-eu") == "eu-replica-a"
