"""What the informers hold per Membership stays small (issue 23: at most 1 KB per Membership
record, 100,000 of them in one process): slotted records, strings shared between a Membership
and its RoleBinding, the status as shared compact JSON. Measured with tracemalloc over records
made from fresh bodies (as the informer makes them from a page), so these bounds can fail."""

from __future__ import annotations

import dataclasses
import gc
import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from orgkeeper import names
from orgkeeper.controllers.records import BindingRecord, MemberRecord

COUNT = 20_000  # enough that growing the table of shared strings counts as its share


def membership(i: int) -> dict[str, Any]:
    namespace = f"org-o{i // 10}"
    return {
        "apiVersion": names.API_VERSION,
        "kind": "Membership",
        "metadata": {
            "name": f"member-{i}",
            "namespace": namespace,
            "uid": f"6f1c2a4e-1b2c-4d5e-8f90-{i:012d}",
            "generation": 1,
            "resourceVersion": str(100_000 + i),
            "labels": {
                names.LABEL_ORGANIZATION: f"o{i // 10}",
                names.LABEL_EMAIL_HASH: f"{i:040x}",
                "tenant.example/extra": "x" * 60,
            },
            "annotations": {"tenant.example/note": "y" * 500},
            "finalizers": ["orgkeeper.dev/membership"],
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"email": f"member-{i}@{namespace}.example", "teams": ["analytics-viewer"]},
        "status": {
            "state": "Active",
            "effectiveTeams": ["analytics-viewer"],
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Bound",
                    "message": "Every team's role is bound.",
                    # Reconciled ten a second: ten Memberships share one status.
                    "lastTransitionTime": f"2026-12-07T20:{i // 600 % 60:02d}:{i // 10 % 60:02d}Z",
                }
            ],
        },
    }


def binding(i: int) -> dict[str, Any]:
    body = membership(i)
    meta, email = body["metadata"], body["spec"]["email"]
    return {
        "metadata": {
            "name": f"{meta['name']}-analytics-viewer",
            "namespace": meta["namespace"],
            "labels": {
                names.LABEL_MANAGED_BY: names.MANAGED_BY,
                names.LABEL_ORGANIZATION: meta["labels"][names.LABEL_ORGANIZATION],
                names.LABEL_MEMBERSHIP: meta["name"],
                names.LABEL_EMAIL_HASH: meta["labels"][names.LABEL_EMAIL_HASH],
                names.LABEL_TEAM: "analytics-viewer",
            },
            "ownerReferences": [{"kind": "Membership", "name": meta["name"], "uid": meta["uid"]}],
        },
        "roleRef": {"name": "orgkeeper-analytics-viewer"},
        "subjects": [{"kind": "User", "name": email}],
    }


def held_bytes(make: Callable[[dict[str, Any], dict[str, Any]], Any]) -> float:
    """Bytes still allocated per record once the bodies they were made from are gone."""
    raw = [json.dumps([membership(i), binding(i)]) for i in range(COUNT)]
    gc.collect()
    tracemalloc.start()
    try:
        records = [make(*json.loads(text)) for text in raw]
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(records) == COUNT
    return held / COUNT


def test_a_membership_record_holds_under_1_kb() -> None:
    def member_only(member: dict[str, Any], _: dict[str, Any]) -> MemberRecord:
        return MemberRecord.from_body(member)

    per_record = held_bytes(member_only)
    assert per_record < 800, per_record  # 2,380 B when it kept a dict per label set and status


def test_a_membership_and_its_binding_together_hold_under_1_25_kb() -> None:
    """The binding's subject, labels and owner are the Membership's own strings."""

    def both(member: dict[str, Any], bound: dict[str, Any]) -> tuple[Any, ...]:
        return MemberRecord.from_body(member), BindingRecord.from_body(bound)

    per_pair = held_bytes(both)
    # 3,520 B before; each of the two keeps the shard slot label (16 B the pair) since shards
    assert per_pair < 1250, per_pair


def test_records_keep_what_the_reconcile_reads() -> None:
    member, bound = MemberRecord.from_body(membership(7)), BindingRecord.from_body(binding(7))
    assert member.status == membership(7)["status"] and member.has_status
    assert dict(member.labels) == {
        names.LABEL_ORGANIZATION: "o0",
        names.LABEL_EMAIL_HASH: f"{7:040x}",
    }
    assert member.teams == ("analytics-viewer",) and member.generation == 1
    assert bound.users == ("member-7@org-o0.example",) and bound.owners == (member.uid,)
    assert dict(bound.labels) == binding(7)["metadata"]["labels"]
    assert bound.role == "orgkeeper-analytics-viewer"
    # Shared, not copied: one string for the Membership and its binding.
    assert bound.users[0] is member.email and bound.owners[0] is member.uid
    assert MemberRecord.from_body(membership(7)) == member
    assert MemberRecord.from_body(membership(8)) != member


def test_a_record_without_status_or_labels() -> None:
    body = membership(1)
    del body["status"], body["metadata"]["labels"]
    record = MemberRecord.from_body(body)
    assert record.status == {} and not record.has_status and record.labels == {}
    assert record.last_login is None


def test_records_are_immutable_and_have_no_dict() -> None:
    member = MemberRecord.from_body(membership(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        member.name = "other"
    assert not hasattr(member, "__dict__")
    assert not hasattr(BindingRecord.from_body(binding(1)), "__dict__")
