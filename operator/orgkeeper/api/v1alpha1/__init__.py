"""orgkeeper.dev/v1alpha1."""

# The group and version live in names, where the CLI's light client reads them too.
from ...names import API_VERSION, GROUP, VERSION
from .common import PRODUCTS, TEAMS, Condition, Kind
from .license import LICENSE, LicenseSpec, LicenseStatus
from .membership import MEMBERSHIP, MembershipSpec, MembershipStatus
from .organization import ORGANIZATION, PLANS, REGIONS, OrganizationSpec, OrganizationStatus

KINDS: tuple[Kind, ...] = (ORGANIZATION, MEMBERSHIP, LICENSE)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "LICENSE",
    "MEMBERSHIP",
    "ORGANIZATION",
    "PLANS",
    "PRODUCTS",
    "REGIONS",
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
