"""Pieces shared by every kind of orgkeeper.dev/v1alpha1."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ...names import GROUP, VERSION

CATEGORY = "orgkeeper"

# Close to RFC 5322's dot-atom form; ECMA-262 and Rust regex engines both accept it.
EMAIL_PATTERN = (
    r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)+$"
)

EMAIL_RULE = {
    # A CEL rule rather than an OpenAPI pattern: a refusal then says what is wrong in words
    # instead of quoting the regular expression.
    "rule": f"self.matches(r'{EMAIL_PATTERN}')",
    "message": "must be an e-mail address such as owner@example.com (name@domain, no spaces)",
}


def _email(value: str) -> str:
    if not re.match(EMAIL_PATTERN, value):
        raise ValueError(EMAIL_RULE["message"])
    return value


Email = Annotated[
    str,
    Field(max_length=254, description="An e-mail address, such as owner@example.com."),
    AfterValidator(_email),
]


def email_validations(*rules: dict[str, str]) -> dict[str, Any]:
    """The CRD rules of an Email field: its format (EMAIL_RULE), then the field's own."""
    return {"x-kubernetes-validations": [EMAIL_RULE, *rules]}


Product = Literal["gateway-enterprise", "ingress-controller", "mesh"]
PRODUCTS: tuple[Product, ...] = get_args(Product)

Team = Literal[
    "organization-admin",
    "control-plane-admin",
    "api-product-developer",
    "portal-admin",
    "analytics-viewer",
]
TEAMS: tuple[Team, ...] = get_args(Team)

ConditionStatus = Literal["True", "False", "Unknown"]


def immutable(what: str, instead: str) -> dict[str, Any]:
    """A CEL transition rule that refuses any change to the field it sits on."""
    return {"x-kubernetes-validations": [immutable_rule(what, instead)]}


def immutable_rule(what: str, instead: str) -> dict[str, str]:
    return {"rule": "self == oldSelf", "message": f"{what} is immutable; {instead}"}


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready body, camelCase, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(ApiModel):
    """An observation of one aspect of the object's state (Kubernetes API conventions)."""

    type: str = Field(max_length=316, description="Type of condition, such as Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="One CamelCase word for the last transition, for machines.",
    )
    message: str = Field(
        default="", max_length=32768, description="A sentence for people about the transition."
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed from one status to another."
    )
    observed_generation: int = Field(
        default=0, ge=0, description="The .metadata.generation the condition was set for."
    )


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        description="The latest observations of the object's state.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    ),
]


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class Kind:
    """What the CRD generator needs to know about a kind besides its spec and status."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: Literal["Cluster", "Namespaced"]
    spec: type[ApiModel]
    status: type[ApiModel]
    description: str
    printer_columns: tuple[PrinterColumn, ...] = field(default_factory=tuple)
    # CEL rules on the whole object (x-kubernetes-validations at the schema's root).
    validations: tuple[dict[str, str], ...] = field(default_factory=tuple)
    # Fields the API server can select on (`--field-selector`, and the operator's watches).
    selectable_fields: tuple[str, ...] = field(default_factory=tuple)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def resource(self) -> tuple[str, str, str]:
        """Group, version and plural: how kopf and the API clients address the kind."""
        return (GROUP, VERSION, self.plural)


def ready_column() -> PrinterColumn:
    return PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status')


def age_column() -> PrinterColumn:
    return PrinterColumn("Age", ".metadata.creationTimestamp", type="date")
