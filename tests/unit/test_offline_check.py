"""The offline champion-challenger check in the decision core: no live request reaches a
new revision before its check passed, whatever the strategy."""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeploymentSpec, ValidationSpec, ValidationVerdict
from modeldeploy.rollout import Decision, Track
from modeldeploy.validation import ValidationResult
from tests.unit.rollout_sim import Simulator, make_spec

V1, V2 = "1.0.0", "2.0.0"
CHECK = {
    "dataset": {"uri": "pvc://data/holdout.csv", "format": "csv", "labelColumn": "y"},
    "metric": "auc",
    "min": 0.9,
    "maxDropVsStable": 0.01,
}


def result(verdict: str, message: str = "auc 0.95 >= min 0.9") -> ValidationResult:
    return ValidationResult(ValidationVerdict(verdict), "auc", message, candidate=0.95, stable=0.94)


def with_check(strategy: dict[str, Any] | None = None, **rollout: Any) -> Simulator:
    """Version 1.0.0 with an offline check, applied (nothing reconciled yet)."""
    spec = make_spec(V1, replicas=3, strategy=strategy, **rollout)
    checked_spec = ModelDeploymentSpec.model_validate(
        {**spec.model_dump(by_alias=True), "validation": CHECK}
    )
    assert isinstance(checked_spec.validation, ValidationSpec)
    return Simulator(checked_spec)


def checked(strategy: dict[str, Any] | None = None, **rollout: Any) -> Simulator:
    """Version 1.0.0 serving, its own check passed; the next check has no result yet."""
    sim = with_check(strategy, **rollout)
    sim.validation = result("Pass")
    sim.deployed()
    sim.validation = None
    return sim


def new_version(sim: Simulator) -> None:
    sim.set_spec(sim.spec.model_copy(update={"model": make_spec(V2).model}))


def pending(sim: Simulator) -> bool:
    validation = sim.status.validation
    return validation is not None and validation.verdict == "Pending"


def reasons(decision: Decision) -> list[str]:
    return [str(e.reason) for e in decision.events]


def test_a_ready_canary_gets_no_live_traffic_until_its_offline_check_passed():
    sim = checked()
    new_version(sim)
    ticks = sim.run(pending)
    held = [sim.step().decision for _ in range(5)]
    sim.validation = result("Pass")
    passed = sim.step().decision

    start = ticks[-1].decision
    assert start.validation_attempt == 1
    assert "ValidationStarted" in reasons(start)
    assert sim.status.validation is not None
    assert sim.status.validation.job.startswith("model-val-")
    for decision in held:
        assert decision.weight == 0
        assert decision.live_tracks == (Track.STABLE,), "the clients' Service skips it"
        assert decision.validation_attempt == 1, "the Job stays while it runs"
    assert passed.status.validation is not None
    assert passed.status.validation.verdict == "Pass"
    assert passed.status.validation.candidate == 0.95
    assert "ValidationPassed" in reasons(passed)
    assert passed.weight == 10
    assert passed.live_tracks == (Track.STABLE, Track.CANARY)


def first_pending(sim: Simulator) -> bool:
    return sim.status.phase == "Pending" and pending(sim)


def test_a_first_revision_gets_no_client_until_its_check_passed_on_absolute_bounds():
    sim = with_check()
    ticks = sim.run(first_pending)
    held = [sim.step().decision for _ in range(5)]
    sim.validation = result("Pass", "auc 0.95 >= min 0.9 (no stable to compare with)")
    passed = sim.step().decision

    assert all(t.decision.live_tracks == () for t in ticks), "no client before its pods"
    assert ticks[-1].decision.validation_attempt == 1, "checked once its pods serve"
    for decision in held:
        assert decision.live_tracks == (), "the clients' Service selects no pod"
        assert decision.stable is not None
        assert decision.stable.replicas == 3, "its pods run for the check"
        assert decision.status.phase == "Pending"
        assert "offline check runs before any live traffic" in decision.status.message
    assert passed.live_tracks == (Track.STABLE,)
    assert passed.status.phase == "Available"
    assert passed.status.history[0].outcome == "Deployed"
    assert "ValidationPassed" in reasons(passed)


def test_a_first_revision_that_fails_its_check_never_serves_until_retried_or_replaced():
    sim = with_check()
    sim.run(first_pending)
    first_job = sim.status.validation.job if sim.status.validation else ""
    sim.validation = result("Fail", "auc 0.71 < min 0.9")
    rejected = sim.step().decision
    later = [sim.step().decision for _ in range(3)]

    assert rejected.outcome == "RolledBack"
    assert rejected.status.phase == "RolledBack"
    reason = rejected.status.history[0].reason
    assert reason == "ValidationFailed: offline check: auc 0.71 < min 0.9"
    assert "nothing serves" in rejected.status.message
    for decision in [rejected, *later]:
        assert decision.live_tracks == ()
        assert decision.stable is not None
        assert decision.stable.replicas == 0, "its pods are not kept for nothing"
        assert decision.validation_attempt is None

    sim.annotate("modeldeploy.dev/retry", "1")
    sim.validation = None
    retried = sim.run(first_pending)[-1].decision
    assert retried.validation_attempt == 2, "a retry is checked in a Job of its own"
    assert retried.status.validation is not None
    assert retried.status.validation.job != first_job
    assert retried.stable is not None
    assert retried.stable.replicas == 3

    sim.validation = result("Fail", "auc 0.71 < min 0.9")
    sim.step()
    sim.set_spec(sim.spec.model_copy(update={"model": make_spec(V2).model}))
    sim.validation = None
    replaced = sim.run(first_pending)[-1].decision
    assert replaced.status.stable is not None
    assert replaced.status.stable.version == V2, "a new model replaces it: no canary"
    assert replaced.canary is None
    assert replaced.live_tracks == ()


def test_a_canary_rejected_by_its_check_and_retried_is_checked_again():
    sim = checked()
    new_version(sim)
    sim.run(pending)
    sim.validation = result("Fail", "auc 0.71 < min 0.9")
    sim.step()
    sim.validation = None
    sim.annotate("modeldeploy.dev/retry", "1")
    retried = sim.run(pending)[-1].decision
    assert retried.validation_attempt == 2, "not the old Job's verdict again"
    assert retried.weight == 0
    sim.validation = result("Pass")
    assert sim.run(lambda s: s.status.canary is not None and s.status.canary.weight > 0)


def test_a_challenger_worse_than_its_bounds_is_rejected_before_any_live_request():
    sim = checked()
    new_version(sim)
    sim.run(pending)
    sim.validation = result("Fail", "auc dropped 0.04 vs stable 0.93 > maxDropVsStable 0.01")
    rejected = sim.step().decision

    assert rejected.outcome == "RolledBack"
    assert rejected.status.history[0].reason.startswith("ValidationFailed: offline check: auc")
    assert rejected.status.validation is not None
    assert rejected.status.validation.verdict == "Fail"
    assert all(t.decision.weight == 0 for t in sim.ticks), "no live traffic ever"


def test_a_check_that_errs_is_retried_as_a_new_job_and_rejected_at_the_limit():
    sim = checked(inconclusive_limit=2)
    new_version(sim)
    sim.run(pending)
    first_job = sim.status.validation.job if sim.status.validation else ""
    sim.validation = result("Error", "the validation Job failed (BackoffLimitExceeded)")
    retried = sim.step().decision
    assert retried.validation_attempt == 2
    assert retried.status.validation is not None
    assert retried.status.validation.job != first_job
    assert "ValidationError" in reasons(retried)
    rejected = sim.step().decision
    assert rejected.outcome == "RolledBack"
    assert rejected.status.history[0].reason.startswith("ValidationInconclusive")


def test_a_blue_green_preview_switches_only_after_its_check_passed():
    sim = checked({"type": "blueGreen", "blueGreen": {"previewDuration": "0s"}})
    new_version(sim)
    sim.run(pending)
    for _ in range(5):
        held = sim.step().decision
        assert held.live_tracks == (Track.STABLE,)
    sim.validation = result("Pass")
    switched = sim.step().decision
    assert switched.live_tracks == (Track.CANARY,)


def test_direct_checks_one_pod_offline_before_it_replaces_stable():
    sim = checked({"type": "direct", "direct": {"analysisIntervals": 1}})
    old = sim.revision
    new_version(sim)
    sim.run(pending)
    held = sim.step().decision
    assert held.stable is not None
    assert held.stable.revision == old, "stable untouched while the check runs"
    assert held.canary is not None
    assert held.canary.replicas == 1
    assert held.live_tracks == (Track.STABLE,)
    sim.validation = result("Pass")
    replaced = sim.step().decision
    assert replaced.stable is not None
    assert replaced.stable.revision == sim.revision
    assert replaced.canary is None
    assert "Replacing" in reasons(replaced)
