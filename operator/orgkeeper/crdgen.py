"""Generates crds/*.yaml from the pydantic models in orgkeeper.api, and checks for drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from . import names
from .api.v1alpha1 import GROUP, KINDS, VERSION, Kind
from .api.v1alpha1.common import CATEGORY, ApiModel

# Schema keywords a structural CRD schema can carry; pydantic's extras (title, ...) are dropped.
_KEPT_KEYWORDS = {
    "type",
    "format",
    "description",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "items",
    "properties",
    "required",
    "additionalProperties",
}


def openapi_schema(model: type[ApiModel]) -> dict[str, Any]:
    """The model as an OpenAPI v3 structural schema: refs inlined, nullables made optional."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    return _structural(raw, definitions)


def _structural(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in node:
        # `X | None` in Python is an optional field on the wire, not a nullable one.
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) != 1:
            raise ValueError(f"unions are not structural: {node['anyOf']}")
        node = {**{k: v for k, v in node.items() if k != "anyOf"}, **branches[0]}
    if "$ref" in node:
        target = definitions[node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if "const" in node:
        node = {**{k: v for k, v in node.items() if k != "const"}, "enum": [node["const"]]}

    schema: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            schema[key] = value
        elif key not in _KEPT_KEYWORDS or (key == "default" and value in (None, [], {})):
            continue
        elif key == "properties":
            schema[key] = {name: _structural(sub, definitions) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            schema[key] = _structural(value, definitions)
        else:
            schema[key] = value
    if "properties" in schema:
        schema.setdefault("type", "object")
    if "format" in schema and schema["format"] == "date-time":
        schema.pop("pattern", None)
    return {k: schema[k] for k in sorted(schema, key=_keyword_order)}


def _keyword_order(key: str) -> tuple[int, str]:
    first = ["description", "type", "format", "enum", "default"]
    return (first.index(key), key) if key in first else (len(first), key)


def custom_resource_definition(kind: Kind) -> dict[str, Any]:
    spec = openapi_schema(kind.spec)
    status = openapi_schema(kind.status)
    columns = [
        {
            "name": column.name,
            "type": column.type,
            "jsonPath": column.json_path,
            **({"description": column.description} if column.description else {}),
            **({"priority": column.priority} if column.priority else {}),
        }
        for column in kind.printer_columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {names.LABEL_PART_OF: names.PART_OF},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "scope": kind.scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    **(
                        {"selectableFields": [{"jsonPath": p} for p in kind.selectable_fields]}
                        if kind.selectable_fields
                        else {}
                    ),
                    "schema": {
                        "openAPIV3Schema": {
                            "description": kind.description,
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            "required": ["spec"],
                            **(
                                {"x-kubernetes-validations": list(kind.validations)}
                                if kind.validations
                                else {}
                            ),
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated by `orgkeeper crds` from operator/orgkeeper/api; do not edit by hand.\n"


def rendered() -> dict[str, str]:
    """File name -> YAML text, for every kind."""
    return {
        f"{GROUP}_{kind.plural}.yaml": HEADER
        + yaml.safe_dump(custom_resource_definition(kind), sort_keys=False, width=100)
        for kind in KINDS
    }


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def drift(directory: Path) -> list[str]:
    """Names of CRD files that differ from what the models generate (or are missing/extra)."""
    expected = rendered()
    present = {p.name for p in directory.glob("*.yaml")} if directory.is_dir() else set()
    differing = [
        name
        for name, text in expected.items()
        if name not in present or (directory / name).read_text() != text
    ]
    return sorted(differing + [name for name in present - expected.keys()])
