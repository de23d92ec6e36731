"""Model-aware gates and monitoring on the real local API server (issue 15), judged from a
scripted Prometheus that answers the operator's per-bin queries with labelled series
shaped like the server's; the operator runs as a real process."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from modeldeploy import model_promql as mq
from tests.integration.operator_harness import (
    Objects,
    model_deployment,
    objects,
    operator,
    wait_for,
)
from tests.support.scripted_prometheus import ScriptedPrometheus

pytestmark = pytest.mark.integration
__all__ = ["objects", "operator"]  # fixtures used by the tests below

PROFILE = {"uri": "https://models.example.com/fraud/profile.json", "sha256": "cd" * 32}
LES = ("0.25", "0.5", "0.75", "1", "+Inf")


@pytest.fixture
def prometheus() -> Iterator[ScriptedPrometheus]:
    with ScriptedPrometheus() as prom:
        prom.healthy()
        prom.healthy("stable")
        yield prom


def spec(prom: ScriptedPrometheus, analysis: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "rollout": {
            "steps": [50],
            "interval": "2s",
            "failureThreshold": 1,
            "inconclusiveLimit": 2,
            "progressDeadline": "60s",
        },
        "analysis": {
            "prometheus": {"url": prom.url, "timeout": "2s"},
            "minRequests": 20,
            **analysis,
        },
        **extra,
    }


def deploy(objects: Objects, name: str, body: dict[str, Any]) -> dict[str, Any]:
    manifest = model_deployment(name, **body)
    manifest["spec"]["model"]["profile"] = PROFILE
    objects.apply(manifest)
    return wait_for(
        lambda: (s := objects.status(name)) and s.get("phase") == "Available" and s,
        60,
        f"{name} Available",
    )


def cumulative(track: str, rows: Sequence[float]) -> list[tuple[dict[str, str], float]]:
    total, out = 0.0, []
    for le, count in zip(LES, rows, strict=True):
        total += count
        out.append(({"track": track, "le": le}, total))
    return out


def test_prediction_drift_rolls_the_canary_back_with_its_value_in_status_and_events(
    objects: Objects, operator: Any, prometheus: ScriptedPrometheus
):
    body = spec(prometheus, {"drift": {"prediction": {"max": 0.2}, "minRows": 100}})
    deploy(objects, "drifty", body)
    prometheus.set_series(
        mq.PREDICTION_VALUE_BUCKETS,
        series=cumulative("canary", [20, 20, 60, 300, 0]) + cumulative("stable", [100] * 4 + [0]),
    )
    objects.patch_spec("drifty", {"model": {"version": "2.0.0"}})

    entry = wait_for(lambda: objects.outcome("drifty", "2.0.0"), 60, "the rollback")
    assert entry["outcome"] == "RolledBack"
    assert "prediction-drift" in entry["reason"]
    checks = {c["name"]: c for c in objects.status("drifty")["lastAnalysis"]["checks"]}
    assert checks["prediction-drift"]["verdict"] == "Fail"
    assert checks["prediction-drift"]["value"] > 0.2
    assert checks["prediction-drift"]["max"] == 0.2
    assert checks["error-rate"]["verdict"] == "Pass"
    failures = [e["message"] for e in objects.events("drifty") if e["reason"] == "AnalysisFailed"]
    assert any("prediction-drift psi" in m and "output value, bin" in m for m in failures), failures
    both = [q for q in prometheus.queries if mq.PREDICTION_VALUE_BUCKETS in q]
    assert any('model_version="2.0.0"' in q and 'model_version="1.0.0"' in q for q in both)


def test_a_quality_gate_gives_the_pods_a_signing_key_that_outlives_new_versions(
    objects: Objects, operator: Any, prometheus: ScriptedPrometheus
):
    prometheus.set_series(mq.MODEL_INFO, series=[({"task": "binary"}, 1.0)])
    prometheus.set_series(
        mq.FEEDBACK_ROWS,
        series=[
            ({"track": "canary", "result": "correct"}, 190),
            ({"track": "canary", "result": "incorrect"}, 10),
            ({"track": "stable", "result": "correct"}, 195),
            ({"track": "stable", "result": "incorrect"}, 5),
        ],
    )
    body = spec(prometheus, {"quality": {"minAccuracy": 0.9, "maxDropVsStable": 0.05}})
    status = deploy(objects, "labelled", body)
    secret = wait_for(lambda: objects.get("secret", "labelled-feedback"), 30, "the key Secret")
    assert secret["metadata"]["ownerReferences"][0]["name"] == "labelled"
    assert secret["data"]["key"]
    template = objects.get("deployment", "labelled-stable")
    assert template is not None
    pod = template["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    key_file = env["MODELSERVER_FEEDBACK_KEY_FILE"]
    assert any(v.get("secret", {}).get("secretName") == "labelled-feedback" for v in pod["volumes"])
    assert key_file.endswith("/key")
    assert env["MODELSERVER_PROFILE_URI"] == PROFILE["uri"]
    assert status["stable"]["version"] == "1.0.0"

    objects.patch_spec("labelled", {"model": {"version": "2.0.0"}})
    entry = wait_for(lambda: objects.outcome("labelled", "2.0.0"), 60, "the promotion")
    assert entry["outcome"] == "Promoted"
    checks = {c["name"]: c for c in objects.status("labelled")["lastAnalysis"]["checks"]}
    assert checks["accuracy"]["value"] == pytest.approx(0.95)
    assert checks["accuracy-drop-vs-stable"]["verdict"] == "Pass"
    kept = objects.get("secret", "labelled-feedback")
    assert kept is not None
    assert kept["data"]["key"] == secret["data"]["key"], "tokens clients hold stay valid"


def test_a_canary_waiting_for_labels_holds_uncounted_until_the_deadline_then_counts(
    objects: Objects, operator: Any, prometheus: ScriptedPrometheus
):
    prometheus.set_series(mq.MODEL_INFO, series=[({"task": "binary"}, 1.0)])
    prometheus.set_series(mq.FEEDBACK_ROWS, series=[({"track": "canary", "result": "correct"}, 12)])
    quality = {"minAccuracy": 0.9, "minFeedback": 100, "feedbackDeadline": "12s"}
    deploy(objects, "late", spec(prometheus, {"quality": quality}))
    objects.patch_spec("late", {"model": {"version": "2.0.0"}})

    def waiting() -> dict[str, Any] | None:
        status = objects.status("late")
        analysis, canary = status.get("lastAnalysis") or {}, status.get("canary") or {}
        return status if analysis.get("awaitingFeedback") and canary.get("step") == 0 else None

    held = wait_for(waiting, 30, "an analysis waiting for labels")
    assert held["canary"]["inconclusiveChecks"] == 0
    assert held["canary"]["awaitingFeedbackSince"]
    # several analyses (2 s apart) go by without counting toward the limit of 2
    held_again = wait_for(
        lambda: (s := waiting()) and s["lastAnalysis"]["at"] != held["lastAnalysis"]["at"] and s,
        10,
        "a second analysis waiting",
    )
    assert held_again["canary"]["inconclusiveChecks"] == 0
    entry = wait_for(
        lambda: objects.outcome("late", "2.0.0"), 60, "the rollback after the deadline"
    )
    assert entry["outcome"] == "RolledBack"
    assert entry["reason"].startswith("AnalysisInconclusive")
    notes = [e["message"] for e in objects.events("late") if e["reason"] == "AnalysisInconclusive"]
    assert any("not counted toward inconclusiveLimit until" in m for m in notes), notes


def test_monitoring_writes_the_drifted_features_and_warns_once(
    objects: Objects, operator: Any, prometheus: ScriptedPrometheus
):
    prometheus.set_series(
        mq.PROFILE_FEATURE_SHARES,
        series=[({"feature": f, "bin": b}, 0.5) for f in ("age", "income") for b in ("0", "1")],
    )
    prometheus.set_series(
        mq.FEATURE_BINS,
        series=[
            ({"feature": "age", "bin": "0"}, 380),
            ({"feature": "age", "bin": "1"}, 20),
            ({"feature": "income", "bin": "0"}, 210),
            ({"feature": "income", "bin": "1"}, 190),
        ],
    )
    prometheus.set("avg_over_time(", value=0.999)
    prometheus.set("count_over_time(", value=40)
    monitoring = {
        "interval": "1m",
        "drift": {"features": {"maxPSI": 0.2}, "minRows": 100},
        "slo": {"objective": 0.99, "period": "1h"},
    }
    deploy(objects, "watched", spec(prometheus, {}, monitoring=monitoring))

    drift = wait_for(
        lambda: (
            (objects.status("watched").get("drift") or {}).get("breachedSince")
            and objects.status("watched")["drift"]
        ),
        30,
        "the drift in status",
    )
    assert drift["verdict"] == "Fail"
    assert drift["features"][0]["feature"] == "age"
    assert drift["features"][0]["psi"] > 0.2
    slo = objects.status("watched")["slo"]
    assert slo["compliance"] == pytest.approx(0.999)
    assert slo["errorBudgetRemaining"] == pytest.approx(0.9)
    assert slo["windows"] == 40
    warnings = [e for e in objects.events("watched") if e["reason"] == "ModelDrift"]
    assert len(warnings) == 1
    assert warnings[0]["type"] == "Warning"
    assert "age" in warnings[0]["message"]
    assert objects.status("watched").get("canary") is None
