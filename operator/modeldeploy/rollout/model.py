"""The decision core's inputs and outputs: what is observed, and what is decided."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum

from modeldeploy.api import (
    AnalysisStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Outcome,
    TrackTemplate,
    duration_seconds,
)
from modeldeploy.validation import ValidationResult

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
    PREVIEW_STARTED = "PreviewStarted"
    PREVIEW_READY = "PreviewReady"
    SWITCHED = "Switched"
    SHADOW_STARTED = "ShadowStarted"
    SHADOW_READY = "ShadowReady"
    SHADOWING = "Shadowing"
    SHADOW_PASSED = "ShadowPassed"
    SCALED_DOWN = "PreviousScaledDown"
    REPLACING = "Replacing"
    REPLACED = "Replaced"
    MODEL_DRIFT = "ModelDrift"
    MODEL_QUALITY_DEGRADED = "ModelQualityDegraded"
    MODEL_DRIFT_RECOVERED = "ModelDriftRecovered"
    SLO_BUDGET_SPENT = "SLOBudgetSpent"
    SLO_RECOVERED = "SLOBudgetRecovered"
    VALIDATION_STARTED = "ValidationStarted"
    VALIDATING = "Validating"
    VALIDATION_PASSED = "ValidationPassed"
    VALIDATION_FAILED = "ValidationFailed"
    VALIDATION_ERROR = "ValidationError"
    VALIDATION_INCONCLUSIVE = "ValidationInconclusive"
    INVALID_SPEC = "InvalidSpec"
    COMPLETE = "Complete"
    EXPERIMENT_STARTED = "ExperimentStarted"
    EXPERIMENT_READY = "ExperimentReady"
    EXPERIMENTING = "Experimenting"
    VARIANT_CUT = "VariantCut"
    EXPERIMENT_CONCLUDED = "ExperimentConcluded"
    EXPERIMENT_STOPPED = "ExperimentStopped"


class Gate(Enum):
    """Where the offline check leaves the new revision."""

    PASSED = "passed"
    HOLD = "hold"


@dataclass(frozen=True)
class Rejection:
    """The offline check rejected the revision: roll back with this reason."""

    reason: Reason
    message: str


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
class ArmCount:
    """One experiment arm's successes and trials since it started counting, as Prometheus
    answered; `problem` says why they could not be read."""

    successes: float | None = None
    total: float | None = None
    problem: str | None = None


@dataclass(frozen=True)
class ExperimentReading:
    """What the shell read for a running experiment when `experiment_due` asked."""

    at: datetime
    # The SLO analysis of each variant's last interval, by variant name.
    guardrails: Mapping[str, AnalysisStatus] = field(default_factory=dict)
    # Each arm's counts (control included), by arm name; None when the verdict is not due.
    counts: Mapping[str, ArmCount] | None = None


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
    # The shell's reading of the offline check's Job named in status.validation.
    validation: ValidationResult | None = None
    # The ModelDeployment's name: the offline check's Job is named after it.
    name: str = "model"
    # The experiment variants' Deployments, by variant name (those the status or spec names).
    variants: Mapping[str, TrackObservation] = field(default_factory=dict)
    experiment: ExperimentReading | None = None


@dataclass(frozen=True)
class TrackPlan:
    revision: str
    template: TrackTemplate
    replicas: int


@dataclass(frozen=True)
class VariantPlan:
    """An experiment variant's Deployment and Service, and its share of live traffic now."""

    name: str
    plan: TrackPlan
    weight: int


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
    # Tracks the clients' Service (or route) reaches: both by default (the replicas router
    # splits by pods); one while a blue-green preview or switch keeps live traffic off the
    # other; none while a first revision waits for its offline check; the stable and the
    # variants' tracks during an experiment.
    live_tracks: tuple[str, ...] = (Track.STABLE, Track.CANARY)
    # The offline check's Job that must exist now (its attempt), if one runs.
    validation_attempt: int | None = None
    # Share of live requests the stable copies to the canary track's pods (a shadow);
    # None: no copies.
    mirror_percent: float | None = None
    # An experiment's variants that must run now; any other variant's children go.
    variants: tuple[VariantPlan, ...] = ()


def wanted_replicas(o: Observation) -> int:
    """Stable pods wanted: spec.replicas, or with autoscaling what the HPA set (within its
    range; its minimum before the stable Deployment exists)."""
    autoscaling = o.spec.autoscaling
    if autoscaling is None:
        return o.spec.replicas
    current = o.stable.replicas if o.stable.exists else autoscaling.min_replicas
    return min(max(current, autoscaling.min_replicas), autoscaling.max_replicas)


def interval_seconds(spec: ModelDeploymentSpec) -> float:
    return duration_seconds(spec.rollout.interval)
