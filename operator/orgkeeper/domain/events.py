"""The Kubernetes Events a reconcile tells: what the policy decided, and the writes' news."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the reconciled object, or on `involved` when given."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    involved: Mapping[str, Any] | None = None

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
