"""spec.validation and status.validation: each rule refused alike by pydantic and by the
CEL rules that the API server runs (evaluated here with cel-python)."""

from datetime import UTC, datetime
from typing import Any

import celpy
import pytest
from celpy.adapter import json_to_cel
from pydantic import ValidationError

from modeldeploy import crdgen
from modeldeploy.api import ValidationSpec, ValidationStatus, ValidationVerdict

SPEC: dict[str, Any] = {
    "dataset": {"uri": "pvc://holdout/fraud.csv", "format": "csv", "labelColumn": "is_fraud"},
    "metric": "auc",
    "min": 0.9,
}


def _schema(model: type[Any], *, defaults: bool) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return crdgen.structural(raw, raw.get("$defs", {}), defaults=defaults)


def _typed(value: Any, schema: dict[str, Any]) -> Any:
    """The value as the API server hands it to CEL: a `number` field is a double even when
    written as an integer."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {key: _typed(item, properties.get(key, {})) for key, item in value.items()}
    if schema.get("type") == "number" and isinstance(value, int):
        return float(value)
    return value


def cel_violations(value: Any, schema: dict[str, Any]) -> list[str]:
    """Messages of the rules that `value` breaks, at its own level and below."""
    environment = celpy.Environment()
    messages = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = environment.program(environment.compile(rule["rule"]))
        if not program.evaluate({"self": json_to_cel(_typed(value, schema))}):
            messages.append(rule["message"])
    if isinstance(value, dict):
        for key, item in value.items():
            messages += cel_violations(item, schema.get("properties", {}).get(key, {}))
    return messages


SPEC_SCHEMA = _schema(ValidationSpec, defaults=True)


def test_a_valid_spec_has_its_defaults():
    spec = ValidationSpec.model_validate(SPEC)
    assert spec.timeout == "10m"
    assert spec.max_rows is None
    assert spec.dataset.label_column == "is_fraud"
    assert cel_violations(SPEC | {"timeout": "10m"}, SPEC_SCHEMA) == []
    assert SPEC_SCHEMA["properties"]["timeout"]["default"] == "10m"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"min": None}, "validation needs at least one bound"),
        ({"metric": "rmse", "min": 60, "max": 50}, "validation.min must not exceed validation.max"),
        ({"min": 90}, "write their bounds as fractions (0.9, not 90)"),
        ({"min": None, "maxDropVsStable": 2}, "write their bounds as fractions"),
        ({"min": None, "minImprovementOverStable": 1.5}, "write their bounds as fractions"),
        (
            {"dataset": {**SPEC["dataset"], "uri": "https://data.example.com/h.csv"}},
            "validation.dataset.sha256 is required for http(s) URIs",
        ),
        ({"timeout": "59s"}, "must be at least 1m"),
        ({"timeout": "2h1s"}, "must be at most 2h"),
    ],
)
def test_pydantic_and_cel_refuse_alike(change: dict[str, Any], message: str):
    spec = {key: value for key, value in (SPEC | change).items() if value is not None}
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ValidationSpec.model_validate(spec)
    assert any(message in violation for violation in cel_violations(spec, SPEC_SCHEMA))


def test_losses_take_bounds_above_one():
    spec = SPEC | {"metric": "rmse", "min": None, "max": 55, "maxDropVsStable": 2}
    del spec["min"]
    assert ValidationSpec.model_validate(spec).max == 55
    assert cel_violations(spec, SPEC_SCHEMA) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"metric": "precision"}, "metric"),
        ({"min": -0.1}, "min"),
        ({"maxRows": 0}, "maxRows"),
        ({"dataset": {**SPEC["dataset"], "format": "xlsx"}}, "dataset.format"),
        ({"dataset": {**SPEC["dataset"], "uri": "s3://bucket/h.csv"}}, "dataset.uri"),
        ({"dataset": {**SPEC["dataset"], "labelColumn": ""}}, "dataset.labelColumn"),
        ({"dataset": {**SPEC["dataset"], "sha256": "abc"}}, "dataset.sha256"),
        ({"bounds": {}}, "bounds"),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], field: str):
    with pytest.raises(ValidationError) as raised:
        ValidationSpec.model_validate(SPEC | change)
    locations = [".".join(str(p) for p in error["loc"]) for error in raised.value.errors()]
    assert any(location.startswith(field) for location in locations), locations


def test_the_schema_keeps_the_bounds_and_enums():
    properties = SPEC_SCHEMA["properties"]
    assert properties["metric"]["enum"] == ["accuracy", "auc", "f1", "logLoss", "rmse", "mae"]
    assert properties["dataset"]["properties"]["format"]["enum"] == ["csv", "parquet", "jsonl"]
    assert properties["min"]["minimum"] == 0
    assert properties["maxRows"]["minimum"] == 1
    assert set(SPEC_SCHEMA["required"]) == {"dataset", "metric"}


def test_status_round_trips_through_the_wire_format():
    status = ValidationStatus(
        revision="a81f3c9e0b",
        verdict=ValidationVerdict.PASS,
        metric="auc",
        candidate=0.93,
        stable=0.91,
        rows=1000,
        min=0.9,
        max_drop_vs_stable=0.01,
        message="auc 0.93 (stable 0.91) within min 0.9, maxDropVsStable 0.01",
        attempts=1,
        job="fraud-val-a81f3c9e0b-1a2b3c",
        at=datetime(2026, 12, 1, 7, tzinfo=UTC),
    )
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire["maxDropVsStable"] == 0.01
    assert "minImprovementOverStable" not in wire
    assert ValidationStatus.model_validate(wire | {"fieldOfANewerOperator": 1}) == status
    status_schema = _schema(ValidationStatus, defaults=False)
    assert "default" not in status_schema["properties"]["attempts"]
