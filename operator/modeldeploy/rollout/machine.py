"""The state machine every strategy shares: first deployment, steady state, manual
requests, supersession, rollback, history and conditions. A strategy (see `canary`)
decides how a new revision gets from started to promoted.

Manual requests (see `requests`), strongest first: abort, promote, promote-step (one
step), analysis. Pause comes from `spec.rollout.paused` or from a pause request (the
`pause` annotation, undone by `resume`), which GitOps tools do not revert because it is
not in the spec.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from modeldeploy.analysis import failure_summary
from modeldeploy.api import (
    HISTORY_LIMIT,
    AnalysisStatus,
    CanaryStatus,
    HistoryEntry,
    Outcome,
    Phase,
    StableStatus,
    StrategySpec,
    StrategyType,
    ValidationStatus,
    ValidationVerdict,
    Verdict,
    duration_seconds,
)
from modeldeploy.resources import selector_labels
from modeldeploy.rollout.blue_green import BlueGreen
from modeldeploy.rollout.canary import Canary
from modeldeploy.rollout.conditions import (
    AVAILABLE,
    DROPPED_CONDITIONS,
    READY,
    RECONCILING,
    STALLED,
    set_condition,
)
from modeldeploy.rollout.direct import Direct
from modeldeploy.rollout.experiment import (
    experiment_step,
    experiments,
    manual_request,
    stop_if_out_of_place,
)
from modeldeploy.rollout.model import (
    POLL_SECONDS,
    STABLE_RECHECK_SECONDS,
    Decision,
    EventRecord,
    Gate,
    Notification,
    Observation,
    Reason,
    Rejection,
    Track,
    TrackPlan,
    wanted_replicas,
)
from modeldeploy.rollout.requests import (
    ABORT_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_STEP_ANNOTATION,
    RESUME_ANNOTATION,
    RETRY_ANNOTATION,
    new_requests,
)
from modeldeploy.rollout.shadow import Shadowed
from modeldeploy.rollout.strategy import Strategy
from modeldeploy.routers import router_for
from modeldeploy.validation import job_name as validation_job_name

_STRATEGIES: dict[StrategyType, Strategy] = {
    StrategyType.CANARY: Canary(),
    StrategyType.BLUE_GREEN: BlueGreen(),
    StrategyType.DIRECT: Direct(),
    # A new model under an experiment strategy is rolled out as a canary.
    StrategyType.EXPERIMENT: Canary(),
}
# Type shadow: the promotion follows the shadow, as a canary's follows its last step.
_SHADOWED: dict[StrategyType, Strategy] = {
    **{kind: Shadowed(strategy, promote_after=False) for kind, strategy in _STRATEGIES.items()},
    StrategyType.SHADOW: Shadowed(Canary(), promote_after=True),
}


def strategy_for(spec: StrategySpec) -> Strategy:
    """The strategy of `spec.type`, behind a shadow phase when the spec asks for one."""
    kind = StrategyType(spec.type)
    return _SHADOWED[kind] if spec.shadows() else _STRATEGIES[kind]


def analysis_due(observation: Observation) -> bool:
    """Whether the shell should run an analysis before deciding (the strategy says when)."""
    return strategy_for(observation.spec.strategy).analysis_due(observation)


def analysis_track(observation: Observation) -> Track:
    """The track the analysis judges: the new revision's pods."""
    return strategy_for(observation.spec.strategy).analysis_track(observation)


AUTOSCALED_NOTE = "; an HPA sizes it (spec.replicas is ignored while autoscaling is on)"


class Machine:
    """Accumulates one decision; the shared transitions are methods, a strategy adds its own."""

    def __init__(self, observation: Observation) -> None:
        self.o = observation
        self.status = observation.status.model_copy(deep=True)
        self.status.observed_generation = observation.generation
        self.status.revision = observation.revision
        self.events: list[EventRecord] = []
        self.notifications: list[Notification] = []
        self.outcome: Outcome | None = None
        self.router = router_for(observation.spec.traffic.router)
        self.strategy = strategy_for(observation.spec.strategy)
        self.validation_attempt: int | None = None
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
        previous = self.status.previous
        # A blue-green switch-back target keeps the stable Deployment until it scales down.
        stable = previous if previous is not None and previous.standby else self.status.stable
        if stable is None or stable.template is None:
            return None
        replicas = wanted_replicas(self.o)
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
                observed.replicas if observed.exists else wanted_replicas(self.o)
            )
            self.status.stable.ready_replicas = observed.ready_replicas

    def availability(self) -> None:
        stable = self.status.stable
        ready = self.o.stable.ready_replicas
        wanted = wanted_replicas(self.o)
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
        wanted = wanted_replicas(self.o)
        serving = (
            stable is not None
            and stable.revision == status.revision
            and self.o.stable.serving(stable.revision, wanted)
        )
        if status.phase == Phase.ROLLED_BACK:
            reason, message = Reason.ROLLED_BACK, status.message
        elif status.phase == Phase.PROMOTING:
            reason, message = Reason.PROMOTING, status.message
        elif status.phase == Phase.EXPERIMENTING:
            reason, message = Reason.EXPERIMENTING, status.message
        elif status.canary is not None and (
            self.paused() or self.progressing_reason() == Reason.PAUSED
        ):
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

    def decision(
        self,
        canary: TrackPlan | None,
        weight: int,
        requeue: float | None,
        *,
        live_tracks: tuple[str, ...] | None = None,
        stable_replicas: int | None = None,
        mirror_percent: float | None = None,
    ) -> Decision:
        """What to apply now. The clients' Service reaches `live_tracks`; by default the
        tracks whose pods are wanted: the stable, and the canary while it has pods (a
        rejected canary's pods on their way out must not get a live request)."""
        self.refresh_stable_counts()
        self.scale_status()
        self.availability()
        self.rollout_conditions()
        if live_tracks is None:
            serving = canary is not None and canary.replicas > 0
            live_tracks = (Track.STABLE, Track.CANARY) if serving else (Track.STABLE,)
        stable = self.stable_plan(canary, weight)
        if stable is not None and stable_replicas is not None:
            stable = TrackPlan(stable.revision, stable.template, stable_replicas)
        return Decision(
            status=self.status,
            stable=stable,
            canary=canary,
            weight=weight,
            events=self.events,
            notifications=self.notifications,
            requeue_after=requeue,
            outcome=self.outcome,
            live_tracks=live_tracks,
            validation_attempt=self.validation_attempt,
            mirror_percent=mirror_percent,
        )

    # -- the offline check -------------------------------------------------------

    def candidate(self) -> CanaryStatus | StableStatus | None:
        """What the offline check is about: the revision in flight, or a first revision
        that has not served yet (judged on the absolute bounds only)."""
        if self.status.canary is not None:
            return self.status.canary
        if self.status.phase == Phase.PENDING:
            return self.status.stable
        return None

    def gated(self) -> bool:
        """Whether an offline check must still pass before live traffic reaches the new
        revision (none is configured, or it passed: False)."""
        candidate = self.candidate()
        checked = self.status.validation
        if self.o.spec.validation is None or candidate is None:
            return False
        passed = checked is not None and checked.revision == candidate.revision
        return not (passed and checked is not None and checked.verdict == ValidationVerdict.PASS)

    def gate(self) -> Gate | Rejection:
        """Run the offline check of the revision under way: PASSED, HOLD while its Job runs
        (or is retried after an Error), or a Rejection to roll back with."""
        spec = self.o.spec.validation
        candidate = self.candidate()
        assert candidate is not None
        if spec is None or not self.gated():
            return Gate.PASSED
        checked = self.status.validation
        if checked is None or checked.revision != candidate.revision:
            return self._start_check(1, "")
        if checked.verdict in (ValidationVerdict.FAIL, ValidationVerdict.ERROR):
            # The verdict that rejected an earlier try of this revision: a retry checks again,
            # in a Job of its own.
            return self._start_check(checked.attempts + 1, " (retried)")
        result = self.o.validation
        if result is None or result.verdict == ValidationVerdict.PENDING:
            self.validation_attempt = checked.attempts
            return Gate.HOLD
        done = result.status(
            revision=candidate.revision, job=checked.job, attempts=checked.attempts, at=self.o.now
        )
        self.status.validation = done
        if result.verdict == ValidationVerdict.PASS:
            self.event(
                Reason.VALIDATION_PASSED, f"offline check of {candidate.version}: {result.message}"
            )
            return Gate.PASSED
        if result.verdict == ValidationVerdict.FAIL:
            return Rejection(Reason.VALIDATION_FAILED, f"offline check: {result.message}")
        limit = self.o.spec.rollout.inconclusive_limit
        self.event(
            Reason.VALIDATION_ERROR,
            f"offline check of {candidate.version}, attempt {checked.attempts}/{limit}: "
            f"{result.message}",
            warning=True,
        )
        if checked.attempts >= limit:
            return Rejection(
                Reason.VALIDATION_INCONCLUSIVE,
                f"{checked.attempts} offline checks ended in errors; last: {result.message}",
            )
        return self._start_check(checked.attempts + 1, f" (attempt {checked.attempts + 1})")

    def _start_check(self, attempt: int, note: str) -> Gate | Rejection:
        spec = self.o.spec.validation
        candidate = self.candidate()
        assert spec is not None
        assert candidate is not None
        job = validation_job_name(self.o.name, candidate.revision, spec, attempt)
        previous = self.status.validation
        self.status.validation = ValidationStatus(
            revision=candidate.revision,
            verdict=ValidationVerdict.PENDING,
            metric=str(spec.metric),
            message=previous.message if previous and attempt > 1 else "the check is starting",
            attempts=attempt,
            job=job,
            at=self.o.now,
        )
        self.validation_attempt = attempt
        self.event(
            Reason.VALIDATION_STARTED,
            f"offline check of {candidate.version} on the hold-out set started{note}: Job {job}",
        )
        return Gate.HOLD

    def scale_status(self) -> None:
        """What the scale subresource reads: the stable's pods and the serving pods' labels."""
        # As the Deployment about to be created will have it: seeing it appear writes nothing.
        observed = self.o.stable
        self.status.replicas = observed.replicas if observed.exists else wanted_replicas(self.o)
        labels = selector_labels(self.o.name)
        self.status.selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        autoscaled = self.o.spec.autoscaling is not None
        if (
            autoscaled
            and self.status.phase == Phase.AVAILABLE
            and AUTOSCALED_NOTE not in (self.status.message)
        ):
            self.status.message += AUTOSCALED_NOTE

    def note_pod_problem(self, candidate: CanaryStatus, replicas: int) -> None:
        """While the new pods are not ready, say why (from the shell's look at them)."""
        problem = self.o.canary_pod_problem
        if not problem:
            return
        message = (
            f"canary {candidate.version} pods not ready "
            f"({self.o.canary.ready_replicas}/{replicas}): {problem}"
        )
        if message != self.status.message:
            self.event(Reason.CANARY_NOT_READY, message, warning=True)
        self.status.message = message
        self.condition("Progressing", True, Reason.CANARY_NOT_READY, message)

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
        live = () if self.gated() else None
        return self.decision(None, 0, STABLE_RECHECK_SECONDS, live_tracks=live)

    def first_deploy_message(self) -> str:
        version = self.o.spec.model.version
        ready, wanted = self.o.stable.ready_replicas, wanted_replicas(self.o)
        return f"deploying {version} as the first stable revision: {ready}/{wanted} pods ready"

    def check_first(self, serving: bool) -> Decision | None:
        """A first revision with an offline check: its pods start, but the clients' Service
        (or route) reaches none of them until the check passed. None once it has."""
        stable = self.status.stable
        assert stable is not None
        if not serving:
            self.status.message = f"{self.first_deploy_message()}; its offline check follows"
            return self.decision(None, 0, STABLE_RECHECK_SECONDS, live_tracks=())
        gate = self.gate()
        if gate is Gate.PASSED:
            return None
        if isinstance(gate, Rejection):
            return self.reject_first(gate)
        self.status.message = (
            f"{stable.version} ready as the first stable revision; its offline check runs "
            "before any live traffic"
        )
        self.condition("Progressing", True, Reason.VALIDATING, self.status.message)
        return self.decision(None, 0, POLL_SECONDS, live_tracks=())

    def reject_first(self, rejection: Rejection) -> Decision:
        """The first revision failed its offline check: it never serves, and nothing else
        can, so its pods are scaled to zero until the model changes or it is retried."""
        stable = self.status.stable
        assert stable is not None
        self.outcome = Outcome.ROLLED_BACK
        self.status.rejected_revision = stable.revision
        why = f"{rejection.reason}: {rejection.message}"
        self.record(stable.revision, stable.version, Outcome.ROLLED_BACK, why)
        self.event(
            Reason.ROLLED_BACK,
            f"first revision {stable.version} rejected before serving: {why}",
            warning=True,
        )
        return self.hold_rejected_first()

    def hold_rejected_first(self) -> Decision:
        stable = self.status.stable
        assert stable is not None
        why = next(
            (
                f" ({h.reason})"
                for h in self.status.history
                if h.revision == stable.revision and h.outcome == Outcome.ROLLED_BACK
            ),
            "",
        )
        self.status.phase = Phase.ROLLED_BACK
        self.status.message = (
            f"first revision {stable.version} was rejected{why}; nothing serves. Change the "
            f"model or annotate {RETRY_ANNOTATION} to check it again"
        )
        self.condition("Progressing", False, Reason.ROLLED_BACK, self.status.message)
        return self.decision(None, 0, None, live_tracks=(), stable_replicas=0)

    def steady(self) -> Decision:
        """No canary: keep the stable track at the spec's replicas."""
        stable = self.status.stable
        assert stable is not None
        wanted = wanted_replicas(self.o)
        serving = self.o.stable.serving(stable.revision, wanted)
        if self.status.phase == Phase.PENDING and self.gated():
            held = self.check_first(serving)
            if held is not None:
                return held
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

    def fresh_analysis(self) -> AnalysisStatus | None:
        """The observation's analysis if it judges the revision's current stage, else None:
        only when the strategy said one is due, and taken after the previous one."""
        analysis = self.o.analysis
        canary = self.status.canary
        if analysis is None or canary is None or canary.last_step_at is None:
            return None
        if not self.strategy.analysis_due(self.o) or analysis.at <= canary.last_step_at:
            return None
        update = {"revision": canary.revision, "step": canary.step}
        return analysis.model_copy(deep=True, update=update)

    def judge(self, analysis: AnalysisStatus, label: str) -> Decision | None:
        """Count one analysis of the revision under way: failed ones toward the threshold,
        inconclusive ones toward the limit (not while paused); a rollback when either is
        reached, else None. What a Pass moves on is the strategy's."""
        canary = self.status.canary
        assert canary is not None
        rollout = self.o.spec.rollout
        # The next analysis must be taken after this one: an analysis is never judged twice.
        canary.last_step_at = max(self.o.now, analysis.at)
        if analysis.verdict == Verdict.FAIL:
            canary.failed_checks += 1
            canary.inconclusive_checks = 0
            summary = failure_summary(analysis)
            self.event(
                Reason.ANALYSIS_FAILED,
                f"{label}: {summary} "
                f"(failed checks {canary.failed_checks}/{rollout.failure_threshold})",
                warning=True,
            )
            self.notify(Reason.ANALYSIS_FAILED, summary, canary)
            if canary.failed_checks >= rollout.failure_threshold:
                return self.roll_back(
                    Reason.FAILED_CHECKS,
                    f"{canary.failed_checks} failed analyses reached the threshold "
                    f"{rollout.failure_threshold}; last: {summary}",
                )
            return None
        if not analysis.awaiting_feedback:
            canary.awaiting_feedback_since = None
        if analysis.verdict in (Verdict.NO_DATA, Verdict.ERROR):
            if self.paused():
                return None
            reasons = failure_summary(analysis)
            deadline = self.feedback_deadline(analysis)
            if deadline is not None and analysis.at < deadline:
                self.event(
                    Reason.ANALYSIS_INCONCLUSIVE,
                    f"{label} held, not counted toward inconclusiveLimit until "
                    f"{deadline.isoformat(timespec='seconds')} (feedbackDeadline): {reasons}",
                )
                return None
            canary.inconclusive_checks += 1
            self.event(
                Reason.ANALYSIS_INCONCLUSIVE,
                f"{label} held: {analysis.verdict} "
                f"({canary.inconclusive_checks}/{rollout.inconclusive_limit}): {reasons}",
                warning=True,
            )
            if canary.inconclusive_checks >= rollout.inconclusive_limit:
                return self.roll_back(
                    Reason.ANALYSIS_INCONCLUSIVE,
                    f"{canary.inconclusive_checks} consecutive analyses were inconclusive "
                    f"({analysis.verdict}): {reasons}",
                )
            return None
        canary.inconclusive_checks = 0
        return None

    def feedback_deadline(self, analysis: AnalysisStatus) -> datetime | None:
        """Until when an analysis waiting only for quality labels holds the step without
        counting; None when it is not waiting. The wait starts with its first such analysis."""
        canary = self.status.canary
        quality = self.o.spec.analysis.quality
        if canary is None or quality is None or not analysis.awaiting_feedback:
            return None
        if canary.awaiting_feedback_since is None:
            canary.awaiting_feedback_since = analysis.at
        wait = timedelta(seconds=duration_seconds(quality.feedback_deadline))
        return canary.awaiting_feedback_since + wait

    def unready(self, pods: str, ready: int, wanted: int) -> Decision | float:
        """Pods of the revision under way that are not ready yet: a rollback once
        rollout.progressDeadline has passed since it started, else how long to wait before
        looking again."""
        canary = self.status.canary
        assert canary is not None
        deadline = self.o.spec.rollout.progress_deadline
        left = duration_seconds(deadline) - (self.o.now - canary.started_at).total_seconds()
        if left > 0:
            return min(POLL_SECONDS, left)
        problem = self.o.canary_pod_problem
        return self.roll_back(
            Reason.PROGRESS_DEADLINE_EXCEEDED,
            f"{pods} never became ready within {deadline} ({ready}/{wanted} ready)"
            + (f": {problem}" if problem else ""),
        )

    def roll_back(self, reason: Reason, message: str) -> Decision:
        canary = self.status.canary
        stable = self.status.stable
        assert canary is not None
        assert stable is not None
        self.outcome = Outcome.ROLLED_BACK
        self.status.rejected_revision = canary.revision
        self.record(canary.revision, canary.version, Outcome.ROLLED_BACK, f"{reason}: {message}")
        self.status.canary = None
        previous = self.status.previous
        if previous is not None:
            # A blue-green switch or a direct replacement goes back to what was there.
            stable = StableStatus(
                revision=previous.revision, version=previous.version, template=previous.template
            )
            self.status.stable = stable
            self.status.previous = None
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
        previous = self.status.previous
        # What served before the revision under way (a direct replacement took its place).
        stable = previous if previous is not None else self.status.stable
        assert canary is not None
        assert stable is not None
        self.outcome = Outcome.SUPERSEDED
        if self.o.revision == stable.revision:
            why = f"the spec returned to stable {stable.version}"
            self.record(canary.revision, canary.version, Outcome.SUPERSEDED, why)
            self.event(Reason.REVERTED, f"canary {canary.version} cancelled: {why}")
            self.status.canary = None
            self.status.stable = StableStatus(
                revision=stable.revision, version=stable.version, template=stable.template
            )
            self.status.previous = None
            return self.steady()
        why = f"superseded by {self.o.spec.model.version} (revision {self.o.revision})"
        self.record(canary.revision, canary.version, Outcome.SUPERSEDED, why)
        self.event(Reason.SUPERSEDED, f"canary {canary.version} {why}")
        return self.strategy.start(self, f", superseding {canary.version}")

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
        in_canary = canary is not None and self.strategy.abortable(self)
        pending = set(self.pending)
        for annotation in pending:
            self.handle(annotation)
        self.pause_or_resume(pending)
        experimented = manual_request(self, pending)
        if experimented is not None:
            return experimented
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
            return self.strategy.start_promotion(self, f"requested by {PROMOTE_ANNOTATION}")
        if PROMOTE_STEP_ANNOTATION in pending and current and canary is not None:
            if canary.ready_at is None:
                self.event(
                    Reason.STEP_PROMOTION_IGNORED,
                    f"step promotion ignored: the pods of canary {canary.version} are not ready, "
                    f"and unready pods get no traffic; use {PROMOTE_ANNOTATION} to promote anyway",
                    warning=True,
                )
            else:
                return self.strategy.promote_step(self)
        rejected = self.status.rejected_revision == self.o.revision
        if RETRY_ANNOTATION in pending and rejected and canary is None:
            self.status.rejected_revision = None
            self.event(
                Reason.RETRY_REQUESTED,
                f"retrying revision {self.o.revision} as requested by {RETRY_ANNOTATION}",
            )
            stable = self.status.stable
            if stable is not None and stable.revision == self.o.revision:
                return self.first_deploy()
            return self.strategy.start(self, ", retried by user")
        return None


def decide(observation: Observation) -> Decision:
    """The next status and actions for one ModelDeployment."""
    b = Machine(observation)
    stable = b.status.stable
    if stable is None or stable.template is None:
        return b.first_deploy()
    # A first revision its offline check rejected: nothing served since.
    first_rejected = b.status.rejected_revision == stable.revision
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
    stop_if_out_of_place(b)

    canary = b.status.canary
    if canary is not None and b.status.phase == Phase.PROMOTING:
        return b.strategy.promoting(b)
    if canary is not None and canary.revision != observation.revision:
        return b.supersede()
    if canary is not None:
        return b.strategy.progress(b)

    if first_rejected and observation.revision == stable.revision:
        return b.hold_rejected_first()
    if observation.revision == stable.revision:
        return experiment_step(b) if experiments(observation.spec) else b.steady()
    if observation.revision == b.status.rejected_revision:
        return b.steady()
    if b.status.phase == Phase.PENDING or first_rejected:
        # The first stable never became ready, or never passed its check: replace it rather
        # than canary against nothing.
        return b.first_deploy()
    return b.strategy.start(b, "")
