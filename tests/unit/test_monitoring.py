"""Monitoring without a rollout: what a pass writes to status, when it warns, when it
clears, and when the next pass is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeldeploy import api, metrics, notify
from modeldeploy import model_promql as mq
from modeldeploy.analysis import NoData, QueryOutcome, Value
from modeldeploy.model_checks import QualityAnswers
from modeldeploy.monitoring import (
    MonitoringAnswers,
    assess,
    monitoring_due,
    seconds_until_due,
    unanswered,
)
from modeldeploy.rollout.model import Reason

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
Verdict = api.Verdict


def spec(**monitoring: Any) -> api.ModelDeploymentSpec:
    return api.ModelDeploymentSpec.model_validate(
        {
            "model": {
                "name": "fraud",
                "version": "2.0.0",
                "uri": "pvc://models/fraud/model.ubj",
                "profile": {"uri": "pvc://models/fraud/profile.json"},
            },
            "monitoring": {
                "interval": "5m",
                "drift": {"features": {"maxPSI": 0.2, "worstFeatures": 2}, "minRows": 100},
                **monitoring,
            },
        }
    )


def status(**fields: Any) -> api.ModelDeploymentStatus:
    stable = api.StableStatus(revision="abc", version="2.0.0", replicas=2, ready_replicas=2)
    return api.ModelDeploymentStatus(phase=api.Phase.AVAILABLE, stable=stable, **fields)


def features(age: tuple[float, float], income: tuple[float, float] = (100, 100)) -> list[mq.Sample]:
    return [
        mq.Sample({"feature": name, "bin": b}, n)
        for name, counts in (("age", age), ("income", income))
        for b, n in zip(("0", "1"), counts, strict=True)
    ]


PROFILE = [
    mq.Sample({"feature": name, "bin": b}, 0.5) for name in ("age", "income") for b in ("0", "1")
]


ALL_WINDOWS_KEPT, TWELVE_WINDOWS = Value(1.0), Value(12)


def answers(
    live: list[mq.Sample],
    *,
    rows: list[mq.Sample] | None = None,
    reference: list[mq.Sample] | None = None,
    share: QueryOutcome = ALL_WINDOWS_KEPT,
    windows: QueryOutcome = TWELVE_WINDOWS,
) -> MonitoringAnswers:
    quality = QualityAnswers([mq.Sample({"task": "binary"}, 1)], rows or [], [], [])
    return MonitoringAnswers(live, PROFILE, [], [], quality, reference or [], share, windows)


def test_a_drifting_feature_is_named_warned_about_and_notified_once():
    first = assess(spec(), status(), answers(features(age=(190, 10))), NOW)
    drift = first.drift
    assert drift is not None
    assert drift.verdict == Verdict.FAIL
    assert drift.breached_since == NOW
    assert [f.feature for f in drift.features] == ["age", "income"]
    assert drift.features[0].psi > 0.2
    assert drift.features[0].bin == "1"
    assert drift.features[0].live_share == pytest.approx(0.05)
    (event,) = first.events
    assert (event.type, event.reason) == ("Warning", Reason.MODEL_DRIFT)
    assert "age" in event.message
    assert "(severity warning)" in event.message
    assert [n.kind for n in first.notifications] == [Reason.MODEL_DRIFT]

    again = assess(spec(), status(drift=drift), answers(features(age=(185, 15))), NOW)
    assert again.drift is not None
    assert again.drift.breached_since == NOW, "the first crossing is kept"
    assert again.events == [], "no new warning while it lasts"

    later = NOW + timedelta(minutes=10)
    recovered = assess(spec(), status(drift=again.drift), answers(features((98, 102))), later)
    assert recovered.drift is not None
    assert recovered.drift.breached_since is None
    assert [(e.type, e.reason) for e in recovered.events] == [
        ("Normal", Reason.MODEL_DRIFT_RECOVERED)
    ]


def test_too_little_traffic_neither_warns_nor_clears():
    breached = assess(spec(), status(), answers(features(age=(190, 10))), NOW).drift
    quiet = assess(spec(), status(drift=breached), answers(features((3, 2), (2, 3))), NOW)
    assert quiet.drift is not None
    assert quiet.drift.verdict == Verdict.NO_DATA
    assert quiet.drift.breached_since == NOW
    assert quiet.events == []


def test_quality_against_the_bound_and_the_profile_reference_is_critical():
    rows = [
        mq.Sample({"track": "stable", "result": "correct"}, 160),
        mq.Sample({"track": "stable", "result": "incorrect"}, 40),
    ]
    reference = [mq.Sample({"metric": "accuracy"}, 0.95)]
    watched = spec(quality={"minAccuracy": 0.7, "maxDropVsReference": 0.05, "minFeedback": 100})
    outcome = assess(
        watched, status(), answers(features((100, 100)), rows=rows, reference=reference), NOW
    )
    drift = outcome.drift
    assert drift is not None
    checks = {c.name: c for c in drift.checks}
    assert checks["accuracy"].verdict == Verdict.PASS
    assert checks["accuracy-drop-vs-reference"].verdict == Verdict.FAIL
    assert checks["accuracy-drop-vs-reference"].value == pytest.approx(0.15)
    assert drift.quality == api.QualityStatus(
        metric="accuracy", value=0.8, reference=0.95, feedback=200
    )
    (event,) = outcome.events
    assert event.reason == Reason.MODEL_QUALITY_DEGRADED
    assert "(severity critical)" in event.message


def test_the_error_budget_is_counted_and_its_exhaustion_warned_about():
    fine = assess(spec(), status(), answers(features((100, 100)), share=Value(0.995)), NOW)
    assert fine.slo.compliance == 0.995
    assert fine.slo.error_budget_remaining == pytest.approx(0.5)
    assert fine.slo.windows == 12
    assert fine.events == []

    spent = assess(spec(), status(), answers(features((100, 100)), share=Value(0.9)), NOW)
    assert spent.slo.error_budget_remaining == pytest.approx(-9)
    assert spent.slo.breached_since == NOW
    assert [e.reason for e in spent.events] == [Reason.SLO_BUDGET_SPENT]

    idle = assess(
        spec(), status(slo=spent.slo), answers(features((100, 100)), share=NoData("no")), NOW
    )
    assert idle.slo.windows == 0
    assert idle.slo.breached_since == NOW, "an idle period does not clear a spent budget"


def test_prometheus_out_of_reach_is_an_error_in_status_not_a_warning():
    outcome = assess(spec(), status(), unanswered("Prometheus at http://p:9090 unreachable"), NOW)
    assert outcome.drift is not None
    assert outcome.drift.verdict == Verdict.ERROR
    assert "unreachable" in outcome.drift.message
    assert "unreachable" in outcome.slo.message
    assert outcome.events == []


def test_a_pass_is_due_once_per_interval_and_again_for_a_new_stable():
    assert seconds_until_due(spec(), status(), NOW) == 0
    done = assess(spec(), status(), answers(features((100, 100))), NOW)
    after = status(drift=done.drift, slo=done.slo)
    assert not monitoring_due(spec(), after, NOW + timedelta(minutes=4))
    assert seconds_until_due(spec(), after, NOW + timedelta(minutes=4)) == 60
    assert monitoring_due(spec(), after, NOW + timedelta(minutes=5))
    assert after.stable is not None
    promoted = after.model_copy(
        update={"stable": after.stable.model_copy(update={"version": "3.0.0"})}
    )
    assert monitoring_due(spec(), promoted, NOW + timedelta(minutes=1))
    unmonitored = api.ModelDeploymentSpec.model_validate(
        {"model": {"name": "f", "version": "1", "uri": "pvc://m/f.ubj"}}
    )
    assert seconds_until_due(unmonitored, status(), NOW) is None


def test_gauges_show_the_last_pass_and_drop_features_no_longer_worst():
    drift = assess(spec(), status(), answers(features(age=(190, 10))), NOW)
    metrics.export_monitoring("ml", "fraud", drift.drift, drift.slo)
    sample = metrics.FEATURE_PSI.labels("ml", "fraud", "age")._value.get()
    assert sample == pytest.approx(drift.drift.features[0].psi)  # type: ignore[union-attr]
    assert metrics.SLO_COMPLIANCE.labels("ml", "fraud")._value.get() == 1.0
    assert drift.drift is not None
    fewer = drift.drift.model_copy(update={"features": drift.drift.features[1:]})
    metrics.export_monitoring("ml", "fraud", fewer, drift.slo)
    names = {
        s.labels["feature"]
        for m in metrics.FEATURE_PSI.collect()
        for s in m.samples
        if s.labels["name"] == "fraud"
    }
    assert names == {"income"}


def test_webhook_payloads_carry_the_severity():
    body = notify.payload(
        notify.Notification(
            kind=notify.NotificationKind.MODEL_QUALITY_DEGRADED,
            namespace="ml",
            name="fraud",
            version="2.0.0",
            revision="abc",
            message="accuracy-drop-vs-reference 0.15 > max 0.05",
        )
    )
    fields = {f["title"]: f["value"] for f in body["attachments"][0]["fields"]}
    assert fields["Severity"] == "critical"
    assert "got less accurate" in body["text"]


def test_a_broken_feedback_series_is_an_error_check_not_a_failed_reconcile():
    rows = [mq.Sample({"track": "stable"}, 160)]  # no `result` label: a broken contract
    watched = spec(quality={"minAccuracy": 0.7, "minFeedback": 100})
    outcome = assess(watched, status(), answers(features((100, 100)), rows=rows), NOW)
    assert outcome.drift is not None
    checks = {c.name: c for c in outcome.drift.checks}
    assert checks["accuracy"].verdict == Verdict.ERROR
    assert "lacks the 'result' label" in checks["accuracy"].message
