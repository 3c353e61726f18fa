"""Organization: one customer account of the platform (cluster-scoped)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import Field

from ...names import (
    ORGANIZATION_NAME_MAX,
    ORGANIZATION_NAME_PATTERN,
    ORGANIZATIONS,
    REGION_FIELD,
    org_namespace,
)
from .common import (
    ApiModel,
    Conditions,
    Email,
    Kind,
    PrinterColumn,
    age_column,
    email_validations,
    immutable,
    ready_column,
)

Plan = Literal["Free", "Plus", "Enterprise"]
Region = Literal["us", "eu", "au", "me", "in", "sg"]
PLANS: tuple[Plan, ...] = get_args(Plan)
REGIONS: tuple[Region, ...] = get_args(Region)
OrgState = Literal["Active", "Deactivated"]
Phase = Literal["Provisioning", "Active", "Deactivating", "Deactivated"]
BillingState = Literal["Trial", "Active", "Stopped"]
DeactivationReason = Literal["Requested", "Inactive"]


class OrganizationSpec(ApiModel):
    """The desired state of an Organization, written by the platform team."""

    display_name: str = Field(
        min_length=1, max_length=100, description="Name shown to people, 1 to 100 characters."
    )
    plan: Plan = Field(description="Pricing plan: Free, Plus or Enterprise.")
    region: Region = Field(
        description="Geographic region (geo) of the organization; can't be changed.",
        json_schema_extra=immutable(
            "region", "create a new Organization in the other region instead"
        ),
    )
    owner: Email = Field(
        description=(
            "E-mail of the single Owner. Changing it transfers ownership; the new Owner must "
            "already be a member of the organization-admin team."
        ),
        json_schema_extra=email_validations(),
    )
    sso_only: bool = Field(
        default=False,
        description=(
            "Bind members under the identity provider's user name (prefix + e-mail), so only "
            "sessions that came through single sign-on hold the organization's roles."
        ),
    )
    state: OrgState = Field(
        default="Active",
        description="Active, or Deactivated to request deactivation; back to Active reactivates.",
    )
    reactivation_requested_at: datetime | None = Field(
        default=None,
        description=(
            "RFC 3339 time; a value later than status.deactivation.at reactivates an "
            "organization that was deactivated for inactivity."
        ),
    )
    unlock_owner_email: bool = Field(
        default=False,
        description="Release the lock on the owner e-mail of this deactivated organization.",
    )


class Subscription(ApiModel):
    """A billed product subscription."""

    name: str = Field(max_length=100, description="Subscription name, such as plus-mesh.")
    started_at: datetime = Field(description="When billing for it started.")


class Billing(ApiModel):
    """Billing of the organization."""

    state: BillingState = Field(description="Trial, Active or Stopped.")
    cycle_start: datetime | None = Field(
        default=None, description="Start of the current billing cycle."
    )
    subscriptions: list[Subscription] = Field(
        default_factory=list, max_length=16, description="Subscriptions being billed."
    )


class Trial(ApiModel):
    """The Plus plan's free trial."""

    ends_at: datetime = Field(description="When the trial credits expire.")
    credits: int = Field(ge=0, description="Trial credits granted.")


class ApiRequests(ApiModel):
    """API request counters per billing cycle."""

    current_cycle: int = Field(default=0, ge=0, description="Requests in the current cycle.")
    previous_cycle: int = Field(default=0, ge=0, description="Requests in the previous cycle.")


class Activity(ApiModel):
    """What counts as activity for the inactivity rule."""

    last_login_time: datetime | None = Field(
        default=None, description="The latest login of any member."
    )
    api_requests: ApiRequests = Field(
        default_factory=ApiRequests, description="API request counters."
    )


class Deactivation(ApiModel):
    """When and why the organization was deactivated."""

    at: datetime = Field(description="When deactivation started.")
    reason: DeactivationReason = Field(description="Requested or Inactive.")


class OrganizationStatus(ApiModel):
    """The observed state of an Organization, written by orgkeeper."""

    phase: Phase | None = Field(
        default=None, description="Provisioning, Active, Deactivating or Deactivated."
    )
    conditions: Conditions = Field(default_factory=list)
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation last reconciled."
    )
    namespace: str | None = Field(
        default=None, max_length=63, description="The organization's namespace."
    )
    owner: str | None = Field(
        default=None, max_length=254, description="The effective Owner's e-mail."
    )
    billing: Billing | None = Field(default=None, description="Billing state.")
    trial: Trial | None = Field(default=None, description="Plus trial, when there is one.")
    activity: Activity | None = Field(default=None, description="Recorded activity.")
    deactivation: Deactivation | None = Field(
        default=None, description="Set while the organization is deactivated."
    )
    owner_email_locked: bool | None = Field(
        default=None, description="Whether the owner e-mail is locked against new organizations."
    )
    members: int | None = Field(default=None, ge=0, description="Active members.")
    admins: int | None = Field(default=None, ge=0, description="Members of organization-admin.")
    control_planes: int | None = Field(
        default=None, ge=0, description="Control-plane workloads of the organization."
    )
    data_planes: int | None = Field(
        default=None, ge=0, description="Data-plane workloads of the organization."
    )


# The name becomes the namespace org-<name>: a DNS label, so no dots and at most 59 characters.
NAME_RULE = {
    "rule": (
        f"self.metadata.name.matches('{ORGANIZATION_NAME_PATTERN}')"
        f" && size(self.metadata.name) <= {ORGANIZATION_NAME_MAX}"
    ),
    "messageExpression": (
        "'metadata.name: ' + self.metadata.name + ' can not be an Organization name: its"
        f" namespace {org_namespace('')}' + self.metadata.name + ' must be a DNS label, so the"
        f" name takes at most {ORGANIZATION_NAME_MAX} lower-case letters, digits and dashes"
        " (no dots), starting and ending with a letter or digit; choose another name'"
    ),
    "reason": "FieldValueInvalid",
}

ORGANIZATION = Kind(
    kind="Organization",
    plural=ORGANIZATIONS,
    short_names=("org",),
    scope="Cluster",
    spec=OrganizationSpec,
    status=OrganizationStatus,
    description=(
        "An account of the API platform: its plan, region, single Owner and lifecycle. "
        "orgkeeper provisions its namespace, memberships, RBAC and licenses."
    ),
    printer_columns=(
        PrinterColumn("Display Name", ".spec.displayName"),
        PrinterColumn("Plan", ".spec.plan"),
        PrinterColumn("Region", ".spec.region"),
        PrinterColumn("Owner", ".status.owner"),
        PrinterColumn("Phase", ".status.phase"),
        ready_column(),
        PrinterColumn("Members", ".status.members", type="integer"),
        age_column(),
        # -o wide only (priority 1).
        PrinterColumn("Admins", ".status.admins", type="integer", priority=1),
        PrinterColumn("Control Planes", ".status.controlPlanes", type="integer", priority=1),
        PrinterColumn("Data Planes", ".status.dataPlanes", type="integer", priority=1),
        PrinterColumn("Billing", ".status.billing.state", priority=1),
        PrinterColumn("Trial Ends", ".status.trial.endsAt", priority=1),
        PrinterColumn("Namespace", ".status.namespace", priority=1),
    ),
    validations=(NAME_RULE,),
    # A regional operator's watch selects its region's Organizations (names.region_selector).
    selectable_fields=(f".{REGION_FIELD}",),
)
