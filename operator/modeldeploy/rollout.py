"""The rollout decision core: (spec, status, observations, now) -> next status and actions.

Pure: no I/O, no clock, no randomness. The shell (`reconciler.py`) observes the cluster,
runs an analysis when `analysis_due` says so, calls `decide`, and applies the result.
All state that must survive a restart lives in the returned status.

Manual requests are annotations whose value changes each time they are made (a
timestamp, say); a value already recorded in `status.handledRequests` is not acted on
again. Precedence, strongest first: abort, promote, promote-step (one step), analysis. A
paused canary still runs its analyses and is still rolled back by failed checks (safety
never pauses), but it does not advance and inconclusive analyses are not counted against
it. Pause comes from
`spec.rollout.paused` or from a pause request (the `pause` annotation, undone by
`resume`), which GitOps tools do not revert because it is not in the spec.

Every new request value is recorded as handled in the decision that first sees it, whether
or not it changed anything: an abort swallows a promote or retry made at the same time, and
a promote made while no canary runs does not linger to promote a later one.

An analysis is applied only when `analysis_due` says so and only if it was taken after the
current step began (or after the previous analysis), so an analysis fed twice (a retried
reconcile, a restarted operator) never counts twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from modeldeploy.analysis import failure_summary
from modeldeploy.api import (
    HISTORY_LIMIT,
    AnalysisStatus,
    CanaryStatus,
    Condition,
    ConditionStatus,
    HistoryEntry,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Outcome,
    Phase,
    StableStatus,
    TrackTemplate,
    Verdict,
    duration_seconds,
)
from modeldeploy.routers import router_for

PROMOTE_ANNOTATION = "modeldeploy.dev/promote"
ABORT_ANNOTATION = "modeldeploy.dev/abort"
RETRY_ANNOTATION = "modeldeploy.dev/retry"
PAUSE_ANNOTATION = "modeldeploy.dev/pause"
RESUME_ANNOTATION = "modeldeploy.dev/resume"
PROMOTE_STEP_ANNOTATION = "modeldeploy.dev/promote-step"
MANUAL_ANNOTATIONS = (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_STEP_ANNOTATION,
    RETRY_ANNOTATION,
    PAUSE_ANNOTATION,
    RESUME_ANNOTATION,
)

# Conditions: Available (stable serves), Ready (this generation serves in full), and the
# two kstatus reads (Flux, cli-utils): Reconciling (a rollout is in flight) and Stalled
# (it ended in failure and will not go on by itself).
AVAILABLE, READY, RECONCILING, STALLED, PROGRESSING = (
    "Available",
    "Ready",
    "Reconciling",
    "Stalled",
    "Progressing",
)
DROPPED_CONDITIONS = ("Reconciled",)

# How soon to look again while waiting for pods; analyses have their own schedule.
POLL_SECONDS = 5.0
# Waiting for stable pods needs no polling: every change of the Deployment wakes the
# object. This only backs up a lost watch event, and keeps hundreds of objects that
# deploy at once from re-reconciling every few seconds while their pods start.
STABLE_RECHECK_SECONDS = 30.0


class Reason(StrEnum):
    """Event and condition reasons; each transition has its own."""

    STABLE_DEPLOYED = "StableDeployed"
    STABLE_READY = "StableReady"
    STABLE_NOT_READY = "StableNotReady"
    SCALED = "Scaled"
    CANARY_STARTED = "CanaryStarted"
    CANARY_READY = "CanaryReady"
    STEP_ADVANCED = "StepAdvanced"
    ANALYSIS_PASSED = "AnalysisPassed"
    ANALYSIS_FAILED = "AnalysisFailed"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    PAUSED = "Paused"
    PROMOTION_STARTED = "PromotionStarted"
    PROMOTED = "Promoted"
    RESUMED = "Resumed"
    ROLLED_BACK = "RolledBack"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    FAILED_CHECKS = "FailedChecks"
    ABORTED = "Aborted"
    ABORT_TOO_LATE = "AbortTooLate"
    MANUAL_PROMOTION = "ManualPromotion"
    RETRY_REQUESTED = "RetryRequested"
    SUPERSEDED = "CanarySuperseded"
    REVERTED = "CanaryCancelled"
    REVISION_REJECTED = "RevisionRejected"
    PROGRESSING = "Progressing"
    PROMOTING = "Promoting"
    PAUSE_REQUESTED = "PauseRequested"
    STEP_PROMOTED = "StepPromoted"
    STEP_PROMOTION_IGNORED = "StepPromotionIgnored"
    RESUME_REQUESTED = "ResumeRequested"
    CANARY_NOT_READY = "CanaryNotReady"
    INVALID_SPEC = "InvalidSpec"
    COMPLETE = "Complete"


class Track(StrEnum):
    STABLE = "stable"
    CANARY = "canary"


@dataclass(frozen=True)
class TrackObservation:
    """What the cluster says about one track's Deployment."""

    exists: bool = False
    revision: str | None = None
    replicas: int = 0
    ready_replicas: int = 0
    rolled_out: bool = False  # the Deployment's controller caught up with its latest spec

    def serving(self, revision: str, replicas: int) -> bool:
        """Runs `revision`, fully rolled out, with at least `replicas` ready pods."""
        return (
            self.exists
            and self.revision == revision
            and self.rolled_out
            and self.ready_replicas >= replicas
        )


@dataclass(frozen=True)
class Observation:
    spec: ModelDeploymentSpec
    generation: int
    revision: str
    template: TrackTemplate
    status: ModelDeploymentStatus
    stable: TrackObservation
    canary: TrackObservation
    annotations: dict[str, str]
    now: datetime
    analysis: AnalysisStatus | None = None
    # Set when the stored spec breaks a rule this operator enforces and cannot be clamped
    # (an object stored by an older release): a running canary is rolled back.
    invalid_spec: str | None = None
    # Why the canary's pods are not ready (image pull, crash with its termination
    # message, no room), when the shell looked: shown while waiting and on rollback.
    canary_pod_problem: str | None = None


@dataclass(frozen=True)
class TrackPlan:
    revision: str
    template: TrackTemplate
    replicas: int


@dataclass(frozen=True)
class EventRecord:
    type: str  # Normal or Warning
    reason: Reason
    message: str


@dataclass(frozen=True)
class Notification:
    kind: Reason
    message: str
    version: str  # of the revision the notification is about, not necessarily the spec's
    revision: str


@dataclass
class Decision:
    status: ModelDeploymentStatus
    stable: TrackPlan | None
    canary: TrackPlan | None  # None: no canary Deployment should exist
    weight: int  # canary traffic percentage the router must give now
    events: list[EventRecord] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    requeue_after: float | None = None
    outcome: Outcome | None = None  # set when a canary ended in this decision


def interval_seconds(spec: ModelDeploymentSpec) -> float:
    return duration_seconds(spec.rollout.interval)


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
    due = next_analysis_at(observation.spec, canary)
    return due is not None and observation.now >= due


def new_requests(annotations: dict[str, str], handled: dict[str, str]) -> set[str]:
    return {
        name
        for name in MANUAL_ANNOTATIONS
        if name in annotations and handled.get(name) != annotations[name]
    }


def set_condition(
    status: ModelDeploymentStatus,
    kind: str,
    true: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> None:
    """Set one condition; its transition time moves only when its status changes."""
    value = ConditionStatus.TRUE if true else ConditionStatus.FALSE
    for existing in status.conditions:
        if existing.type == kind:
            if existing.status != value:
                existing.last_transition_time = now
            existing.status, existing.reason, existing.message = value, reason, message
            if generation is not None:
                existing.observed_generation = generation
            return
    status.conditions.append(
        Condition(
            type=kind,
            status=value,
            reason=reason,
            message=message,
            last_transition_time=now,
            observed_generation=generation,
        )
    )


class _Builder:
    """Accumulates one decision; every transition below is a method."""

    def __init__(self, observation: Observation) -> None:
        self.o = observation
        self.status = observation.status.model_copy(deep=True)
        self.status.observed_generation = observation.generation
        self.status.revision = observation.revision
        self.events: list[EventRecord] = []
        self.notifications: list[Notification] = []
        self.outcome: Outcome | None = None
        self.router = router_for(observation.spec.traffic.router)
        self.pending = new_requests(observation.annotations, observation.status.handled_requests)

    # -- helpers -----------------------------------------------------------------

    def event(self, reason: Reason, message: str, *, warning: bool = False) -> None:
        self.events.append(EventRecord("Warning" if warning else "Normal", reason, message))

    def notify(self, kind: Reason, message: str, canary: CanaryStatus) -> None:
        self.notifications.append(Notification(kind, message, canary.version, canary.revision))

    def handle(self, annotation: str) -> None:
        self.status.handled_requests[annotation] = self.o.annotations[annotation]
        self.pending.discard(annotation)

    def condition(self, kind: str, true: bool, reason: Reason | str, message: str) -> None:
        set_condition(self.status, kind, true, reason, message, self.o.now, self.o.generation)

    def progressing_reason(self) -> str | None:
        for existing in self.status.conditions:
            if existing.type == "Progressing":
                return existing.reason
        return None

    def record(self, revision: str, version: str, outcome: Outcome, reason: str) -> None:
        entry = HistoryEntry(
            revision=revision, version=version, outcome=outcome, reason=reason, at=self.o.now
        )
        self.status.history = [entry, *self.status.history][:HISTORY_LIMIT]

    def stable_plan(self, canary: TrackPlan | None, weight: int) -> TrackPlan | None:
        """Stable keeps its full size, unless a router needs room (a 100% step)."""
        stable = self.status.stable
        if stable is None or stable.template is None:
            return None
        replicas = self.o.spec.replicas
        if canary is not None and self.status.phase != Phase.PROMOTING:
            replicas = self.router.replicas(replicas, weight).stable
        return TrackPlan(stable.revision, stable.template, replicas)

    def desired_plan(self, replicas: int) -> TrackPlan:
        return TrackPlan(self.o.revision, self.o.template, replicas)

    def refresh_stable_counts(self) -> None:
        if self.status.stable is not None:
            # A stable Deployment about to be created counts as what it is created with, so
            # seeing it appear changes nothing in the status (no write per new object).
            observed = self.o.stable
            self.status.stable.replicas = (
                observed.replicas if observed.exists else self.o.spec.replicas
            )
            self.status.stable.ready_replicas = observed.ready_replicas

    def availability(self) -> None:
        stable = self.status.stable
        ready = self.o.stable.ready_replicas
        wanted = self.o.spec.replicas
        if stable is None:
            self.condition(AVAILABLE, False, Reason.STABLE_NOT_READY, "no stable pods yet")
            return
        available = ready >= 1 or wanted == 0
        self.condition(
            AVAILABLE,
            available,
            Reason.STABLE_READY if available else Reason.STABLE_NOT_READY,
            f"stable {stable.version} has {ready}/{wanted} ready pods",
        )

    def rollout_conditions(self) -> None:
        """Ready, Reconciling and Stalled, from where the rollout stands after this decision."""
        status = self.status
        self.status.conditions = [c for c in status.conditions if c.type not in DROPPED_CONDITIONS]
        stable = status.stable
        wanted = self.o.spec.replicas
        serving = (
            stable is not None
            and stable.revision == status.revision
            and self.o.stable.serving(stable.revision, wanted)
        )
        if status.phase == Phase.ROLLED_BACK:
            reason, message = Reason.ROLLED_BACK, status.message
        elif status.phase == Phase.PROMOTING:
            reason, message = Reason.PROMOTING, status.message
        elif status.canary is not None and self.paused():
            reason, message = Reason.PAUSED, status.message
        elif status.phase == Phase.AVAILABLE and serving:
            reason, message = Reason.COMPLETE, f"{status.message} (generation {self.o.generation})"
        else:
            reason, message = Reason.PROGRESSING, status.message
        stalled = reason == Reason.ROLLED_BACK
        in_flight = reason not in (Reason.ROLLED_BACK, Reason.COMPLETE)
        self.condition(READY, reason == Reason.COMPLETE, reason, message)
        self.condition(RECONCILING, in_flight, reason if in_flight else Reason.COMPLETE, message)
        self.condition(STALLED, stalled, reason if stalled else Reason.COMPLETE, message)

    def paused(self) -> bool:
        """Paused by the spec or by a pause request; either holds the canary."""
        return self.o.spec.rollout.paused or self.status.paused_by_request

    def decision(self, canary: TrackPlan | None, weight: int, requeue: float | None) -> Decision:
        self.refresh_stable_counts()
        self.availability()
        self.rollout_conditions()
        return Decision(
            status=self.status,
            stable=self.stable_plan(canary, weight),
            canary=canary,
            weight=weight,
            events=self.events,
            notifications=self.notifications,
            requeue_after=requeue,
            outcome=self.outcome,
        )

    # -- transitions -------------------------------------------------------------

    def first_deploy(self) -> Decision:
        spec = self.o.spec
        self.status.stable = StableStatus(
            revision=self.o.revision,
            version=spec.model.version,
            template=self.o.template,
        )
        self.status.phase = Phase.PENDING
        self.status.message = self.first_deploy_message()
        self.condition(
            "Progressing",
            True,
            Reason.STABLE_DEPLOYED,
            f"deploying {spec.model.version} as the first stable revision",
        )
        self.event(
            Reason.STABLE_DEPLOYED,
            f"deploying model {spec.model.name} {spec.model.version} "
            f"(revision {self.o.revision}) as stable",
        )
        return self.decision(None, 0, STABLE_RECHECK_SECONDS)

    def first_deploy_message(self) -> str:
        version = self.o.spec.model.version
        ready, wanted = self.o.stable.ready_replicas, self.o.spec.replicas
        return f"deploying {version} as the first stable revision: {ready}/{wanted} pods ready"

    def steady(self) -> Decision:
        """No canary: keep the stable track at the spec's replicas."""
        stable = self.status.stable
        assert stable is not None
        wanted = self.o.spec.replicas
        serving = self.o.stable.serving(stable.revision, wanted)
        rejected = self.status.rejected_revision
        if self.status.phase == Phase.PENDING and serving:
            self.record(stable.revision, stable.version, Outcome.DEPLOYED, "first deployment")
        if rejected is not None and rejected == self.o.revision:
            self.status.phase = Phase.ROLLED_BACK
            why = next(
                (
                    f" ({h.reason})"
                    for h in self.status.history
                    if h.revision == rejected and h.outcome == Outcome.ROLLED_BACK
                ),
                "",
            )
            self.status.message = (
                f"revision {rejected} was rolled back{why}; stable {stable.version} serves. "
                f"Change the model or annotate {RETRY_ANNOTATION} to try it again"
            )
            self.condition("Progressing", False, Reason.ROLLED_BACK, self.status.message)
        elif serving:
            self.status.phase = Phase.AVAILABLE
            self.status.message = f"stable {stable.version} serves all traffic"
            self.condition("Progressing", False, Reason.COMPLETE, self.status.message)
        else:
            already_serving = self.status.phase not in (Phase.PENDING,)
            self.status.phase = Phase.AVAILABLE if already_serving else Phase.PENDING
            self.status.message = (
                f"stable {stable.version}: {self.o.stable.ready_replicas}/{wanted} pods ready"
                if already_serving
                else self.first_deploy_message()
            )
        if self.o.stable.exists and self.o.stable.replicas != wanted:
            self.event(Reason.SCALED, f"scaling stable from {self.o.stable.replicas} to {wanted}")
        requeue = None if serving else STABLE_RECHECK_SECONDS
        return self.decision(self.retained_canary(), 0, requeue)

    def retained_canary(self) -> TrackPlan | None:
        """A rolled-back canary stays, scaled to zero, until a new revision replaces it."""
        rejected = self.status.rejected_revision
        if self.o.canary.exists and rejected is not None and rejected == self.o.revision:
            return self.desired_plan(self.rolled_back_canary_replicas())
        return None

    def rolled_back_canary_replicas(self) -> int:
        """None, unless stable has no ready pod to take the traffic back (a 100% step of
        the replicas router scaled it to zero): no pods at all is worse than the canary."""
        return self.o.canary.replicas if self.o.stable.ready_replicas == 0 else 0

    def start_canary(self, reason: str) -> Decision:
        spec = self.o.spec
        self.status.canary = CanaryStatus(
            revision=self.o.revision,
            version=spec.model.version,
            started_at=self.o.now,
        )
        self.status.last_analysis = None
        self.status.phase = Phase.PROGRESSING
        self.status.message = (
            f"canary {spec.model.version} started; waiting for its pods to become ready"
        )
        self.condition("Progressing", True, Reason.CANARY_STARTED, self.status.message)
        stable = self.status.stable
        assert stable is not None
        self.event(
            Reason.CANARY_STARTED,
            f"canary {spec.model.version} (revision {self.o.revision}) started against stable "
            f"{stable.version}{reason}; steps {spec.rollout.steps}",
        )
        return self.waiting_for_canary()

    def canary_replicas(self, weight: int) -> int:
        return self.router.replicas(self.o.spec.replicas, weight).canary

    def waiting_for_canary(self) -> Decision:
        canary = self.status.canary
        assert canary is not None
        first_weight = self.o.spec.rollout.steps[0]
        replicas = self.canary_replicas(first_weight)
        canary.replicas = self.o.canary.replicas
        canary.ready_replicas = self.o.canary.ready_replicas
        if self.o.canary.serving(canary.revision, replicas):
            canary.ready_at = self.o.now
            canary.last_step_at = self.o.now
            canary.weight = first_weight
            canary.actual_weight = self.router.achieved_weight(
                first_weight, self.o.stable.ready_replicas, self.o.canary.ready_replicas
            )
            self.status.message = f"canary {canary.version} ready; at {first_weight}% traffic"
            self.condition("Progressing", True, Reason.CANARY_READY, self.status.message)
            self.event(Reason.CANARY_READY, f"canary pods ready; {first_weight}% of traffic")
            return self.decision(
                self.desired_plan(replicas), first_weight, interval_seconds(self.o.spec)
            )
        deadline = duration_seconds(self.o.spec.rollout.progress_deadline)
        waited = (self.o.now - canary.started_at).total_seconds()
        problem = self.o.canary_pod_problem
        if waited >= deadline:
            why = f": {problem}" if problem else ""
            return self.roll_back(
                Reason.PROGRESS_DEADLINE_EXCEEDED,
                f"canary pods never became ready within {self.o.spec.rollout.progress_deadline} "
                f"({self.o.canary.ready_replicas}/{replicas} ready){why}",
            )
        if problem:
            message = (
                f"canary {canary.version} pods not ready "
                f"({self.o.canary.ready_replicas}/{replicas}): {problem}"
            )
            if message != self.status.message:
                self.event(Reason.CANARY_NOT_READY, message, warning=True)
            self.status.message = message
            self.condition("Progressing", True, Reason.CANARY_NOT_READY, message)
        return self.decision(self.desired_plan(replicas), 0, min(POLL_SECONDS, deadline - waited))

    def fresh_analysis(self) -> AnalysisStatus | None:
        """The observation's analysis if it judges the current step, else None."""
        analysis = self.o.analysis
        canary = self.status.canary
        if analysis is None or canary is None or canary.last_step_at is None:
            return None
        if not analysis_due(self.o) or analysis.at <= canary.last_step_at:
            return None
        return analysis.model_copy(
            deep=True, update={"revision": canary.revision, "step": canary.step}
        )

    def walking(self) -> Decision:
        """A ready canary at some step: judge it, advance it, or hold it."""
        canary = self.status.canary
        assert canary is not None
        spec = self.o.spec
        steps = spec.rollout.steps
        if canary.step >= len(steps):
            # rollout.steps was shortened under a running canary: hold at its last step.
            canary.step = len(steps) - 1
        analysis = self.fresh_analysis()
        if analysis is not None:
            self.status.last_analysis = analysis
            outcome = self.judge(analysis)
            if outcome is not None:
                return outcome
        weight = steps[canary.step]
        canary.weight = weight
        canary.replicas = self.o.canary.replicas
        canary.ready_replicas = self.o.canary.ready_replicas
        canary.actual_weight = self.router.achieved_weight(
            weight, self.o.stable.ready_replicas, self.o.canary.ready_replicas
        )
        if self.paused():
            by = "spec.rollout.paused" if spec.rollout.paused else PAUSE_ANNOTATION
            self.status.message = f"paused at step {canary.step + 1} ({weight}%) by {by}"
            if self.progressing_reason() != Reason.PAUSED:
                self.event(
                    Reason.PAUSED,
                    f"canary {canary.version} paused at step {canary.step + 1} ({weight}%); "
                    "analyses go on and failed checks still roll it back",
                )
            self.condition("Progressing", True, Reason.PAUSED, self.status.message)
        elif self.progressing_reason() == Reason.PAUSED:
            self.status.message = (
                f"canary {canary.version} resumed at step {canary.step + 1} ({weight}%)"
            )
            self.condition("Progressing", True, Reason.RESUMED, self.status.message)
            self.event(Reason.RESUMED, self.status.message)
        due = next_analysis_at(spec, canary)
        assert due is not None
        wait = max(0.0, (due - self.o.now).total_seconds())
        return self.decision(self.desired_plan(self.canary_replicas(weight)), weight, wait)

    def judge(self, analysis: AnalysisStatus) -> Decision | None:
        """Apply one analysis verdict; a Decision when it ends the walk, else None."""
        canary = self.status.canary
        assert canary is not None
        spec = self.o.spec
        # The next analysis must be taken after this one: an analysis is never judged twice.
        canary.last_step_at = max(self.o.now, analysis.at)
        if analysis.verdict == Verdict.FAIL:
            canary.failed_checks += 1
            canary.inconclusive_checks = 0
            summary = failure_summary(analysis)
            self.event(
                Reason.ANALYSIS_FAILED,
                f"step {canary.step + 1}: {summary} "
                f"(failed checks {canary.failed_checks}/{spec.rollout.failure_threshold})",
                warning=True,
            )
            self.notify(Reason.ANALYSIS_FAILED, summary, canary)
            if canary.failed_checks >= spec.rollout.failure_threshold:
                return self.roll_back(
                    Reason.FAILED_CHECKS,
                    f"{canary.failed_checks} failed analyses reached the threshold "
                    f"{spec.rollout.failure_threshold}; last: {summary}",
                )
            return None
        if analysis.verdict in (Verdict.NO_DATA, Verdict.ERROR):
            reasons = failure_summary(analysis)
            if self.paused():
                return None
            canary.inconclusive_checks += 1
            self.event(
                Reason.ANALYSIS_INCONCLUSIVE,
                f"step {canary.step + 1} held: {analysis.verdict} "
                f"({canary.inconclusive_checks}/{spec.rollout.inconclusive_limit}): {reasons}",
                warning=True,
            )
            if canary.inconclusive_checks >= spec.rollout.inconclusive_limit:
                return self.roll_back(
                    Reason.ANALYSIS_INCONCLUSIVE,
                    f"{canary.inconclusive_checks} consecutive analyses were inconclusive "
                    f"({analysis.verdict}): {reasons}",
                )
            return None
        canary.inconclusive_checks = 0
        if self.paused():
            return None
        if canary.step + 1 >= len(spec.rollout.steps):
            return self.start_promotion(
                f"all {len(spec.rollout.steps)} steps passed their analyses"
            )
        canary.step += 1
        weight = spec.rollout.steps[canary.step]
        canary.weight = weight
        self.status.message = f"canary {canary.version} at step {canary.step + 1} ({weight}%)"
        self.condition("Progressing", True, Reason.STEP_ADVANCED, self.status.message)
        self.event(
            Reason.STEP_ADVANCED,
            f"analysis passed; canary {canary.version} advanced to step {canary.step + 1} "
            f"of {len(spec.rollout.steps)} ({weight}%)",
        )
        return None

    def promote_step(self) -> Decision:
        """The next step now, as if the current one had passed; after the last, promotion.
        The step clock restarts, so the next analysis judges the new step."""
        canary = self.status.canary
        assert canary is not None
        steps = self.o.spec.rollout.steps
        if canary.step + 1 >= len(steps):
            self.event(Reason.STEP_PROMOTED, f"last step of {canary.version} promoted by user")
            return self.start_promotion(f"its last step was promoted by {PROMOTE_STEP_ANNOTATION}")
        canary.step += 1
        canary.last_step_at = self.o.now
        canary.inconclusive_checks = 0
        weight = steps[canary.step]
        self.status.message = f"canary {canary.version} at step {canary.step + 1} ({weight}%)"
        self.condition("Progressing", True, Reason.STEP_PROMOTED, self.status.message)
        self.event(
            Reason.STEP_PROMOTED,
            f"canary {canary.version} moved to step {canary.step + 1} of {len(steps)} "
            f"({weight}%) by {PROMOTE_STEP_ANNOTATION}",
        )
        return self.walking()

    def start_promotion(self, why: str) -> Decision:
        canary = self.status.canary
        assert canary is not None
        self.status.phase = Phase.PROMOTING
        self.status.message = f"promoting {canary.version}: {why}"
        self.condition("Progressing", True, Reason.PROMOTION_STARTED, self.status.message)
        replaced = self.status.stable.version if self.status.stable else "nothing"
        self.event(Reason.PROMOTION_STARTED, f"{self.status.message}; replacing {replaced}")
        return self.promoting()

    def promoting(self) -> Decision:
        """Stable takes the canary's template; the canary keeps serving until stable is ready.

        The revision being promoted passed its analysis, so it finishes even if the spec
        changed meanwhile; the newer revision then starts its canary against it."""
        canary = self.status.canary
        stable = self.status.stable
        assert canary is not None
        assert stable is not None
        # The first promoting reconcile still has the canary's revision in the spec; later
        # ones find its template already recorded as the stable's.
        template = stable.template if stable.revision == canary.revision else self.o.template
        assert template is not None
        wanted = self.o.spec.replicas
        canary_plan = TrackPlan(canary.revision, template, self.canary_replicas(canary.weight))
        if self.o.stable.serving(canary.revision, wanted):
            self.outcome = Outcome.PROMOTED
            took = (self.o.now - canary.started_at).total_seconds()
            self.record(canary.revision, canary.version, Outcome.PROMOTED, self.status.message)
            self.event(
                Reason.PROMOTED,
                f"{canary.version} promoted to stable after {took:.0f}s",
            )
            self.notify(Reason.PROMOTED, f"{canary.version} promoted to stable", canary)
            self.status.stable = StableStatus(
                revision=canary.revision, version=canary.version, template=template
            )
            self.status.canary = None
            self.status.rejected_revision = None
            self.status.phase = Phase.AVAILABLE
            self.status.message = f"stable {canary.version} serves all traffic"
            self.condition("Progressing", False, Reason.COMPLETE, self.status.message)
            if self.o.revision != canary.revision:
                return self.start_canary(f", changed while {canary.version} was promoted")
            return self.decision(None, 0, None)
        # The stable track rolls to the new template now; the canary holds its share.
        self.status.stable = StableStatus(
            revision=canary.revision,
            version=canary.version,
            template=template,
            replicas=stable.replicas,
            ready_replicas=stable.ready_replicas,
        )
        self.status.phase = Phase.PROMOTING
        return self.decision(canary_plan, canary.weight, POLL_SECONDS)

    def roll_back(self, reason: Reason, message: str) -> Decision:
        canary = self.status.canary
        stable = self.status.stable
        assert canary is not None
        assert stable is not None
        self.outcome = Outcome.ROLLED_BACK
        self.status.rejected_revision = canary.revision
        self.record(canary.revision, canary.version, Outcome.ROLLED_BACK, f"{reason}: {message}")
        self.status.canary = None
        self.status.phase = Phase.ROLLED_BACK
        self.status.message = (
            f"canary {canary.version} (revision {canary.revision}) rolled back ({reason}): "
            f"{message}"
        )
        self.condition("Progressing", False, Reason.ROLLED_BACK, self.status.message)
        self.event(
            Reason.ROLLED_BACK,
            f"canary {canary.version} rolled back, all traffic on stable {stable.version}: "
            f"{reason}: {message}",
            warning=True,
        )
        self.notify(Reason.ROLLED_BACK, self.status.message, canary)
        keep = self.rolled_back_canary_replicas()
        plan = TrackPlan(canary.revision, self.o.template, keep)
        current = canary.revision == self.o.revision
        return self.decision(plan if current else None, 0, POLL_SECONDS if keep else None)

    def supersede(self) -> Decision:
        canary = self.status.canary
        stable = self.status.stable
        assert canary is not None
        assert stable is not None
        self.outcome = Outcome.SUPERSEDED
        if self.o.revision == stable.revision:
            why = f"the spec returned to stable {stable.version}"
            self.record(canary.revision, canary.version, Outcome.SUPERSEDED, why)
            self.event(Reason.REVERTED, f"canary {canary.version} cancelled: {why}")
            self.status.canary = None
            return self.steady()
        why = f"superseded by {self.o.spec.model.version} (revision {self.o.revision})"
        self.record(canary.revision, canary.version, Outcome.SUPERSEDED, why)
        self.event(Reason.SUPERSEDED, f"canary {canary.version} {why}")
        return self.start_canary(f", superseding {canary.version}")

    def pause_or_resume(self, pending: set[str]) -> None:
        """A pause request holds canaries, this one and later ones, until a resume request;
        asked at once, pause wins (holding is the safe side). Nothing is returned: the
        walk below reads the new state."""
        if PAUSE_ANNOTATION in pending:
            if not self.status.paused_by_request:
                self.event(Reason.PAUSE_REQUESTED, f"pause requested by {PAUSE_ANNOTATION}")
            self.status.paused_by_request = True
        elif RESUME_ANNOTATION in pending and self.status.paused_by_request:
            self.status.paused_by_request = False
            still = " (spec.rollout.paused still holds it)" if self.o.spec.rollout.paused else ""
            self.event(Reason.RESUME_REQUESTED, f"resume requested by {RESUME_ANNOTATION}{still}")

    def manual(self) -> Decision | None:
        """Act on new manual requests; None when they change nothing.

        Every new request is recorded as handled now, acted on or not."""
        canary = self.status.canary
        in_canary = canary is not None and self.status.phase != Phase.PROMOTING
        pending = set(self.pending)
        for annotation in pending:
            self.handle(annotation)
        self.pause_or_resume(pending)
        current = in_canary and canary is not None and canary.revision == self.o.revision
        if ABORT_ANNOTATION in pending and current:
            return self.roll_back(Reason.ABORTED, f"aborted by {ABORT_ANNOTATION}")
        if ABORT_ANNOTATION in pending and canary is not None and not in_canary:
            self.event(
                Reason.ABORT_TOO_LATE,
                f"abort ignored: {canary.version} passed its analysis and is being promoted; "
                "to go back, set the spec to the previous model, which is then rolled out "
                "as a canary",
                warning=True,
            )
        if PROMOTE_ANNOTATION in pending and current and canary is not None:
            # A canary that never became ready keeps weight 0: no traffic to unready pods.
            self.event(Reason.MANUAL_PROMOTION, f"promotion of {canary.version} requested by user")
            return self.start_promotion(f"requested by {PROMOTE_ANNOTATION}")
        if PROMOTE_STEP_ANNOTATION in pending and current and canary is not None:
            if canary.ready_at is None:
                self.event(
                    Reason.STEP_PROMOTION_IGNORED,
                    f"step promotion ignored: the pods of canary {canary.version} are not ready, "
                    f"and unready pods get no traffic; use {PROMOTE_ANNOTATION} to promote anyway",
                    warning=True,
                )
            else:
                return self.promote_step()
        rejected = self.status.rejected_revision == self.o.revision
        if RETRY_ANNOTATION in pending and rejected and canary is None:
            self.status.rejected_revision = None
            self.event(
                Reason.RETRY_REQUESTED,
                f"retrying revision {self.o.revision} as requested by {RETRY_ANNOTATION}",
            )
            return self.start_canary(", retried by user")
        return None


def decide(observation: Observation) -> Decision:
    """The next status and actions for one ModelDeployment."""
    b = _Builder(observation)
    stable = b.status.stable
    if stable is None or stable.template is None:
        return b.first_deploy()
    if b.status.rejected_revision not in (None, observation.revision):
        # The spec moved away from the rolled-back revision: asking for it again later is
        # a new request, not a retry loop.
        b.status.rejected_revision = None

    walking = b.status.canary is not None and b.status.phase != Phase.PROMOTING
    if observation.invalid_spec is not None and walking:
        return b.roll_back(
            Reason.INVALID_SPEC,
            f"the spec breaks a rule this operator enforces, so nothing may judge the canary: "
            f"{observation.invalid_spec}",
        )

    manual = b.manual()
    if manual is not None:
        return manual

    canary = b.status.canary
    if canary is not None and b.status.phase == Phase.PROMOTING:
        return b.promoting()
    if canary is not None and canary.revision != observation.revision:
        return b.supersede()
    if canary is not None:
        if canary.ready_at is None:
            return b.waiting_for_canary()
        return b.walking()

    if observation.revision == stable.revision:
        return b.steady()
    if observation.revision == b.status.rejected_revision:
        return b.steady()
    if b.status.phase == Phase.PENDING:
        # The first stable never became ready: replace it rather than canary against nothing.
        return b.first_deploy()
    return b.start_canary("")
