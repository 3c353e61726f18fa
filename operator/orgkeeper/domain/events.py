"""The Kubernetes Events a reconcile tells: what the policy decided, and the writes' news."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the reconciled object, or on `involved` when given."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    involved: Mapping[str, Any] | None = None
    # An Event about the Organization (involved None) is kept in `default`, where only those who
    # read Events cluster-wide see it; `also_in` records it in the org's namespace too, where
    # the Owner and the org's admins read it (kubectl get events -n org-<name>).
    also_in: str | None = None

    @property
    def action(self) -> str:
        """What the operator was doing (the Event's `action`)."""
        return ACTIONS.get(self.reason, "Reconcile")


ACTIONS = {
    "OwnerMembershipCreated": "CreateOwnerMembership",
    "OwnershipTransferred": "TransferOwnership",
    "TransferRejected": "TransferOwnership",
    "OwnerLeft": "CheckOwner",
    "Deactivating": "Deactivate",
    "Deactivated": "Deactivate",
    "Reactivated": "Reactivate",
    "LicensePropagated": "PropagateLicense",
    "LicenseRotated": "IssueLicense",
    "LicenseReissued": "IssueLicense",
    "InvalidSpec": "ValidateSpec",
    "NamespaceNotOwned": "IgnoreWorkload",
    "ControlPlaneParked": "DecommissionControlPlane",
    "SecretConflict": "PropagateLicense",
    "ApplyFailed": "Apply",
}


def recorded_in(events: Sequence[Event], namespace: str) -> list[Event]:
    """The Events, those about the Organization itself also recorded in `namespace` (the
    org's own, once it is the org's)."""
    return [replace(e, also_in=namespace) if e.involved is None else e for e in events]
