"""`make run`'s way (`--webhook-mode managed`): the operator registers the people API for
loopback itself, as kopf registers the webhooks by URL, and removes it when it stops (an
APIService nobody serves would make every kubectl's discovery warn). On a control plane of its
own, with the operator as the local admin, as `make run` is."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from orgkeeper.names import PEOPLE_API_SERVICE
from orgkeeper_dev.localcluster import LocalCluster, free_port, install_orgkeeper
from support import identity
from support.cli import orgkeeper
from support.kube import Kube, api_client, wait_for
from support.orgs import new_org, wait_org


@pytest.fixture
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("people-local"))
    cluster.start()
    try:
        install_orgkeeper(cluster)
        yield cluster
    finally:
        cluster.stop()


def registered(admin: Kube) -> bool:
    registration = client.ApiregistrationV1Api(admin.api)
    names = [s.metadata.name for s in registration.list_api_service().items]
    return PEOPLE_API_SERVICE in names


def test_make_run_registers_the_people_api_for_loopback_and_removes_it_at_exit(
    local: LocalCluster, tmp_path: Path
) -> None:
    admin = Kube(api_client(local.kubeconfig))
    local.start_operator("--webhook-mode=managed", f"--people-api-port={free_port()}")
    wait_for("the people API to be Available", lambda: identity.people_api_available(admin))

    name, owner = "local-people", "owner@local-people.test"
    new_org(lambda user: Kube(api_client(local.kubeconfig, user=user)), name, owner)
    wait_org(admin, name)
    kubeconfig = local.user_kubeconfig(tmp_path / "owner", owner)
    listed = orgkeeper(local, "orgs", "-o", "json", kubeconfig=kubeconfig)
    assert listed.returncode == 0, listed.stderr
    assert [(row["organization"], row["owner"]) for row in json.loads(listed.stdout)] == [
        (name, True)
    ]

    pid = local.pid("orgkeeper")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    wait_for("the stopped operator to remove its APIService", lambda: not registered(admin))
    gone = orgkeeper(local, "orgs", kubeconfig=kubeconfig)
    assert gone.returncode == 1
    assert "the people API (people.orgkeeper.dev" in gone.stderr
