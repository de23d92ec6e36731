"""A small, pure simulator of the operator loop around `rollout.decide`.

It holds the stored status, fakes what the cluster reports about the two Deployments
(pods of a new spec become ready a set number of reconciles later, or never), advances a
fake clock by the requeue each decision asks for, and feeds scripted analysis verdicts
only when `analysis_due` says an analysis would run. Status goes through JSON between
reconciles, the way it survives in the API server (and an operator restart).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from modeldeploy.api import (
    AnalysisStatus,
    CheckResult,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Verdict,
)
from modeldeploy.resources import revision_of, template_of
from modeldeploy.rollout import (
    Decision,
    Observation,
    TrackObservation,
    TrackPlan,
    analysis_due,
    decide,
)
from modeldeploy.rollout.experiment import ExperimentDue, experiment_due
from modeldeploy.rollout.model import ArmCount, ExperimentReading
from modeldeploy.validation import ValidationResult

START = datetime(2026, 1, 1, tzinfo=UTC)
IMAGE = "ghcr.io/example/modelserver:1.0"
POLL = 5.0
ROLLBACK_REASONS = {
    "FailedChecks",
    "AnalysisInconclusive",
    "ProgressDeadlineExceeded",
    "Aborted",
}


def make_spec(
    version: str = "1.0.0",
    *,
    steps: Iterable[int] = (10, 25, 50),
    replicas: int = 4,
    interval: str = "30s",
    failure_threshold: int = 3,
    inconclusive_limit: int = 5,
    progress_deadline: str = "60s",
    paused: bool = False,
    router: str = "replicas",
    strategy: dict[str, Any] | None = None,
    **model: Any,
) -> ModelDeploymentSpec:
    body: dict[str, Any] = {
        "model": {
            "name": "fraud",
            "version": version,
            "uri": f"pvc://models/fraud/{version}/model.ubj",
            **model,
        },
        "replicas": replicas,
        "traffic": {"router": router},
        "rollout": {
            "steps": list(steps),
            "interval": interval,
            "failureThreshold": failure_threshold,
            "inconclusiveLimit": inconclusive_limit,
            "progressDeadline": progress_deadline,
            "paused": paused,
        },
    }
    if router == "gatewayAPI":
        body["traffic"]["gatewayAPI"] = {"parentRefs": [{"name": "gw"}]}
    if strategy is not None:
        body["strategy"] = strategy
    return ModelDeploymentSpec.model_validate(body)


def with_rollout(spec: ModelDeploymentSpec, **changes: Any) -> ModelDeploymentSpec:
    """A copy of `spec` with rollout settings changed."""
    rollout = spec.rollout.model_copy(update=changes)
    return spec.model_copy(update={"rollout": rollout})


def roundtrip(
    status: ModelDeploymentStatus, *, exclude_none: bool = False
) -> ModelDeploymentStatus:
    """The status as the API server stores it and the operator reads it back."""
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=exclude_none)
    return ModelDeploymentStatus.model_validate(dumped)


def analysis(verdict: Verdict | str, at: datetime) -> AnalysisStatus:
    verdict = Verdict(verdict)
    value = {Verdict.PASS: 0.001, Verdict.FAIL: 0.2}.get(verdict)
    check = CheckResult(
        name="error-rate",
        query="sum(rate(errors[30s])) / sum(rate(requests[30s]))",
        value=value,
        max=0.01,
        verdict=verdict,
        message=f"scripted {verdict}",
    )
    return AnalysisStatus(at=at, verdict=verdict, requests=100.0, checks=[check])


@dataclass
class FakeTrack:
    """One Deployment as its controller would report it."""

    exists: bool = False
    revision: str | None = None
    replicas: int = 0
    ready: int = 0
    rolled_out: bool = False
    ticks_left: int | None = 0  # reconciles until the rollout completes; None: never

    def observe(self) -> TrackObservation:
        return TrackObservation(
            exists=self.exists,
            revision=self.revision,
            replicas=self.replicas,
            ready_replicas=self.ready,
            rolled_out=self.rolled_out,
        )

    def apply(self, plan: TrackPlan | None, ready_after: int | None) -> None:
        if plan is None:
            self.exists, self.revision, self.replicas, self.ready = False, None, 0, 0
            self.rolled_out, self.ticks_left = False, 0
            return
        if self.exists and (plan.revision, plan.replicas) == (self.revision, self.replicas):
            return
        if self.revision != plan.revision:
            self.ticks_left = ready_after
        elif plan.replicas < self.replicas:
            self.ticks_left = 0  # scaling down completes at once
        else:
            self.ticks_left = None if ready_after is None else ready_after
        self.exists = True
        self.revision = plan.revision
        self.replicas = plan.replicas
        self.ready = min(self.ready, plan.replicas)
        self.rolled_out = False
        self._settle()

    def tick(self) -> None:
        if self.exists and not self.rolled_out and self.ticks_left is not None:
            self.ticks_left -= 1
            self._settle()

    def _settle(self) -> None:
        if self.ticks_left is not None and self.ticks_left <= 0:
            self.ready = self.replicas
            self.rolled_out = True


@dataclass
class Tick:
    """One reconcile: what was observed, what was decided."""

    observation: Observation
    decision: Decision
    verdict: Verdict | None = None
    step: int | None = None  # the canary step the verdict judged


@dataclass
class Simulator:
    spec: ModelDeploymentSpec
    stable_ready_after: int | None = 1
    canary_ready_after: int | None = 1
    exclude_none: bool = False
    now: datetime = START
    generation: int = 1
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    annotations: dict[str, str] = field(default_factory=dict)
    verdicts: deque[Verdict] = field(default_factory=deque)
    ticks: list[Tick] = field(default_factory=list)
    stable: FakeTrack = field(default_factory=FakeTrack)
    canary: FakeTrack = field(default_factory=FakeTrack)
    # Revisions whose pods never become ready on the canary track.
    broken: set[str] = field(default_factory=set)
    # Why the stored spec breaks today's rules (an object an older release stored).
    invalid_spec: str | None = None
    # What the shell would read from the canary's pods' statuses.
    canary_pod_problem: str | None = None
    # What the offline check's Job reports once it ran (None: it still runs).
    validation: ValidationResult | None = None
    # Experiment variants' Deployments, by variant name.
    variants: dict[str, FakeTrack] = field(default_factory=dict)
    # Scripted SLO verdicts per variant (Pass once a variant's script runs out).
    guardrails: dict[str, deque[Verdict]] = field(default_factory=dict)
    # What Prometheus would count per arm when the verdict is due, from the window.
    arm_counts: Callable[[ExperimentDue], dict[str, ArmCount]] | None = None
    # Variants whose pods never become ready.
    broken_variants: set[str] = field(default_factory=set)

    # -- inputs ----------------------------------------------------------------------

    @property
    def revision(self) -> str:
        return revision_of(template_of(self.spec, IMAGE))

    def set_spec(self, spec: ModelDeploymentSpec) -> None:
        self.spec = spec
        self.generation += 1

    def annotate(self, name: str, value: str) -> None:
        self.annotations[name] = value

    def script(self, *verdicts: Verdict | str) -> None:
        self.verdicts.extend(Verdict(v) for v in verdicts)

    # -- one reconcile -----------------------------------------------------------------

    def observation(self, analysis_status: AnalysisStatus | None = None) -> Observation:
        template = template_of(self.spec, IMAGE)
        return Observation(
            spec=self.spec,
            generation=self.generation,
            revision=revision_of(template),
            template=template,
            status=roundtrip(self.status, exclude_none=self.exclude_none),
            stable=self.stable.observe(),
            canary=self.canary.observe(),
            annotations=dict(self.annotations),
            now=self.now,
            invalid_spec=self.invalid_spec,
            canary_pod_problem=self.canary_pod_problem,
            validation=self.validation,
            variants={name: track.observe() for name, track in self.variants.items()},
        )

    def step(self, *, persist: bool = True, apply: bool = True) -> Tick:
        """One reconcile. `persist=False` loses the status write (a crash right after
        deciding); `apply=False` skips applying children (a crash after the write)."""
        observation = self.observation()
        verdict: Verdict | None = None
        step: int | None = None
        if analysis_due(observation) and self.verdicts:
            verdict = self.verdicts.popleft()
            assert observation.status.canary is not None
            step = observation.status.canary.step
            observation = dataclasses.replace(observation, analysis=analysis(verdict, self.now))
        due = experiment_due(observation)
        if due is not None:
            observation = dataclasses.replace(observation, experiment=self.reading(due))
        decision = decide(observation)
        tick = Tick(observation, decision, verdict, step)
        if persist:
            self.status = decision.status
            self.ticks.append(tick)
        else:
            if verdict is not None:
                self.verdicts.appendleft(verdict)  # the analysis reruns with the same result
            reading = observation.experiment
            for name, guardrail in (reading.guardrails if reading else {}).items():
                # So do the experiment's: Prometheus answers the same when asked again.
                self.guardrails.setdefault(name, deque()).appendleft(guardrail.verdict)
        if persist and apply:
            self.apply(decision)
        # An operator that died before writing status looks again as soon as it is back,
        # not after the requeue it decided.
        self.advance(decision.requeue_after if persist else POLL)
        return tick

    def replay(self) -> Tick:
        """Reconcile again at once, fed the analysis the last reconcile used (a retried
        reconcile, or an operator that restarted after writing status)."""
        previous = self.ticks[-1].observation.analysis
        observation = dataclasses.replace(self.observation(), analysis=previous)
        decision = decide(observation)
        tick = Tick(observation, decision)
        self.status = decision.status
        self.ticks.append(tick)
        self.apply(decision)
        return tick

    def reading(self, due: ExperimentDue) -> ExperimentReading:
        guardrails = {}
        for name in due.guardrails:
            script = self.guardrails.get(name)
            verdict = script.popleft() if script else Verdict.PASS
            guardrails[name] = analysis(verdict, self.now)
        counts = None
        if due.counts:
            assert self.arm_counts is not None, "the verdict is due: script arm_counts"
            counts = self.arm_counts(due)
        return ExperimentReading(at=self.now, guardrails=guardrails, counts=counts)

    def apply(self, decision: Decision) -> None:
        self.stable.apply(decision.stable, self.stable_ready_after)
        canary = decision.canary
        broken = canary is not None and canary.revision in self.broken
        self.canary.apply(canary, None if broken else self.canary_ready_after)
        planned = {variant.name: variant.plan for variant in decision.variants}
        for name in planned.keys() - self.variants.keys():
            self.variants[name] = FakeTrack()
        for name, track in self.variants.items():
            ready_after = None if name in self.broken_variants else self.canary_ready_after
            track.apply(planned.get(name), ready_after)

    def advance(self, requeue_after: float | None) -> None:
        seconds = POLL if requeue_after is None else max(1.0, requeue_after)
        self.now += timedelta(seconds=seconds)
        self.stable.tick()
        self.canary.tick()
        for track in self.variants.values():
            track.tick()

    # -- runs ------------------------------------------------------------------------

    def run(self, until: Callable[[Simulator], bool], max_ticks: int = 500) -> list[Tick]:
        """Reconcile until `until` holds after a tick; the ticks of this run."""
        first = len(self.ticks)
        for _ in range(max_ticks):
            self.step()
            if until(self):
                return self.ticks[first:]
        raise AssertionError(f"not reached in {max_ticks} reconciles; status {self.status}")

    def settle(self, max_ticks: int = 50) -> list[Tick]:
        """Reconcile until nothing runs and the phase is no longer Pending."""
        return self.run(lambda s: s.idle(), max_ticks)

    def idle(self) -> bool:
        return self.status.canary is None and self.status.phase not in ("Pending", "Progressing")

    def run_script(self, max_ticks: int = 2000) -> list[Tick]:
        """Reconcile until the rollout ends, its verdicts run out while one is due, or it
        holds with nothing left to happen (a paused preview, say)."""

        def done(sim: Simulator) -> bool:
            if sim.idle():
                return True
            due = analysis_due(sim.observation())
            return (due and not sim.verdicts) or (not due and sim.holding())

        return self.run(done, max_ticks)

    def holding(self, ticks: int = 40) -> bool:
        """The last `ticks` reconciles decided the same status (times of checks aside)."""
        if len(self.ticks) < ticks:
            return False
        recent = [t.decision.status.model_dump(exclude={"conditions"}) for t in self.ticks[-ticks:]]
        return all(status == recent[0] for status in recent)

    def deployed(self) -> Simulator:
        """The first apply, settled: stable serves the spec."""
        self.settle()
        return self

    # -- views -----------------------------------------------------------------------

    def outcomes(self) -> list[tuple[str, str]]:
        """(outcome, rollback reason or "") of every canary that ended, oldest first."""
        ended = []
        for t in self.ticks:
            if t.decision.outcome is None:
                continue
            reason = t.decision.status.history[0].reason.split(":")[0]
            ended.append((str(t.decision.outcome), reason if reason in ROLLBACK_REASONS else ""))
        return ended
