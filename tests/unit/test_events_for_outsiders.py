"""What Events tell, and to whom (review 2026-12-07, L1 and L2): Organization Events, kept in
`default` where whoever reads Events there reads every org's, name no e-mail, and are recorded
in org-<name> too for the Owner and the org's admins; NamespaceNotOwned is the same Event
whether or not the org it names exists. tests/integration/test_org_history.py proves both
through the API server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast
from unittest import mock

import kopf
import pytest

from orgkeeper import names, views
from orgkeeper.api.v1alpha1.organization import OrganizationStatus
from orgkeeper.controllers.runtime import Runtime
from orgkeeper.domain.events import Event, recorded_in
from orgkeeper.domain.membership import Member
from orgkeeper.domain.organization.ownership import OwnerMembership, decide_owner, owner_events
from orgkeeper.handlers import organization as handlers
from orgkeeper.kube import KubeApi, NotLeaderError
from orgkeeper.resources import SHARED_INSTANCE, PostedEvent
from orgkeeper.settings import Settings

OWNER, ADMIN, DEV = "owner@acme.test", "admin@acme.test", "dev@acme.test"
ORG_BODY = {
    "apiVersion": "orgkeeper.dev/v1alpha1",
    "kind": "Organization",
    "metadata": {"name": "acme", "uid": "uid-acme"},
}


def served(*, leading: bool = True) -> tuple[Runtime, mock.AsyncMock]:
    """A runtime that serves acme (its loop runs), and the mock its API calls go to."""
    kube = mock.MagicMock()
    kube.post_event = mock.AsyncMock(side_effect=None if leading else NotLeaderError("follower"))
    found = Runtime(kube=cast(KubeApi, kube), settings=Settings(identity="orgkeeper-eu-7f9c"))
    found.wakes.trigger("acme")
    return found, kube.post_event


def deployment(name: str, org: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "mallory",
            "uid": uid,
            "labels": {names.LABEL_ORGANIZATION: org},
        },
    }


async def label(runtime: Runtime, body: dict[str, Any], type: str = "ADDED") -> None:
    await handlers.workload_changed(
        labels=cast(kopf.Labels, body["metadata"]["labels"]),
        namespace=body["metadata"]["namespace"],
        uid=body["metadata"]["uid"],
        type=type,
        memo=kopf.Memo(runtime=runtime),
        body=body,
    )


def posted(review: mock.AsyncMock) -> list[tuple[dict[str, Any], PostedEvent]]:
    return [(call.args[0], call.args[1]) for call in review.await_args_list]


def test_not_owned_is_the_same_event_whether_or_not_the_org_exists() -> None:
    runtime, review = served()
    asyncio.run(label(runtime, deployment("p-acme", "acme", "uid-1")))
    asyncio.run(label(runtime, deployment("p-ghost", "ghost", "uid-2")))
    (acme_ref, acme), (ghost_ref, ghost) = posted(review)
    assert acme_ref["metadata"] == {"name": "p-acme", "namespace": "mallory", "uid": "uid-1"}
    assert ghost_ref["metadata"] == {"name": "p-ghost", "namespace": "mallory", "uid": "uid-2"}
    assert acme.message.replace("acme", "X") == ghost.message.replace("ghost", "X")
    assert (acme.type, acme.reason, acme.action) == (ghost.type, ghost.reason, ghost.action)
    # No replica's identity (its region) in it, and a fixed name: one Event, whoever posts.
    assert acme.instance == ghost.instance == SHARED_INSTANCE
    assert acme.name == names.once_event_name("p-acme", "uid-1", "NamespaceNotOwned")
    assert ghost.name == names.once_event_name("p-ghost", "uid-2", "NamespaceNotOwned")
    # Neither org is woken nor remembered: the stranger's writes cost nothing to keep.
    assert not runtime.wakes.trigger("acme").is_set()
    assert list(runtime.wakes.triggers) == ["acme"]
    assert (runtime.memory.told, runtime.wakes.counted_by, runtime.wakes.changed_at) == ({}, {}, {})


def test_a_workload_in_a_namespace_the_org_may_own_is_left_to_its_reconcile() -> None:
    runtime, review = served()
    body = deployment("gw", "acme", "uid-3")
    body["metadata"]["namespace"] = "org-acme"
    asyncio.run(label(runtime, body))
    assert posted(review) == []
    assert runtime.wakes.trigger("acme").is_set()


def test_a_deleted_workload_is_told_nothing_and_a_follower_posts_nothing() -> None:
    runtime, review = served()
    asyncio.run(label(runtime, deployment("p-acme", "acme", "uid-1"), "DELETED"))
    assert posted(review) == []
    follower, refused = served(leading=False)
    asyncio.run(label(follower, deployment("p-acme", "acme", "uid-1")))  # no error
    assert refused.await_count == 1


def test_an_organization_event_is_recorded_in_its_namespace_too() -> None:
    runtime, review = served()
    on_license = {"metadata": {"name": "mesh", "namespace": "org-acme", "uid": "uid-lic"}}
    events = recorded_in(
        [Event("Normal", "Deactivated", "deactivated"), Event("Normal", "X", "y", on_license)],
        "org-acme",
    )
    asyncio.run(handlers.post(runtime, cast(kopf.Body, ORG_BODY), events))
    (in_default, default_event), (in_org, org_event), (on_lic, _) = posted(review)
    assert in_default is ORG_BODY  # kept in default, as kubectl describe org looks for it
    assert in_org == {
        "apiVersion": "orgkeeper.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": "acme", "uid": "uid-acme", "namespace": "org-acme"},
    }
    assert org_event == default_event
    assert default_event.instance == "orgkeeper-eu-7f9c" and default_event.name is None
    assert on_lic is on_license


MEMBERS = (Member("owner", OWNER, ("organization-admin",)), Member("admin", ADMIN, ()))


@pytest.mark.parametrize(
    ("spec_owner", "previous", "members", "reason"),
    [
        (ADMIN, OWNER, (*MEMBERS[:1], Member("admin", ADMIN, ("organization-admin",))), None),
        (DEV, OWNER, MEMBERS, "TransferRejected"),
        (OWNER, OWNER, MEMBERS[1:], "OwnerLeft"),
    ],
)
def test_owner_events_name_no_email(
    spec_owner: str, previous: str, members: tuple[Member, ...], reason: str | None
) -> None:
    decision = decide_owner(spec_owner, previous, members)
    (event,) = owner_events(decision, OrganizationStatus())
    assert event.reason == (reason or "OwnershipTransferred")
    assert "@" not in event.message, event.message
    assert "@" in decision.message  # the OwnerValid condition, read by the Owner and support


def test_the_owners_new_membership_is_told_without_the_email() -> None:
    created = OwnerMembership(Member("owner-x", OWNER, ("organization-admin",)), {}).created
    assert created.reason == "OwnerMembershipCreated"
    assert "@" not in created.message


def test_status_shows_the_last_events_oldest_first_or_says_why_not() -> None:
    def event(reason: str, at: str) -> dict[str, Any]:
        return {
            "metadata": {"name": f"acme.{reason}", "creationTimestamp": at},
            "involvedObject": {"kind": "Organization", "name": "acme"},
            "type": "Normal",
            "reason": reason,
            "message": f"{reason} told",
            "lastTimestamp": at,
        }

    found = [event(f"R{i:02}", f"2026-12-07T10:{i:02}:00Z") for i in range(12, 0, -1)]
    rows = views.event_rows(found)
    assert [row["reason"] for row in rows] == [f"R{i:02}" for i in range(3, 13)]
    assert rows[0]["object"] == "organization/acme"
    summary = {"name": "acme", "recentEvents": rows}
    screen = views.status_screen({**status_summary(), **summary}).splitlines()
    at = screen.index("Recent events (kubectl get events -n org-acme):")
    assert screen[at + 1].split() == ["TIME", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    last = ["2026-12-07T10:12:00Z", "Normal", "R12", "organization/acme", "R12", "told"]
    assert screen[-1].split() == last
    hidden = views.status_screen({**status_summary(), "name": "acme", "recentEvents": None})
    assert hidden.splitlines()[-1] == (
        "Recent events: not shown: you may not list Events in org-acme (its Owner and the "
        "organization-admin team may)"
    )


def status_summary() -> dict[str, Any]:
    org = {"metadata": {"name": "acme"}, "spec": {"displayName": "Acme", "plan": "Free"}}
    return views.status_summary(org, [], datetime(2026, 12, 7, tzinfo=UTC))
