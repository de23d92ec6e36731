"""What `kubectl modeldeploy get` and `list` show of an A/B experiment: the arms' traffic
and pods while it runs, each variant's numbers against control once judged, the winner
and its patch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rich.console import Console

from modeldeploy.cli.render import plain_lines, view_renderable
from modeldeploy.cli.shapes import Field, Grid, Tone
from modeldeploy.cli.view import Snapshot, View, build_view, list_rows, tree_lines
from tests.unit.cli_objects import (
    CUT_REASON,
    WINNER_PATCH,
    arm,
    concluded,
    deployment,
    experimenting,
    pod,
)

NOW = datetime(2026, 3, 1, 12, 30, 0, tzinfo=UTC)


def view_of(obj: dict, **snapshot) -> View:
    return build_view(Snapshot(md=obj, **snapshot), NOW)


def fields(view: View) -> dict[str, Field]:
    return {item.label: item for item in view.experiment}


def grid(view: View, title: str) -> list[tuple[str, ...]]:
    found: Grid = next(g for g in view.arms if g.title == title)
    return [tuple(cell.text for cell in row) for row in found.rows]


def render(obj: dict, width: int, **snapshot) -> str:
    console = Console(width=width, color_system=None)
    return plain_lines(console, view_renderable(view_of(obj, **snapshot), width))


def test_a_running_experiment_shows_each_arms_weights_pods_and_a_cut_arm_with_its_reason():
    view = view_of(experimenting())
    summary = {item.label: item for item in view.summary}
    assert (summary["Phase"].value, summary["Phase"].tone) == ("Experimenting", Tone.BUSY)
    assert grid(view, "Arms:") == [
        ("control", "1.0.0", "80%", "79%", "3/3", "Running", ""),
        ("deeper", "1.1.0-deeper", "20%", "21%", "1/1", "Running", ""),
        ("fresh", "1.1.0-fresh", "cut", "", "1/1", "Cut", CUT_REASON),
    ]
    cut_state = next(g for g in view.arms if g.title == "Arms:").rows[2][5]
    assert cut_state.tone == Tone.BAD
    # nothing judged yet: no verdict table
    assert [g.title for g in view.arms] == ["Arms:"]


def test_a_running_experiment_says_since_when_it_counts_and_when_the_verdict_is_due():
    found = fields(view_of(experimenting()))
    assert found["Experiment"].value == "Running, attempt 1 (id 3f9a0c1d2e)"
    assert found["Message"].value == "counting until 2026-03-01T15:00:00+00:00"
    assert found["Metric"].value == (
        "successQuery / totalQuery; 95% intervals, p-values Holm-adjusted across the variants"
    )
    assert found["Counting"].value == "since 2026-03-01 12:00:00 UTC (30m ago)"
    assert found["Verdict due"].value == (
        "2026-03-01 15:00:00 UTC (in 150m), once every arm has minSamples"
    )
    assert "Winner" not in found


def test_before_every_arms_pods_are_ready_the_experiment_does_not_count():
    obj = experimenting()
    del obj["status"]["experiment"]["readyAt"]
    del obj["status"]["experiment"]["endsAt"]
    found = fields(view_of(obj))
    assert found["Counting"].value == "not yet: waiting for every arm's pods"
    assert "Verdict due" not in found


def test_the_tree_shows_each_variants_deployment_after_the_stable_and_the_split_at_its_root():
    snapshot = {
        "deployments": [
            deployment("v-deeper", "1.1.0-deeper", "deep000000", 1, 1),
            deployment("stable", "1.0.0", "a1b2c3d4e5", 3, 3),
        ],
        "pods": [pod("fraud-v-deeper-x-1", "v-deeper", version="1.1.0-deeper")],
    }
    lines = [(guide, row) for guide, row in tree_lines(view_of(experimenting(), **snapshot).tree)]
    assert [row.name for _, row in lines] == [
        "fraud",
        "fraud-stable",
        "fraud-v-deeper",
        "fraud-v-deeper-x-1",
    ]
    assert lines[0][1].info == (
        "experiment: control 80% (achieved 79%), deeper 20% (achieved 21%), fresh cut"
    )
    assert lines[2][1].info == "1.1.0-deeper, revision deep000000, ready 1/1"


def test_a_concluded_experiment_shows_rates_differences_intervals_p_values_and_outcomes():
    view = view_of(concluded())
    assert grid(view, "Verdict:") == [
        ("control", "1.0.0", "control", "rate 4.12% [3.75..4.53] (412/10000)"),
        (
            "deeper",
            "1.1.0-deeper",
            "Better",
            "rate 4.93% [4.52..5.38] (493/10000), +0.81 pp [+0.25..+1.37] vs control, "
            "p 0.00511 (Holm-adjusted 0.01022)",
        ),
        ("fresh", "1.1.0-fresh", "Cut", CUT_REASON),
    ]
    verdict = next(g for g in view.arms if g.title == "Verdict:")
    assert verdict.columns[3] == "NUMBERS (95% intervals)"
    assert [row[2].tone for row in verdict.rows] == [Tone.QUIET, Tone.GOOD, Tone.BAD]
    # the experiment ended: its arms carry no traffic, so no traffic table
    assert [g.title for g in view.arms] == ["Verdict:"]


def test_a_concluded_experiment_names_its_winner_the_command_that_applies_it_and_the_patch():
    view = view_of(concluded())
    found = fields(view)
    assert (found["Experiment"].value, found["Experiment"].tone) == (
        "Concluded, attempt 1 (id 3f9a0c1d2e)",
        Tone.GOOD,
    )
    assert found["Message"].value.startswith("deeper wins: deeper Better")
    assert found["Ended"].value == "2026-03-01 11:30:00 UTC (60m ago)"
    assert found["Winner"].value == (
        "deeper (1.1.0-deeper): `kubectl modeldeploy apply-winner fraud` makes it the model, "
        "rolled out as a canary (GitOps: put the patch in Git)"
    )
    assert found["Patch"].value == WINNER_PATCH
    summary = {item.label: item for item in view.summary}
    assert (summary["Phase"].value, summary["Phase"].tone) == ("Available", Tone.GOOD)


def test_no_winner_and_the_outcomes_that_say_why():
    same = arm(
        "deeper",
        "1.1.0-deeper",
        0,
        0,
        successes=421,
        samples=10000,
        rate=0.0421,
        difference=0.0009,
        differenceLow=-0.0048,
        differenceHigh=0.0066,
        pValue=0.61,
        adjustedPValue=0.61,
        outcome="NoSignificantDifference",
    )
    short = arm("fresh", "1.1.0-fresh", 0, 0, samples=800, outcome="InsufficientData")
    obj = concluded(winner=None)
    obj["status"]["experiment"]["variants"] = [same, short]
    view = view_of(obj)
    found = fields(view)
    assert (found["Winner"].value, found["Winner"].tone) == (
        "none: control stays the model",
        Tone.QUIET,
    )
    assert "Patch" not in found
    rows = grid(view, "Verdict:")
    assert rows[1][2:] == (
        "NoSignificantDifference",
        "rate 4.21% (421/10000), +0.09 pp [-0.48..+0.66] vs control, p 0.61 (Holm-adjusted 0.61)",
    )
    assert rows[2][2:] == ("InsufficientData", "800 samples")


def test_a_stopped_experiment_shows_what_was_not_judged():
    obj = experimenting(
        "Stopped",
        arms=(arm("control", "1.0.0", 100, 100, 3, 3), [arm("deeper", "1.1.0-deeper", 0, 0)]),
        message="stopped: aborted by modeldeploy.dev/abort; control serves all traffic",
    )
    view = view_of(obj)
    found = fields(view)
    assert (found["Experiment"].tone, found["Message"].value) == (
        Tone.QUIET,
        "stopped: aborted by modeldeploy.dev/abort; control serves all traffic",
    )
    assert grid(view, "Verdict:")[1][2:] == ("not judged", "not counted")
    assert "Winner" not in found


def test_an_experiment_of_an_earlier_spec_says_so():
    obj = concluded()
    obj["spec"]["strategy"] = {"type": "canary"}
    found = fields(view_of(obj))
    assert found["Experiment"].value == (
        "Concluded, attempt 1 (id 3f9a0c1d2e); the spec no longer runs it"
    )
    # the spec no longer says the significance the intervals were computed at
    assert found["Metric"].value.startswith("successQuery / totalQuery; 1 - significance intervals")
    verdict = next(g for g in view_of(obj).arms if g.title == "Verdict:")
    assert verdict.columns[3] == "NUMBERS (1 - significance intervals)"


def test_without_an_experiment_get_has_no_experiment_section():
    obj = experimenting()
    del obj["status"]["experiment"]
    plain = view_of(obj)
    assert (plain.experiment, plain.arms) == ((), ())
    assert "Arms:" not in render(obj, 120)


@pytest.mark.parametrize("width", [80, 100, 160])
def test_rendered_experiment_cuts_no_number_even_in_a_narrow_terminal(width):
    text = render(concluded(), width)
    lines = text.splitlines()
    assert "…" not in text
    header = next(line for line in lines if line.startswith("ARM"))
    assert header.split()[:3] == ["ARM", "VERSION", "OUTCOME"]
    deeper = next(line for line in lines if line.startswith("deeper "))
    assert "✔ Better" in deeper
    flat = " ".join(text.split())
    assert "+0.81 pp [+0.25..+1.37] vs control" in flat
    assert "(Holm-adjusted 0.01022)" in flat
    assert lines.index("Verdict:") > next(i for i, x in enumerate(lines) if x.startswith("NAME"))
    assert "Patch:" in text
    assert all(line == line.rstrip() for line in lines)
    running = render(experimenting(), width)
    assert "…" not in running
    fresh = next(line for line in running.splitlines() if line.startswith("fresh "))
    assert "✖ Cut" in fresh
    assert "3 failed SLO" in fresh


def test_list_has_an_experiment_column():
    running, won = experimenting(), concluded()
    won["metadata"]["name"] = "churn"
    lost = concluded(winner=None)
    lost["metadata"]["name"] = "ads"
    stopped = experimenting("Stopped", message="stopped: every variant was cut")
    stopped["metadata"]["name"] = "search"
    rows = {row[0]: row for row in list_rows([running, won, lost, stopped], NOW, False)}
    assert rows["fraud"][1:8] == (
        "Experimenting",
        "1.0.0",
        "",
        "",
        "",
        "",
        "Running, 1 of 2 variants cut",
    )
    assert rows["churn"][7] == "Concluded, deeper wins"
    assert rows["ads"][7] == "Concluded, no winner"
    assert rows["search"][7] == "Stopped"
