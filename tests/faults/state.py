"""What a user can see of one organization, as a plain value that two runs can be compared by.

`snapshot` reads the Organization, its Memberships, every RoleBinding in its namespace, the
Owner's cluster RBAC, its Licenses and the Secrets behind them, and the data planes it serves.
Times and signatures differ from run to run, so they are left out; what they must agree with is
checked instead (each license Secret verifies and matches its License's fingerprint, each
delivered copy is the active license). `normalized` replaces the org's name and Owner so two
orgs of the same scenario compare equal.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from kubernetes.client.rest import ApiException

from orgkeeper import licensing, names
from support.kube import Kube, timed_wait_for, wait_for
from support.licenses import public_key

Snapshot = dict[str, Any]


@dataclass(frozen=True)
class Plane:
    """A data-plane or control-plane workload of the org, as (kind, namespace, name)."""

    kind: str
    namespace: str
    name: str
    product: str = "mesh"


def _gone(call: Callable[[], Any]) -> Any | None:
    try:
        return call()
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _conditions(obj: Mapping[str, Any]) -> dict[str, list[Any]]:
    generation = obj["metadata"].get("generation")
    return {
        c["type"]: [c["status"], c["reason"], c.get("observedGeneration") == generation]
        for c in (obj.get("status") or {}).get("conditions") or []
    }


def _document(secret: Any, key: str = "license") -> bytes | None:
    encoded = (secret.data or {}).get(key) if secret is not None else None
    return base64.b64decode(encoded) if encoded else None


def _fingerprint(document: bytes | None, key: Any) -> str | None:
    if document is None:
        return None
    try:
        return licensing.verify(document, key).fingerprint
    except Exception as error:  # a bad copy shows in the snapshot, not as a crash of the check
        return f"unverifiable: {type(error).__name__}"


def snapshot(admin: Kube, org: str, planes: Iterable[Plane] = ()) -> Snapshot:
    namespace = names.org_namespace(org)
    body = _gone(lambda: admin.get("organizations", org))
    if body is None:
        return {"organization": None}
    meta, status = body["metadata"], body.get("status") or {}
    billing = status.get("billing") or {}
    organization = {
        "phase": status.get("phase"),
        "owner": status.get("owner"),
        "specOwner": body["spec"].get("owner"),
        "namespace": status.get("namespace"),
        "observedGeneration": status.get("observedGeneration") == meta.get("generation"),
        "conditions": _conditions(body),
        "billing": billing.get("state"),
        "subscriptions": sorted(s["name"] for s in billing.get("subscriptions") or []),
        "deactivation": (status.get("deactivation") or {}).get("reason"),
        "ownerEmailLocked": status.get("ownerEmailLocked"),
        "counts": [status.get(k) for k in ("members", "admins", "controlPlanes", "dataPlanes")],
        "finalizers": sorted(meta.get("finalizers") or []),
    }
    memberships = {
        m["metadata"]["name"]: {
            "email": m["spec"]["email"],
            "teams": sorted(m["spec"].get("teams") or []),
            "state": (m.get("status") or {}).get("state"),
            "effectiveTeams": sorted((m.get("status") or {}).get("effectiveTeams") or []),
            "ready": _conditions(m).get("Ready"),
            "labels": {
                k: v for k, v in (m["metadata"].get("labels") or {}).items() if "orgkeeper" in k
            },
        }
        for m in admin.list("memberships", namespace)
    }
    bindings = {
        b.metadata.name: {
            "role": b.role_ref.name,
            "users": sorted(s.name for s in b.subjects or []),
            "labels": dict(b.metadata.labels or {}),
            "owners": sorted(f"{r.kind}/{r.name}" for r in b.metadata.owner_references or []),
        }
        for b in admin.rbac.list_namespaced_role_binding(namespace).items
    }
    owner_binding = _gone(lambda: admin.rbac.read_cluster_role_binding(names.owner_role(org)))
    owner_role = _gone(lambda: admin.rbac.read_cluster_role(names.owner_role(org)))
    key = public_key(admin)
    secrets = {s.metadata.name: s for s in admin.core.list_namespaced_secret(namespace).items}
    licenses: dict[str, Any] = {}
    active: dict[str, bytes | None] = {}
    for lic in admin.list("licenses", namespace):
        lic_status = lic.get("status") or {}
        ref = lic["spec"].get("secretRef") or {}
        document = _document(secrets.get(ref.get("name", "")), ref.get("key", "license"))
        fingerprint = _fingerprint(document, key)
        if lic_status.get("active"):
            active[lic["spec"]["product"]] = document
        licenses[lic["metadata"]["name"]] = {
            "product": lic["spec"]["product"],
            "source": lic["spec"]["source"],
            "conditions": _conditions(lic),
            "active": lic_status.get("active"),
            "secretMatchesStatus": fingerprint is not None
            and fingerprint == lic_status.get("fingerprint"),
            "propagatedTo": (lic_status.get("propagatedTo") or {}).get("count"),
        }
    workloads = {}
    for plane in planes:
        found = _gone(partial(_read_workload, admin, plane))
        copy = _gone(partial(_read_license_copy, admin, plane))
        annotations = (found.metadata.annotations or {}) if found is not None else {}
        expected = active.get(plane.product)
        workloads[f"{plane.kind}/{plane.namespace}/{plane.name}"] = {
            "exists": found is not None,
            "frozen": annotations.get(names.ANNOTATION_FROZEN),
            "fingerprintAnnotated": annotations.get(names.ANNOTATION_LICENSE_FINGERPRINT)
            == _fingerprint(expected, key),
            "copy": None
            if copy is None
            else ("active" if _document(copy) == expected else "not the active license"),
        }
    return {
        "organization": organization,
        "memberships": memberships,
        "roleBindings": bindings,
        # The verbs it grants on the org: every one while active, `get` alone while deactivated.
        "ownerRole": sorted({verb for rule in owner_role.rules or [] for verb in rule.verbs})
        if owner_role is not None
        else None,
        "ownerBinding": sorted(s.name for s in owner_binding.subjects or [])
        if owner_binding is not None
        else None,
        "licenses": licenses,
        "secrets": sorted(secrets),
        "workloads": workloads,
    }


def _read_workload(admin: Kube, plane: Plane) -> Any:
    read = {
        "Deployment": admin.apps.read_namespaced_deployment,
        "StatefulSet": admin.apps.read_namespaced_stateful_set,
        "DaemonSet": admin.apps.read_namespaced_daemon_set,
    }[plane.kind]
    return read(plane.name, plane.namespace)


def _read_license_copy(admin: Kube, plane: Plane) -> Any:
    """The Secret orgkeeper copies the active license of the plane's product into."""
    return admin.core.read_namespaced_secret(
        names.propagated_license_secret(plane.product), plane.namespace
    )


def normalized(value: Snapshot, replacements: Mapping[str, str]) -> Snapshot:
    """The snapshot with names that differ between orgs of one scenario replaced."""
    text = json.dumps(value, sort_keys=True)
    for old in sorted(replacements, key=len, reverse=True):
        text = text.replace(old, replacements[old])
    result: Snapshot = json.loads(text)
    return result


def identity_of(org: str, owner: str, edge: str | None = None) -> dict[str, str]:
    # The org's shard slot (a hash of its name), matched with its label key, so a wrong slot
    # still differs.
    (slot_label,) = names.shard_slot_label(org).items()
    found = {
        owner: "<owner>",
        names.email_hash(owner): "<owner-hash>",
        org: "<org>",
        '"{}": "{}"'.format(*slot_label): f'"{names.LABEL_SHARD_SLOT}": "<slot>"',
    }
    if edge:
        found[edge] = "<edge>"
    return found


def differences(expected: Any, found: Any, path: str = "", limit: int = 12) -> list[str]:
    """Where two snapshots differ, as `path: expected != found` lines (the first `limit`)."""
    out: list[str] = []
    if isinstance(expected, dict) and isinstance(found, dict):
        for key in sorted(set(expected) | set(found), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in found:
                out.append(f"{where}: missing (expected {_short(expected[key])})")
            elif key not in expected:
                out.append(f"{where}: left behind ({_short(found[key])})")
            else:
                out += differences(expected[key], found[key], where, limit)
            if len(out) >= limit:
                break
    elif expected != found:
        out.append(f"{path}: expected {_short(expected)}, found {_short(found)}")
    return out[:limit]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) < 160 else text[:157] + "..."


def wait_equal(
    what: str,
    read: Callable[[], Snapshot],
    expected: Snapshot,
    *,
    timeout: float = 60.0,
    interval: float = 0.5,
) -> float:
    """Polls until `read()` equals `expected`; the seconds it took. Fails with the differences."""
    found: Snapshot = {}

    def matches() -> bool:
        nonlocal found
        try:
            found = read()
        except ApiException as error:
            # Kept as what was found, so a timeout on an error shows it among the differences.
            found = {"error": f"{error.status} {error.reason}"}
        return found == expected

    return timed_wait_for(
        f"{what} to be as expected",
        matches,
        timeout=timeout,
        interval=interval,
        details=lambda: "still differs in\n  " + "\n  ".join(differences(expected, found)),
    )


def wait_gone(admin: Kube, org: str, timeout: float = 60.0) -> float:
    """Deletes nothing: waits for a deleted Organization to disappear (no stuck finalizer)."""
    finalizers: Any = None

    def gone() -> bool:
        nonlocal finalizers
        body = _gone(lambda: admin.get("organizations", org))
        if body is None:
            return True
        finalizers = body["metadata"].get("finalizers")
        return False

    return timed_wait_for(
        f"Organization {org} to disappear after deletion",
        gone,
        timeout=timeout,
        interval=0.25,
        details=lambda: f"finalizers {finalizers}",
    )


def delete_and_wait_gone(admin: Kube, org: str, timeout: float = 60.0) -> float:
    admin.delete("organizations", org)
    return wait_gone(admin, org, timeout)


def delete_namespaces(admin: Kube, namespaces: Iterable[str]) -> None:
    """Deletes the namespaces a scenario made itself (the org namespaces go with their orgs)."""
    for namespace in namespaces:
        _gone(partial(admin.core.delete_namespace, namespace))


def wait_namespaces_gone(admin: Kube, namespaces: Iterable[str], timeout: float = 180.0) -> None:
    pending = set(namespaces)

    def all_gone() -> bool:
        nonlocal pending
        pending = {
            ns for ns in pending if _gone(partial(admin.core.read_namespace, ns)) is not None
        }
        return not pending

    wait_for(
        "namespaces to disappear",
        all_gone,
        timeout=timeout,
        interval=0.5,
        details=lambda: f"still there: {sorted(pending)}",
    )
