"""The canary strategy: a share of live traffic per step, each step judged by an analysis.

A canary waits for its pods (until the progress deadline), then walks `rollout.steps`:
every `rollout.interval` an analysis judges the current step; a Pass advances one step,
failed analyses count toward `failureThreshold` and inconclusive ones toward
`inconclusiveLimit`. After the last step the stable track takes the canary's template
and the canary is removed once the stable is ready.

An analysis is applied only when `analysis_due` says so and only if it was taken after
the current step began (or after the previous analysis), so an analysis fed twice (a
retried reconcile, a restarted operator) never counts twice. A paused canary still runs
its analyses and is still rolled back by failed checks (safety never pauses), but it
does not advance and inconclusive analyses are not counted against it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from modeldeploy.api import (
    AnalysisStatus,
    CanaryStatus,
    ModelDeploymentSpec,
    Outcome,
    Phase,
    StableStatus,
    Verdict,
)
from modeldeploy.rollout.model import (
    POLL_SECONDS,
    Decision,
    Gate,
    Observation,
    Reason,
    Rejection,
    Track,
    TrackPlan,
    interval_seconds,
    wanted_replicas,
)
from modeldeploy.rollout.requests import PAUSE_ANNOTATION, PROMOTE_STEP_ANNOTATION
from modeldeploy.routers import router_for

if TYPE_CHECKING:
    from modeldeploy.rollout.machine import Machine


class Canary:
    """The strategy interface the shared machine drives."""

    def start(self, m: Machine, why: str) -> Decision:
        return start(m, why)

    def progress(self, m: Machine) -> Decision:
        """A canary of the spec's revision: wait for its pods, or walk its steps."""
        canary = m.status.canary
        assert canary is not None
        return waiting(m) if canary.ready_at is None else walking(m)

    def promote_step(self, m: Machine) -> Decision:
        return promote_step(m)

    def start_promotion(self, m: Machine, why: str) -> Decision:
        return start_promotion(m, why)

    def promoting(self, m: Machine) -> Decision:
        return promoting(m)

    def abortable(self, m: Machine) -> bool:
        """Until its promotion starts: then the stable is already rolling to it."""
        return m.status.phase != Phase.PROMOTING

    def analysis_due(self, o: Observation) -> bool:
        return analysis_due(o)

    def analysis_track(self, o: Observation) -> Track:
        return Track.CANARY


def next_analysis_at(spec: ModelDeploymentSpec, canary: CanaryStatus) -> datetime | None:
    """When the current step's next analysis is due; None while the canary is not serving."""
    if canary.last_step_at is None:
        return None
    return canary.last_step_at + timedelta(seconds=interval_seconds(spec))


def analysis_due(observation: Observation) -> bool:
    """Whether the shell should run an analysis before deciding: a walking canary's interval
    is over. Never while waiting for pods, while promoting or for a superseded canary."""
    canary = observation.status.canary
    if canary is None or canary.revision != observation.revision:
        return False
    if observation.invalid_spec is not None or observation.status.phase == Phase.PROMOTING:
        return False
    if not step_pods_ready(observation, canary):
        return False
    due = next_analysis_at(observation.spec, canary)
    return due is not None and observation.now >= due


def step_pods_ready(observation: Observation, canary: CanaryStatus) -> bool:
    """Whether the canary runs all the pods of its current step: a step is judged only on
    traffic its pods could take (a new step's pods may take a while to start)."""
    spec = observation.spec
    steps = spec.rollout.steps
    weight = steps[min(canary.step, len(steps) - 1)]
    wanted = router_for(spec.traffic.router).replicas(wanted_replicas(observation), weight).canary
    return observation.canary.serving(canary.revision, wanted)


def start(m: Machine, reason: str) -> Decision:
    spec = m.o.spec
    m.status.canary = CanaryStatus(
        revision=m.o.revision,
        version=spec.model.version,
        started_at=m.o.now,
    )
    m.status.last_analysis = None
    m.status.phase = Phase.PROGRESSING
    m.status.message = f"canary {spec.model.version} started; waiting for its pods to become ready"
    m.condition("Progressing", True, Reason.CANARY_STARTED, m.status.message)
    stable = m.status.stable
    assert stable is not None
    m.event(
        Reason.CANARY_STARTED,
        f"canary {spec.model.version} (revision {m.o.revision}) started against stable "
        f"{stable.version}{reason}; steps {spec.rollout.steps}",
    )
    return waiting(m)


def canary_replicas(m: Machine, weight: int) -> int:
    return m.router.replicas(wanted_replicas(m.o), weight).canary


def waiting(m: Machine) -> Decision:
    canary = m.status.canary
    assert canary is not None
    first_weight = m.o.spec.rollout.steps[0]
    replicas = canary_replicas(m, first_weight)
    canary.replicas = m.o.canary.replicas
    canary.ready_replicas = m.o.canary.ready_replicas
    gated = m.gated()
    if m.o.canary.serving(canary.revision, replicas):
        gate = m.gate()
        if isinstance(gate, Rejection):
            return m.roll_back(gate.reason, gate.message)
        if gate is Gate.HOLD:
            m.status.message = (
                f"canary {canary.version} ready; its offline check runs before any live traffic"
            )
            m.condition("Progressing", True, Reason.VALIDATING, m.status.message)
            return m.decision(
                m.desired_plan(replicas), 0, POLL_SECONDS, live_tracks=(Track.STABLE,)
            )
        canary.ready_at = m.o.now
        canary.last_step_at = m.o.now
        canary.weight = first_weight
        canary.actual_weight = m.router.achieved_weight(
            first_weight, m.o.stable.ready_replicas, m.o.canary.ready_replicas
        )
        m.status.message = f"canary {canary.version} ready; at {first_weight}% traffic"
        m.condition("Progressing", True, Reason.CANARY_READY, m.status.message)
        m.event(Reason.CANARY_READY, f"canary pods ready; {first_weight}% of traffic")
        return m.decision(m.desired_plan(replicas), first_weight, interval_seconds(m.o.spec))
    wait = m.unready("canary pods", m.o.canary.ready_replicas, replicas)
    if isinstance(wait, Decision):
        return wait
    m.note_pod_problem(canary, replicas)
    # Pods that become ready between two looks must not take live traffic unchecked.
    live = (Track.STABLE,) if gated else (Track.STABLE, Track.CANARY)
    return m.decision(m.desired_plan(replicas), 0, wait, live_tracks=live)


def walking(m: Machine) -> Decision:
    """A ready canary at some step: judge it, advance it, or hold it."""
    canary = m.status.canary
    assert canary is not None
    spec = m.o.spec
    steps = spec.rollout.steps
    if canary.step >= len(steps):
        # rollout.steps was shortened under a running canary: hold at its last step.
        canary.step = len(steps) - 1
    analysis = m.fresh_analysis()
    if analysis is not None:
        m.status.last_analysis = analysis
        outcome = judge(m, analysis)
        if outcome is not None:
            return outcome
    weight = steps[canary.step]
    canary.weight = weight
    canary.replicas = m.o.canary.replicas
    canary.ready_replicas = m.o.canary.ready_replicas
    canary.actual_weight = m.router.achieved_weight(
        weight, m.o.stable.ready_replicas, m.o.canary.ready_replicas
    )
    if not step_pods_ready(m.o, canary):
        # The step's clock starts once its pods are ready: its window holds their traffic.
        canary.last_step_at = m.o.now
    if m.paused():
        by = "spec.rollout.paused" if spec.rollout.paused else PAUSE_ANNOTATION
        m.status.message = f"paused at step {canary.step + 1} ({weight}%) by {by}"
        if m.progressing_reason() != Reason.PAUSED:
            m.event(
                Reason.PAUSED,
                f"canary {canary.version} paused at step {canary.step + 1} ({weight}%); "
                "analyses go on and failed checks still roll it back",
            )
        m.condition("Progressing", True, Reason.PAUSED, m.status.message)
    elif m.progressing_reason() == Reason.PAUSED:
        m.status.message = f"canary {canary.version} resumed at step {canary.step + 1} ({weight}%)"
        m.condition("Progressing", True, Reason.RESUMED, m.status.message)
        m.event(Reason.RESUMED, m.status.message)
    due = next_analysis_at(spec, canary)
    assert due is not None
    wait = max(0.0, (due - m.o.now).total_seconds())
    return m.decision(m.desired_plan(canary_replicas(m, weight)), weight, wait)


def judge(m: Machine, analysis: AnalysisStatus) -> Decision | None:
    """Apply one analysis verdict; a Decision when it ends the walk, else None."""
    canary = m.status.canary
    assert canary is not None
    spec = m.o.spec
    ended = m.judge(analysis, f"step {canary.step + 1}")
    if ended is not None or analysis.verdict != Verdict.PASS or m.paused():
        return ended
    if canary.step + 1 >= len(spec.rollout.steps):
        return start_promotion(m, f"all {len(spec.rollout.steps)} steps passed their analyses")
    canary.step += 1
    weight = spec.rollout.steps[canary.step]
    canary.weight = weight
    m.status.message = f"canary {canary.version} at step {canary.step + 1} ({weight}%)"
    m.condition("Progressing", True, Reason.STEP_ADVANCED, m.status.message)
    m.event(
        Reason.STEP_ADVANCED,
        f"analysis passed; canary {canary.version} advanced to step {canary.step + 1} "
        f"of {len(spec.rollout.steps)} ({weight}%)",
    )
    return None


def promote_step(m: Machine) -> Decision:
    """The next step now, as if the current one had passed; after the last, promotion.
    The step clock restarts, so the next analysis judges the new step."""
    canary = m.status.canary
    assert canary is not None
    steps = m.o.spec.rollout.steps
    if canary.step + 1 >= len(steps):
        m.event(Reason.STEP_PROMOTED, f"last step of {canary.version} promoted by user")
        return start_promotion(m, f"its last step was promoted by {PROMOTE_STEP_ANNOTATION}")
    canary.step += 1
    canary.last_step_at = m.o.now
    canary.inconclusive_checks = 0
    weight = steps[canary.step]
    m.status.message = f"canary {canary.version} at step {canary.step + 1} ({weight}%)"
    m.condition("Progressing", True, Reason.STEP_PROMOTED, m.status.message)
    m.event(
        Reason.STEP_PROMOTED,
        f"canary {canary.version} moved to step {canary.step + 1} of {len(steps)} "
        f"({weight}%) by {PROMOTE_STEP_ANNOTATION}",
    )
    return walking(m)


def start_promotion(m: Machine, why: str) -> Decision:
    canary = m.status.canary
    assert canary is not None
    m.status.phase = Phase.PROMOTING
    m.status.message = f"promoting {canary.version}: {why}"
    m.condition("Progressing", True, Reason.PROMOTION_STARTED, m.status.message)
    replaced = m.status.stable.version if m.status.stable else "nothing"
    m.event(Reason.PROMOTION_STARTED, f"{m.status.message}; replacing {replaced}")
    return promoting(m)


def promoting(m: Machine) -> Decision:
    """Stable takes the canary's template; the canary keeps serving until stable is ready.

    The revision being promoted passed its analysis, so it finishes even if the spec
    changed meanwhile; the newer revision then starts its canary against it."""
    canary = m.status.canary
    stable = m.status.stable
    assert canary is not None
    assert stable is not None
    # The first promoting reconcile still has the canary's revision in the spec; later
    # ones find its template already recorded as the stable's.
    template = stable.template if stable.revision == canary.revision else m.o.template
    assert template is not None
    wanted = wanted_replicas(m.o)
    canary_plan = TrackPlan(canary.revision, template, canary_replicas(m, canary.weight))
    if m.o.stable.serving(canary.revision, wanted):
        m.outcome = Outcome.PROMOTED
        took = (m.o.now - canary.started_at).total_seconds()
        m.record(canary.revision, canary.version, Outcome.PROMOTED, m.status.message)
        m.event(
            Reason.PROMOTED,
            f"{canary.version} promoted to stable after {took:.0f}s",
        )
        m.notify(Reason.PROMOTED, f"{canary.version} promoted to stable", canary)
        m.status.stable = StableStatus(
            revision=canary.revision, version=canary.version, template=template
        )
        m.status.canary = None
        m.status.rejected_revision = None
        m.status.phase = Phase.AVAILABLE
        m.status.message = f"stable {canary.version} serves all traffic"
        m.condition("Progressing", False, Reason.COMPLETE, m.status.message)
        if m.o.revision != canary.revision:
            return start(m, f", changed while {canary.version} was promoted")
        return m.decision(None, 0, None)
    # The stable track rolls to the new template now; the canary holds its share.
    m.status.stable = StableStatus(
        revision=canary.revision,
        version=canary.version,
        template=template,
        replicas=stable.replicas,
        ready_replicas=stable.ready_replicas,
    )
    m.status.phase = Phase.PROMOTING
    return m.decision(canary_plan, canary.weight, POLL_SECONDS)
