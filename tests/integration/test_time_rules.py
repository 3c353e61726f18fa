"""The time rules, on the session operator restarted with a fast clock (`fast_clock`: billing
cycle and inactivity window 20 s, rotation after 30 s): inactivity deactivates an idle Free org
and no other, billing cycles roll, provisioned licenses rotate to active data planes only.

Every other test runs with the quiet defaults (30 days, 182 days), so nothing there changes on
a timer; here the tests wait for the rules' own moments, which come from the clock."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from orgkeeper import names
from orgkeeper_dev.localcluster import LocalCluster
from support.cli import orgkeeper
from support.kube import AsUser, Kube, wait_for
from support.licenses import delivered, license_status, namespace, secret_document
from support.operator import OperatorProcess
from support.orgs import new_ready_org, organization, wait_members_bound, wait_org
from support.workloads import create, workload

pytestmark = pytest.mark.usefixtures("fast_clock")


def test_inactive_free_orgs_are_deactivated_and_active_ones_are_not(
    admin: Kube, as_user: AsUser, cluster: LocalCluster, unique: str
) -> None:
    """The fast clock's inactivity window and billing cycle are both 20 seconds."""
    idle, login, plus, busy = (f"{kind}-{unique}" for kind in ("idle", "login", "plus", "busy"))
    for name, plan in ((idle, "Free"), (login, "Free"), (plus, "Plus"), (busy, "Free")):
        as_user(f"owner@{name}.test").create(
            "organizations", organization(name, f"owner@{name}.test", plan=plan)
        )
    cycles = {
        name: wait_org(admin, name)["status"]["billing"]["cycleStart"]
        for name in (idle, login, plus, busy)
    }

    recorded = orgkeeper(cluster, "activity", "requests", "--org", busy, "--count", "5")
    assert recorded.returncode == 0, recorded.stderr
    assert f"recorded 5 API request(s) for {busy}" in recorded.stdout
    # A login 12 seconds into the org's life: recorded ahead, so the test needn't wait for it.
    created = datetime.fromisoformat(
        admin.get("organizations", login)["metadata"]["creationTimestamp"].replace("Z", "+00:00")
    )
    later = (created + timedelta(seconds=12)).isoformat().replace("+00:00", "Z")
    (owner_membership,) = admin.list("memberships", f"org-{login}")
    admin.custom.patch_namespaced_custom_object_status(
        names.GROUP,
        names.VERSION,
        f"org-{login}",
        "memberships",
        owner_membership["metadata"]["name"],
        {"status": {"lastLoginTime": later}},
    )

    org = wait_org(admin, idle, "Deactivated", "True", "Inactive", timeout=60)
    assert org["status"]["deactivation"]["reason"] == "Inactive"
    assert org["status"]["ownerEmailLocked"] is True

    def rolled(name: str) -> dict[str, Any] | None:
        found = admin.get("organizations", name)
        return found if found["status"]["billing"]["cycleStart"] != cycles[name] else None

    for name in (login, plus, busy):
        # A reconcile that rolls the first billing cycle is as late as the inactivity deadline
        # of an org without logins or requests (both 20 s): had it counted, it would be there.
        other = wait_for(f"{name} to reconcile past its first billing cycle", partial(rolled, name))
        assert other["status"]["phase"] == "Active", (name, other["status"])
    assert admin.get("organizations", login)["status"]["activity"]["lastLoginTime"] == later
    wait_for(
        "the busy org's requests to roll into the previous cycle",
        lambda: (
            admin.get("organizations", busy)["status"]["activity"]["apiRequests"]["previousCycle"]
            == 5
        ),
    )
    assert admin.get("organizations", busy)["status"]["phase"] == "Active"

    refused = orgkeeper(
        cluster, "activity", "login", "--org", idle, "--email", f"owner@{idle}.test"
    )
    assert refused.returncode == 1
    assert (
        refused.stderr.strip()
        == f"error: organization {idle} is deactivated; activity is refused until it is reactivated"
    )

    # Support reactivates it with a new timestamp, like `kubectl rollout restart`: one later
    # than the deactivation at whole seconds (the refusal above takes well under a second).
    deactivated_at = datetime.fromisoformat(
        org["status"]["deactivation"]["at"].replace("Z", "+00:00")
    )
    wait_for(
        "a clock second after the deactivation",
        lambda: datetime.now(UTC).replace(microsecond=0) > deactivated_at,
    )
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    admin.patch("organizations", idle, {"spec": {"reactivationRequestedAt": now}})
    org = wait_org(admin, idle, "Deactivated", "False", "Active", timeout=30)
    assert org["status"]["phase"] == "Active"
    wait_members_bound(admin, idle, {f"owner@{idle}.test": ["organization-admin"]})


def test_rotation_reaches_active_data_planes_but_not_frozen_ones(
    admin: Kube, as_user: AsUser, operator: OperatorProcess, unique: str
) -> None:
    """The fast clock rotates provisioned licenses after 30 seconds."""
    live, frozen = f"live-{unique}", f"frozen-{unique}"
    for org in (live, frozen):
        new_ready_org(admin, as_user, org)
    # A namespace belongs to one org: each has its own.
    edge = namespace(admin, f"edge-{unique}", live)
    create(
        admin, edge, workload("DaemonSet", f"gw-{live}", live, "data-plane", "gateway-enterprise")
    )
    frozen_edge = namespace(admin, f"frozen-edge-{unique}", frozen)
    create(
        admin, frozen_edge, workload("DaemonSet", "gw", frozen, "data-plane", "gateway-enterprise")
    )
    first_live = wait_for(
        "the live org's copy", lambda: delivered(admin, edge, "gateway-enterprise")
    )
    first_frozen = wait_for(
        "the frozen org's copy", lambda: delivered(admin, frozen_edge, "gateway-enterprise")
    )

    admin.patch("organizations", frozen, {"spec": {"state": "Deactivated"}})
    wait_org(admin, frozen, "Deactivated", "True", "Requested", timeout=60)
    rotated = wait_for(
        "the live org's license to rotate and reach its data plane",
        lambda: (
            (copy := delivered(admin, edge, "gateway-enterprise"))
            and copy.fingerprint != first_live.fingerprint
            and copy
        ),
        timeout=90,
    )
    # The copy is delivered before the License's status is written, within the same reconcile.
    wait_for(
        "the live License's status to show the delivered fingerprint",
        lambda: (
            license_status(admin, live, "gateway-enterprise").get("fingerprint")
            == rotated.fingerprint
        ),
    )
    assert rotated.payload.issued_at > first_live.payload.issued_at
    wait_for(
        "the frozen org's license to rotate too",
        lambda: (
            license_status(admin, frozen, "gateway-enterprise")["fingerprint"]
            != first_frozen.fingerprint
        ),
        timeout=90,
    )
    frozen_copy = delivered(admin, frozen_edge, "gateway-enterprise")
    assert frozen_copy is not None, f"the license copy in {frozen_edge} is gone"
    assert frozen_copy.fingerprint == first_frozen.fingerprint
    # Events are posted once the reconcile has written every status.
    wait_for(
        "the live License's LicenseRotated Event",
        lambda: any(
            e.reason == "LicenseRotated"
            for e in admin.core.list_namespaced_event(
                f"org-{live}", field_selector="involvedObject.name=gateway-enterprise"
            ).items
        ),
    )

    # Nothing secret leaked into the operator's logs or Events.
    documents = [
        secret_document(admin, f"org-{org}", "license-gateway-enterprise") for org in (live, frozen)
    ]
    payloads = [base64.b64decode(json.loads(d)["payload"]) for d in documents if d]
    key_pem = admin.core.read_namespaced_secret("orgkeeper-signing-key", "orgkeeper-system").data[
        "signing-key.pem"
    ]
    texts = [operator.log_text()] + [
        e.message or "" for e in admin.core.list_event_for_all_namespaces().items
    ]
    for text in texts:
        for payload in payloads:
            assert payload.decode() not in text and base64.b64encode(payload).decode() not in text
        assert (
            key_pem not in text and base64.b64decode(key_pem).decode().splitlines()[1] not in text
        )
