"""A ModelDeployment as the plugin reads it: typed, read-only fields over the raw object.

Built from the JSON the API server returns, tolerant of missing fields (an object the
operator has not written a status to yet, an older operator), so every verb can say
something sensible about any stored object."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from modeldeploy.cli.experiment import Experiment, significance_of
from modeldeploy.cli.names import MANUAL_ANNOTATIONS, PAUSE_ANNOTATION, RESUME_ANNOTATION
from modeldeploy.cli.text import parse_duration, parse_time

Json = dict[str, Any]

# Defaults of the CRD, for objects stored without them.
DEFAULT_STEPS = (10, 25, 50)
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_INCONCLUSIVE_LIMIT = 5
DEFAULT_SHADOW_ANALYSES = 3
DEFAULT_FEEDBACK_DEADLINE = "1h"


def _dict(value: object) -> Json:
    return value if isinstance(value, dict) else {}


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Track:
    version: str
    revision: str
    replicas: int
    ready_replicas: int


@dataclass(frozen=True)
class Canary(Track):
    step: int
    weight: int
    actual_weight: int | None
    failed_checks: int
    inconclusive_checks: int
    ready: bool
    started_at: datetime | None
    shadow_passes: int | None = None
    """Passing analyses so far while the revision is a shadow (mirrored traffic only)."""


@dataclass(frozen=True)
class FeedbackWait:
    """A canary step held because too few quality labels arrived: since when, and until
    when the wait is not counted toward inconclusiveLimit. Both are None while the
    operator has not started the clock (a paused canary's analyses are not judged)."""

    since: datetime | None
    deadline: datetime | None


@dataclass(frozen=True)
class Rollout:
    name: str
    namespace: str
    uid: str
    generation: int | None
    created: str
    annotations: dict[str, str]
    spec_version: str
    steps: tuple[int, ...]
    failure_threshold: int
    inconclusive_limit: int
    spec_paused: bool
    phase: str
    message: str
    observed_generation: int | None
    revision: str
    stable: Track | None
    canary: Canary | None
    paused_by_request: bool
    handled: dict[str, str]
    rejected_revision: str | None
    conditions: dict[str, Json] = field(default_factory=dict)
    last_analysis: Json | None = None
    history: tuple[Json, ...] = ()
    feedback_wait: FeedbackWait | None = None
    drift: Json | None = None
    slo: Json | None = None
    shadow_analyses: int = DEFAULT_SHADOW_ANALYSES
    strategy_type: str = "canary"
    experiment: Experiment | None = None
    significance: float | None = None
    """The spec's experiment significance, while the spec runs an experiment."""

    @classmethod
    def of(cls, obj: Json) -> Rollout:
        meta, spec, status = (
            _dict(obj.get("metadata")),
            _dict(obj.get("spec")),
            _dict(obj.get("status")),
        )
        rollout = _dict(spec.get("rollout"))
        steps = rollout.get("steps")
        conditions = {
            str(c.get("type")): c for c in status.get("conditions") or [] if isinstance(c, dict)
        }
        analysis = status.get("lastAnalysis")
        strategy = _dict(spec.get("strategy"))
        shadow = _dict(strategy.get("shadow"))
        return cls(
            shadow_analyses=_int(shadow.get("analyses"), DEFAULT_SHADOW_ANALYSES),
            strategy_type=str(strategy.get("type") or "canary"),
            experiment=Experiment.of(status.get("experiment")),
            significance=significance_of(spec),
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            uid=str(meta.get("uid", "")),
            generation=_opt_int(meta.get("generation")),
            created=str(meta.get("creationTimestamp", "")),
            annotations={str(k): str(v) for k, v in _dict(meta.get("annotations")).items()},
            spec_version=str(_dict(spec.get("model")).get("version", "")),
            steps=tuple(steps) if isinstance(steps, list) and steps else DEFAULT_STEPS,
            failure_threshold=_int(rollout.get("failureThreshold"), DEFAULT_FAILURE_THRESHOLD),
            inconclusive_limit=_int(rollout.get("inconclusiveLimit"), DEFAULT_INCONCLUSIVE_LIMIT),
            spec_paused=rollout.get("paused") is True,
            phase=str(status.get("phase") or "Pending"),
            message=str(status.get("message") or ""),
            observed_generation=_opt_int(status.get("observedGeneration")),
            revision=str(status.get("revision") or ""),
            stable=_track(status.get("stable")),
            canary=_canary(status.get("canary")),
            paused_by_request=status.get("pausedByRequest") is True,
            handled={str(k): str(v) for k, v in _dict(status.get("handledRequests")).items()},
            rejected_revision=status.get("rejectedRevision") or None,
            conditions=conditions,
            last_analysis=analysis if isinstance(analysis, dict) else None,
            history=tuple(h for h in status.get("history") or [] if isinstance(h, dict)),
            feedback_wait=_feedback_wait(spec, status),
            drift=_dict(status.get("drift")) or None,
            slo=_dict(status.get("slo")) or None,
        )

    @property
    def pending(self) -> tuple[str, ...]:
        """Manual requests set on the object that the operator has not acted on yet."""
        return tuple(
            name
            for name in MANUAL_ANNOTATIONS
            if name in self.annotations and self.handled.get(name) != self.annotations[name]
        )

    @property
    def will_be_paused_by_request(self) -> bool:
        """Whether a pause request holds, counting requests not acted on yet (pause wins)."""
        if PAUSE_ANNOTATION in self.pending:
            return True
        if RESUME_ANNOTATION in self.pending:
            return False
        return self.paused_by_request

    @property
    def paused_by(self) -> str | None:
        """What holds canaries now, in words; None when nothing does."""
        holders = []
        if self.spec_paused:
            holders.append("spec.rollout.paused")
        if self.paused_by_request:
            holders.append(PAUSE_ANNOTATION)
        return " and ".join(holders) or None

    def condition_is(self, kind: str, status: str) -> bool:
        """A condition has this status for the spec's current generation."""
        condition = self.conditions.get(kind)
        if condition is None or condition.get("status") != status:
            return False
        observed = condition.get("observedGeneration", self.observed_generation)
        return self.generation is None or observed == self.generation

    @property
    def experiments(self) -> bool:
        """Whether the spec runs an experiment (its status may be of an earlier spec)."""
        return self.strategy_type == "experiment"

    def step_text(self, canary: Canary) -> str:
        if canary.shadow_passes is not None:
            return f"shadow, {canary.shadow_passes}/{self.shadow_analyses} passed"
        return f"{canary.step + 1}/{len(self.steps)}"


def _track(value: object) -> Track | None:
    raw = _dict(value)
    if not raw:
        return None
    return Track(
        version=str(raw.get("version", "?")),
        revision=str(raw.get("revision", "?")),
        replicas=_int(raw.get("replicas")),
        ready_replicas=_int(raw.get("readyReplicas")),
    )


def _canary(value: object) -> Canary | None:
    raw = _dict(value)
    if not raw:
        return None
    return Canary(
        version=str(raw.get("version", "?")),
        revision=str(raw.get("revision", "?")),
        replicas=_int(raw.get("replicas")),
        ready_replicas=_int(raw.get("readyReplicas")),
        step=_int(raw.get("step")),
        weight=_int(raw.get("weight")),
        actual_weight=_opt_int(raw.get("actualWeight")),
        failed_checks=_int(raw.get("failedChecks")),
        inconclusive_checks=_int(raw.get("inconclusiveChecks")),
        ready=raw.get("readyAt") is not None,
        started_at=parse_time(raw.get("startedAt")),
        shadow_passes=_int(raw.get("shadowPasses")) if raw.get("stage") == "Shadow" else None,
    )


def _feedback_wait(spec: Json, status: Json) -> FeedbackWait | None:
    """The wait for quality labels of the canary's current step, if its last analysis
    was inconclusive only for that (an analysis of an earlier canary does not count)."""
    analysis, canary = _dict(status.get("lastAnalysis")), _dict(status.get("canary"))
    if not canary or analysis.get("awaitingFeedback") is not True:
        return None
    if analysis.get("revision") != canary.get("revision"):
        return None
    since = parse_time(canary.get("awaitingFeedbackSince"))
    if since is None:
        return FeedbackWait(None, None)
    quality = _dict(_dict(spec.get("analysis")).get("quality"))
    try:
        wait = parse_duration(str(quality.get("feedbackDeadline") or DEFAULT_FEEDBACK_DEADLINE))
    except ValueError:
        return FeedbackWait(since, None)
    return FeedbackWait(since, since + timedelta(seconds=wait))
