"""The shadow phase: the new revision sees a mirrored copy of live traffic, nobody sees
its answers, and it is judged before any client request reaches it.

The shadow runs on the canary track's pods, which the clients' Service and route never
select while it lasts. The stable's pods copy `strategy.shadow.mirrorPercent` of their
requests to it (the shell writes the mirror target the stable pods re-read at run time,
so starting or ending a shadow restarts nothing), each copy carrying the stable's
answer, so the shadow counts how often it agrees. Every `rollout.interval` an analysis
judges the shadow: the usual error-rate, latency and model checks on the mirrored
traffic, plus the agreement checks. After `strategy.shadow.analyses` passes the
follow-up starts: the strategy of `strategy.type` (canary, blueGreen, direct) as for any
new revision, or, for type shadow, the promotion. Failed analyses reject the revision
exactly as a canary's do, with the values in status.

`Shadowed` wraps the follow-up strategy: while the revision is a shadow it decides,
afterwards the wrapped strategy does.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING

from modeldeploy.api import AnalysisStatus, CanaryStatus, Phase, Verdict, duration_seconds
from modeldeploy.rollout import canary as canary_strategy
from modeldeploy.rollout.model import (
    Decision,
    Observation,
    Reason,
    Track,
    interval_seconds,
    wanted_replicas,
)
from modeldeploy.rollout.requests import PAUSE_ANNOTATION

if TYPE_CHECKING:
    from modeldeploy.rollout.machine import Machine
    from modeldeploy.rollout.strategy import Strategy

SHADOW_STAGE = "Shadow"


def in_shadow(canary: CanaryStatus | None) -> bool:
    return canary is not None and canary.stage == SHADOW_STAGE


def shadow_replicas(o: Observation) -> int:
    """The shadow's pods: as set, else the stable's size scaled by the mirrored share."""
    settings = o.spec.strategy.shadow_settings()
    if settings.replicas is not None:
        return settings.replicas
    return max(1, math.ceil(wanted_replicas(o) * settings.mirror_percent / 100))


class Shadowed:
    """A shadow phase in front of `follow_up`; `promote_after` (type shadow) promotes the
    revision once its shadow passed instead of starting `follow_up`."""

    def __init__(self, follow_up: Strategy, *, promote_after: bool) -> None:
        self.follow_up = follow_up
        self.promote_after = promote_after

    def start(self, m: Machine, why: str) -> Decision:
        spec = m.o.spec
        settings = spec.strategy.shadow_settings()
        m.status.canary = CanaryStatus(
            revision=m.o.revision,
            version=spec.model.version,
            started_at=m.o.now,
            stage=SHADOW_STAGE,
        )
        m.status.last_analysis = None
        m.status.phase = Phase.PROGRESSING
        m.status.message = f"shadow {spec.model.version} started; waiting for its pods"
        m.condition("Progressing", True, Reason.SHADOW_STARTED, m.status.message)
        stable = m.status.stable
        assert stable is not None
        m.event(
            Reason.SHADOW_STARTED,
            f"shadow {spec.model.version} (revision {m.o.revision}) started beside stable "
            f"{stable.version}{why}; it gets a copy of {settings.mirror_percent:g}% of live "
            "requests and no client sees its answers",
        )
        return waiting(m)

    def progress(self, m: Machine) -> Decision:
        canary = m.status.canary
        assert canary is not None
        if not in_shadow(canary):
            return self.follow_up.progress(m)
        return waiting(m) if canary.ready_at is None else mirroring(m, self)

    def promote_step(self, m: Machine) -> Decision:
        if not in_shadow(m.status.canary):
            return self.follow_up.promote_step(m)
        m.event(Reason.STEP_PROMOTED, "the shadow's remaining analyses skipped by a request")
        return self.after_shadow(m, "the user promoted its shadow")

    def start_promotion(self, m: Machine, why: str) -> Decision:
        if self.promote_after or in_shadow(m.status.canary):
            # The stable rolls to the new revision; the shadow takes no live traffic meanwhile.
            return canary_strategy.start_promotion(m, why)
        return self.follow_up.start_promotion(m, why)

    def promoting(self, m: Machine) -> Decision:
        if self.promote_after or in_shadow(m.status.canary):
            return canary_strategy.promoting(m)
        return self.follow_up.promoting(m)

    def abortable(self, m: Machine) -> bool:
        if in_shadow(m.status.canary):
            return m.status.phase != Phase.PROMOTING
        return self.follow_up.abortable(m)

    def analysis_due(self, o: Observation) -> bool:
        canary = o.status.canary
        if not in_shadow(canary):
            return self.follow_up.analysis_due(o)
        assert canary is not None
        if canary.revision != o.revision or canary.last_step_at is None:
            return False
        if o.invalid_spec is not None or o.status.phase == Phase.PROMOTING:
            return False
        if not o.canary.serving(canary.revision, shadow_replicas(o)):
            return False
        return o.now >= canary.last_step_at + timedelta(seconds=interval_seconds(o.spec))

    def analysis_track(self, o: Observation) -> Track:
        if in_shadow(o.status.canary):
            return Track.CANARY
        return self.follow_up.analysis_track(o)

    def after_shadow(self, m: Machine, why: str) -> Decision:
        """The shadow passed: promote (type shadow) or start the follow-up strategy."""
        canary = m.status.canary
        assert canary is not None
        m.event(Reason.SHADOW_PASSED, f"shadow {canary.version}: {why}")
        if self.promote_after:
            return canary_strategy.start_promotion(m, f"its shadow passed: {why}")
        canary.stage = None
        return self.follow_up.start(m, f", after its shadow passed ({why})")


def before_first_copies(m: Machine, analysis: AnalysisStatus) -> bool:
    """Whether an analysis saw no request only because the copies have not started: the
    stable pods learn the target when the kubelet refreshes their mounted NAME-mirror.
    Such analyses are not counted, until rollout.progressDeadline after the shadow's pods
    were ready (a target never reached is then inconclusive, as for a canary)."""
    canary = m.status.canary
    assert canary is not None
    if analysis.verdict != Verdict.NO_DATA or analysis.requests not in (None, 0.0):
        return False
    if canary.shadow_passes or canary.failed_checks or canary.inconclusive_checks:
        return False  # copies arrived before: a gap now is the shadow's own
    assert canary.ready_at is not None
    deadline = canary.ready_at + timedelta(
        seconds=duration_seconds(m.o.spec.rollout.progress_deadline)
    )
    return analysis.at < deadline


def waiting(m: Machine) -> Decision:
    """The shadow's pods start; no copy is sent before they are ready."""
    canary = m.status.canary
    assert canary is not None
    replicas = shadow_replicas(m.o)
    canary.replicas = m.o.canary.replicas
    canary.ready_replicas = m.o.canary.ready_replicas
    plan = m.desired_plan(replicas)
    if m.o.canary.serving(canary.revision, replicas):
        canary.ready_at = canary.last_step_at = m.o.now
        percent = m.o.spec.strategy.shadow_settings().mirror_percent
        m.status.message = f"shadow {canary.version} ready; mirroring {percent:g}% of live requests"
        m.condition("Progressing", True, Reason.SHADOW_READY, m.status.message)
        m.event(Reason.SHADOW_READY, m.status.message)
        return m.decision(
            plan,
            0,
            interval_seconds(m.o.spec),
            live_tracks=(Track.STABLE,),
            mirror_percent=percent,
        )
    wait = m.unready("shadow pods", m.o.canary.ready_replicas, replicas)
    if isinstance(wait, Decision):
        return wait
    m.note_pod_problem(canary, replicas)
    return m.decision(plan, 0, wait, live_tracks=(Track.STABLE,))


def mirroring(m: Machine, shadowed: Shadowed) -> Decision:
    """A ready shadow: judge its analyses until enough passed."""
    canary = m.status.canary
    assert canary is not None
    settings = m.o.spec.strategy.shadow_settings()
    needed = settings.analyses
    analysis = m.fresh_analysis()
    if analysis is not None and before_first_copies(m, analysis):
        m.status.last_analysis = analysis
        canary.last_step_at = max(m.o.now, analysis.at)
        m.event(
            Reason.ANALYSIS_INCONCLUSIVE,
            f"shadow analysis held, not counted toward inconclusiveLimit: no copy reached "
            f"shadow {canary.version} yet (the stable pods read NAME-mirror when the kubelet "
            f"refreshes it, within about a minute)",
        )
        analysis = None
    if analysis is not None:
        m.status.last_analysis = analysis
        ended = m.judge(analysis, f"shadow analysis {canary.shadow_passes + 1}/{needed}")
        if ended is not None:
            return ended
        if analysis.verdict == Verdict.PASS and not m.paused():
            canary.shadow_passes += 1
    if canary.shadow_passes >= needed and not m.paused():
        return shadowed.after_shadow(m, f"{needed} analyses of its mirrored traffic passed")
    replicas = shadow_replicas(m.o)
    canary.replicas = m.o.canary.replicas
    canary.ready_replicas = m.o.canary.ready_replicas
    if not m.o.canary.serving(canary.revision, replicas):
        # A window is judged only on copies all its pods could take.
        canary.last_step_at = m.o.now
    if m.paused():
        by = "spec.rollout.paused" if m.o.spec.rollout.paused else PAUSE_ANNOTATION
        m.status.message = f"shadow {canary.version} paused by {by}; mirroring goes on"
        m.condition("Progressing", True, Reason.PAUSED, m.status.message)
    else:
        m.status.message = (
            f"shadow {canary.version}: {canary.shadow_passes}/{needed} analyses of its "
            f"mirrored traffic passed"
        )
        m.condition("Progressing", True, Reason.SHADOWING, m.status.message)
    assert canary.last_step_at is not None
    due = canary.last_step_at + timedelta(seconds=interval_seconds(m.o.spec))
    return m.decision(
        m.desired_plan(replicas),
        0,
        max((due - m.o.now).total_seconds(), 0.0),
        live_tracks=(Track.STABLE,),
        mirror_percent=settings.mirror_percent,
    )
