"""The blueGreen strategy: the new version at full size with no live traffic, then every
request switched to it at once, with the previous version kept up to switch back to.

1. The new revision runs in the canary Deployment at `previewReplicas` (default
   `spec.replicas`), reachable only through its preview Service `NAME-next`; the clients'
   Service selects the stable pods alone (a weight of 0 for the gatewayAPI router).
2. Once its pods are ready it is previewed for `previewDuration`; with `previewAnalysis`
   every analysis of that time must pass. `autoPromote: false`, or a pause, holds it
   there until a promote request (or the resume).
3. The switch: all traffic goes to the new pods at once, and the new revision becomes the
   stable one in status. The previous version keeps running, without traffic, for
   `scaleDownDelay` as the instant switch-back target; `postPromotionAnalysis` judges live
   traffic meanwhile, and a failure (or an abort) switches back.
4. After the delay the stable Deployment takes the new template (a readiness-gated rolling
   update while the new pods keep serving), then the clients' Service returns to it and
   the canary Deployment goes.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from modeldeploy.api import (
    CanaryStatus,
    Outcome,
    Phase,
    PreviousStatus,
    StableStatus,
    Verdict,
    duration_seconds,
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
from modeldeploy.rollout.requests import PROMOTE_ANNOTATION

if TYPE_CHECKING:
    from modeldeploy.rollout.machine import Machine

PREVIEW = (Track.STABLE,)
SWITCHED = (Track.CANARY,)


class BlueGreen:
    def start(self, m: Machine, why: str) -> Decision:
        spec = m.o.spec
        m.status.canary = CanaryStatus(
            revision=m.o.revision, version=spec.model.version, started_at=m.o.now
        )
        m.status.last_analysis = None
        m.status.phase = Phase.PROGRESSING
        m.status.message = f"preview of {spec.model.version} started; waiting for its pods"
        m.condition("Progressing", True, Reason.PREVIEW_STARTED, m.status.message)
        stable = m.status.stable
        assert stable is not None
        m.event(
            Reason.PREVIEW_STARTED,
            f"blue-green preview of {spec.model.version} (revision {m.o.revision}) started "
            f"beside stable {stable.version}{why}; no live traffic until the switch",
        )
        return self.progress(m)

    def progress(self, m: Machine) -> Decision:
        canary = m.status.canary
        assert canary is not None
        if canary.ready_at is None:
            return waiting(m)
        return previewing(m)

    def promote_step(self, m: Machine) -> Decision:
        m.event(Reason.STEP_PROMOTED, "the preview was promoted by a promote request")
        return self.start_promotion(m, "its preview was promoted by the user")

    def start_promotion(self, m: Machine, why: str) -> Decision:
        canary = m.status.canary
        assert canary is not None
        if canary.ready_at is None:
            m.event(
                Reason.STEP_PROMOTION_IGNORED,
                f"switch to {canary.version} not done: its pods are not ready",
                warning=True,
            )
            return waiting(m)
        return switch(m, why)

    def promoting(self, m: Machine) -> Decision:
        return after_switch(m)

    def abortable(self, m: Machine) -> bool:
        """Before the switch, and after it while the previous version still stands by."""
        previous = m.status.previous
        return m.status.phase != Phase.PROMOTING or (previous is not None and previous.standby)

    def analysis_due(self, o: Observation) -> bool:
        canary = o.status.canary
        if canary is None or canary.revision != o.revision or canary.last_step_at is None:
            return False
        if o.invalid_spec is not None:
            return False
        settings = o.spec.strategy.blue_green_settings()
        if canary.switched_at is None:
            wanted = settings.preview_analysis and canary.step < preview_analyses(o)
        else:
            wanted = canary.step < post_promotion_analyses(o)
        return wanted and o.now >= canary.last_step_at + timedelta(seconds=interval_seconds(o.spec))

    def analysis_track(self, o: Observation) -> Track:
        return Track.CANARY


def preview_analyses(o: Observation) -> int:
    """Passing analyses a judged preview needs: one per interval of previewDuration, at
    least one (counted, so a reconcile's timing never adds or drops one)."""
    window = duration_seconds(o.spec.strategy.blue_green_settings().preview_duration)
    return max(1, math.ceil(window / interval_seconds(o.spec)))


def post_promotion_analyses(o: Observation) -> int:
    """How many analyses judge live traffic after the switch: one per interval of
    postPromotionAnalysis (counted, so a reconcile's timing never adds or drops one)."""
    window = duration_seconds(o.spec.strategy.blue_green_settings().post_promotion_analysis)
    return math.ceil(window / interval_seconds(o.spec))


def preview_replicas(m: Machine) -> int:
    return m.o.spec.strategy.blue_green_settings().preview_replicas or wanted_replicas(m.o)


def waiting(m: Machine) -> Decision:
    canary = m.status.canary
    assert canary is not None
    replicas = preview_replicas(m)
    canary.replicas = m.o.canary.replicas
    canary.ready_replicas = m.o.canary.ready_replicas
    if m.o.canary.serving(canary.revision, replicas):
        canary.ready_at = canary.last_step_at = m.o.now
        m.status.message = f"preview of {canary.version} ready behind its preview Service"
        m.condition("Progressing", True, Reason.PREVIEW_READY, m.status.message)
        m.event(Reason.PREVIEW_READY, m.status.message)
        return previewing(m)
    wait = m.unready("preview pods", m.o.canary.ready_replicas, replicas)
    if isinstance(wait, Decision):
        return wait
    m.note_pod_problem(canary, replicas)
    return m.decision(m.desired_plan(replicas), 0, wait, live_tracks=PREVIEW)


def previewing(m: Machine) -> Decision:
    """Ready, no live traffic: judge the preview, then switch when it has run its time."""
    canary = m.status.canary
    assert canary is not None
    settings = m.o.spec.strategy.blue_green_settings()
    gate = m.gate()
    if isinstance(gate, Rejection):
        return m.roll_back(gate.reason, gate.message)
    if gate is Gate.HOLD:
        m.status.message = f"preview of {canary.version}: its offline check runs"
        m.condition("Progressing", True, Reason.VALIDATING, m.status.message)
        plan = m.desired_plan(preview_replicas(m))
        return m.decision(plan, 0, POLL_SECONDS, live_tracks=PREVIEW)
    analysis = m.fresh_analysis()
    if analysis is not None:
        m.status.last_analysis = analysis
        ended = m.judge(analysis, "preview")
        if ended is not None:
            return ended
        if analysis.verdict == Verdict.PASS:
            canary.step += 1  # analyses of the preview that passed
    assert canary.ready_at is not None
    until = canary.ready_at + timedelta(seconds=duration_seconds(settings.preview_duration))
    judged = not settings.preview_analysis or canary.step >= preview_analyses(m.o)
    if m.o.now >= until and judged and not m.paused():
        if settings.auto_promote:
            return switch(m, f"its preview ran {settings.preview_duration} and passed")
        m.status.message = (
            f"preview of {canary.version} passed; awaiting a promote request "
            f"({PROMOTE_ANNOTATION}) to switch all traffic to it"
        )
        m.condition("Progressing", True, Reason.PAUSED, m.status.message)
    elif m.paused():
        m.status.message = f"preview of {canary.version} paused before the switch"
        m.condition("Progressing", True, Reason.PAUSED, m.status.message)
    else:
        m.status.message = f"previewing {canary.version} until {_clock(until)}"
    wait = _next_look(m, until)
    return m.decision(m.desired_plan(preview_replicas(m)), 0, wait, live_tracks=PREVIEW)


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S")


def _next_look(m: Machine, until: datetime) -> float:
    canary = m.status.canary
    assert canary is not None
    assert canary.last_step_at is not None
    due = canary.last_step_at + timedelta(seconds=interval_seconds(m.o.spec))
    moments = [t for t in (until, due) if t > m.o.now]
    return min((t - m.o.now).total_seconds() for t in moments) if moments else POLL_SECONDS


def switch(m: Machine, why: str) -> Decision:
    """All traffic to the new pods at once; the previous version stands by."""
    canary = m.status.canary
    stable = m.status.stable
    assert canary is not None
    assert stable is not None
    settings = m.o.spec.strategy.blue_green_settings()
    canary.switched_at = canary.last_step_at = m.o.now
    canary.failed_checks = canary.inconclusive_checks = 0
    canary.step = 0  # from here, analyses of live traffic
    canary.weight = canary.actual_weight = 100
    m.status.previous = PreviousStatus(
        revision=stable.revision,
        version=stable.version,
        template=stable.template,
        replicas=stable.replicas,
        ready_replicas=stable.ready_replicas,
        standby=True,
        until=m.o.now + timedelta(seconds=duration_seconds(settings.scale_down_delay)),
    )
    m.status.stable = StableStatus(
        revision=canary.revision, version=canary.version, template=m.o.template
    )
    m.status.phase = Phase.PROMOTING
    m.status.message = (
        f"all traffic switched to {canary.version}; {stable.version} stands by until "
        f"{_clock(m.status.previous.until or m.o.now)}"
    )
    m.condition("Progressing", True, Reason.SWITCHED, m.status.message)
    m.event(Reason.SWITCHED, f"all traffic switched to {canary.version}: {why}")
    return after_switch(m)


def after_switch(m: Machine) -> Decision:
    """Live traffic on the new pods: judge it, hold the previous version until the delay is
    over, then let the stable Deployment take the new template and finish."""
    canary = m.status.canary
    stable = m.status.stable
    assert canary is not None
    assert stable is not None
    assert stable.template is not None
    previous = m.status.previous
    analysis = m.fresh_analysis() if canary.switched_at is not None else None
    if analysis is not None:
        m.status.last_analysis = analysis
        ended = m.judge(analysis, f"live analysis {canary.step + 1}")
        if ended is not None:
            return ended
        canary.step += 1
    new_pods = TrackPlan(canary.revision, stable.template, preview_replicas(m))
    if previous is not None and previous.standby:
        # The previous version stays the switch-back target while live traffic is still
        # being judged, even if analyses ran late.
        judging = canary.step < post_promotion_analyses(m.o)
        if judging or (previous.until is not None and m.o.now < previous.until):
            waits = [_analysis_wait(m)]
            if previous.until is not None and m.o.now < previous.until:
                waits.append((previous.until - m.o.now).total_seconds())
            return m.decision(new_pods, 100, min(waits), live_tracks=SWITCHED)
        previous.standby = False
        m.event(
            Reason.SCALED_DOWN,
            f"{previous.version} no longer stands by; the stable Deployment takes {canary.version}",
        )
    if not m.o.stable.serving(canary.revision, wanted_replicas(m.o)):
        m.status.message = f"{canary.version} serves all traffic; stable Deployment catching up"
        return m.decision(new_pods, 100, POLL_SECONDS, live_tracks=SWITCHED)
    m.outcome = Outcome.PROMOTED
    took = (m.o.now - canary.started_at).total_seconds()
    m.record(canary.revision, canary.version, Outcome.PROMOTED, "blue-green switch completed")
    m.event(Reason.PROMOTED, f"{canary.version} promoted to stable after {took:.0f}s")
    m.notify(Reason.PROMOTED, f"{canary.version} promoted to stable", canary)
    m.status.canary = None
    m.status.previous = None
    m.status.rejected_revision = None
    m.status.phase = Phase.AVAILABLE
    m.status.message = f"stable {canary.version} serves all traffic"
    m.condition("Progressing", False, Reason.COMPLETE, m.status.message)
    if m.o.revision != canary.revision:
        return m.strategy.start(m, f", changed while {canary.version} was switched to")
    return m.decision(None, 0, None)


def _analysis_wait(m: Machine) -> float:
    canary = m.status.canary
    assert canary is not None
    assert canary.last_step_at is not None
    due = canary.last_step_at + timedelta(seconds=interval_seconds(m.o.spec))
    return max((due - m.o.now).total_seconds(), 0.0)
