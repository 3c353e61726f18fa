"""The committed CRDs are exactly what the API models generate."""

from pathlib import Path
from typing import Any

from orgkeeper import crdgen, names
from orgkeeper.api.v1alpha1 import KINDS, ORGANIZATION

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_the_models() -> None:
    assert crdgen.drift(CRD_DIR) == [], "run `orgkeeper crds` and commit crds/"


def test_drift_is_detected(tmp_path: Path) -> None:
    crdgen.write(tmp_path)
    target = tmp_path / "orgkeeper.dev_organizations.yaml"
    target.write_text(target.read_text().replace("maxLength: 100", "maxLength: 200"))
    (tmp_path / "orgkeeper.dev_stale.yaml").write_text("{}\n")
    assert crdgen.drift(tmp_path) == [
        "orgkeeper.dev_organizations.yaml",
        "orgkeeper.dev_stale.yaml",
    ]


def test_every_kind_has_status_subresource_short_names_and_category() -> None:
    for kind in KINDS:
        crd = crdgen.custom_resource_definition(kind)
        (version,) = crd["spec"]["versions"]
        assert version["subresources"] == {"status": {}}
        assert crd["spec"]["names"]["categories"] == ["orgkeeper"]
        assert crd["spec"]["names"]["shortNames"]
        assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Ready", "Age"}


def _all_nodes(schema: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [schema]
    for sub in schema.get("properties", {}).values():
        nodes += _all_nodes(sub)
    if isinstance(schema.get("items"), dict):
        nodes += _all_nodes(schema["items"])
    return nodes


def test_schemas_are_structural_and_bounded() -> None:
    for kind in KINDS:
        crd = crdgen.custom_resource_definition(kind)
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for node in _all_nodes(root):
            assert "type" in node, node
            assert not {"anyOf", "$ref", "title", "nullable"} & node.keys(), node
            if node["type"] == "array":
                assert "maxItems" in node, node
        spec = root["properties"]["spec"]
        assert "description" in spec
        for name, field in spec["properties"].items():
            assert field.get("description"), f"{kind.kind}.spec.{name} has no description"
            if field["type"] == "string" and "enum" not in field and "format" not in field:
                assert "maxLength" in field, f"{kind.kind}.spec.{name} is unbounded"


def test_organization_names_must_make_a_valid_org_namespace() -> None:
    """L3: a CEL rule on the root refuses names that can't form org-<name>, naming the name."""
    crd = crdgen.custom_resource_definition(ORGANIZATION)
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    (rule,) = root["x-kubernetes-validations"]
    assert "size(self.metadata.name) <= 59" in rule["rule"]
    assert f"matches('{names.ORGANIZATION_NAME_PATTERN}')" in rule["rule"]
    assert "'metadata.name: ' + self.metadata.name" in rule["messageExpression"]
    assert len(names.org_namespace("x" * names.ORGANIZATION_NAME_MAX)) == 63


def test_only_organizations_carry_a_rule_on_the_root() -> None:
    for kind in KINDS:
        root = crdgen.custom_resource_definition(kind)["spec"]["versions"][0]["schema"]
        has_rule = "x-kubernetes-validations" in root["openAPIV3Schema"]
        assert has_rule is (kind is ORGANIZATION)
