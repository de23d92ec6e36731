"""The model-aware checks: drift and quality judged from Prometheus samples shaped like
the server's, and a step that waits for late labels without counting it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sklearn.metrics import roc_auc_score

from modeldeploy import api, drift
from modeldeploy import model_promql as mq
from modeldeploy.analysis import PrometheusClient, QueryFailed, analyse, failure_summary
from modeldeploy.model_checks import (
    FEATURE_DRIFT_CHECK,
    PREDICTION_DRIFT_CHECK,
    QualityAnswers,
    judge_feature_drift,
    judge_prediction_drift,
    judge_prediction_drift_from_profile,
    judge_quality,
    model_checks,
)
from modeldeploy.promql import QueryContext
from modeldeploy.rollout import analysis_due, decide
from tests.support import LocalServer, Reply, Request
from tests.unit.rollout_sim import START, Simulator, make_spec

Verdict = api.Verdict
CANARY = QueryContext("ml", "fraud", "canary", "5m", "fraud", "2.1.0")
STABLE = QueryContext("ml", "fraud", "stable", "5m", "fraud", "2.0.0")
LES = ("0.25", "0.5", "0.75", "1", "+Inf")


def sample(value: float, **labels: str) -> mq.Sample:
    return mq.Sample(labels, value)


def buckets(track: str, per_bin: Sequence[float]) -> list[mq.Sample]:
    """A track's cumulative prediction buckets from its rows per bucket."""
    total, out = 0.0, []
    for le, rows in zip(LES, per_bin, strict=True):
        total += rows
        out.append(sample(total, track=track, le=le))
    return out


def drift_spec(**prediction: Any) -> api.DriftSpec:
    return api.DriftSpec.model_validate({"prediction": prediction, "minRows": 100})


# --- prediction drift -------------------------------------------------------------------


def test_a_canary_predicting_like_the_stable_passes():
    answer = buckets("canary", [100, 100, 100, 100, 0]) + buckets("stable", [210, 190, 205, 195, 0])
    check = judge_prediction_drift(drift_spec(), "q", answer, [], "canary")
    assert check.verdict == Verdict.PASS, check.message
    assert check.value is not None
    assert check.value < 0.01
    assert check.max == api.DEFAULT_MAX_PSI


def test_a_canary_predicting_elsewhere_fails_naming_the_output_and_bin():
    answer = buckets("canary", [10, 10, 30, 350, 0]) + buckets("stable", [200, 200, 200, 200, 0])
    check = judge_prediction_drift(drift_spec(), "q", answer, [], "canary")
    assert check.verdict == Verdict.FAIL
    expected = drift.psi([200, 200, 200, 200, 0], [10, 10, 30, 350, 0]).value
    assert check.value == pytest.approx(expected)
    assert "output value, bin 1" in check.message
    assert "stable 25.0%" in check.message
    assert "canary 87.5%" in check.message


def test_ks_uses_the_ordered_buckets_and_classes_join_psi_only():
    answer = buckets("canary", [0, 100, 100, 200, 0]) + buckets("stable", [100, 100, 100, 100, 0])
    check = judge_prediction_drift(drift_spec(statistic="ks", max=0.2), "q", answer, [], "canary")
    assert check.value == pytest.approx(0.25)  # the gap of the cumulative shares at 0.25
    assert check.verdict == Verdict.FAIL
    classes = [
        sample(390, track="canary", **{"class": "fraud"}),
        sample(10, track="canary", **{"class": "ok"}),
        sample(200, track="stable", **{"class": "fraud"}),
        sample(200, track="stable", **{"class": "ok"}),
    ]
    same = buckets("canary", [100] * 4 + [0]) + buckets("stable", [100] * 4 + [0])
    by_class = judge_prediction_drift(drift_spec(), "q", same, classes, "canary")
    assert by_class.verdict == Verdict.FAIL
    assert "output class, bin ok" in by_class.message


def test_too_few_rows_is_no_data_and_a_failed_query_an_error():
    few = buckets("canary", [10, 10, 10, 10, 0]) + buckets("stable", [200] * 4 + [0])
    check = judge_prediction_drift(drift_spec(), "q", few, [], "canary")
    assert check.verdict == Verdict.NO_DATA
    assert "canary 40, fewer than drift.minRows 100" in check.message
    failed = judge_prediction_drift(drift_spec(), "q", QueryFailed("down"), [], "canary")
    assert (failed.verdict, failed.message) == (Verdict.ERROR, "down")


def test_the_stable_alone_is_compared_with_its_profile():
    predicted = [
        sample(300, output="score", bin="0"),
        sample(100, output="score", bin="1"),
    ]
    profile = [sample(0.5, output="score", bin="0"), sample(0.5, output="score", bin="1")]
    check = judge_prediction_drift_from_profile(drift_spec(), "q", predicted, profile)
    assert check.value == pytest.approx(drift.psi([1, 1], [3, 1]).value)
    assert "profile 50.0%" in check.message
    missing = judge_prediction_drift_from_profile(drift_spec(), "q", predicted, [])
    assert missing.verdict == Verdict.ERROR
    assert "modelserver_profile_prediction_share" in missing.message


# --- feature drift ----------------------------------------------------------------------


def features_spec() -> api.DriftSpec:
    return api.DriftSpec.model_validate(
        {"features": {"maxPSI": 0.2, "worstFeatures": 2}, "minRows": 100}
    )


def test_the_worst_features_are_named_with_their_bins():
    profile = [
        sample(share, feature=name, bin=b)
        for name in ("age", "income", "score")
        for b, share in (("0", 0.5), ("1", 0.5), ("missing", 0.0))
    ]
    live = [
        *(sample(n, feature="age", bin=b) for b, n in (("0", 100), ("1", 100))),
        *(sample(n, feature="income", bin=b) for b, n in (("0", 190), ("1", 10))),
        *(sample(n, feature="score", bin=b) for b, n in (("0", 120), ("1", 60), ("missing", 20))),
    ]
    check = judge_feature_drift(features_spec(), "q", live, profile, "canary")
    assert check.verdict == Verdict.FAIL
    assert check.name == FEATURE_DRIFT_CHECK
    assert check.value == pytest.approx(drift.psi([0.5, 0.5, 0], [190, 10, 0]).value)
    assert check.message.index("income") < check.message.index("score")
    assert "age" not in check.message  # two worst only
    assert "income 1.324 (bin 1: profile 50.0%, live 5.0%)" in check.message


def test_features_without_profile_shares_are_an_error_that_says_why():
    live = [sample(500, feature="age", bin="0")]
    check = judge_feature_drift(features_spec(), "q", live, [], "canary")
    assert check.verdict == Verdict.ERROR
    assert "did the server load model.profile" in check.message


# --- quality ----------------------------------------------------------------------------


def quality(**bounds: Any) -> api.QualitySpec:
    return api.QualitySpec.model_validate({"minFeedback": 100, **bounds})


def answers(
    task: str = "binary",
    rows: list[mq.Sample] | None = None,
    scores: list[mq.Sample] | None = None,
    errors: list[mq.Sample] | None = None,
) -> QualityAnswers:
    return QualityAnswers([sample(1, task=task)], rows or [], scores or [], errors or [])


def outcome_rows(track: str, correct: float, incorrect: float) -> list[mq.Sample]:
    return [
        sample(correct, track=track, result="correct"),
        sample(incorrect, track=track, result="incorrect"),
    ]


def test_accuracy_and_its_drop_against_the_stable():
    rows = outcome_rows("canary", 160, 40) + outcome_rows("stable", 190, 10)
    result = judge_quality(
        quality(minAccuracy=0.7, maxDropVsStable=0.1), "q", answers(rows=rows), "canary", True
    )
    checks = {c.name: c for c in result.checks}
    assert checks["accuracy"].verdict == Verdict.PASS
    assert checks["accuracy"].value == pytest.approx(0.8)
    drop = checks["accuracy-drop-vs-stable"]
    assert drop.verdict == Verdict.FAIL
    assert drop.value == pytest.approx(0.15)
    assert "canary 0.8, stable 0.95" in drop.message
    assert not result.awaiting_feedback


def test_too_few_labels_wait_for_feedback():
    rows = outcome_rows("canary", 30, 10) + outcome_rows("stable", 500, 10)
    result = judge_quality(
        quality(minAccuracy=0.7, maxDropVsStable=0.1), "q", answers(rows=rows), "canary", True
    )
    assert {c.verdict for c in result.checks} == {Verdict.NO_DATA}
    assert result.awaiting_feedback == {"accuracy", "accuracy-drop-vs-stable"}
    assert "40 labelled canary rows in the window, fewer than minFeedback 100" in (
        result.checks[0].message
    )


def test_auc_from_score_buckets_matches_scikit_learn_on_the_same_bins():
    negatives, positives = [40, 30, 20, 10, 0], [5, 10, 25, 40, 20]
    scores = []
    for true_class, per_bin in (("negative", negatives), ("positive", positives)):
        total = 0.0
        for le, rows in zip(LES, per_bin, strict=True):
            total += rows
            scores.append(sample(total, track="canary", true_class=true_class, le=le))
    result = judge_quality(
        quality(minAUC=0.9), "q", answers(scores=scores), "canary", compare_with_stable=False
    )
    (check,) = result.checks
    labels = [0] * sum(negatives) + [1] * sum(positives)
    bin_scores = [i for i, n in enumerate(negatives) for _ in range(n)]
    bin_scores += [i for i, n in enumerate(positives) for _ in range(n)]
    assert check.value == pytest.approx(roc_auc_score(labels, bin_scores))
    assert check.verdict == Verdict.FAIL


def test_mae_is_the_error_sum_over_the_count():
    errors = [sample(450, track="canary", part="sum"), sample(150, track="canary", part="count")]
    result = judge_quality(
        quality(maxMAE=2.5), "q", answers("regression", errors=errors), "canary", False
    )
    (check,) = result.checks
    assert (check.value, check.verdict) == (3.0, Verdict.FAIL)


def test_a_bound_the_model_cannot_have_is_an_error():
    result = judge_quality(quality(minAUC=0.8), "q", answers("multiclass"), "canary", False)
    (check,) = result.checks
    assert check.verdict == Verdict.ERROR
    assert "minAUC judges binary classifiers only" in check.message


# --- asked from an HTTP Prometheus ------------------------------------------------------


def vector(*rows: tuple[dict[str, str], float]) -> dict[str, Any]:
    result = [{"metric": labels, "value": [1.0, str(value)]} for labels, value in rows]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


class VectorPrometheus:
    """Answers each query by the first fragment it contains (else an empty vector)."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.queries: list[str] = []

    def __call__(self, request: Request) -> Reply:
        query = request.params.get("query", [""])[0]
        self.queries.append(query)
        for fragment, answer in self.answers.items():
            if fragment in query:
                return Reply(200, json.dumps(answer))
        return Reply(200, json.dumps(vector()))


def test_an_analysis_with_drift_fails_on_it_and_reports_it_like_the_other_checks():
    bucket_rows = [({"track": t, "le": le}, v) for t, cum in (
        ("canary", [300, 380, 390, 400, 400]), ("stable", [100, 200, 300, 400, 400])
    ) for le, v in zip(LES, cum, strict=True)]  # fmt: skip
    fake = VectorPrometheus(
        {
            mq.PREDICTION_VALUE_BUCKETS: vector(*bucket_rows),
            "sum(increase(modelserver_requests_total": vector(({}, 500)),
        }
    )
    spec = api.AnalysisSpec.model_validate({"drift": {"prediction": {"max": 0.2}, "minRows": 100}})

    async def run() -> api.AnalysisStatus:
        with LocalServer(fake) as server:
            async with PrometheusClient(server.url) as client:
                model = model_checks(client, spec, CANARY, STABLE)
                return await analyse(client, spec, CANARY, START, model)

    status = asyncio.run(run())
    checks = {c.name: c for c in status.checks}
    assert checks[PREDICTION_DRIFT_CHECK].verdict == Verdict.FAIL
    assert status.verdict == Verdict.FAIL
    assert not status.awaiting_feedback
    both = next(q for q in fake.queries if mq.PREDICTION_VALUE_BUCKETS in q)
    assert 'track="canary", model_version="2.1.0"' in both
    assert 'track="stable", model_version="2.0.0"' in both


# --- a step that waits for labels -------------------------------------------------------


def waiting(at: datetime) -> api.AnalysisStatus:
    check = api.CheckResult(
        name="accuracy", verdict=Verdict.NO_DATA, message="5 labelled canary rows ..."
    )
    return api.AnalysisStatus(
        at=at, verdict=Verdict.NO_DATA, requests=100, checks=[check], awaiting_feedback=True
    )


def feed(sim: Simulator, make: Any) -> Any:
    """Reconcile until an analysis is due, then judge `make(now)`; that decision."""
    for _ in range(200):
        if analysis_due(sim.observation()):
            break
        sim.step()
    observation = dataclasses.replace(sim.observation(), analysis=make(sim.now))
    decision = decide(observation)
    sim.status = decision.status
    sim.apply(decision)
    sim.advance(decision.requeue_after)
    return decision


def test_waiting_for_labels_holds_without_counting_until_the_deadline():
    spec = make_spec("1.0.0", steps=[50], inconclusive_limit=2, progress_deadline="1h")
    analysis = spec.analysis.model_copy(
        update={"quality": quality(minAccuracy=0.8, feedbackDeadline="2m")}
    )
    sim = Simulator(spec.model_copy(update={"analysis": analysis})).deployed()
    sim.set_spec(sim.spec.model_copy(update={"model": make_spec("2.0.0").model}))
    sim.run(lambda s: s.status.canary is not None and s.status.canary.ready_at is not None)

    held = [feed(sim, waiting) for _ in range(3)]  # 30 s apart: within the 2 minutes
    assert all(d.outcome is None for d in held)
    assert all(d.status.canary.inconclusive_checks == 0 for d in held)
    assert "not counted toward inconclusiveLimit" in held[0].events[-1].message
    started = held[0].status.canary.awaiting_feedback_since
    assert started is not None

    sim.now = started + timedelta(minutes=2, seconds=1)
    late = [feed(sim, waiting) for _ in range(2)]
    assert late[0].status.canary.inconclusive_checks == 1
    assert late[1].outcome == "RolledBack"
    assert "AnalysisInconclusive" in late[1].status.history[0].reason


def test_a_failed_drift_check_names_its_output_and_bin_in_the_failure_summary():
    answer = buckets("canary", [10, 10, 30, 350, 0]) + buckets("stable", [200, 200, 200, 200, 0])
    check = judge_prediction_drift(drift_spec(), "q", answer, [], "canary")
    status = api.AnalysisStatus(at=START, verdict=Verdict.FAIL, checks=[check])
    summary = failure_summary(status)
    assert summary.startswith("prediction-drift psi ")
    assert "> max 0.2; output value, bin 1: stable 25.0%, canary 87.5%" in summary
