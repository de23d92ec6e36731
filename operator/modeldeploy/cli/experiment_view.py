"""The experiment section of `get`, and the experiment's words in `status` and the tree:
pure, no I/O.

While the experiment runs, the arms' traffic (set and achieved), pods and state (a cut
arm with its reason); once judged, each arm's rate and each variant's difference from
control with their intervals, the Holm-adjusted p-value and the outcome; then the
winner and the patch that makes it the model."""

from __future__ import annotations

from datetime import datetime

from modeldeploy.cli.experiment import (
    BETTER,
    CONCLUDED,
    CONTROL,
    RUNNING,
    STOPPED,
    Arm,
    Experiment,
    confidence_text,
    difference_text,
    p_text,
    rate_text,
    samples_text,
    weight_text,
)
from modeldeploy.cli.shapes import Cell, Field, Grid, Tone
from modeldeploy.cli.state import Rollout
from modeldeploy.cli.text import percent, utc_stamp, when

PHASE_TONES = {RUNNING: Tone.BUSY, CONCLUDED: Tone.GOOD, STOPPED: Tone.QUIET}
OUTCOME_TONES = {
    BETTER: Tone.GOOD,
    "Worse": Tone.BAD,
    "NoSignificantDifference": Tone.QUIET,
    "InsufficientData": Tone.PAUSED,
}
ARM_COLUMNS = ("ARM", "VERSION", "WEIGHT", "ACHIEVED", "READY", "STATE", "REASON")


def experiment_fields(rollout: Rollout, experiment: Experiment, now: datetime) -> list[Field]:
    """Where the experiment stands, when it counts and ends, and its winner."""
    said = f"{experiment.phase}, attempt {experiment.attempt}"
    if experiment.id:
        said += f" (id {experiment.id})"
    if not rollout.experiments:
        said += "; the spec no longer runs it"
    fields = [Field("Experiment", said, PHASE_TONES.get(experiment.phase, Tone.QUIET))]
    if experiment.message:
        fields.append(Field("Message", experiment.message))
    if experiment.metric:
        fields.append(
            Field(
                "Metric",
                f"{experiment.metric}; {confidence_text(rollout.significance)} intervals, "
                "p-values Holm-adjusted across the variants",
            )
        )
    if experiment.started_at is not None:
        fields.append(Field("Started", when(experiment.started_at, now)))
    if experiment.running:
        fields += _clock(experiment, now)
    elif experiment.concluded_at is not None:
        fields.append(Field("Ended", when(experiment.concluded_at, now)))
    fields += _winner(rollout, experiment)
    return fields


def _clock(experiment: Experiment, now: datetime) -> list[Field]:
    if experiment.ready_at is None:
        return [Field("Counting", "not yet: waiting for every arm's pods", Tone.BUSY)]
    fields = [Field("Counting", f"since {when(experiment.ready_at, now)}")]
    if experiment.ends_at is not None:
        due = when(experiment.ends_at, now)
        fields.append(Field("Verdict due", f"{due}, once every arm has minSamples"))
    return fields


def _winner(rollout: Rollout, experiment: Experiment) -> list[Field]:
    if experiment.winner is None:
        if experiment.phase == CONCLUDED:
            return [Field("Winner", "none: control stays the model", Tone.QUIET)]
        return []
    arm = experiment.arm(experiment.winner)
    version = f" ({arm.version})" if arm is not None else ""
    fields = [
        Field(
            "Winner",
            f"{experiment.winner}{version}: `kubectl modeldeploy apply-winner {rollout.name}` "
            "makes it the model, rolled out as a canary (GitOps: put the patch in Git)",
            Tone.GOOD,
        )
    ]
    if experiment.winner_patch:
        fields.append(Field("Patch", experiment.winner_patch))
    return fields


def arm_grid(experiment: Experiment) -> Grid:
    """The arms' traffic and pods while the experiment runs."""
    rows = []
    for arm in experiment.arms:
        state = Cell(arm.state, Tone.BAD if arm.cut else Tone.BUSY)
        rows.append(
            (
                Cell(arm.name),
                Cell(arm.version),
                Cell("cut" if arm.cut else f"{arm.weight}%"),
                Cell("" if arm.cut else percent(arm.actual_weight)),
                Cell(f"{arm.ready_replicas}/{arm.replicas}"),
                state,
                Cell(arm.reason),
            )
        )
    return Grid("Arms:", ARM_COLUMNS, tuple(rows), frozenset({"REASON"}))


def verdict_grid(experiment: Experiment, significance: float | None) -> Grid:
    """Each arm's outcome, then its numbers in words: a wrapping column, so that no number
    is cut in a narrow terminal."""
    rows = [
        (Cell(arm.name), Cell(arm.version), _outcome_cell(arm, experiment), Cell(numbers_text(arm)))
        for arm in experiment.arms
    ]
    numbers = f"NUMBERS ({confidence_text(significance)} intervals)"
    return Grid(
        "Verdict:", ("ARM", "VERSION", "OUTCOME", numbers), tuple(rows), frozenset({numbers})
    )


def numbers_text(arm: Arm) -> str:
    """`rate 4.93% [4.52..5.38] (493/10000), +0.81 pp [+0.25..+1.37] vs control, p 0.0051
    (Holm-adjusted 0.0102)`; a cut arm's reason."""
    if arm.cut:
        return arm.reason or "failed its SLO checks"
    parts = []
    if arm.rate is not None:
        parts.append(f"rate {rate_text(arm)} ({samples_text(arm)})")
    elif arm.samples is not None:
        parts.append(f"{arm.samples} samples")
    if arm.difference is not None:
        parts.append(f"{difference_text(arm)} vs control")
    if arm.p_value is not None and arm.adjusted_p_value is not None:
        parts.append(f"p {p_text(arm.p_value)} (Holm-adjusted {p_text(arm.adjusted_p_value)})")
    elif arm.adjusted_p_value is not None:
        parts.append(f"Holm-adjusted p {p_text(arm.adjusted_p_value)}")
    return ", ".join(parts) or "not counted"


def _outcome_cell(arm: Arm, experiment: Experiment) -> Cell:
    if arm.name == CONTROL:
        return Cell("control", Tone.QUIET)
    if arm.cut:
        return Cell("Cut", Tone.BAD)
    if arm.outcome is not None:
        return Cell(arm.outcome, OUTCOME_TONES.get(arm.outcome, Tone.QUIET))
    if experiment.running:
        return Cell("not judged yet", Tone.BUSY)
    return Cell("not judged", Tone.QUIET)


def experiment_grids(rollout: Rollout, experiment: Experiment) -> tuple[Grid, ...]:
    grids = []
    if experiment.running:
        grids.append(arm_grid(experiment))
    if experiment.judged or not experiment.running:
        grids.append(verdict_grid(experiment, rollout.significance))
    return tuple(grids)


def root_info(experiment: Experiment) -> str:
    """The tree's first row while the experiment runs: each arm's share of traffic."""
    return "experiment: " + ", ".join(f"{a.name} {weight_text(a)}" for a in experiment.arms)


def progress_words(experiment: Experiment) -> str:
    """The experiment in `status`' progress line, beside the operator's message (which
    gives the split): absolute times only, so the line stays the same (and unprinted)
    while nothing changes."""
    words = f"experiment attempt {experiment.attempt}"
    if experiment.ready_at is None:
        words += ", waiting for every arm's pods"
    elif experiment.ends_at is not None:
        words += f", verdict due {utc_stamp(experiment.ends_at)} at the earliest"
    cut = [
        f"{a.name} ({a.reason or 'failed its SLO checks'})" for a in experiment.variants if a.cut
    ]
    if cut:
        words += f", cut: {'; '.join(cut)}"
    return words


def result_words(rollout: Rollout) -> str:
    """What `status` adds once the spec's experiment ended: its verdict and what next."""
    experiment = rollout.experiment
    if experiment is None or experiment.running or not rollout.experiments:
        return ""
    words = f"; experiment {experiment.phase}: {experiment.message or 'no message'}"
    if experiment.winner is not None:
        command = f"kubectl modeldeploy apply-winner {rollout.name}"
        words += f"; `{command}` rolls {experiment.winner} out"
    return words
