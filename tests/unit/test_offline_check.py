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


def checked(strategy: dict[str, Any] | None = None, **rollout: Any) -> Simulator:
    spec = make_spec(V1, replicas=3, strategy=strategy, **rollout)
    with_check = ModelDeploymentSpec.model_validate(
        {**spec.model_dump(by_alias=True), "validation": CHECK}
    )
    assert isinstance(with_check.validation, ValidationSpec)
    return Simulator(with_check).deployed()


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


def test_a_first_deployment_serves_without_a_check_as_flagger_and_argo_rollouts_initialise():
    """docs/validation.md: no champion to compare with and no traffic to protect yet."""
    sim = checked()
    assert sim.status.phase == "Available"
    assert sim.status.validation is None
    assert all(tick.decision.validation_attempt is None for tick in sim.ticks)
    assert sim.status.stable is not None and sim.status.stable.version == V1


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
