"""L5 (security review 2026-12-07): a Membership an org admin made ahead under the name
owner-<hash of the new Owner's e-mail>, for another e-mail, doesn't stand in for the Owner's."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import MagicMock

from orgkeeper import names
from orgkeeper.controllers.membership import create_owner_membership
from orgkeeper.controllers.runtime import Runtime
from orgkeeper.controllers.writes import Failure
from orgkeeper.domain.membership import Member
from orgkeeper.domain.organization.ownership import OwnerMembership
from orgkeeper.kube import threaded
from orgkeeper.settings import Settings
from support.inline import Inline

NEW = "new@acme.example"
NAME = names.owner_membership(NEW)


class FakeKube:
    """The API server's answers to creates and reads of Memberships in org-acme."""

    executor = Inline()

    def __init__(self, *present: dict[str, Any]) -> None:
        self.objects = {body["metadata"]["name"]: body for body in present}
        self.created: list[dict[str, Any]] = []

    @threaded
    def create_custom(self, plural: str, namespace: str, body: dict[str, Any]) -> Any:
        metadata = dict(body["metadata"])
        if "generateName" in metadata:
            metadata["name"] = metadata.pop("generateName") + "x7k2p"
        if metadata["name"] in self.objects:
            return None
        written = {**body, "metadata": {**metadata, "namespace": namespace, "uid": "u"}}
        self.objects[metadata["name"]] = written
        self.created.append(written)
        return written

    @threaded
    def read_membership(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(name)


def membership(name: str, email: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "org-acme", "uid": name},
        "spec": {"email": email, "teams": ["portal-admin"]},
    }


def create(kube: FakeKube) -> tuple[bool, list[Failure], Runtime]:
    runtime = Runtime(kube=MagicMock(), settings=Settings())
    runtime.kube = kube  # type: ignore[assignment]
    owner = OwnerMembership(Member(NAME, NEW, ("organization-admin",)), {"l": "v"})
    failures: list[Failure] = []
    done = asyncio.run(create_owner_membership(runtime, "org-acme", owner, failures))
    return done, failures, runtime


def emails(runtime: Runtime) -> dict[str, str]:
    return {m.name: m.email for m in runtime.caches.members.in_namespace("org-acme")}


def test_the_owner_s_membership_is_made_under_its_name() -> None:
    kube = FakeKube()
    done, failures, runtime = create(kube)
    assert (done, failures) == (True, [])
    assert [m["metadata"]["name"] for m in kube.created] == [NAME]
    assert emails(runtime) == {NAME: NEW}, "in the cache at once: no second one is made"


def test_a_name_taken_by_another_e_mail_gets_the_owner_one_beside_it() -> None:
    kube = FakeKube(membership(NAME, "alice2@acme.example"))
    done, failures, runtime = create(kube)
    assert (done, failures) == (True, [])
    (made,) = kube.created
    assert made["metadata"]["name"] == f"{NAME}-x7k2p"
    assert made["spec"] == {"email": NEW, "teams": ["organization-admin"]}
    assert made["metadata"]["labels"] == {"l": "v"}
    assert emails(runtime)[f"{NAME}-x7k2p"] == NEW


def test_the_owner_s_own_membership_made_earlier_is_taken_as_it_is() -> None:
    kube = FakeKube(membership(NAME, NEW.upper()))
    done, failures, runtime = create(kube)
    assert (done, failures, kube.created) == (True, [], [])
    assert emails(runtime) == {NAME: NEW.upper()}
