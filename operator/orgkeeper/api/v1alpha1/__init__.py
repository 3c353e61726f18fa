"""orgkeeper.dev/v1alpha1."""

from .common import API_VERSION, GROUP, PRODUCTS, TEAMS, VERSION, Condition, Kind
from .license import LICENSE, LicenseSpec, LicenseStatus
from .membership import MEMBERSHIP, MembershipSpec, MembershipStatus
from .organization import ORGANIZATION, OrganizationSpec, OrganizationStatus

KINDS: tuple[Kind, ...] = (ORGANIZATION, MEMBERSHIP, LICENSE)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "LICENSE",
    "MEMBERSHIP",
    "ORGANIZATION",
    "PRODUCTS",
    "TEAMS",
    "VERSION",
    "Condition",
    "Kind",
    "LicenseSpec",
    "LicenseStatus",
    "MembershipSpec",
    "MembershipStatus",
    "OrganizationSpec",
    "OrganizationStatus",
]
