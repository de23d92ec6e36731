from pathlib import Path

import celpy
import pytest
import yaml
from celpy.celparser import CELParseError

from modeldeploy import api, crdgen

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "modeldeploy.dev_modeldeployments.yaml"


@pytest.fixture(scope="module")
def crd():
    return yaml.safe_load(CRD_PATH.read_text())


def _schema(crd):
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node, path="$"):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_committed_crd_is_what_make_crds_writes():
    assert CRD_PATH.read_text() == crdgen.render(), "crds/ is stale: run `make crds` and commit"


def test_names_scope_and_subresources(crd):
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == "modeldeployments.modeldeploy.dev"
    assert names["kind"] == "ModelDeployment"
    assert names["plural"] == "modeldeployments"
    assert names["shortNames"] == ["md"]
    assert "modeldeploy" in names["categories"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:6] == ["Phase", "Stable", "Canary", "Weight", "Actual", "Age"]


def test_schema_is_structural(crd):
    for path, node in _walk(_schema(crd)):
        assert "$ref" not in node, path
        assert "anyOf" not in node or node.get("x-kubernetes-int-or-string"), path
        assert "title" not in node, path
        assert (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path


def test_every_spec_and_status_field_has_a_description(crd):
    for section in ("spec", "status"):
        for path, node in _walk(_schema(crd)["properties"][section], f"${section}"):
            if path.endswith(("[]", "{}")):
                continue
            assert node.get("description"), f"{path} has no description"


def test_defaults_enums_bounds_and_durations(crd):
    spec = _schema(crd)["properties"]["spec"]["properties"]
    rollout = spec["rollout"]["properties"]
    assert spec["rollout"]["default"] == {}
    assert rollout["steps"]["default"] == [10, 25, 50]
    assert rollout["steps"]["items"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert rollout["failureThreshold"]["minimum"] == 1
    assert rollout["interval"]["format"] == "duration"
    assert rollout["interval"]["default"] == "60s"
    assert spec["model"]["properties"]["format"]["enum"] == ["xgboost", "sklearn", "sklearn-joblib"]
    assert spec["traffic"]["properties"]["router"]["default"] == "replicas"
    assert "default" not in spec["traffic"]["properties"]["gatewayAPI"]
    quantity = spec["server"]["properties"]["resources"]["properties"]["limits"]
    assert quantity["additionalProperties"]["x-kubernetes-int-or-string"] is True


def test_status_has_no_defaults_and_conditions_are_a_map_list(crd):
    status = _schema(crd)["properties"]["status"]
    for path, node in _walk(status):
        assert "default" not in node, path
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def _cel_rules(crd):
    return [
        (path, rule)
        for path, node in _walk(_schema(crd))
        for rule in node.get("x-kubernetes-validations", [])
    ]


def test_cross_field_rules_are_present(crd):
    messages = " | ".join(rule["message"] for _, rule in _cel_rules(crd))
    for fragment in (
        "steps must be strictly increasing",
        "gatewayAPI must be set exactly when",
        "uri must start with",
        "sha256 is required for http(s)",
        "sklearn-joblib",
        "needs min, max or both",
    ):
        assert fragment in messages


def test_cel_rules_parse(crd):
    environment = celpy.Environment()
    rules = _cel_rules(crd)
    assert rules
    for path, rule in rules:
        try:
            environment.compile(rule["rule"])
        except CELParseError as error:  # pragma: no cover - the assertion message
            pytest.fail(f"CEL rule at {path} does not parse: {rule['rule']}: {error}")


def test_generator_refuses_unions_it_cannot_express():
    with pytest.raises(crdgen.UnsupportedSchemaError, match="union"):
        crdgen.structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {}, defaults=True)


def test_generator_refuses_unknown_keywords():
    with pytest.raises(crdgen.UnsupportedSchemaError, match="oneOf"):
        crdgen.structural({"oneOf": [{"type": "string"}]}, {}, defaults=True)


def test_api_constants_match_the_crd(crd):
    assert crd["spec"]["group"] == api.GROUP
