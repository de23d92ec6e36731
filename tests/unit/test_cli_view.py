"""What `kubectl modeldeploy get`, `history` and `list` show, from API objects."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from modeldeploy.cli.render import plain_lines, view_renderable
from modeldeploy.cli.shapes import Field, Tone
from modeldeploy.cli.view import (
    Node,
    Row,
    Snapshot,
    build_view,
    history_rows,
    list_rows,
    tree_lines,
)
from tests.unit.cli_objects import (
    analysis,
    canary_status,
    check,
    condition,
    deployment,
    event,
    md,
    pod,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def canary_snapshot(**overrides) -> Snapshot:
    obj = md(
        canary=canary_status(step=1, weight=50, actual=40, failed=1),
        analysis=analysis(
            check("request-volume", 120.0, min=20),
            check("error-rate", 0.002, max=0.01),
            check("latency-p99", 0.31, "Fail", max=0.25, message="p99 0.31s is above 0.25s"),
            verdict="Fail",
            step=1,
        ),
        conditions=[condition("Available", "True", "StableReady")],
        **overrides,
    )
    return Snapshot(
        md=obj,
        deployments=[
            deployment("canary", "2.0.0", "b2c3d4e5f6", 2, 1),
            deployment("stable", "1.0.0", "a1b2c3d4e5", 3, 3),
        ],
        pods=[
            pod("fraud-stable-x-2", "stable"),
            pod("fraud-stable-x-1", "stable", restarts=2),
            pod("fraud-canary-y-1", "canary"),
            pod("fraud-canary-y-2", "canary", ready=False, phase="Pending", waiting="ErrImagePull"),
        ],
        events=[
            event("StepAdvanced", "advanced to step 2 of 3 (50%)", "2026-03-01T11:59:00Z"),
            event("CanaryStarted", "canary 2.0.0 started", "2026-03-01T11:58:00Z"),
            event(
                "Promoted", "an older object of the same name", "2026-02-01T00:00:00Z", uid="other"
            ),
            event(
                "AnalysisFailed",
                "latency-p99 0.31 > 0.25",
                "2026-03-01T11:59:30Z",
                kind="Warning",
                count=2,
            ),
        ],
    )


def rows(node: Node) -> dict[str, Row]:
    return {row.name: row for _, row in tree_lines(node)}


def test_summary_has_phase_step_and_set_and_achieved_weight():
    view = build_view(canary_snapshot(), NOW)
    summary = {item.label: item for item in view.summary}
    assert summary["Phase"].value == "Progressing"
    assert summary["Step"].value == "2/3 (steps 20%, 50%, 80%)"
    assert summary["Weight"].value == "set 50%, achieved 40%"
    assert summary["Analyses"].value == "failed 1/3, inconclusive 0/5"
    assert summary["Analyses"].tone == Tone.BAD
    assert summary["Stable"].value == "1.0.0 (revision a1b2c3d4e5), 3/3 ready"
    assert summary["Canary"].value == "2.0.0 (revision b2c3d4e5f6), 1/1 ready"


def test_tree_puts_stable_then_canary_each_with_its_pods_then_the_analysis():
    view = build_view(canary_snapshot(), NOW)
    lines = [(guide, row.name) for guide, row in tree_lines(view.tree)]
    assert lines == [
        ("", "fraud"),
        ("├── ", "fraud-stable"),
        ("│   ├── ", "fraud-stable-x-1"),
        ("│   └── ", "fraud-stable-x-2"),
        ("├── ", "fraud-canary"),
        ("│   ├── ", "fraud-canary-y-1"),
        ("│   └── ", "fraud-canary-y-2"),
        ("└── ", "analysis"),
        ("    ├── ", "request-volume"),
        ("    ├── ", "error-rate"),
        ("    └── ", "latency-p99"),
    ]


def test_tree_rows_carry_readiness_versions_and_weights():
    found = rows(build_view(canary_snapshot(), NOW).tree)
    assert found["fraud"].info == "step 2/3, weight 50% (achieved 40%)"
    assert found["fraud"].age == "60m"
    assert (found["fraud-stable"].status, found["fraud-stable"].tone) == ("Ready", Tone.GOOD)
    assert found["fraud-stable"].info == "1.0.0, revision a1b2c3d4e5, ready 3/3"
    assert (found["fraud-canary"].status, found["fraud-canary"].tone) == ("Progressing", Tone.BUSY)
    assert found["fraud-canary"].info == "2.0.0, revision b2c3d4e5f6, ready 1/2"
    assert found["fraud-stable-x-1"].info == "ready 1/1, restarts 2"
    assert found["fraud-stable-x-1"].age == "2m"
    assert (found["fraud-canary-y-2"].status, found["fraud-canary-y-2"].tone) == (
        "ErrImagePull",
        Tone.BAD,
    )


def test_a_deployment_rolling_to_a_new_template_is_not_ready_until_every_pod_runs_it():
    def stable_status(**rollout) -> tuple[str, str]:
        snapshot = Snapshot(
            md=md(phase="Promoting"),
            deployments=[deployment("stable", "2.0.0", "b2c3d4e5f6", 2, 2, **rollout)],
            pods=[
                pod("fraud-stable-old-1", "stable", version="1.0.0"),
                pod("fraud-stable-new-1", "stable", version="2.0.0"),
            ],
        )
        found = rows(build_view(snapshot, NOW).tree)
        assert found["fraud-stable-old-1"].info == "ready 1/1, serves 1.0.0"
        assert found["fraud-stable-new-1"].info == "ready 1/1"
        return found["fraud-stable"].status, found["fraud-stable"].info

    # The template changed and the controller has not caught up yet.
    assert stable_status(generation=2, observed=1)[0] == "Progressing"
    # Surging: two new pods ready, one old pod left.
    assert stable_status(generation=2, observed=2, total=3, updated=2) == (
        "Progressing",
        "2.0.0, revision b2c3d4e5f6, ready 2/2",
    )
    assert stable_status(generation=2, observed=2)[0] == "Ready"


def test_each_check_shows_value_bounds_verdict_and_why_it_failed():
    found = rows(build_view(canary_snapshot(), NOW).tree)
    assert (found["analysis"].status, found["analysis"].age) == ("Fail", "30s")
    assert found["analysis"].info == "step 2, 120 canary requests"
    assert (found["error-rate"].status, found["error-rate"].info) == ("Pass", "0.002 (max 0.01)")
    assert found["request-volume"].info == "120 (min 20)"
    latency = found["latency-p99"]
    assert (latency.status, latency.tone) == ("Fail", Tone.BAD)
    assert latency.info == "0.31 (max 0.25): p99 0.31s is above 0.25s"


def test_a_check_without_a_value_says_so():
    snapshot = Snapshot(
        md=md(
            canary=canary_status(), analysis=analysis(check("error-rate", None, "NoData", max=0.01))
        )
    )
    found = rows(build_view(snapshot, NOW).tree)
    assert (found["error-rate"].info, found["error-rate"].tone) == ("none (max 0.01)", Tone.PAUSED)


def test_events_are_this_objects_oldest_first_with_counts():
    events = build_view(canary_snapshot(), NOW).events
    assert [(e.age, e.type, e.reason) for e in events] == [
        ("2m", "Normal", "CanaryStarted"),
        ("60s", "Normal", "StepAdvanced"),
        ("30s (x2)", "Warning", "AnalysisFailed"),
    ]


def test_events_of_the_same_second_keep_the_order_they_were_stored_in():
    at = "2026-03-01T11:59:00Z"
    snapshot = Snapshot(
        md=md(),
        events=[
            event("Paused", "paused at step 2", at, resource_version="1210"),
            event("StepPromoted", "moved to step 2", at, resource_version="1209"),
            event("PromotionStarted", "later", "2026-03-01T11:59:01Z", resource_version="99"),
        ],
    )
    reasons = [e.reason for e in build_view(snapshot, NOW).events]
    assert reasons == ["StepPromoted", "Paused", "PromotionStarted"]


def test_a_paused_canary_reads_as_paused_and_says_by_what():
    view = build_view(canary_snapshot(paused_by_request=True, paused=True), NOW)
    summary = {item.label: item for item in view.summary}
    assert (summary["Phase"].value, summary["Phase"].tone) == ("Paused", Tone.PAUSED)
    assert summary["Paused"].value == "by spec.rollout.paused and modeldeploy.dev/pause"


def test_requests_not_acted_on_yet_are_listed():
    obj = md(annotations={"modeldeploy.dev/promote-step": "t2", "modeldeploy.dev/abort": "t1"})
    obj["status"]["handledRequests"] = {"modeldeploy.dev/abort": "t1"}
    summary = {item.label: item.value for item in build_view(Snapshot(md=obj), NOW).summary}
    assert summary["Requests"] == "promote-step (not acted on yet)"


def test_a_rolled_back_object_shows_the_rejected_revision_and_a_scaled_down_canary():
    obj = md(phase="RolledBack", rejected="b2c3d4e5f6", message="rolled back")
    snapshot = Snapshot(
        md=obj,
        deployments=[
            deployment("stable", "1.0.0", "a1b2c3d4e5", 3, 3),
            deployment("canary", "2.0.0", "b2c3d4e5f6", 0, 0),
        ],
    )
    view = build_view(snapshot, NOW)
    summary = {item.label: item.value for item in view.summary}
    assert summary["Rejected"] == "revision b2c3d4e5f6 (`retry` tries it again)"
    assert rows(view.tree)["fraud-canary"].status == "ScaledDown"
    assert rows(view.tree)["fraud"].info == "serving 1.0.0"


def render(snapshot: Snapshot, width: int) -> str:
    console = Console(width=width, color_system=None)
    return plain_lines(console, view_renderable(build_view(snapshot, NOW), width))


def test_rendered_tree_reads_without_colour_and_aligns_its_columns():
    text = render(canary_snapshot(), 160)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("NAME"))
    assert header.split() == ["NAME", "KIND", "STATUS", "AGE", "INFO"]
    latency = next(line for line in lines if "latency-p99" in line)
    assert latency.startswith("    └── · latency-p99")
    assert "✖ Fail" in latency
    assert "0.31 (max 0.25)" in latency
    assert latency.index("✖ Fail") == header.index("STATUS")
    assert "Weight:      set 50%, achieved 40%" in text
    assert "30s (x2)  Warning  AnalysisFailed  latency-p99 0.31 > 0.25" in text
    assert all(line == line.rstrip() for line in lines)


def test_a_narrow_terminal_drops_the_kind_column_before_the_info():
    text = render(canary_snapshot(), 90)
    header = next(line for line in text.splitlines() if line.startswith("NAME"))
    assert header.split() == ["NAME", "STATUS", "AGE", "INFO"]
    assert "0.002 (max 0.01)" in text


def test_history_rows_are_newest_first_with_time_and_reason():
    history = [
        {
            "revision": "b2",
            "version": "2.0.0",
            "outcome": "RolledBack",
            "reason": "Aborted",
            "at": "2026-03-01T11:59:00Z",
        },
        {
            "revision": "a1",
            "version": "1.0.0",
            "outcome": "Deployed",
            "reason": "first deployment",
            "at": "2026-03-01T11:00:00Z",
        },
    ]
    assert history_rows(md(history=history), NOW) == [
        ("60s", "2026-03-01 11:59:00", "2.0.0", "b2", "RolledBack", "Aborted"),
        ("60m", "2026-03-01 11:00:00", "1.0.0", "a1", "Deployed", "first deployment"),
    ]


def test_list_rows_show_versions_step_and_weights():
    walking = md(canary=canary_status(step=1, weight=50, actual=None))
    steady = md(phase="Available")
    steady["metadata"]["name"] = "churn"
    assert list_rows([walking, steady], NOW, with_namespace=True) == [
        ("ml", "churn", "Available", "1.0.0", "", "", "", "", "", "60m"),
        ("ml", "fraud", "Progressing", "1.0.0", "2.0.0", "2/3", "50%", "?", "", "60m"),
    ]


def waiting_for_labels(since: str | None, quality: dict | None = None) -> dict:
    """A canary whose last analysis holds only for quality labels."""
    obj = md(
        canary=canary_status(),
        analysis=analysis(
            check("error-rate", 0.002, max=0.01),
            check(
                "accuracy",
                None,
                "NoData",
                min=0.9,
                message="12 labelled canary rows in the window, fewer than minFeedback 100: "
                "waiting for feedback",
            ),
            verdict="NoData",
        ),
    )
    obj["spec"]["analysis"] = {"quality": quality or {"minAccuracy": 0.9}}
    obj["status"]["lastAnalysis"]["awaitingFeedback"] = True
    if since is not None:
        obj["status"]["canary"]["awaitingFeedbackSince"] = since
    return obj


def summary_of(obj: dict) -> dict[str, Field]:
    return {item.label: item for item in build_view(Snapshot(md=obj), NOW).summary}


def test_a_step_waiting_for_labels_says_since_when_and_until_when_it_is_not_counted():
    obj = waiting_for_labels(
        "2026-03-01T11:45:00Z", {"minAccuracy": 0.9, "feedbackDeadline": "30m"}
    )
    feedback = summary_of(obj)["Feedback"]
    assert feedback.value == (
        "waiting for quality labels since 2026-03-01 11:45:00 UTC (15m ago); not counted as "
        "inconclusive until 2026-03-01 12:15:00 UTC (in 15m)"
    )
    assert feedback.tone == Tone.BUSY
    found = rows(build_view(Snapshot(md=obj), NOW).tree)
    assert found["analysis"].info == "step 1, 120 canary requests, waiting for quality labels"


def test_past_the_feedback_deadline_the_waits_count():
    # feedbackDeadline left out: the CRD's default, 1h
    obj = waiting_for_labels("2026-03-01T10:30:00Z")
    assert summary_of(obj)["Feedback"].value == (
        "waiting for quality labels since 2026-03-01 10:30:00 UTC (90m ago); feedbackDeadline "
        "passed 2026-03-01 11:30:00 UTC (30m ago): each analysis still waiting counts as "
        "inconclusive"
    )


def test_a_paused_canary_waiting_for_labels_has_no_clock_running():
    # the operator does not judge a paused canary's analyses, so it starts no wait
    assert summary_of(waiting_for_labels(None))["Feedback"].value == "waiting for quality labels"


def test_a_wait_of_an_earlier_canary_is_not_this_ones():
    obj = waiting_for_labels("2026-03-01T11:45:00Z")
    obj["status"]["lastAnalysis"]["revision"] = "0ld0ld0ld0"
    assert "Feedback" not in summary_of(obj)


FEATURE_MESSAGE = (
    "psi 0.41 > max 0.2; worst features: amount 0.41 (bin 9: profile 10.0%, live 38.0%), "
    "merchant_age 0.12 (bin 0: profile 10.0%, live 17.5%)"
)


def monitored(drift: dict | None, slo: dict | None) -> dict:
    obj = md(phase="Available", message="stable 1.0.0 serves all traffic")
    if drift is not None:
        obj["status"]["drift"] = drift
    if slo is not None:
        obj["status"]["slo"] = slo
    return obj


def drifted() -> dict:
    return {
        "at": "2026-03-01T11:58:00Z",
        "version": "1.0.0",
        "window": "5m",
        "verdict": "Fail",
        "message": f"feature-drift: {FEATURE_MESSAGE}",
        "rows": 14800.0,
        "features": [
            {
                "feature": "amount",
                "psi": 0.41,
                "bin": "9",
                "profileShare": 0.1,
                "liveShare": 0.38,
            },
            {
                "feature": "merchant_age",
                "psi": 0.12,
                "bin": "0",
                "profileShare": 0.1,
                "liveShare": 0.175,
            },
        ],
        "prediction": {"statistic": "ks", "value": 0.04, "output": "score", "max": 0.1},
        "quality": {"metric": "accuracy", "value": 0.92, "reference": 0.94, "feedback": 12345.0},
        "checks": [
            check("feature-drift", 0.41, "Fail", max=0.2, message=FEATURE_MESSAGE),
            check("prediction-drift", 0.04, max=0.1),
            check("accuracy", 0.92, min=0.88),
            check("accuracy-drop-vs-reference", 0.02, max=0.03),
        ],
        "breachedSince": "2026-03-01T11:40:00Z",
    }


def slo_status(compliance: float | None, left: float | None, spent: str | None = None) -> dict:
    slo: dict = {
        "at": "2026-03-01T11:58:00Z",
        "version": "1.0.0",
        "period": "168h",
        "objective": 0.99,
        "windows": 2016,
        "message": "no window with traffic in the last 168h",
    }
    if compliance is not None:
        slo["compliance"] = compliance
    if left is not None:
        slo["errorBudgetRemaining"] = left
    if spent is not None:
        slo["breachedSince"] = spent
    return slo


def monitoring_of(obj: dict) -> dict[str, Field]:
    return {item.label: item for item in build_view(Snapshot(md=obj), NOW).monitoring}


def test_monitoring_shows_the_drift_found_the_worst_features_outputs_quality_and_slo():
    found = monitoring_of(monitored(drifted(), slo_status(0.995, 0.5)))
    assert list(found) == [
        "Last pass",
        "Drift",
        "Features",
        "Prediction",
        "Quality",
        "SLO",
        "Error budget",
    ]
    assert found["Last pass"].value == (
        "2026-03-01 11:58:00 UTC (2m ago): stable 1.0.0, window 5m, 14800 rows"
    )
    assert found["Drift"].value == (
        f"Fail since 2026-03-01 11:40:00 UTC (20m ago): feature-drift: {FEATURE_MESSAGE}"
    )
    assert found["Drift"].tone == Tone.BAD
    assert found["Features"].value.splitlines() == [
        "amount: PSI 0.41 > max 0.2 (bin 9: profile 10.0%, live 38.0%)",
        "merchant_age: PSI 0.12 (bin 0: profile 10.0%, live 17.5%)",
    ]
    assert found["Prediction"].value == "ks 0.04 (max 0.1), output score"
    assert found["Quality"].value == (
        "accuracy 0.92 (min 0.88) on 12345 labelled rows; reference 0.94, drop 0.02 (max 0.03)"
    )
    assert found["SLO"].value == (
        "99.50% of 2016 windows kept the SLO over 168h (objective 99.00%)"
    )
    assert (found["Error budget"].value, found["Error budget"].tone) == ("50% left", Tone.GOOD)


def test_a_crossing_stands_through_a_pass_that_cannot_judge_and_a_spent_budget_says_since():
    drift = {
        "at": "2026-03-01T11:58:00Z",
        "version": "1.0.0",
        "window": "5m",
        "verdict": "NoData",
        "message": "feature-drift: 120 stable rows in the window, fewer than drift.minRows 200",
        "breachedSince": "2026-03-01T11:40:00Z",
    }
    slo = slo_status(0.9702, -1.98, spent="2026-02-28T23:00:00Z")
    found = monitoring_of(monitored(drift, slo))
    assert found["Drift"].value == (
        "NoData: feature-drift: 120 stable rows in the window, fewer than drift.minRows 200; "
        "the crossing found 2026-03-01 11:40:00 UTC (20m ago) stands"
    )
    assert found["Drift"].tone == Tone.BAD
    assert found["Error budget"].value == (
        "-198% left, spent since 2026-02-28 23:00:00 UTC (13h ago)"
    )
    assert found["Error budget"].tone == Tone.BAD


def test_slo_monitoring_alone_and_a_period_without_traffic():
    found = monitoring_of(monitored(None, slo_status(None, None)))
    assert found["Last pass"].value == "2026-03-01 11:58:00 UTC (2m ago): stable 1.0.0, over 168h"
    assert (found["SLO"].value, found["SLO"].tone) == (
        "no window with traffic in the last 168h",
        Tone.QUIET,
    )
    assert "Error budget" not in found
    # a budget found spent earlier stays spent while no window can be counted
    spent = monitoring_of(monitored(None, slo_status(None, None, spent="2026-03-01T10:00:00Z")))
    assert spent["Error budget"].value == (
        "not measured, spent since 2026-03-01 10:00:00 UTC (120m ago)"
    )


def test_without_spec_monitoring_get_has_no_monitoring_section():
    assert build_view(canary_snapshot(), NOW).monitoring == ()
    assert "Monitoring:" not in render(canary_snapshot(), 160)


def test_the_monitoring_section_comes_after_the_tree_and_before_the_events():
    snapshot = Snapshot(
        md=monitored(drifted(), slo_status(0.995, 0.5)),
        events=[event("ModelDrift", "the stable 1.0.0 crossed a bound", "2026-03-01T11:40:00Z")],
    )
    lines = render(snapshot, 160).splitlines()
    heading = lines.index("Monitoring:")
    assert heading > next(i for i, line in enumerate(lines) if line.startswith("NAME"))
    assert heading < lines.index("Events:")
    drift_line = next(line for line in lines if line.startswith("Drift:"))
    assert "✖ Fail since 2026-03-01 11:40:00 UTC (20m ago)" in drift_line
    amount = next(line for line in lines if line.startswith("Features:"))
    merchant = next(line for line in lines if "merchant_age: PSI 0.12" in line)
    # one feature a line, in the value column
    assert merchant.index("merchant_age") == amount.index("amount: PSI 0.41")


def test_a_shadow_shows_its_passes_instead_of_a_step_and_weight():
    obj = md(canary={**canary_status(weight=0, actual=None), "stage": "Shadow", "shadowPasses": 1})
    obj["spec"]["strategy"] = {"type": "canary", "shadow": {"analyses": 4}}
    snapshot = Snapshot(md=obj, deployments=[], pods=[], events=[])
    summary = {item.label: item.value for item in build_view(snapshot, NOW).summary}
    assert summary["Shadow"] == (
        "1/4 analyses of mirrored traffic passed; no live traffic, clients never see its answers"
    )
    assert "Step" not in summary
    assert "Weight" not in summary
    (row,) = list_rows([obj], NOW, with_namespace=False)
    assert row[4] == "shadow, 1/4 passed"
