"""The direct strategy: the new version replaces stable in place, then it is judged.

The stable Deployment takes the new template at once (a readiness-gated rolling update:
no pod goes before its replacement is ready). Once every pod runs it,
`strategy.direct.analysisIntervals` analyses of the stable track follow, one per
`rollout.interval`; all must pass. A failure, an abort or pods that are not ready by the
progress deadline roll the previous revision back in place, with the reason. The previous
revision is kept in status until the new one has passed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from modeldeploy.api import (
    CanaryStatus,
    Outcome,
    Phase,
    PreviousStatus,
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
    interval_seconds,
    wanted_replicas,
)

if TYPE_CHECKING:
    from modeldeploy.rollout.machine import Machine

# One pod of the new revision is enough for the offline check before the replacement.
CHECK_REPLICAS = 1


class Direct:
    def start(self, m: Machine, why: str) -> Decision:
        spec = m.o.spec
        m.status.canary = CanaryStatus(
            revision=m.o.revision, version=spec.model.version, started_at=m.o.now
        )
        m.status.last_analysis = None
        m.status.phase = Phase.PROGRESSING
        if m.gated():
            stable = m.status.stable
            assert stable is not None
            m.status.message = (
                f"{spec.model.version}: offline check before it replaces {stable.version}"
            )
            m.condition("Progressing", True, Reason.VALIDATING, m.status.message)
            return checking(m)
        return replace(m, why)

    def progress(self, m: Machine) -> Decision:
        canary = m.status.canary
        stable = m.status.stable
        assert canary is not None
        assert stable is not None
        if stable.revision != canary.revision:
            return checking(m)
        if canary.ready_at is None:
            return waiting(m)
        return verifying(m)

    def promote_step(self, m: Machine) -> Decision:
        m.event(Reason.STEP_PROMOTED, "remaining analyses skipped by a promote request")
        return self.start_promotion(m, "the user promoted it")

    def start_promotion(self, m: Machine, why: str) -> Decision:
        return complete(m, why)

    def promoting(self, m: Machine) -> Decision:
        return self.progress(m)

    def abortable(self, m: Machine) -> bool:
        return True

    def analysis_due(self, o: Observation) -> bool:
        canary = o.status.canary
        if canary is None or canary.revision != o.revision or canary.last_step_at is None:
            return False
        if o.invalid_spec is not None:
            return False
        return o.now >= canary.last_step_at + timedelta(seconds=interval_seconds(o.spec))

    def analysis_track(self, o: Observation) -> Track:
        return Track.STABLE


def checking(m: Machine) -> Decision:
    """Before the replacement: one pod of the new revision, no live traffic, checked
    offline on the hold-out set; it replaces stable once the check passed."""
    canary = m.status.canary
    assert canary is not None
    plan = m.desired_plan(CHECK_REPLICAS)
    if not m.o.canary.serving(canary.revision, CHECK_REPLICAS):
        wait = m.unready("the pod to check offline", m.o.canary.ready_replicas, CHECK_REPLICAS)
        if isinstance(wait, Decision):
            return wait
        m.note_pod_problem(canary, CHECK_REPLICAS)
        return m.decision(plan, 0, wait, live_tracks=(Track.STABLE,))
    gate = m.gate()
    if isinstance(gate, Rejection):
        return m.roll_back(gate.reason, gate.message)
    if gate is Gate.HOLD:
        return m.decision(plan, 0, POLL_SECONDS, live_tracks=(Track.STABLE,))
    return replace(m, ", after passing its offline check")


def replace(m: Machine, why: str) -> Decision:
    """The stable Deployment takes the new template; the previous revision is kept."""
    spec = m.o.spec
    canary = m.status.canary
    stable = m.status.stable
    assert canary is not None
    assert stable is not None
    canary.weight = 100
    # A revision replaced before it passed is no rollback target: keep the older one.
    if m.status.previous is None:
        m.status.previous = PreviousStatus(
            revision=stable.revision, version=stable.version, template=stable.template
        )
    m.status.stable = StableStatus(
        revision=m.o.revision, version=spec.model.version, template=m.o.template
    )
    m.status.message = f"replacing {stable.version} with {spec.model.version} in place"
    m.condition("Progressing", True, Reason.REPLACING, m.status.message)
    m.event(
        Reason.REPLACING,
        f"{spec.model.version} (revision {m.o.revision}) replaces {stable.version} in "
        f"place{why}; {spec.strategy.direct_settings().analysis_intervals} analyses follow",
    )
    return waiting(m)


def waiting(m: Machine) -> Decision:
    canary = m.status.canary
    assert canary is not None
    wanted = wanted_replicas(m.o)
    if m.o.stable.serving(canary.revision, wanted):
        canary.ready_at = canary.last_step_at = m.o.now
        m.status.message = f"{canary.version} replaced stable; judging it"
        m.condition("Progressing", True, Reason.REPLACED, m.status.message)
        m.event(Reason.REPLACED, f"every stable pod runs {canary.version}")
        return verifying(m)
    wait = m.unready("the new pods", m.o.stable.ready_replicas, wanted)
    if isinstance(wait, Decision):
        return wait
    return m.decision(None, 0, wait)


def verifying(m: Machine) -> Decision:
    canary = m.status.canary
    assert canary is not None
    intervals = m.o.spec.strategy.direct_settings().analysis_intervals
    analysis = m.fresh_analysis()
    if analysis is not None:
        m.status.last_analysis = analysis
        ended = m.judge(analysis, f"analysis {canary.step + 1}/{intervals}")
        if ended is not None:
            return ended
        if analysis.verdict == Verdict.PASS and not m.paused():
            canary.step += 1
    if canary.step >= intervals and not m.paused():
        return complete(m, f"{intervals} analyses passed")
    m.status.message = (
        f"{canary.version} replaced stable; {canary.step}/{intervals} analyses passed"
    )
    assert canary.last_step_at is not None
    due = canary.last_step_at + timedelta(seconds=interval_seconds(m.o.spec))
    return m.decision(None, 0, max((due - m.o.now).total_seconds(), 0.0))


def complete(m: Machine, why: str) -> Decision:
    canary = m.status.canary
    assert canary is not None
    m.outcome = Outcome.PROMOTED
    m.record(canary.revision, canary.version, Outcome.PROMOTED, why)
    m.event(Reason.PROMOTED, f"{canary.version} is the stable revision: {why}")
    m.notify(Reason.PROMOTED, f"{canary.version} promoted to stable", canary)
    m.status.canary = None
    m.status.previous = None
    m.status.rejected_revision = None
    m.status.phase = Phase.AVAILABLE
    m.status.message = f"stable {canary.version} serves all traffic"
    m.condition("Progressing", False, Reason.COMPLETE, m.status.message)
    return m.decision(None, 0, None)
