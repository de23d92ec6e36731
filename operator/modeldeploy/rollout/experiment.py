"""strategy.type experiment: the stable (control) and up to four variants share live traffic
by weight; each variant keeps the SLO checks, and one that fails them is cut early (its
traffic returns to control); after `duration`, with `minSamples` trials per arm, each
variant's success rate is compared with control's (`experiment_stats`).

An experiment runs while the stable serves the spec's model: a new model is rolled out as
a canary, and stops a running experiment. It never changes the spec (GitOps owns it): it
ends with control serving, its numbers in `status.experiment` with the merge patch that
would make the winner the model. It runs once per experiment block and control revision
(its id); the retry annotation runs a finished one again, abort stops a running one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from modeldeploy.analysis import failure_summary
from modeldeploy.api import (
    CONTROL,
    ArmState,
    ArmStatus,
    ExperimentPhase,
    ExperimentStatus,
    ExperimentStrategy,
    ModelDeploymentSpec,
    Phase,
    StrategyType,
    TrackTemplate,
    Verdict,
    duration_seconds,
)
from modeldeploy.experiment_stats import Arm, Comparison, Outcome, compare, wilson
from modeldeploy.merge_patch import merge_patch
from modeldeploy.resources import revision_of, variant_track
from modeldeploy.rollout.model import (
    POLL_SECONDS,
    ArmCount,
    Decision,
    Notification,
    Observation,
    Reason,
    Track,
    TrackObservation,
    TrackPlan,
    VariantPlan,
    interval_seconds,
    wanted_replicas,
)
from modeldeploy.rollout.requests import ABORT_ANNOTATION, RETRY_ANNOTATION

if TYPE_CHECKING:
    from modeldeploy.rollout.machine import Machine


def experiments(spec: ModelDeploymentSpec) -> bool:
    return spec.strategy.type == StrategyType.EXPERIMENT and spec.strategy.experiment is not None


def experiment_id(settings: ExperimentStrategy, control_revision: str) -> str:
    """What a run is about: the experiment block and the control it runs against."""
    block = settings.model_dump(mode="json", by_alias=True)
    canonical = json.dumps({"experiment": block, "control": control_revision}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def variant_template(o: Observation, model_index: int) -> TrackTemplate:
    """A variant's pods: the stable's server settings with the variant's model."""
    settings = o.spec.strategy.experiment
    assert settings is not None
    return o.template.model_copy(update={"model": settings.variants[model_index].model})


def running(o: Observation) -> ExperimentStatus | None:
    experiment = o.status.experiment
    return (
        experiment
        if experiment is not None and experiment.phase == ExperimentPhase.RUNNING
        else None
    )


@dataclass(frozen=True)
class ExperimentDue:
    """What the shell must read before deciding: the SLO analysis of these variants, and
    every arm's counts when the verdict is due."""

    guardrails: tuple[str, ...]
    counts: bool
    window_seconds: float


def experiment_due(o: Observation) -> ExperimentDue | None:
    """Once per rollout.interval while the arms count: their SLO checks, and from `ends_at`
    on the counts. Nothing before every arm is ready, or while paused."""
    experiment = running(o)
    if experiment is None or experiment.ready_at is None or not experiments(o.spec):
        return None
    if o.spec.rollout.paused or o.status.paused_by_request:
        return None
    last = experiment.last_analysis_at or experiment.ready_at
    if o.now < last + timedelta(seconds=interval_seconds(o.spec)):
        return None
    guardrails = tuple(a.name for a in experiment.variants if a.state == ArmState.RUNNING)
    counts = experiment.ends_at is not None and o.now >= experiment.ends_at
    window = (o.now - experiment.ready_at).total_seconds()
    return ExperimentDue(guardrails, counts, window)


def manual_request(m: Machine, pending: set[str]) -> Decision | None:
    """abort stops a running experiment; retry runs a finished one again."""
    experiment = m.status.experiment
    if experiment is None or not experiments(m.o.spec) or m.status.canary is not None:
        return None
    if ABORT_ANNOTATION in pending and experiment.phase == ExperimentPhase.RUNNING:
        stop(m, f"aborted by {ABORT_ANNOTATION}")
        return m.steady()
    stable = m.status.stable
    serves_spec = stable is not None and stable.revision == m.o.revision
    if RETRY_ANNOTATION in pending and experiment.phase != ExperimentPhase.RUNNING and serves_spec:
        m.event(Reason.RETRY_REQUESTED, f"experiment run again as requested by {RETRY_ANNOTATION}")
        start(m, attempt=experiment.attempt + 1)
        return progress(m)
    return None


def stop_if_out_of_place(m: Machine) -> None:
    """A running experiment stops when the spec no longer asks for it or its control is
    being replaced (a new model rolls out as a canary)."""
    experiment = running(m.o)
    if experiment is None:
        return
    stable = m.status.stable
    if not experiments(m.o.spec):
        stop(m, "strategy.type is no longer experiment")
    elif stable is None or m.o.revision != stable.revision:
        stop(m, f"the model changed to {m.o.spec.model.version}; control is being replaced")


def stop(m: Machine, why: str) -> None:
    experiment = m.status.experiment
    assert experiment is not None
    experiment.phase = ExperimentPhase.STOPPED
    experiment.concluded_at = m.o.now
    experiment.message = f"stopped: {why}; control serves all traffic"
    for arm in experiment.variants:
        arm.weight = arm.actual_weight = 0
    experiment.control.weight = experiment.control.actual_weight = 100
    m.event(Reason.EXPERIMENT_STOPPED, f"experiment stopped: {why}", warning=True)


def experiment_step(m: Machine) -> Decision:
    """The stable serves the spec's model under strategy experiment: start the experiment
    for this block and control if it has not run, else carry the running one on."""
    settings = m.o.spec.strategy.experiment
    stable = m.status.stable
    assert settings is not None
    assert stable is not None
    serving = m.o.stable.serving(stable.revision, wanted_replicas(m.o))
    if not serving or m.status.phase not in (Phase.AVAILABLE, Phase.EXPERIMENTING):
        # Control first serves in full, as an ordinary stable (a first deployment is
        # recorded, an offline check passes); the experiment starts on the next look.
        decision = m.steady()
        if serving and decision.status.phase == Phase.AVAILABLE:
            decision.requeue_after = POLL_SECONDS
        return decision
    current = m.status.experiment
    wanted = experiment_id(settings, stable.revision)
    if current is None or current.id != wanted:
        if current is not None and current.phase == ExperimentPhase.RUNNING:
            stop(m, "strategy.experiment changed; the new experiment replaces it")
        start(m, attempt=1)
    experiment = m.status.experiment
    assert experiment is not None
    if experiment.phase != ExperimentPhase.RUNNING:
        return m.steady()
    return progress(m)


def start(m: Machine, attempt: int) -> None:
    settings = m.o.spec.strategy.experiment
    stable = m.status.stable
    assert settings is not None
    assert stable is not None
    variants = [
        ArmStatus(
            name=v.name,
            version=v.model.version,
            revision=revision_of(variant_template(m.o, index)),
            weight=v.weight,
        )
        for index, v in enumerate(settings.variants)
    ]
    control_weight = 100 - sum(v.weight for v in settings.variants)
    m.status.experiment = ExperimentStatus(
        id=experiment_id(settings, stable.revision),
        attempt=attempt,
        phase=ExperimentPhase.RUNNING,
        message="starting the variants' pods",
        started_at=m.o.now,
        metric=_metric_name(settings),
        control=ArmStatus(
            name=CONTROL, version=stable.version, revision=stable.revision, weight=control_weight
        ),
        variants=variants,
    )
    arms = ", ".join(f"{v.name} {v.version} {v.weight}%" for v in variants)
    m.event(
        Reason.EXPERIMENT_STARTED,
        f"experiment started: control {stable.version} {control_weight}%, {arms}",
    )


def _metric_name(settings: ExperimentStrategy) -> str:
    if settings.metric.quality is not None:
        return f"quality: {settings.metric.quality}"
    return "successQuery / totalQuery"


def progress(m: Machine) -> Decision:
    """The running experiment's next move: pods, guardrails, the verdict."""
    settings = m.o.spec.strategy.experiment
    experiment = m.status.experiment
    assert settings is not None
    assert experiment is not None
    _count_pods(m, experiment)
    if experiment.ready_at is None:
        _wait_for_pods(m, experiment, settings)
    reading = m.o.experiment
    fresh = (
        reading is not None
        and experiment.ready_at is not None
        and reading.at > (experiment.last_analysis_at or experiment.ready_at)
    )
    if fresh and reading is not None and not m.paused():
        experiment.last_analysis_at = reading.at
        for arm in _running_variants(experiment):
            analysis = reading.guardrails.get(arm.name)
            if analysis is not None and analysis.verdict == Verdict.FAIL:
                _failed_check(m, arm, failure_summary(analysis))
    if experiment.phase == ExperimentPhase.RUNNING and not _running_variants(experiment):
        stop(m, "every variant was cut")
    counts = reading.counts if fresh and reading is not None and not m.paused() else None
    if counts is not None and experiment.phase == ExperimentPhase.RUNNING:
        _judge(m, experiment, settings, counts)
    if experiment.phase != ExperimentPhase.RUNNING:
        return m.steady()
    return _running_decision(m, experiment, settings)


def _running_variants(experiment: ExperimentStatus) -> list[ArmStatus]:
    return [a for a in experiment.variants if a.state == ArmState.RUNNING]


def _count_pods(m: Machine, experiment: ExperimentStatus) -> None:
    experiment.control.replicas = m.o.stable.replicas
    experiment.control.ready_replicas = m.o.stable.ready_replicas
    for arm in experiment.variants:
        observed = m.o.variants.get(arm.name, TrackObservation())
        arm.replicas = observed.replicas
        arm.ready_replicas = observed.ready_replicas


def _serving(m: Machine, arm: ArmStatus, experiment: ExperimentStatus) -> bool:
    observed = m.o.variants.get(arm.name, TrackObservation())
    return observed.serving(arm.revision, _variant_replicas(m, arm, experiment))


def _wait_for_pods(m: Machine, experiment: ExperimentStatus, settings: ExperimentStrategy) -> None:
    """Counting starts when every running arm serves; an arm whose pods are not ready
    within rollout.progressDeadline is cut."""
    deadline = experiment.started_at + timedelta(
        seconds=duration_seconds(m.o.spec.rollout.progress_deadline)
    )
    for arm in _running_variants(experiment):
        if not _serving(m, arm, experiment) and m.o.now >= deadline:
            _cut(m, arm, f"its pods were not ready within {m.o.spec.rollout.progress_deadline}")
    running_arms = _running_variants(experiment)
    if running_arms and all(_serving(m, arm, experiment) for arm in running_arms):
        experiment.ready_at = m.o.now
        experiment.ends_at = m.o.now + timedelta(seconds=duration_seconds(settings.duration))
        m.event(
            Reason.EXPERIMENT_READY,
            f"every arm serves; counting until at least "
            f"{experiment.ends_at.isoformat(timespec='seconds')}",
        )


def _failed_check(m: Machine, arm: ArmStatus, summary: str) -> None:
    threshold = m.o.spec.rollout.failure_threshold
    arm.failed_checks += 1
    m.event(
        Reason.ANALYSIS_FAILED,
        f"variant {arm.name}: {summary} (failed checks {arm.failed_checks}/{threshold})",
        warning=True,
    )
    if arm.failed_checks >= threshold:
        _cut(m, arm, f"{arm.failed_checks} failed SLO analyses; last: {summary}")


def _cut(m: Machine, arm: ArmStatus, why: str) -> None:
    arm.state = ArmState.CUT
    arm.reason = why
    arm.weight = arm.actual_weight = 0
    m.event(
        Reason.VARIANT_CUT,
        f"variant {arm.name} ({arm.version}) cut from the experiment, its traffic back on "
        f"control: {why}",
        warning=True,
    )


def _judge(
    m: Machine,
    experiment: ExperimentStatus,
    settings: ExperimentStrategy,
    counts: Mapping[str, ArmCount],
) -> None:
    """The verdict once every arm has minSamples, or with what there is at maxDuration."""
    assert experiment.ready_at is not None
    arms = [experiment.control, *_running_variants(experiment)]
    overdue = m.o.now >= experiment.ready_at + timedelta(seconds=settings.max_duration_seconds())
    problems = [f"{a.name}: {counts[a.name].problem}" for a in arms if _problem(counts, a.name)]
    short = [
        f"{a.name} {_total(counts, a.name):.0f}/{settings.min_samples}"
        for a in arms
        if _total(counts, a.name) < settings.min_samples
    ]
    for arm in arms:
        count = counts.get(arm.name)
        if count is not None and count.total is not None:
            arm.samples = max(round(count.total), 0)
    if not overdue and (problems or short):
        waiting = (
            f"the counts could not be read ({'; '.join(problems)})"
            if problems
            else f"waiting for samples ({', '.join(short)})"
        )
        experiment.message = f"{DURATION_REACHED}, {waiting}"
        m.event(Reason.EXPERIMENTING, f"experiment: {experiment.message}", warning=bool(problems))
        return
    control = _arm(counts, CONTROL)
    variants = [_arm(counts, a.name) for a in _running_variants(experiment)]
    comparisons = compare(
        control,
        variants,
        significance=settings.significance,
        min_samples=settings.min_samples,
        min_effect=settings.min_effect,
    )
    _record_numbers(experiment.control, control, settings.significance)
    for comparison, arm in zip(comparisons, _running_variants(experiment), strict=True):
        _record_comparison(arm, comparison)
    _conclude(m, experiment, comparisons)


def _problem(counts: Mapping[str, ArmCount], arm: str) -> bool:
    count = counts.get(arm)
    return count is None or count.problem is not None


def _total(counts: Mapping[str, ArmCount], arm: str) -> float:
    count = counts.get(arm)
    return count.total or 0.0 if count is not None and count.problem is None else 0.0


def _arm(counts: Mapping[str, ArmCount], name: str) -> Arm:
    count = counts.get(name)
    if count is None or count.problem is not None:
        return Arm(name, 0, 0)
    return Arm.counted(name, count.successes or 0.0, count.total or 0.0)


def _record_numbers(status: ArmStatus, arm: Arm, significance: float) -> None:
    status.successes, status.samples, status.rate = arm.successes, arm.total, arm.rate
    interval = wilson(arm, 1 - significance)
    status.rate_low = interval.low if interval is not None else None
    status.rate_high = interval.high if interval is not None else None


def _record_comparison(status: ArmStatus, comparison: Comparison) -> None:
    status.samples = comparison.samples
    status.rate = comparison.rate
    if comparison.rate is not None:
        status.successes = round(comparison.rate * comparison.samples)
    if comparison.rate_interval is not None:
        status.rate_low, status.rate_high = (
            comparison.rate_interval.low,
            comparison.rate_interval.high,
        )
    status.difference = comparison.difference
    if comparison.difference_interval is not None:
        status.difference_low = comparison.difference_interval.low
        status.difference_high = comparison.difference_interval.high
    status.p_value = comparison.p_value
    status.adjusted_p_value = comparison.adjusted_p_value
    status.outcome = str(comparison.outcome)


def _conclude(m: Machine, experiment: ExperimentStatus, comparisons: list[Comparison]) -> None:
    better = [c for c in comparisons if c.outcome == Outcome.BETTER]
    winner = max(better, key=lambda c: c.rate or 0.0, default=None)
    experiment.phase = ExperimentPhase.CONCLUDED
    experiment.concluded_at = m.o.now
    verdicts = ", ".join(_verdict_words(c) for c in comparisons) or "no variant was judged"
    if winner is not None:
        experiment.winner = winner.variant
        experiment.winner_patch = winner_patch(m.o.spec, winner.variant)
        experiment.message = (
            f"{winner.variant} wins: {verdicts}. Control serves all traffic; to roll it out, "
            "make status.experiment.winnerPatch's change in Git, or run kubectl modeldeploy "
            "apply-winner"
        )
    else:
        experiment.message = f"no winner: {verdicts}. Control serves all traffic"
    for arm in experiment.variants:
        arm.weight = arm.actual_weight = 0
    experiment.control.weight = experiment.control.actual_weight = 100
    m.event(Reason.EXPERIMENT_CONCLUDED, f"experiment concluded: {experiment.message}")
    stable = m.status.stable
    assert stable is not None
    m.notifications.append(_notification(experiment, stable.version, stable.revision))


def _notification(experiment: ExperimentStatus, version: str, revision: str) -> Notification:
    return Notification(Reason.EXPERIMENT_CONCLUDED, experiment.message, version, revision)


def _verdict_words(c: Comparison) -> str:
    if c.rate is None or c.control_rate is None or c.adjusted_p_value is None:
        return f"{c.variant} {c.outcome} ({c.samples} samples)"
    return (
        f"{c.variant} {c.outcome} ({c.rate:.4f} vs control {c.control_rate:.4f}, "
        f"p={c.adjusted_p_value:.3g} after Holm)"
    )


def winner_patch(spec: ModelDeploymentSpec, variant: str) -> str:
    """The merge patch that makes `variant`'s model the spec's, rolled out as a canary (the
    experiment block goes: with the winner as control it would compare a model with itself)."""
    settings = spec.strategy.experiment
    assert settings is not None
    chosen = next(v for v in settings.variants if v.name == variant)
    control = spec.model.model_dump(mode="json", by_alias=True, exclude_none=True)
    model = chosen.model.model_dump(mode="json", by_alias=True, exclude_none=True)
    patch = {
        "spec": {
            "model": merge_patch(control, model),
            "strategy": {"type": str(StrategyType.CANARY), "experiment": None},
        }
    }
    return json.dumps(patch, sort_keys=True, separators=(",", ":"))


def _variant_replicas(m: Machine, arm: ArmStatus, experiment: ExperimentStatus) -> int:
    settings = m.o.spec.strategy.experiment
    assert settings is not None
    weight = next((v.weight for v in settings.variants if v.name == arm.name), arm.weight)
    control_weight = 100 - sum(
        v.weight
        for v in settings.variants
        if any(a.name == v.name and a.state == ArmState.RUNNING for a in experiment.variants)
    )
    return m.router.arm_replicas(wanted_replicas(m.o), weight, control_weight)


def _running_decision(
    m: Machine, experiment: ExperimentStatus, settings: ExperimentStrategy
) -> Decision:
    """Every running variant's pods; traffic by weight to the arms that serve, the rest
    to control."""
    plans = []
    for index, variant in enumerate(settings.variants):
        arm = next(a for a in experiment.variants if a.name == variant.name)
        if arm.state != ArmState.RUNNING:
            continue
        template = variant_template(m.o, index)
        replicas = _variant_replicas(m, arm, experiment)
        weight = variant.weight if _serving(m, arm, experiment) else 0
        plans.append(VariantPlan(arm.name, TrackPlan(arm.revision, template, replicas), weight))
    weights = {CONTROL: 100 - sum(p.weight for p in plans), **{p.name: p.weight for p in plans}}
    ready = {
        CONTROL: m.o.stable.ready_replicas,
        **{p.name: m.o.variants.get(p.name, TrackObservation()).ready_replicas for p in plans},
    }
    achieved = m.router.achieved_weights(weights, ready)
    experiment.control.weight = weights[CONTROL]
    experiment.control.actual_weight = achieved[CONTROL]
    for arm in experiment.variants:
        if arm.name in weights:
            arm.weight = next(v.weight for v in settings.variants if v.name == arm.name)
            arm.actual_weight = achieved[arm.name]
    _describe(m, experiment)
    # The next look is when the next reading is due (the verdict comes with the first one
    # at or after ends_at); a reading due but not taken (paused) waits an interval.
    interval = interval_seconds(m.o.spec)
    wait = POLL_SECONDS
    if experiment.ready_at is not None:
        last = experiment.last_analysis_at or experiment.ready_at
        wait = (last - m.o.now).total_seconds() + interval
        if wait <= 0:
            wait = interval
    live = (Track.STABLE, *(variant_track(p.name) for p in plans))
    decision = m.decision(None, 0, max(wait, 1.0), live_tracks=live)
    decision.variants = tuple(plans)
    return decision


DURATION_REACHED = "duration reached"


def _describe(m: Machine, experiment: ExperimentStatus) -> None:
    arms = [experiment.control, *experiment.variants]
    split = ", ".join(
        f"{a.name} {a.version} {a.actual_weight or 0}%"
        + (f" ({a.ready_replicas} ready)" if a.name != CONTROL else "")
        for a in arms
        if a.state == ArmState.RUNNING
    )
    if experiment.ready_at is None:
        where = "waiting for the variants' pods"
    elif experiment.ends_at is not None and m.o.now < experiment.ends_at:
        where = f"counting until {experiment.ends_at.isoformat(timespec='seconds')}"
    elif experiment.message.startswith(DURATION_REACHED):
        where = experiment.message
    else:
        where = f"{DURATION_REACHED}, the verdict is next"
    experiment.message = where
    if m.paused():
        where = f"paused, {where}"
    m.status.phase = Phase.EXPERIMENTING
    m.status.message = f"experiment ({where}): {split}"
    m.condition("Progressing", True, Reason.EXPERIMENTING, m.status.message)
