"""What each verb does to a ModelDeployment, and how a rollout ended: pure, no I/O.

A verb that changes something sets one of the operator's manual-request annotations to
a new value; the operator acts on each value once. A verb that cannot change anything
(promoting with no canary, resuming what is not paused) is refused with the reason,
like `kubectl argo rollouts` refuses, instead of leaving a request that does nothing.
abort and retry act on an experiment too: abort stops a running one (control keeps
serving), retry runs a finished one again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum

from modeldeploy.cli.experiment import Experiment
from modeldeploy.cli.experiment_view import progress_words, result_words
from modeldeploy.cli.names import (
    ABORT_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_STEP_ANNOTATION,
    RESUME_ANNOTATION,
    RETRY_ANNOTATION,
)
from modeldeploy.cli.state import Canary, Rollout
from modeldeploy.cli.text import utc_stamp

PROMOTING = "Promoting"
ROLLED_BACK = "RolledBack"
AVAILABLE = "Available"


class Verb(StrEnum):
    PROMOTE_STEP = "promote"
    PROMOTE_FULL = "promote --full"
    ABORT = "abort"
    RETRY = "retry"
    PAUSE = "pause"
    RESUME = "resume"


ANNOTATION_OF = {
    Verb.PROMOTE_STEP: PROMOTE_STEP_ANNOTATION,
    Verb.PROMOTE_FULL: PROMOTE_ANNOTATION,
    Verb.ABORT: ABORT_ANNOTATION,
    Verb.RETRY: RETRY_ANNOTATION,
    Verb.PAUSE: PAUSE_ANNOTATION,
    Verb.RESUME: RESUME_ANNOTATION,
}


class Result(IntEnum):
    """Exit codes: what a CI job branches on."""

    SUCCEEDED = 0
    FAILED = 1
    TIMED_OUT = 2
    ERROR = 3


@dataclass(frozen=True)
class Request:
    annotation: str
    value: str
    said: str
    """What the plugin tells the user it asked for."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refusal:
    message: str


def request_value(now: datetime, previous: str | None) -> str:
    """A new value for a request annotation: the time to the microsecond, so two quick
    requests differ; one microsecond later should the clock give the same value twice."""
    value = _stamp(now)
    return _stamp(now + timedelta(microseconds=1)) if value == previous else value


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def plan(verb: Verb, rollout: Rollout, now: datetime) -> Request | Refusal:
    """The request a verb makes on this object, or why it makes none."""
    said = _PLANNERS[verb](rollout)
    if isinstance(said, Refusal):
        return said
    annotation = ANNOTATION_OF[verb]
    text, notes = said
    value = request_value(now, rollout.annotations.get(annotation))
    return Request(annotation, value, text, notes)


_Said = tuple[str, tuple[str, ...]]


def _ref(rollout: Rollout) -> str:
    return f"modeldeployment {rollout.name} in {rollout.namespace}"


def _running_experiment(rollout: Rollout) -> Experiment | None:
    experiment = rollout.experiment
    if rollout.canary is not None or experiment is None or not experiment.running:
        return None
    return experiment


def _no_canary(rollout: Rollout, what: str) -> Refusal:
    if _running_experiment(rollout) is not None:
        return Refusal(
            f"{_ref(rollout)} runs an experiment, not a canary: there are no steps to "
            f"{what}. It ends with its verdict; `kubectl modeldeploy abort {rollout.name}` "
            f"stops it now, and once it concluded `kubectl modeldeploy apply-winner "
            f"{rollout.name}` makes its winner the model."
        )
    if rollout.phase == ROLLED_BACK:
        return Refusal(
            f"{_ref(rollout)} has no canary to {what}: {rollout.message or 'it was rolled back'}. "
            f"`kubectl modeldeploy retry {rollout.name}` tries the rolled-back revision again."
        )
    serving = f", serving {rollout.stable.version}" if rollout.stable else ""
    return Refusal(f"{_ref(rollout)} has no canary to {what} (phase {rollout.phase}{serving}).")


def _promoting(rollout: Rollout) -> Refusal:
    return Refusal(f"{_ref(rollout)} is already being promoted: {rollout.message}")


def _at(rollout: Rollout, canary: Canary) -> str:
    return f"step {rollout.step_text(canary)} ({canary.weight}%)"


def _promote_step(rollout: Rollout) -> _Said | Refusal:
    canary = rollout.canary
    if canary is None:
        return _no_canary(rollout, "promote")
    if rollout.phase == PROMOTING:
        return _promoting(rollout)
    if not canary.ready:
        return Refusal(
            f"the pods of canary {canary.version} are not ready yet "
            f"({canary.ready_replicas}/{canary.replicas} ready), and the operator moves no step "
            f"while they are not: unready pods get no traffic. Wait for them, or promote the "
            f"canary in full with `kubectl modeldeploy promote {rollout.name} --full`."
        )
    last = canary.step + 1 >= len(rollout.steps)
    if last:
        text = f"canary {canary.version} is at its last {_at(rollout, canary)}: it is promoted"
    else:
        following = canary.step + 1
        text = (
            f"canary {canary.version} moves from {_at(rollout, canary)} to step "
            f"{following + 1}/{len(rollout.steps)} ({rollout.steps[following]}%)"
        )
    notes = []
    if PROMOTE_STEP_ANNOTATION in rollout.pending:
        notes.append(
            "an earlier step promotion has not been acted on yet; this request replaces it, "
            "so the canary moves one step, not two"
        )
    if rollout.paused_by and not last:
        notes.append(f"the canary is paused by {rollout.paused_by}: it moves and stays paused")
    return f"step promotion requested: {text}", tuple(notes)


def _promote_full(rollout: Rollout) -> _Said | Refusal:
    canary = rollout.canary
    if canary is None:
        return _no_canary(rollout, "promote")
    if rollout.phase == PROMOTING:
        return _promoting(rollout)
    replaces = f", replacing stable {rollout.stable.version}" if rollout.stable else ""
    return (
        f"promotion requested: canary {canary.version} skips its remaining steps from "
        f"{_at(rollout, canary)}{replaces}",
        (),
    )


def _abort(rollout: Rollout) -> _Said | Refusal:
    experiment = _running_experiment(rollout)
    if experiment is not None:
        variants = ", ".join(v.name for v in experiment.variants if not v.cut) or "none left"
        stable = rollout.stable.version if rollout.stable else experiment.control.version
        return (
            f"abort requested: the experiment stops before its verdict; its variants "
            f"({variants}) get no more traffic and control {stable} serves all of it",
            (),
        )
    canary = rollout.canary
    if canary is None:
        return _no_canary(rollout, "abort")
    if rollout.phase == PROMOTING:
        return Refusal(
            f"too late to abort {_ref(rollout)}: canary {canary.version} passed its analyses "
            "and is being promoted. To go back, set the spec to the previous model, which is "
            "then rolled out as a canary."
        )
    stable = f"stable {rollout.stable.version}" if rollout.stable else "the stable track"
    return (
        f"abort requested: canary {canary.version} at {_at(rollout, canary)} is rolled back "
        f"and all traffic returns to {stable}",
        (),
    )


def _retry(rollout: Rollout) -> _Said | Refusal:
    experiment = rollout.experiment
    if rollout.rejected_revision is None and experiment is not None and rollout.canary is None:
        return _retry_experiment(rollout, experiment)
    if rollout.canary is not None:
        return Refusal(
            f"nothing to retry: {_ref(rollout)} has canary {rollout.canary.version} running "
            f"at {_at(rollout, rollout.canary)}."
        )
    if rollout.rejected_revision is None:
        return Refusal(
            f"nothing to retry: {_ref(rollout)} has no rolled-back revision "
            f"(phase {rollout.phase})."
        )
    version = next(
        (
            str(h.get("version"))
            for h in rollout.history
            if h.get("revision") == rollout.rejected_revision and h.get("outcome") == ROLLED_BACK
        ),
        None,
    )
    named = (
        f"{version} (revision {rollout.rejected_revision})"
        if version
        else (f"revision {rollout.rejected_revision}")
    )
    return f"retry requested: rolled-back {named} starts a new canary", ()


def _retry_experiment(rollout: Rollout, experiment: Experiment) -> _Said | Refusal:
    """The operator runs a finished experiment again while the spec still asks for one
    and the stable serves the spec's model."""
    if experiment.running:
        return Refusal(
            f"nothing to retry: the experiment of {_ref(rollout)} is running "
            f"(attempt {experiment.attempt}); `kubectl modeldeploy abort {rollout.name}` stops it."
        )
    if not rollout.experiments:
        return Refusal(
            f"nothing to retry: {_ref(rollout)} has no rolled-back revision, and its spec no "
            f"longer runs an experiment (strategy.type {rollout.strategy_type})."
        )
    if rollout.phase != AVAILABLE:
        return Refusal(
            f"{_ref(rollout)} cannot run its experiment again now (phase {rollout.phase}): "
            "an experiment runs while the stable serves the spec's model."
        )
    return (
        f"retry requested: the {experiment.phase.lower()} experiment runs again as attempt "
        f"{experiment.attempt + 1}, with fresh counts; its last results are replaced",
        (),
    )


def _pause(rollout: Rollout) -> _Said | Refusal:
    if rollout.will_be_paused_by_request:
        return Refusal(
            f"{_ref(rollout)} is already paused by {PAUSE_ANNOTATION}; "
            f"`kubectl modeldeploy resume {rollout.name}` lifts it."
        )
    canary = rollout.canary
    if canary is not None and rollout.phase == PROMOTING:
        text = (
            f"the promotion of {canary.version} finishes (it passed its analyses); "
            "later canaries hold at their first step until resumed"
        )
    elif canary is not None:
        text = (
            f"canary {canary.version} holds at {_at(rollout, canary)} until resumed; analyses "
            "go on and failed checks still roll it back"
        )
    else:
        text = "no canary runs now; the next one holds at its first step until resumed"
    return f"pause requested: {text}", ()


def _resume(rollout: Rollout) -> _Said | Refusal:
    if not rollout.will_be_paused_by_request:
        if rollout.spec_paused:
            return Refusal(
                f"{_ref(rollout)} is paused by spec.rollout.paused, which resume does not lift: "
                "set spec.rollout.paused to false (in Git, when a GitOps tool applies the object)."
            )
        return Refusal(f"{_ref(rollout)} is not paused.")
    canary = rollout.canary
    if canary is not None and rollout.phase != PROMOTING:
        text = f"canary {canary.version} walks on from {_at(rollout, canary)}"
    else:
        text = "later canaries walk their steps"
    notes = (
        ("spec.rollout.paused is true as well, and keeps holding canaries until it is false",)
        if rollout.spec_paused
        else ()
    )
    return f"resume requested: {text}", notes


_PLANNERS = {
    Verb.PROMOTE_STEP: _promote_step,
    Verb.PROMOTE_FULL: _promote_full,
    Verb.ABORT: _abort,
    Verb.RETRY: _retry,
    Verb.PAUSE: _pause,
    Verb.RESUME: _resume,
}


def rollout_result(rollout: Rollout) -> Result | None:
    """How the spec's current generation ended: SUCCEEDED once it is rolled out and
    serving (Ready), FAILED once it will not go on by itself (Stalled: rolled back, invalid
    spec, name taken), None while it is still in progress. Conditions of an older
    generation do not count, so a fresh apply never ends on the last version's verdict."""
    if rollout.condition_is("Ready", "True"):
        return Result.SUCCEEDED
    if rollout.condition_is("Stalled", "True"):
        return Result.FAILED
    return None


def progress_line(rollout: Rollout) -> str:
    """One line on where the rollout stands, for `status` to print at each change."""
    if rollout.observed_generation is None:
        return f"{rollout.name}: waiting for the operator to write a status"
    if rollout.generation is not None and rollout.observed_generation < rollout.generation:
        return (
            f"{rollout.name}: waiting for the operator to act on generation "
            f"{rollout.generation} (status is of generation {rollout.observed_generation})"
        )
    line = f"{rollout.name}: {rollout.phase}"
    canary = rollout.canary
    if canary is not None:
        achieved = "?" if canary.actual_weight is None else f"{canary.actual_weight}%"
        line += (
            f", canary {canary.version} step {rollout.step_text(canary)}, "
            f"weight {canary.weight}% (achieved {achieved})"
        )
        if rollout.paused_by:
            line += f", paused by {rollout.paused_by}"
        wait = rollout.feedback_wait
        if wait is not None:
            line += ", waiting for quality labels"
            if wait.deadline is not None:
                # absolute, so the line stays the same (and unprinted) while the wait lasts
                line += f" (not counted as inconclusive until {utc_stamp(wait.deadline)})"
    experiment = _running_experiment(rollout)
    if experiment is not None:
        line += f", {progress_words(experiment)}"
        if rollout.paused_by:
            line += f", paused by {rollout.paused_by}"
    return f"{line}: {rollout.message}" if rollout.message else line


def result_line(rollout: Rollout, result: Result) -> str:
    """The last line `status` prints: the verdict and the operator's words for it."""
    if result == Result.SUCCEEDED:
        return (
            f"{rollout.name}: generation {rollout.generation} is rolled out: {rollout.message}"
            f"{result_words(rollout)}"
        )
    stalled = rollout.conditions.get("Stalled") or {}
    reason = stalled.get("reason") or rollout.phase
    return f"{rollout.name}: failed ({reason}): {rollout.message}"
