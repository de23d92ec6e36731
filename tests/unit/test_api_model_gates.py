"""model.profile, analysis.drift, analysis.quality, spec.monitoring and status.drift /
status.slo: each rule refused alike by pydantic and by the CEL rules the API server runs
(evaluated with cel-python), the defaults, and the checks left to run time."""

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from modeldeploy import api, crdgen
from tests.unit.examples import EXAMPLES_DIR
from tests.unit.test_validation_spec import cel_violations

SHA = "4e07408562bedb8b60ce05c1decfe3ad16b72230967de01f640b7e4729b49fce"
PROFILE = {"uri": "pvc://models/fraud/profile.json"}


def _spec_schema() -> dict[str, Any]:
    raw = api.ModelDeploymentSpec.model_json_schema(by_alias=True, mode="validation")
    return crdgen.structural(raw, raw.get("$defs", {}), defaults=True)


SPEC_SCHEMA = _spec_schema()


def spec(model: dict[str, Any] | None = None, **blocks: Any) -> dict[str, Any]:
    return {
        "model": {
            "name": "fraud",
            "version": "1",
            "uri": "pvc://models/fraud.ubj",
            **(model or {}),
        },
        **blocks,
    }


def refused_alike(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        api.ModelDeploymentSpec.model_validate(body)
    assert message in str(raised.value)
    violations = cel_violations(body, SPEC_SCHEMA)
    assert any(message in violation for violation in violations), violations


def accepted_alike(body: dict[str, Any]) -> api.ModelDeploymentSpec:
    parsed = api.ModelDeploymentSpec.model_validate(body)
    assert cel_violations(body, SPEC_SCHEMA) == []
    return parsed


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            spec(analysis={"drift": {"features": {}}}),
            "analysis.drift and monitoring.drift need model.profile",
        ),
        (
            spec(analysis={"drift": {"prediction": {}}}),
            "analysis.drift and monitoring.drift need model.profile",
        ),
        (
            spec(monitoring={"drift": {"features": {"maxPSI": 0.1}}}),
            "set model.profile (modelserver profile writes one)",
        ),
        (
            spec({"profile": {"uri": "https://models.example.com/p.json"}}),
            "model.profile.sha256 is required for http(s) URIs",
        ),
        (
            spec({"profile": PROFILE}, analysis={"drift": {"minRows": 10}}),
            "drift needs prediction, features or both",
        ),
        (
            spec(
                {"profile": PROFILE},
                analysis={"drift": {"prediction": {"statistic": "ks", "max": 5}}},
            ),
            "a KS statistic lies within 0..1",
        ),
        (
            spec(analysis={"quality": {"minFeedback": 10}}),
            "analysis.quality needs minAccuracy, minAUC or maxMAE",
        ),
        (
            spec(analysis={"quality": {"minAccuracy": 0.9, "maxMAE": 2}}),
            "minAccuracy and minAUC judge classifiers, maxMAE judges regressors",
        ),
        (
            spec(analysis={"quality": {"minAUC": 0.8, "maxDropVsStable": 3}}),
            "analysis.quality.maxDropVsStable of accuracy or AUC is a fraction",
        ),
        (
            spec(monitoring={"quality": {"minAUC": 0.8, "maxMAE": 1}}),
            "monitoring.quality: minAccuracy and minAUC judge classifiers",
        ),
        (
            spec(monitoring={"quality": {"minAccuracy": 0.8, "maxDropVsReference": 5}}),
            "monitoring.quality.maxDropVsReference of accuracy or AUC is a fraction",
        ),
        (spec(monitoring={"interval": "30s"}), "must be at least 1m"),
        (spec(monitoring={"interval": "25h"}), "must be at most 24h"),
        (spec(monitoring={"slo": {"period": "30m"}}), "must be at least 1h"),
        (spec(analysis={"quality": {"minAccuracy": 0.9, "feedbackDeadline": "0s"}}), "at least 1s"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_pydantic_and_cel_refuse_alike(body: dict[str, Any], message: str):
    refused_alike(body, message)


@pytest.mark.parametrize(
    "body",
    [
        spec({"profile": PROFILE}, analysis={"drift": {"features": {}}}),
        spec({"profile": {"uri": "https://models.example.com/p.json", "sha256": SHA}}),
        spec({"profile": {"uri": "http://models/p.json"}, "allowUnpinned": True}),
        spec(analysis={"quality": {"maxMAE": 12.5, "maxDropVsStable": 3}}),
        spec(analysis={"quality": {"minAccuracy": 0, "maxDropVsStable": 0.02}}),
        spec(monitoring={"quality": {"maxMAE": 4, "maxDropVsReference": 1.5}}),
        spec(monitoring={}),  # SLO compliance needs no profile
        spec({"profile": PROFILE}, monitoring={"drift": {"prediction": {"statistic": "ks"}}}),
    ],
)
def test_what_both_accept(body: dict[str, Any]):
    accepted_alike(body)


@pytest.mark.parametrize("example", ["model-aware.yaml", "model-aware-regressor.yaml"])
def test_the_examples_pass_the_cel_rules(example: str):
    manifest = yaml.safe_load((EXAMPLES_DIR / example).read_text())
    accepted_alike(manifest["spec"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (spec(analysis={"quality": {"minAccuracy": 1.5}}), "analysis.quality.minAccuracy"),
        (spec(analysis={"quality": {"minAUC": -0.1}}), "analysis.quality.minAUC"),
        (spec(analysis={"quality": {"maxMAE": -1}}), "analysis.quality.maxMAE"),
        (
            spec(analysis={"quality": {"minAUC": 0.8, "minFeedback": 0}}),
            "analysis.quality.minFeedback",
        ),
        (
            spec({"profile": PROFILE}, analysis={"drift": {"features": {"worstFeatures": 0}}}),
            "analysis.drift.features.worstFeatures",
        ),
        (
            spec({"profile": PROFILE}, analysis={"drift": {"prediction": {"statistic": "chi2"}}}),
            "analysis.drift.prediction.statistic",
        ),
        (spec({"profile": {"uri": "s3://bucket/p.json"}}), "model.profile.uri"),
        (spec({"profile": {"uri": PROFILE["uri"], "sha256": "abc"}}), "model.profile.sha256"),
        (spec(monitoring={"slo": {"objective": 1}}), "monitoring.slo.objective"),
        (spec(monitoring={"slo": {"period": "30d"}}), "monitoring.slo.period"),
    ],
)
def test_bad_fields_are_named(body: dict[str, Any], field: str):
    with pytest.raises(ValidationError) as raised:
        api.ModelDeploymentSpec.model_validate(body)
    locations = [".".join(str(p) for p in error["loc"]) for error in raised.value.errors()]
    assert any(location.startswith(field) for location in locations), locations


def test_defaults():
    parsed = accepted_alike(
        spec(
            {"profile": PROFILE},
            analysis={"drift": {"prediction": {}, "features": {}}, "quality": {"minAUC": 0.8}},
            monitoring={},
        )
    )
    drift, quality, monitoring = parsed.analysis.drift, parsed.analysis.quality, parsed.monitoring
    assert drift is not None
    assert drift.prediction is not None
    assert drift.features is not None
    assert (drift.prediction.statistic, drift.prediction.bound()) == ("psi", 0.2)
    assert (drift.features.max_psi, drift.features.worst_features, drift.min_rows) == (0.2, 5, 200)
    assert quality is not None
    assert (quality.min_feedback, quality.feedback_deadline) == (100, "1h")
    assert monitoring is not None
    assert (monitoring.interval, monitoring.drift, monitoring.quality) == ("5m", None, None)
    assert (monitoring.slo.objective, monitoring.slo.period) == (0.99, "168h")
    assert api.PredictionDriftSpec(statistic=api.DriftStatistic.KS).bound() == 0.1
    assert api.PredictionDriftSpec(statistic=api.DriftStatistic.KS, max=0.3).bound() == 0.3


def test_the_crd_publishes_the_defaults_and_wire_names():
    analysis = SPEC_SCHEMA["properties"]["analysis"]["properties"]
    drift = analysis["drift"]["properties"]
    assert drift["features"]["properties"]["maxPSI"]["default"] == 0.2
    assert drift["prediction"]["properties"]["statistic"]["enum"] == ["psi", "ks"]
    assert "default" not in drift["prediction"]["properties"]["max"]  # depends on the statistic
    assert set(analysis["quality"]["properties"]) >= {"minAccuracy", "minAUC", "maxMAE"}
    # Optional blocks stay absent unless written: an empty one would turn a gate on.
    for block in (analysis["drift"], analysis["quality"], SPEC_SCHEMA["properties"]["monitoring"]):
        assert "default" not in block
    assert "default" not in SPEC_SCHEMA["properties"]["model"]["properties"]["profile"]


@pytest.mark.parametrize(
    ("bounds", "task", "problem"),
    [
        ({"minAUC": 0.8}, "binary", None),
        ({"minAUC": 0.8}, "multiclass", "minAUC judges binary classifiers only"),
        ({"minAUC": 0.8}, "regression", "the model is a regressor: use minAccuracy"),
        ({"minAccuracy": 0.9}, "multiclass", None),
        ({"minAccuracy": 0.9}, "regression", "minAccuracy judges classifiers"),
        ({"maxMAE": 2}, "regression", None),
        ({"maxMAE": 2}, "binary", "maxMAE judges regressors, and the model is a binary classifier"),
        ({"maxMAE": 2}, "ranking", "of unknown task 'ranking'"),
    ],
)
def test_what_only_the_model_tells_is_checked_at_run_time(bounds, task, problem):
    quality = api.QualitySpec.model_validate(bounds)
    found = quality.task_problem(task)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_drift_and_slo_status_round_trip_through_the_wire_format():
    at = datetime(2026, 12, 1, 7, tzinfo=UTC)
    status = api.ModelDeploymentStatus(
        drift=api.DriftStatus(
            at=at,
            version="2.2.0",
            window="10m",
            verdict=api.Verdict.FAIL,
            message="feature-drift 0.41 > max 0.2 (income)",
            rows=4200,
            features=[
                api.FeatureDrift(
                    feature="income", psi=0.41, bin="+Inf", profile_share=0.1, live_share=0.32
                )
            ],
            prediction=api.PredictionDriftStatus(
                statistic=api.DriftStatistic.KS, value=0.04, output="probability", max=0.1
            ),
            quality=api.QualityStatus(metric="accuracy", value=0.91, reference=0.93, feedback=812),
            breached_since=at,
        ),
        slo=api.SLOStatus(
            at=at,
            version="2.2.0",
            period="168h",
            objective=0.99,
            windows=2016,
            compliance=0.995,
            error_budget_remaining=0.5,
        ),
    )
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire["drift"]["features"][0]["profileShare"] == 0.1
    assert wire["slo"]["errorBudgetRemaining"] == 0.5
    wire["drift"]["fieldOfANewerOperator"] = 1
    assert api.ModelDeploymentStatus.model_validate(wire) == status
