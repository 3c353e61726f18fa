"""The bodies of what orgkeeper writes: pure functions from what the domain decided to the
objects, patches and labels the apply verbs (kube.py and its siblings) send. No client, no I/O
(`make lint` checks it imports neither)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import names
from .api.v1alpha1 import API_VERSION
from .domain.guardrails import QUOTA_NAME, Guardrails
from .domain.membership import Binding

RBAC_GROUP = "rbac.authorization.k8s.io"
EVENT_CONTROLLER = names.EVENT_CONTROLLER  # reportingController of every Event posted
# reportingInstance of Events told to outsiders (NamespaceNotOwned): any replica of any region
# posts the same one, so it says nothing of which operator serves (or whether one serves) an org.
SHARED_INSTANCE = "orgkeeper"


@dataclass(frozen=True)
class OwnerRef:
    """An object that owns what orgkeeper creates for it (garbage collection cleans up)."""

    api_version: str
    kind: str
    name: str
    uid: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def owner_of(kind: str, body: Mapping[str, Any]) -> OwnerRef:
    meta = body["metadata"]
    return OwnerRef(API_VERSION, kind, meta["name"], meta["uid"])


@dataclass(frozen=True)
class PostedEvent:
    type: str  # Normal or Warning
    reason: str
    message: str
    action: str  # what the operator did (Reconcile, Deactivate, Propagate, ...)
    instance: str  # reportingInstance: the operator's identity (or SHARED_INSTANCE)
    name: str | None = None  # a fixed name: posted once, a second post (409) is no error


def managed_labels(organization: str, **extra: str) -> dict[str, str]:
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_ORGANIZATION: organization,
        **names.shard_slot_label(organization),
        **extra,
    }


def user_subjects(users: Sequence[str]) -> list[dict[str, str]]:
    """RBAC subjects naming each user, in order."""
    return [{"apiGroup": RBAC_GROUP, "kind": "User", "name": user} for user in users]


def org_namespace(name: str, organization: str, owner: OwnerRef, guardrails: Guardrails) -> Any:
    """The org's namespace: owned by the Organization, labelled for it and its guardrails."""
    labels = managed_labels(organization, **{names.LABEL_ORGANIZATION_UID: owner.uid})
    return {
        "metadata": {
            "name": name,
            "labels": {**labels, **guardrails.labels()},
            "ownerReferences": [owner.to_wire()],
        }
    }


def membership_quota(organization: str, owner: OwnerRef, hard: Mapping[str, str]) -> Any:
    """The org namespace's ResourceQuota on Memberships (domain/guardrails.py)."""
    return {
        "metadata": {
            "name": QUOTA_NAME,
            "labels": managed_labels(organization),
            "ownerReferences": [owner.to_wire()],
        },
        "spec": {"hard": dict(hard)},
    }


def owner_rbac(
    organization: str,
    users: Sequence[str],
    owner: OwnerRef,
    rules: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The per-org ClusterRole with `rules` (the domain's `owner_rules`) and its binding to the
    Owner's `users` (membership.user_names)."""
    name = names.owner_role(organization)
    metadata = {
        "name": name,
        "labels": managed_labels(organization, **{names.LABEL_ORGANIZATION_UID: owner.uid}),
        "ownerReferences": [owner.to_wire()],
    }
    role = {"metadata": metadata, "rules": [dict(rule) for rule in rules]}
    binding = {
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
        "subjects": user_subjects(users),
    }
    return role, binding


def owned_repair(found: Mapping[str, Any], wanted: Mapping[str, Any], field: str) -> dict[str, Any]:
    """What to patch back into a cluster-scoped object `found` (as JSON) to make it `wanted`:
    `field` if it differs, and its labels and owner if it was another Organization's (one of
    the same name, deleted, that garbage collection hasn't taken yet). Empty if nothing."""
    wanted_owners = wanted["metadata"]["ownerReferences"]
    meta = found["metadata"]
    owners = [ref.get("uid") for ref in meta.get("ownerReferences") or []]
    uid = (meta.get("labels") or {}).get(names.LABEL_ORGANIZATION_UID)
    repair: dict[str, Any] = {}
    if owners != [ref["uid"] for ref in wanted_owners] or uid != wanted_owners[0]["uid"]:
        repair["metadata"] = {
            "labels": wanted["metadata"]["labels"],
            "ownerReferences": wanted_owners,
        }
    if found.get(field) != wanted[field]:
        repair[field] = wanted[field]
    return repair


def member_binding(binding: Binding, owner: OwnerRef) -> dict[str, Any]:
    """A member's RoleBinding (domain/membership.py decides it), owned by the Membership."""
    return {
        "metadata": {
            "name": binding.name,
            "labels": binding.labels,
            "ownerReferences": [owner.to_wire()],
        },
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": binding.cluster_role},
        "subjects": user_subjects(binding.users),
    }


def member_binding_repair(body: Mapping[str, Any]) -> dict[str, Any]:
    """What may change on a member binding: subjects (ssoOnly turned), labels and owner (an
    unlabelled binding would leave the informer, and outlive its Membership); roleRef can't
    change, and the name encodes the team."""
    return {
        "metadata": {
            "labels": body["metadata"]["labels"],
            "ownerReferences": body["metadata"]["ownerReferences"],
        },
        "subjects": body["subjects"],
    }


def finalizers_swap(found: Sequence[str], kept: Sequence[str]) -> list[dict[str, Any]]:
    """A JSON patch from the finalizers `found` to `kept`, refused (422) if they changed since."""
    return [
        {"op": "test", "path": "/metadata/finalizers", "value": list(found)},
        {"op": "replace", "path": "/metadata/finalizers", "value": list(kept)},
    ]


def status_patch(status: Mapping[str, Any], resource_version: str | None) -> dict[str, Any]:
    """A merge patch of .status; with `resource_version`, compare-and-swap (409 if changed)."""
    body: dict[str, Any] = {"status": dict(status)}
    if resource_version is not None:
        body["metadata"] = {"resourceVersion": resource_version}
    return body


def parked_workload(kind: str) -> dict[str, Any]:
    """A workload stopped without deleting it: no replicas (a DaemonSet: no node matches), and
    the annotation orgkeeper.dev/decommissioned."""
    marker = {names.ANNOTATION_DECOMMISSIONED: "true"}
    spec: dict[str, Any] = (
        {"template": {"spec": {"nodeSelector": marker}}} if kind == "DaemonSet" else {"replicas": 0}
    )
    return {"metadata": {"annotations": marker}, "spec": spec}


def secret(
    name: str,
    data: Mapping[str, bytes],
    labels: Mapping[str, str],
    owners: Sequence[Mapping[str, Any]],
    resource_version: str | None,
) -> dict[str, Any]:
    """An Opaque Secret; with `resource_version`, a patch of only that version."""
    metadata: dict[str, Any] = {
        "name": name,
        "labels": dict(labels),
        "ownerReferences": list(owners),
    }
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "metadata": metadata,
        "type": "Opaque",
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def config_map(name: str, data: Mapping[str, str], *, immutable: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY}},
        "data": dict(data),
    }
    if immutable:
        body["immutable"] = True
    return body


def event(involved: Mapping[str, Any], posted: PostedEvent, now: datetime) -> dict[str, Any]:
    """A core/v1 Event on `involved`, where `kubectl describe` looks for it: in the object's
    namespace, or for a cluster-scoped object in `default` with no involvedObject namespace."""
    meta = involved.get("metadata") or {}
    reference = {
        "apiVersion": involved.get("apiVersion"),
        "kind": involved.get("kind"),
        "name": meta.get("name"),
        "namespace": meta.get("namespace") or None,
        "uid": meta.get("uid"),
    }
    named = {"name": posted.name} if posted.name else {"generateName": f"{meta.get('name')}."}
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": named,
        "involvedObject": {key: value for key, value in reference.items() if value is not None},
        "type": posted.type,
        "reason": posted.reason,
        "message": posted.message[:1024],
        "action": posted.action,
        "source": {"component": EVENT_CONTROLLER},
        "reportingComponent": EVENT_CONTROLLER,
        "reportingInstance": posted.instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def ca_bundle_operations(configuration: Mapping[str, Any], bundle: str) -> list[dict[str, Any]]:
    """A JSON patch putting `bundle` into each webhook of `configuration` (as JSON) that lacks
    it; each first tests the webhook's name, so one changed meanwhile is refused (422) rather
    than patched at the wrong index. Empty if every webhook has it."""
    operations: list[dict[str, Any]] = []
    for index, webhook in enumerate(configuration.get("webhooks") or []):
        if (webhook.get("clientConfig") or {}).get("caBundle") == bundle:
            continue
        operations += [
            {"op": "test", "path": f"/webhooks/{index}/name", "value": webhook["name"]},
            {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": bundle},
        ]
    return operations


def people_api_service(namespace: str, service: str, port: int, bundle: str) -> dict[str, Any]:
    """The people API's APIService, reaching it through `namespace`/`service` at `port`."""
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {
            "name": names.PEOPLE_API_SERVICE,
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY},
        },
        "spec": {
            "group": names.PEOPLE_GROUP,
            "version": names.PEOPLE_VERSION,
            "groupPriorityMinimum": 1000,
            "versionPriority": 15,
            "service": {"namespace": namespace, "name": service, "port": port},
            "caBundle": bundle,
        },
    }
