"""Model-aware gates end to end (issue 15): the chart's operator, the built server image on
the tier's node, the in-cluster Prometheus and load from a pod that sends the breast
cancer rows in turn and, for quality, sends each row's true label back with the answer's
prediction token, as a client that learns the truth later would.

Each scenario prints the values that decided: the drift statistic of a shifted candidate,
the live accuracy of a less accurate one, and the drifted features of a stable whose
inputs moved away from its training data.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from sklearn.datasets import load_breast_cancer
from tests.e2e.harness.models import MODELS, single_row_request
from tests.integration.conftest import _print
from tests.node import model_store as model_store_module
from tests.node.load import failed
from tests.node.model_store import ModelStore
from tests.node.monitoring import InClusterPrometheus
from tests.node.realnode import wait_for
from tests.node.scenario import Scenario, manifest
from tests.node.tier import TierCluster

pytestmark = pytest.mark.node

GOOD = "xgb-classifier.ubj"
SHIFTED = "xgb-classifier-shifted.ubj"  # trained on the larger tumours only
WEAK = "xgb-classifier-weak.ubj"  # trained with a fifth of the labels flipped
RATE = 20
ANALYSIS = {"minRequests": 10, "slo": {"maxErrorRate": 0.05, "maxLatencyP99": "1s"}}
# 30 s at half of 20 requests a second: about 300 rows a side per analysis. Sampled from
# these rows (make models' data), the good model against itself gives a PSI of 0.03
# (median; 0.11 at the 99th percentile) and the shifted one 0.32 (0.18 at the 1st), so a
# bound of 0.15 tells them apart; 250 rows keep a thin window out.
ROLLOUT = {
    "steps": [50],
    "interval": "30s",
    "failureThreshold": 1,
    "inconclusiveLimit": 6,
    "progressDeadline": "240s",
}
PREDICTION_DRIFT = {"prediction": {"statistic": "psi", "max": 0.15}, "minRows": 250}


@pytest.fixture(scope="module")
def gated_files(tier: TierCluster, model_store: ModelStore) -> ModelStore:
    """The shifted and the weak model and every profile in the tier's model store."""
    for name in (SHIFTED, WEAK):
        model_store_module.upload(tier, model_store.namespace, MODELS / name)
    for name in (GOOD, SHIFTED, WEAK):
        model_store_module.upload(tier, model_store.namespace, MODELS / profile_of(name))
    return model_store


def profile_of(model: str) -> str:
    return model.removesuffix(".ubj") + ".profile.json"


def with_profile(store: ModelStore, model: str) -> dict[str, Any]:
    return {**store.http(model), "profile": store.http(profile_of(model))}


def rows(only_larger_tumours: bool = False) -> list[tuple[Any, Any]]:
    """Single-row V2 bodies of the data set in a fixed shuffled order, with their labels."""
    features, labels = load_breast_cancer(return_X_y=True)
    template = json.loads(single_row_request())
    picked = list(range(len(labels)))
    if only_larger_tumours:
        median = sorted(features[:, 0])[len(labels) // 2]
        picked = [i for i in picked if features[i, 0] > median]
    random.Random(15).shuffle(picked)
    out = []
    for i in picked:
        body = copy.deepcopy(template)
        body["inputs"][0]["data"] = [[float(v) for v in features[i]]]
        out.append((body, int(labels[i])))
    return out


def serve(
    scenario: Scenario,
    prometheus: InClusterPrometheus,
    spec: dict[str, Any],
    load_rows: list[tuple[Any, Any]],
    feedback: bool = False,
) -> None:
    scenario.deploy(spec)
    scenario.start_load(rate=RATE, rows=load_rows, feedback=feedback)
    namespace = scenario.namespace
    wait_for(
        lambda: prometheus.value(
            f'sum(modelserver_profile_feature_share{{namespace="{namespace}"}}) > 0'
        ),
        60,
        "Prometheus to scrape the stable's profile",
    )


def last_checks(scenario: Scenario) -> dict[str, dict[str, Any]]:
    analysis = scenario.status().get("lastAnalysis") or {}
    return {c["name"]: c for c in analysis.get("checks", [])}


def test_a_candidate_trained_on_a_shifted_subset_is_rolled_back_by_prediction_drift(
    request: pytest.FixtureRequest,
    scenario: Scenario,
    prometheus: InClusterPrometheus,
    gated_files: ModelStore,
):
    analysis = {**ANALYSIS, "drift": PREDICTION_DRIFT}
    spec = manifest(scenario.name, with_profile(gated_files, GOOD), "1.0.0", 2, ROLLOUT, analysis)
    serve(scenario, prometheus, spec, rows())

    # the same model as a new version: its outputs match, the drift gate lets it through
    scenario.roll_out("1.1.0", with_profile(gated_files, GOOD))
    promoted = scenario.wait_outcome("1.1.0", timeout=300)
    assert promoted["outcome"] == "Promoted", promoted
    same = last_checks(scenario)["prediction-drift"]

    scenario.roll_out("2.0.0", with_profile(gated_files, SHIFTED))
    rolled_back = scenario.wait_outcome("2.0.0", timeout=300)
    checks = last_checks(scenario)
    drift = checks["prediction-drift"]
    _print(
        request.config,
        f"\nprediction drift: same model {same['value']:.3f} ({same['verdict']}), "
        f"shifted candidate {drift['value']:.3f} ({drift['verdict']}): {drift['message']}; "
        f"error-rate {checks['error-rate']['message']}; latency {checks['latency-p99']['message']}",
    )
    assert rolled_back["outcome"] == "RolledBack", rolled_back
    assert "prediction-drift" in rolled_back["reason"], rolled_back
    assert drift["verdict"] == "Fail"
    assert drift["value"] > 0.15
    # as good as stable on errors and latency: only its predictions gave it away
    assert checks["error-rate"]["verdict"] == "Pass"
    assert checks["latency-p99"]["verdict"] == "Pass"
    assert any(
        "prediction-drift" in e.get("message", "") for e in scenario.events("AnalysisFailed")
    )
    scenario.wait_settled(2)
    assert scenario.load is not None
    assert failed(scenario.load.outcomes()) == []


def test_a_less_accurate_candidate_is_rolled_back_by_the_quality_gate_from_feedback(
    request: pytest.FixtureRequest,
    scenario: Scenario,
    prometheus: InClusterPrometheus,
    gated_files: ModelStore,
):
    quality = {
        "minAccuracy": 0.9,
        "maxDropVsStable": 0.1,
        "minFeedback": 100,
        "feedbackDeadline": "3m",
    }
    analysis = {**ANALYSIS, "quality": quality}
    spec = manifest(scenario.name, with_profile(gated_files, GOOD), "1.0.0", 2, ROLLOUT, analysis)
    serve(scenario, prometheus, spec, rows(), feedback=True)
    namespace = scenario.namespace
    wait_for(
        lambda: prometheus.value(
            f'sum(modelserver_feedback_rows_total{{namespace="{namespace}"}}) > 100'
        ),
        90,
        "labelled rows to be counted",
    )

    scenario.roll_out("2.0.0", with_profile(gated_files, WEAK))
    rolled_back = scenario.wait_outcome("2.0.0", timeout=300)
    checks = last_checks(scenario)
    accuracy, drop = checks["accuracy"], checks["accuracy-drop-vs-stable"]
    assert scenario.load is not None
    feedback = scenario.load.results(False).get("feedback") or {}
    _print(
        request.config,
        f"\nquality: canary {accuracy['message']} ({accuracy['verdict']}); drop "
        f"{drop['message']} ({drop['verdict']}); feedback answers {feedback}",
    )
    assert rolled_back["outcome"] == "RolledBack", rolled_back
    assert drop["verdict"] == "Fail" or accuracy["verdict"] == "Fail", checks
    assert accuracy["value"] < 0.9
    assert drop["value"] > 0.1
    # every label reached a pod that could verify its token, whichever pod it was
    assert set(feedback) == {"200"}, feedback
    scenario.wait_settled(2)
    assert failed(scenario.load.outcomes()) == []
    secret = scenario.tier.get("secret", f"{scenario.name}-feedback", namespace)
    assert secret is not None, "the operator keeps the signing key in NAME-feedback"


def test_a_stable_whose_inputs_shift_shows_the_drifting_feature_without_any_rollout(
    request: pytest.FixtureRequest,
    scenario: Scenario,
    prometheus: InClusterPrometheus,
    gated_files: ModelStore,
):
    spec = manifest(scenario.name, with_profile(gated_files, GOOD), "1.0.0", 2, ROLLOUT, ANALYSIS)
    spec["spec"]["monitoring"] = {
        "interval": "1m",
        "drift": {"features": {"maxPSI": 0.2, "worstFeatures": 3}, "minRows": 200},
        "slo": {"period": "1h"},
    }
    serve(scenario, prometheus, spec, rows(only_larger_tumours=True))

    def drifted() -> dict[str, Any] | None:
        drift = scenario.status().get("drift") or {}
        return drift if drift.get("verdict") == "Fail" else None

    drift = wait_for(drifted, 240, "monitoring to find the inputs drifted", interval=2)
    warnings = wait_for(lambda: scenario.events("ModelDrift"), 30, "the ModelDrift event")
    namespace = scenario.namespace
    # This Prometheus scrapes the operator pod by its annotations, so the target's own
    # namespace wins and the gauge's becomes exported_namespace (the chart's ServiceMonitor
    # honours the operator's labels instead).
    gauge = wait_for(
        lambda: prometheus.query(
            f'modeldeploy_feature_psi{{exported_namespace="{namespace}"}} > 0.2'
        ),
        60,
        "the operator's modeldeploy_feature_psi gauge",
    )
    worst = drift["features"][0]
    _print(
        request.config,
        f"\nmonitoring: {drift['message']}; worst {worst}; slo {scenario.status().get('slo')}",
    )
    assert worst["psi"] > 0.2
    assert any("radius" in f["feature"] or "area" in f["feature"] for f in drift["features"])
    assert warnings[0]["type"] == "Warning"
    assert "severity warning" in warnings[0]["message"]
    assert {s["metric"]["feature"] for s in gauge} & {f["feature"] for f in drift["features"]}
    assert scenario.status().get("history", [])[0]["outcome"] == "Deployed", "no rollout"
    assert scenario.status().get("canary") is None
