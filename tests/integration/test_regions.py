"""One operator per geo can share a cluster: `--region eu` leaves other regions' orgs alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import install_orgkeeper
from orgkeeper.localcluster import LocalCluster
from support.kube import Kube, api_client
from support.operator import OperatorProcess
from support.orgs import organization, wait_org


@pytest.fixture(scope="module")
def eu_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kube, OperatorProcess]]:
    """A control plane of its own whose only operator serves region eu."""
    local = LocalCluster(tmp_path_factory.mktemp("geo-cluster"))
    local.start()
    try:
        install_orgkeeper(local)
        log: Path = tmp_path_factory.mktemp("geo-operator") / "operator.log"
        process = OperatorProcess(
            local, log, extra_args=("--region=eu",), webhook_mode="off"
        ).start()
        try:
            yield Kube(api_client(local.kubeconfig)), process
        finally:
            process.stop()
    finally:
        local.stop()


def test_an_eu_operator_ignores_a_us_org(eu_only: tuple[Kube, OperatorProcess]) -> None:
    admin, _ = eu_only
    admin.create("organizations", organization("stateside", "owner@stateside.test", region="us"))
    admin.create("organizations", organization("europa", "owner@europa.test", region="eu"))

    wait_org(admin, "europa")
    # The eu org was created after the us one and is fully reconciled: the us one was seen
    # and passed over, not merely not reached yet.
    assert "status" not in admin.get("organizations", "stateside")
    assert admin.core.list_namespace(field_selector="metadata.name=org-stateside").items == []
