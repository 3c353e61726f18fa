"""The operator down while its ValidatingWebhookConfiguration stays (failurePolicy Fail): writes
its webhooks guard are refused with a message naming the webhook, nothing gets in, and once the
operator is back every write works again."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from orgkeeper import names
from orgkeeper.names import WEBHOOK_CONFIGURATION
from support.kube import AsUser, Kube, rejection
from support.orgs import (
    membership,
    new_org,
    organization,
    unique_suffix,
    wait_members_bound,
    wait_org,
    wait_owner_rights,
)

from .operators import Operators
from .report import TALLY, once
from .state import delete_and_wait_gone

FAULT = "operator down, webhooks failurePolicy Fail"


def _state(admin: Kube, org: str) -> dict[str, Any]:
    """What the refused writes would have changed."""
    body = admin.get("organizations", org)
    return {
        "spec": body["spec"],
        "generation": body["metadata"]["generation"],
        "memberships": {
            m["metadata"]["name"]: m["spec"]
            for m in admin.list("memberships", names.org_namespace(org))
        },
        "organizations": sorted(o["metadata"]["name"] for o in admin.list("organizations")),
    }


def test_writes_are_refused_while_the_webhook_is_down(
    fault_admin: Kube, as_user: AsUser, operators: Operators
) -> None:
    admin = fault_admin
    org = f"hook-{unique_suffix()}"
    owner, alice = f"owner@{org}.test", f"alice@{org}.test"
    namespace = names.org_namespace(org)
    new_org(as_user, org, owner)
    wait_org(admin, org)
    wait_owner_rights(admin, org, owner)
    admin.create("memberships", membership("alice", alice, "analytics-viewer"), namespace)
    wait_members_bound(admin, org, {alice: ["analytics-viewer"]})

    with once(FAULT):
        operators.kill()
        configuration = client.AdmissionregistrationV1Api(
            admin.api
        ).read_validating_webhook_configuration(WEBHOOK_CONFIGURATION)
        assert {hook.failure_policy for hook in configuration.webhooks} == {"Fail"}
        before = _state(admin, org)
        newcomer = f"late-{unique_suffix()}"
        writes = {
            # Creates meet the mutating webhooks first (they stamp the shard slot: Fail too).
            "create an Organization": (
                "label-organization.orgkeeper.dev",
                lambda: as_user(f"owner@{newcomer}.test").create(
                    "organizations", organization(newcomer, f"owner@{newcomer}.test", plan="Plus")
                ),
            ),
            "transfer ownership to a non-admin": (
                "validate-organization.orgkeeper.dev",
                lambda: as_user(owner).patch("organizations", org, {"spec": {"owner": alice}}),
            ),
            "delete the Organization": (
                "validate-organization-delete.orgkeeper.dev",
                lambda: as_user(owner).delete("organizations", org),
            ),
            "add a Membership": (
                "label-membership.orgkeeper.dev",
                lambda: admin.create(
                    "memberships", membership("bob", f"bob@{org}.test", "portal-admin"), namespace
                ),
            ),
            "change a Membership's teams": (
                "validate-membership.orgkeeper.dev",
                lambda: admin.patch(
                    "memberships", "alice", {"spec": {"teams": ["organization-admin"]}}, namespace
                ),
            ),
            "delete a Membership": (
                "validate-membership.orgkeeper.dev",
                lambda: admin.delete("memberships", "alice", namespace),
            ),
        }
        for what, (webhook, write) in writes.items():
            status, message = rejection(write)
            assert status >= 500, (what, status, message)
            assert f'failed calling webhook "{webhook}"' in message, (what, message)
        # Nothing got in, and the operator's own objects are as they were.
        assert _state(admin, org) == before
        assert admin.get("organizations", org)["metadata"].get("deletionTimestamp") is None
        TALLY.note(FAULT, f"{len(writes)} kinds of write refused, each naming its webhook")

        # Back: the same writes work (and the rules are enforced again).
        operators.start()
        as_user(f"owner@{newcomer}.test").create(
            "organizations", organization(newcomer, f"owner@{newcomer}.test", plan="Plus")
        )
        wait_org(admin, newcomer)
        status, message = rejection(
            lambda: as_user(owner).patch("organizations", org, {"spec": {"owner": alice}})
        )
        assert status == 403 and "not a member of the organization-admin team" in message, message
        admin.create("memberships", membership("bob", f"bob@{org}.test", "portal-admin"), namespace)
        admin.patch("memberships", "alice", {"spec": {"teams": ["organization-admin"]}}, namespace)
        wait_members_bound(
            admin, org, {alice: ["organization-admin"], f"bob@{org}.test": ["portal-admin"]}
        )
        as_user(owner).patch("organizations", org, {"spec": {"owner": alice}})
        wait_org(admin, org)
        assert admin.get("organizations", org)["status"]["owner"] == alice
    for name in (org, newcomer):
        delete_and_wait_gone(admin, name)
