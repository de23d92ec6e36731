import pytest
import yaml
from pydantic import ValidationError

from modeldeploy import api
from tests.unit.examples import invalid_examples, valid_example_paths


def _spec(**overrides):
    body = {"model": {"name": "fraud", "version": "1.0.0", "uri": "pvc://models/fraud.ubj"}}
    body.update(overrides)
    return api.ModelDeploymentSpec.model_validate(body)


def test_defaults_are_filled_in():
    spec = _spec()
    assert spec.replicas == 1
    assert spec.model.format == "xgboost"
    assert spec.traffic.router == "replicas"
    assert spec.rollout.steps == [10, 25, 50]
    assert spec.rollout.interval == "60s"
    assert spec.rollout.failure_threshold == 3
    assert spec.rollout.progress_deadline == "600s"
    assert spec.rollout.paused is False
    assert spec.analysis.min_requests == 20
    assert spec.analysis.slo.max_error_rate == 0.01
    assert spec.analysis.slo.max_latency_p99 == "250ms"
    assert spec.analysis.slo.count_rejected_requests is True
    assert spec.analysis.backend_errors == "Hold"


def test_default_steps_are_not_shared_between_objects():
    first, second = _spec(), _spec()
    first.rollout.steps.append(90)
    assert second.rollout.steps == [10, 25, 50]


def test_wire_names_are_camel_case():
    dumped = _spec().model_dump(by_alias=True, exclude_none=True)
    assert "failureThreshold" in dumped["rollout"]
    assert "maxLatencyP99" in dumped["analysis"]["slo"]
    assert "gatewayAPI" not in dumped["traffic"]


@pytest.mark.parametrize("path", valid_example_paths(), ids=lambda p: p.name)
def test_every_example_parses(path):
    manifest = yaml.safe_load(path.read_text())
    parsed = api.ModelDeployment.model_validate(manifest)
    assert parsed.metadata.name == manifest["metadata"]["name"]


# Blocks of one strategy exclude the others', so "every field" spans these examples.
COMPLETE_EXAMPLES = (
    "full.yaml",
    "blue-green.yaml",
    "direct.yaml",
    "validation.yaml",
    "model-aware.yaml",
    "model-aware-regressor.yaml",
    "shadow.yaml",
    "experiment.yaml",
    "experiment-quality.yaml",
)


def test_the_full_and_strategy_examples_set_every_spec_field():
    folder = valid_example_paths()[0].parent
    specs = [
        api.ModelDeploymentSpec.model_validate(yaml.safe_load((folder / name).read_text())["spec"])
        for name in COMPLETE_EXAMPLES
    ]
    unset = _unset_fields(specs, "spec")
    assert unset == [], f"{', '.join(COMPLETE_EXAMPLES)} leave fields unset: {unset}"


def _unset_fields(models, path):
    """Fields set in none of `models` (one object, or all the items of one list)."""
    models = models if isinstance(models, list) else [models]
    missing = []
    for name, field in type(models[0]).model_fields.items():
        here = f"{path}.{field.alias or name}"
        holders = [m for m in models if name in m.model_fields_set]
        if not holders:
            missing.append(here)
            continue
        values = [getattr(m, name) for m in holders]
        if isinstance(values[0], api.ApiModel):
            missing += _unset_fields(values, here)
        elif isinstance(values[0], list) and isinstance(values[0][0], api.ApiModel):
            missing += _unset_fields([item for v in values for item in v], f"{here}[]")
    return missing


@pytest.mark.parametrize("example", invalid_examples(), ids=lambda e: e.path.name)
def test_every_invalid_example_is_rejected_naming_the_field(example):
    with pytest.raises(ValidationError) as raised:
        api.ModelDeployment.model_validate(example.manifest)
    locations = [".".join(str(part) for part in error["loc"]) for error in raised.value.errors()]
    # A rule across metadata and spec is the whole object's.
    field = "" if example.field == "(object)" else example.field
    assert any(loc.startswith(field) for loc in locations), (
        f"{example.path.name}: no error names {example.field}; errors were {locations}"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("250ms", 0.25), ("1m30s", 90), ("1.5s", 1.5)],
)
def test_durations(text, seconds):
    assert api.duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "5 minutes", "-1s", "1d"])
def test_bad_durations_say_how_to_write_one(text):
    with pytest.raises(ValueError, match="write it like 30s"):
        api.duration_seconds(text)


def test_metric_check_min_above_max_is_rejected():
    with pytest.raises(ValidationError, match="min must not exceed max"):
        api.MetricCheck(name="p95", query="up", min=2, max=1)


def test_unknown_spec_fields_are_rejected():
    with pytest.raises(ValidationError, match="rolout"):
        _spec(rolout={"steps": [10]})


def test_status_round_trips_through_the_wire_format():
    status = api.ModelDeploymentStatus.model_validate(
        {
            "phase": "Progressing",
            "observedGeneration": 4,
            "stable": {"revision": "7c9e", "version": "2.0.0", "readyReplicas": 3},
            "canary": {
                "revision": "a81f",
                "version": "2.1.0",
                "weight": 25,
                "step": 1,
                "failedChecks": 1,
                "startedAt": "2026-01-01T00:00:00Z",
            },
            "futureField": "ignored",
        }
    )
    assert status.canary is not None
    assert status.canary.failed_checks == 1
    again = api.ModelDeploymentStatus.model_validate(status.model_dump(by_alias=True, mode="json"))
    assert again == status
