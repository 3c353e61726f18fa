"""License: a signed product license of an Organization (namespaced, in org-<name>)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from ...names import LICENSE_DATA_KEY, LICENSES
from .common import (
    ApiModel,
    Conditions,
    Kind,
    PrinterColumn,
    Product,
    age_column,
    immutable,
    ready_column,
)

# Namespaces recorded as holding a copy of one license (status.propagatedTo.namespaces).
MAX_COPY_NAMESPACES = 1000

LicenseSource = Literal["Provisioned", "SecretRef"]


# What the API server accepts as a Secret's name and as a key of its data: a name or key no
# Secret can have is refused here, not left for the operator to fail on.
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Keys: [-._a-zA-Z0-9]+ but neither "." nor "..", nor starting with "..".
SECRET_KEY_PATTERN = r"^(?:[-_a-zA-Z0-9]|\.[-_a-zA-Z0-9])[-._a-zA-Z0-9]*$"


class SecretKeyRef(ApiModel):
    """A key of a Secret in the License's namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=SECRET_NAME_PATTERN,
        description="Name of the Secret holding the license (a DNS subdomain, as any Secret).",
    )
    key: str = Field(
        default=LICENSE_DATA_KEY,
        max_length=253,
        pattern=SECRET_KEY_PATTERN,
        description="Key within the Secret (letters, digits, '-', '_' and '.'; not '.' or '..').",
    )


class LicenseSpec(ApiModel):
    """Which product the license is for and where its payload comes from."""

    # CEL on the whole spec, since the rule spans two fields.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.source != 'SecretRef' || has(self.secretRef)",
                    "message": "spec.secretRef is required when source is SecretRef; name the "
                    "Secret and key that hold the signed license",
                }
            ]
        }
    )

    product: Product = Field(
        description="gateway-enterprise, ingress-controller or mesh; can't be changed.",
        json_schema_extra=immutable("product", "create a License for the other product"),
    )
    source: LicenseSource = Field(
        description="Provisioned (issued and rotated by orgkeeper) or SecretRef (a contract "
        "license you keep in a Secret)."
    )
    secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="The Secret with the signed payload; required when source is SecretRef.",
    )


class PropagatedTo(ApiModel):
    """Where the license has been delivered."""

    count: int = Field(default=0, ge=0, description="Data-plane workloads holding the license.")
    refs: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Up to 16 of them, as namespace/name.",
    )
    namespaces: list[str] = Field(
        default_factory=list,
        max_length=MAX_COPY_NAMESPACES,
        description="Namespaces holding a copy of this license (Secret "
        "orgkeeper-license-<product>): orgkeeper removes a copy from there once no data plane "
        "of the organization there needs it, even after a restart.",
    )


class LicenseStatus(ApiModel):
    """Validity and delivery of the license; never its payload."""

    conditions: Conditions = Field(default_factory=list)
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation last reconciled."
    )
    issued_at: datetime | None = Field(default=None, description="When the license was issued.")
    expires_at: datetime | None = Field(default=None, description="When the license expires.")
    fingerprint: str | None = Field(
        default=None, max_length=71, description="sha256 of the payload, never the payload."
    )
    propagated_to: PropagatedTo | None = Field(default=None, description="Delivery to workloads.")
    active: bool | None = Field(
        default=None,
        description="Whether this is the license in force for its product (the newest valid one).",
    )


LICENSE = Kind(
    kind="License",
    plural=LICENSES,
    short_names=("lic",),
    scope="Namespaced",
    spec=LicenseSpec,
    status=LicenseStatus,
    description="A signed license for one product, delivered to the organization's data planes.",
    printer_columns=(
        PrinterColumn("Product", ".spec.product"),
        PrinterColumn("Source", ".spec.source"),
        PrinterColumn("Active", ".status.active", type="boolean"),
        PrinterColumn("Valid", '.status.conditions[?(@.type=="Valid")].status'),
        ready_column(),
        PrinterColumn("Expires", ".status.expiresAt"),
        age_column(),
        PrinterColumn("Propagated To", ".status.propagatedTo.count", type="integer", priority=1),
        PrinterColumn("Fingerprint", ".status.fingerprint", priority=1),
    ),
)
