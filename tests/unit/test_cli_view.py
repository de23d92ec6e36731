"""What `kubectl modeldeploy get`, `history` and `list` show, from API objects."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from modeldeploy.cli.render import plain_lines, view_renderable
from modeldeploy.cli.view import (
    Node,
    Row,
    Snapshot,
    Tone,
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
        ("ml", "churn", "Available", "1.0.0", "", "", "", "", "60m"),
        ("ml", "fraud", "Progressing", "1.0.0", "2.0.0", "2/3", "50%", "?", "60m"),
    ]
