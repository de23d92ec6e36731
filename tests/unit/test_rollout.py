"""The rollout decision core, scenario by scenario, as a user of a ModelDeployment sees it."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from modeldeploy.api import ModelDeploymentStatus, Verdict
from modeldeploy.resources import revision_of, template_of
from modeldeploy.rollout import (
    ABORT_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_STEP_ANNOTATION,
    RESUME_ANNOTATION,
    RETRY_ANNOTATION,
    Decision,
    Observation,
    Reason,
    TrackObservation,
    analysis_due,
    decide,
)
from tests.unit.rollout_sim import (
    IMAGE,
    START,
    Simulator,
    analysis,
    make_spec,
    roundtrip,
    with_rollout,
)

V1, V2, V3 = "1.0.0", "2.0.0", "3.0.0"


def deployed(**spec: Any) -> Simulator:
    return Simulator(make_spec(V1, **spec)).deployed()


def canary_is_ready(sim: Simulator) -> bool:
    return sim.status.canary is not None and sim.status.canary.ready_at is not None


def canary_ready(sim: Simulator, version: str = V2) -> Simulator:
    """Apply `version` and reconcile until its canary pods are ready and take traffic."""
    sim.set_spec(sim.spec.model_copy(update={"model": make_spec(version).model}))
    sim.run(canary_is_ready)
    return sim


def to_next_analysis(sim: Simulator) -> None:
    """Set the clock to when the current step's analysis is due."""
    canary = sim.status.canary
    assert canary is not None
    assert canary.last_step_at is not None
    sim.now = canary.last_step_at + timedelta(seconds=30)
    assert analysis_due(sim.observation())


def with_version(sim: Simulator, version: str) -> None:
    sim.set_spec(sim.spec.model_copy(update={"model": make_spec(version).model}))


def judge(sim: Simulator, *verdicts: Verdict | str) -> list[Decision]:
    """Reconcile until each verdict was consumed by a due analysis; their decisions."""
    decisions = []
    for verdict in verdicts:
        sim.script(verdict)
        ticks = sim.run(lambda s: not s.verdicts)
        decisions.append(ticks[-1].decision)
    return decisions


def reasons(decision: Decision) -> list[str]:
    return [str(e.reason) for e in decision.events]


def snapshot(decision: Decision) -> dict[str, Any]:
    """Everything a decision asks of the shell, comparable with ==."""
    return {
        "status": decision.status.model_dump(mode="json", by_alias=True),
        "stable": decision.stable,
        "canary": decision.canary,
        "weight": decision.weight,
        "events": decision.events,
        "notifications": decision.notifications,
        "requeue_after": decision.requeue_after,
        "outcome": decision.outcome,
    }


def fresh_observation(**overrides: Any) -> Observation:
    spec = overrides.pop("spec", make_spec(V1))
    template = template_of(spec, IMAGE)
    fields: dict[str, Any] = {
        "spec": spec,
        "generation": 1,
        "revision": revision_of(template),
        "template": template,
        "status": ModelDeploymentStatus(),
        "stable": TrackObservation(),
        "canary": TrackObservation(),
        "annotations": {},
        "now": START,
    }
    fields.update(overrides)
    return Observation(**fields)


# --- first apply --------------------------------------------------------------------------


def test_first_apply_deploys_straight_to_stable():
    decision = decide(fresh_observation(spec=make_spec(V1, replicas=3)))

    assert decision.canary is None
    assert decision.weight == 0
    assert decision.stable is not None
    assert decision.stable.replicas == 3
    assert decision.stable.template.model.version == V1
    assert decision.status.phase == "Pending"
    assert decision.status.stable is not None
    assert decision.status.stable.version == V1
    assert reasons(decision) == ["StableDeployed"]


def test_first_stable_becomes_available_once_its_pods_are_ready():
    sim = Simulator(make_spec(V1), stable_ready_after=3)
    ticks = sim.settle()

    assert [t.decision.status.phase for t in ticks][:3] == ["Pending"] * 3
    assert sim.status.phase == "Available"
    assert [(h.version, h.outcome) for h in sim.status.history] == [(V1, "Deployed")]
    available = {c.type: c.status for c in sim.status.conditions}
    assert available["Available"] == "True"
    assert available["Ready"] == "True"
    assert all(t.decision.canary is None for t in ticks)


def test_a_new_stable_deployment_appearing_leaves_the_status_as_written():
    """Each new object's status is written when it is deployed and when it is ready, not
    once more for its Deployment appearing: hundreds of new objects, hundreds fewer writes."""
    sim = Simulator(make_spec(V1, replicas=2), stable_ready_after=3)
    deployed_tick = sim.step()
    appeared_tick = sim.step()

    assert appeared_tick.observation.stable.exists
    assert appeared_tick.observation.stable.ready_replicas == 0
    written = deployed_tick.decision.status.model_dump(mode="json")
    assert appeared_tick.decision.status.model_dump(mode="json") == written
    assert written["message"] == "deploying 1.0.0 as the first stable revision: 0/2 pods ready"
    assert written["stable"]["replicas"] == 2


def test_a_new_model_before_the_first_stable_is_ready_replaces_it_without_a_canary():
    sim = Simulator(make_spec(V1), stable_ready_after=None)
    sim.step()
    sim.step()
    with_version(sim, V2)
    sim.stable_ready_after = 1
    sim.settle()

    assert all(t.decision.canary is None for t in sim.ticks)
    assert sim.status.stable is not None
    assert sim.status.stable.version == V2
    assert sim.status.phase == "Available"


# --- what starts a canary -----------------------------------------------------------------


def test_changing_replicas_scales_stable_without_a_canary():
    sim = deployed(replicas=2)
    sim.set_spec(sim.spec.model_copy(update={"replicas": 5}))
    tick = sim.step()

    assert tick.decision.canary is None
    assert tick.decision.stable is not None
    assert tick.decision.stable.replicas == 5
    assert tick.decision.status.canary is None
    assert "Scaled" in reasons(tick.decision)
    sim.settle()
    assert sim.status.stable is not None
    assert sim.status.stable.ready_replicas == 5


def test_changing_rollout_settings_does_not_start_a_canary():
    sim = deployed()
    sim.set_spec(with_rollout(sim.spec, steps=[5, 50], interval="5m", paused=True))
    tick = sim.step()

    assert tick.decision.canary is None
    assert tick.decision.status.phase == "Available"
    assert tick.decision.events == []


def test_a_new_model_version_starts_a_canary_next_to_a_full_stable():
    sim = deployed(replicas=4)
    stable_revision = sim.revision
    with_version(sim, V2)
    decision = sim.step().decision

    assert decision.status.phase == "Progressing"
    assert reasons(decision) == ["CanaryStarted"]
    assert decision.weight == 0, "no traffic before the canary's pods are ready"
    assert decision.canary is not None
    assert decision.canary.revision == sim.revision
    assert decision.canary.replicas >= 1
    assert decision.stable is not None
    assert (decision.stable.revision, decision.stable.replicas) == (stable_revision, 4)
    assert decision.status.canary is not None
    assert decision.status.canary.step == 0


def test_a_ready_canary_takes_the_first_step_and_waits_an_interval():
    sim = canary_ready(deployed(steps=[10, 25, 50], interval="45s"))
    decision = sim.ticks[-1].decision

    assert decision.weight == 10
    assert reasons(decision) == ["CanaryReady"]
    assert decision.requeue_after == 45


def test_no_analysis_runs_while_the_canary_pods_are_not_ready():
    sim = deployed()
    sim.broken.add(make_revision(sim, V2))
    with_version(sim, V2)
    for _ in range(8):
        sim.step()
        assert not analysis_due(sim.observation())


def make_revision(sim: Simulator, version: str) -> str:
    spec = sim.spec.model_copy(update={"model": make_spec(version).model})
    return revision_of(template_of(spec, IMAGE))


# --- progress deadline --------------------------------------------------------------------


def test_canary_that_never_becomes_ready_is_rolled_back_at_the_progress_deadline():
    sim = deployed(progress_deadline="60s")
    sim.broken.add(make_revision(sim, V2))
    with_version(sim, V2)
    started = sim.now
    ticks = sim.run(lambda s: s.status.phase == "RolledBack")
    before, last = ticks[:-1], ticks[-1]

    assert all(t.decision.weight == 0 for t in ticks)
    assert all(t.observation.now - started < timedelta(seconds=60) for t in before)
    assert last.observation.now - started == timedelta(seconds=60)
    decision = last.decision
    assert decision.outcome == "RolledBack"
    assert decision.weight == 0
    assert decision.canary is None or decision.canary.replicas == 0
    assert decision.status.canary is None
    assert "never became ready" in decision.status.message
    assert decision.status.history[0].outcome == "RolledBack"
    assert decision.status.history[0].reason.startswith("ProgressDeadlineExceeded")
    warning = [e for e in decision.events if e.reason == Reason.ROLLED_BACK]
    assert warning
    assert warning[0].type == "Warning"
    assert "never became ready" in warning[0].message


def test_why_canary_pods_are_not_ready_is_shown_while_waiting_and_on_rollback():
    sim = Simulator(make_spec(V1, progress_deadline="60s"), canary_ready_after=None).deployed()
    with_version(sim, V2)
    sim.step()
    sim.canary_pod_problem = "pod p: container modelserver CrashLoopBackOff, exited with code 1"
    waiting = sim.step().decision
    again = sim.step().decision
    ticks = sim.run(lambda s: s.status.phase == "RolledBack")

    assert waiting.status.message == (
        "canary 2.0.0 pods not ready (0/1): pod p: container modelserver CrashLoopBackOff, "
        "exited with code 1"
    )
    assert [e.reason for e in waiting.events] == ["CanaryNotReady"]
    assert again.events == [], "one event per problem, not one per reconcile"
    rollback = ticks[-1].decision
    assert rollback.status.history[0].reason.endswith(
        "(0/1 ready): pod p: container modelserver CrashLoopBackOff, exited with code 1"
    )
    rolled_back = [e for e in rollback.events if e.reason == Reason.ROLLED_BACK]
    assert "CrashLoopBackOff, exited with code 1" in rolled_back[0].message


def test_progress_deadline_is_not_hit_by_a_canary_that_gets_ready_in_time():
    sim = Simulator(make_spec(V1, progress_deadline="60s"), canary_ready_after=10).deployed()
    canary_ready(sim)

    assert sim.status.phase == "Progressing"
    assert sim.ticks[-1].decision.weight == 10


# --- analysis -----------------------------------------------------------------------------


def test_analysis_is_due_once_per_interval():
    sim = canary_ready(deployed(interval="30s"))
    canary = sim.status.canary
    assert canary is not None
    assert canary.last_step_at is not None
    for seconds, due in [(0, False), (29, False), (30, True), (31, True)]:
        sim.now = canary.last_step_at + timedelta(seconds=seconds)
        assert analysis_due(sim.observation()) is due, seconds


def test_each_pass_advances_exactly_one_step():
    sim = canary_ready(deployed(steps=[10, 25, 50, 80]))
    decisions = judge(sim, "Pass", "Pass", "Pass")

    assert [d.weight for d in decisions] == [25, 50, 80]
    assert [d.status.canary.step for d in decisions if d.status.canary] == [1, 2, 3]
    assert all("StepAdvanced" in reasons(d) for d in decisions)
    assert sim.status.phase == "Progressing"


def test_a_failed_analysis_holds_the_step_and_counts_a_failed_check():
    sim = canary_ready(deployed(failure_threshold=3))
    (decision,) = judge(sim, "Fail")

    assert decision.weight == 10
    assert decision.status.canary is not None
    assert decision.status.canary.failed_checks == 1
    failed = [e for e in decision.events if e.reason == Reason.ANALYSIS_FAILED]
    assert failed
    assert failed[0].type == "Warning"
    assert "error-rate 0.2" in failed[0].message
    assert "1/3" in failed[0].message
    assert decision.status.last_analysis is not None
    assert decision.status.last_analysis.verdict == "Fail"


def test_failed_checks_accumulate_across_steps_and_roll_back_at_the_threshold():
    sim = canary_ready(deployed(steps=[10, 20, 30, 40], failure_threshold=3))
    decisions = judge(sim, "Fail", "Pass", "Fail", "Pass", "Fail")

    assert [d.outcome for d in decisions] == [None, None, None, None, "RolledBack"]
    rollback = decisions[-1]
    assert rollback.weight == 0
    assert rollback.canary is not None
    assert rollback.canary.replicas == 0
    assert rollback.stable is not None
    assert rollback.stable.replicas == sim.spec.replicas
    assert rollback.status.phase == "RolledBack"
    assert rollback.status.history[0].reason.startswith("FailedChecks")
    assert {n.kind for n in rollback.notifications} >= {Reason.ROLLED_BACK}


@pytest.mark.parametrize("inconclusive", ["NoData", "Error"])
def test_inconclusive_analyses_hold_the_step_and_never_promote(inconclusive):
    sim = canary_ready(deployed(steps=[50], inconclusive_limit=1000))
    decisions = judge(sim, *[inconclusive] * 20)

    assert all(d.weight == 50 for d in decisions)
    assert all(d.status.phase == "Progressing" for d in decisions)
    assert all(d.outcome is None for d in decisions)
    assert decisions[-1].status.canary is not None
    assert decisions[-1].status.canary.failed_checks == 0


def test_consecutive_inconclusive_analyses_roll_back_at_the_limit():
    sim = canary_ready(deployed(steps=[10, 20, 30, 40], inconclusive_limit=3))
    decisions = judge(sim, "NoData", "Error", "Pass", "NoData", "Fail", "Error", "NoData", "NoData")

    assert [d.outcome for d in decisions] == [None] * 7 + ["RolledBack"]
    assert decisions[-1].status.history[0].reason.startswith("AnalysisInconclusive")
    assert decisions[-1].weight == 0
    assert "AnalysisInconclusive" in decisions[-1].status.message


def test_passing_the_last_step_promotes():
    sim = canary_ready(deployed(steps=[10, 50], replicas=3))
    new_revision = sim.revision
    (_, promoting) = judge(sim, "Pass", "Pass")

    assert promoting.status.phase == "Promoting"
    assert "PromotionStarted" in reasons(promoting)
    assert promoting.stable is not None
    assert (promoting.stable.revision, promoting.stable.replicas) == (new_revision, 3)
    assert promoting.stable.template.model.version == V2
    assert promoting.weight == 50, "the canary keeps its share until stable is ready"
    assert promoting.canary is not None
    assert promoting.canary.replicas >= 1

    final = sim.settle()[-1].decision
    assert final.outcome == "Promoted"
    assert final.canary is None
    assert final.weight == 0
    assert final.status.phase == "Available"
    assert final.status.canary is None
    assert final.status.stable is not None
    assert (final.status.stable.revision, final.status.stable.version) == (new_revision, V2)
    assert final.status.history[0].outcome == "Promoted"
    assert "Promoted" in reasons(final)
    assert {n.kind for n in final.notifications} == {Reason.PROMOTED}


def test_promotion_waits_for_the_new_stable_pods():
    sim = canary_ready(deployed(steps=[10]))
    sim.stable_ready_after = 4
    judge(sim, "Pass")
    ticks = sim.settle()

    promoting = [t for t in ticks if t.decision.status.phase == "Promoting"]
    assert len(promoting) >= 3
    assert all(t.decision.weight == 10 for t in promoting)
    assert all(t.decision.canary is not None for t in promoting)
    assert ticks[-1].decision.outcome == "Promoted"


def test_no_analysis_is_due_or_applied_during_promotion():
    sim = canary_ready(deployed(steps=[10]))
    sim.stable_ready_after = None
    judge(sim, "Pass")
    sim.now += timedelta(hours=1)
    observation = sim.observation()

    assert observation.status.phase == "Promoting"
    assert not analysis_due(observation)
    decision = decide(dataclasses.replace(observation, analysis=analysis("Fail", sim.now)))
    assert decision.status.phase == "Promoting"
    assert decision.outcome is None


# --- an analysis counts once --------------------------------------------------------------


@pytest.mark.parametrize("later", [0, 30, 3600])
def test_an_analysis_fed_again_after_its_decision_was_stored_is_not_counted_twice(later):
    sim = canary_ready(deployed(steps=[10, 20, 30], interval="30s"))
    to_next_analysis(sim)
    result = analysis("Pass", sim.now + timedelta(milliseconds=20))
    first = decide(dataclasses.replace(sim.observation(), analysis=result))
    assert first.weight == 20

    # The operator restarts, reads the stored status, and the same analysis comes round again,
    # even once the next one is due.
    sim.now += timedelta(seconds=later)
    again = dataclasses.replace(sim.observation(), status=roundtrip(first.status), analysis=result)
    second = decide(again)

    assert second.weight == 20
    assert second.status.canary is not None
    assert second.status.canary.step == 1


@pytest.mark.parametrize("before", [0, 1])
def test_an_analysis_not_taken_after_the_current_step_began_is_ignored(before):
    sim = canary_ready(deployed(steps=[10, 20, 30]))
    canary = sim.status.canary
    assert canary is not None
    assert canary.last_step_at is not None
    stale = analysis("Fail", canary.last_step_at - timedelta(seconds=before))
    to_next_analysis(sim)
    decision = decide(dataclasses.replace(sim.observation(), analysis=stale))

    assert decision.status.canary is not None
    assert decision.status.canary.failed_checks == 0


def test_an_analysis_that_is_not_due_is_ignored():
    sim = canary_ready(deployed(steps=[10, 20, 30], interval="60s"))
    assert sim.status.canary is not None
    assert sim.status.canary.last_step_at is not None
    sim.now = sim.status.canary.last_step_at + timedelta(seconds=59)
    decision = decide(dataclasses.replace(sim.observation(), analysis=analysis("Pass", sim.now)))

    assert decision.weight == 10


def test_deciding_does_not_modify_the_observation():
    sim = canary_ready(deployed())
    to_next_analysis(sim)
    result = analysis("Fail", sim.now)
    observation = dataclasses.replace(sim.observation(), analysis=result)
    before = (
        observation.status.model_dump(mode="json"),
        result.model_dump(mode="json"),
        observation.spec.model_dump(mode="json"),
    )
    decide(observation)

    after = (
        observation.status.model_dump(mode="json"),
        result.model_dump(mode="json"),
        observation.spec.model_dump(mode="json"),
    )
    assert after == before


# --- after a rollback ---------------------------------------------------------------------


def rolled_back(**spec: Any) -> Simulator:
    sim = canary_ready(deployed(failure_threshold=1, **spec))
    judge(sim, "Fail")
    assert sim.status.phase == "RolledBack"
    return sim


def test_a_rolled_back_revision_is_not_retried_while_the_spec_asks_for_it():
    sim = rolled_back()
    rejected = sim.revision
    for _ in range(20):
        decision = sim.step().decision
        assert decision.weight == 0
        assert decision.canary is None or decision.canary.replicas == 0
        assert decision.status.canary is None
        assert decision.status.phase == "RolledBack"
        assert decision.status.rejected_revision == rejected
        assert not analysis_due(sim.observation())
    assert RETRY_ANNOTATION in sim.status.message


def test_changing_only_replicas_does_not_retry_a_rolled_back_revision():
    sim = rolled_back()
    sim.set_spec(sim.spec.model_copy(update={"replicas": 6}))
    decision = sim.step().decision

    assert decision.status.canary is None
    assert decision.status.phase == "RolledBack"
    assert decision.stable is not None
    assert decision.stable.replicas == 6


def test_a_new_revision_after_a_rollback_starts_a_new_canary():
    sim = rolled_back()
    with_version(sim, V3)
    decision = sim.step().decision

    assert decision.status.phase == "Progressing"
    assert decision.status.canary is not None
    assert decision.status.canary.version == V3
    assert decision.status.rejected_revision is None


def test_retry_annotation_restarts_the_rolled_back_revision_once_per_value():
    sim = rolled_back()
    sim.annotate(RETRY_ANNOTATION, "2026-01-01T10:00:00Z")
    decision = sim.step().decision

    assert "RetryRequested" in reasons(decision)
    assert decision.status.phase == "Progressing"
    assert decision.status.canary is not None
    assert decision.status.canary.step == 0
    assert decision.status.canary.failed_checks == 0
    assert decision.status.handled_requests[RETRY_ANNOTATION] == "2026-01-01T10:00:00Z"

    canary_ready_again = sim.run(canary_is_ready)
    assert canary_ready_again[-1].decision.weight == 10
    judge(sim, "Fail")
    assert sim.status.phase == "RolledBack"
    for _ in range(5):  # the same value does not retry again
        assert sim.step().decision.status.canary is None
    sim.annotate(RETRY_ANNOTATION, "2026-01-01T11:00:00Z")
    assert sim.step().decision.status.canary is not None


def test_returning_the_spec_to_stable_after_a_rollback_ends_it_and_removes_the_canary():
    sim = rolled_back()
    with_version(sim, V1)
    decision = sim.step().decision

    assert decision.canary is None
    assert decision.status.phase == "Available"
    assert decision.status.rejected_revision is None

    # Asking for the rolled-back model again is a new request: it gets a new canary.
    with_version(sim, V2)
    decision = sim.step().decision
    assert decision.status.phase == "Progressing"
    assert decision.status.canary is not None
    assert decision.status.canary.version == V2


# --- supersede and cancel -----------------------------------------------------------------


def test_a_new_revision_during_a_canary_supersedes_it_from_step_zero():
    sim = canary_ready(deployed(steps=[10, 25, 50], failure_threshold=3))
    judge(sim, "Pass", "Fail")
    with_version(sim, V3)
    decision = sim.step().decision

    assert decision.outcome == "Superseded"
    assert decision.status.history[0].outcome == "Superseded"
    assert decision.status.history[0].version == V2
    assert reasons(decision)[0] == "CanarySuperseded"
    assert "CanaryStarted" in reasons(decision)
    canary = decision.status.canary
    assert canary is not None
    assert (canary.version, canary.step, canary.failed_checks) == (V3, 0, 0)
    assert decision.weight == 0
    assert decision.canary is not None
    assert decision.canary.template.model.version == V3


def test_returning_the_spec_to_the_stable_revision_cancels_the_canary():
    sim = canary_ready(deployed(steps=[10, 25, 50]))
    judge(sim, "Pass")
    with_version(sim, V1)
    decision = sim.step().decision

    assert decision.outcome == "Superseded"
    assert decision.canary is None
    assert decision.weight == 0
    assert decision.status.canary is None
    assert decision.status.phase == "Available"
    assert "CanaryCancelled" in reasons(decision)
    assert decision.status.history[0].outcome == "Superseded"
    assert decision.status.rejected_revision is None


# --- pause --------------------------------------------------------------------------------


def test_a_paused_canary_does_not_advance_on_passes():
    sim = canary_ready(deployed(steps=[10, 50]))
    sim.set_spec(with_rollout(sim.spec, paused=True))
    decisions = judge(sim, "Pass", "Pass", "Pass", "Pass")

    assert [d.weight for d in decisions] == [10] * 4
    assert all(d.status.phase == "Progressing" for d in decisions)
    assert "paused" in decisions[-1].status.message


def test_pausing_a_canary_records_one_paused_event():
    sim = canary_ready(deployed(steps=[10, 50]))
    sim.set_spec(with_rollout(sim.spec, paused=True))
    paused = sim.step().decision
    later = judge(sim, "Pass", "Pass")

    assert "Paused" in reasons(paused)
    assert not any("Paused" in reasons(d) for d in later), "one event, not one per reconcile"


def test_a_paused_canary_at_its_last_step_is_not_promoted():
    sim = canary_ready(deployed(steps=[10]))
    sim.set_spec(with_rollout(sim.spec, paused=True))
    decisions = judge(sim, "Pass", "Pass", "Pass")

    assert all(d.status.phase == "Progressing" for d in decisions)
    assert all(d.outcome is None for d in decisions)


def test_failed_checks_still_roll_back_a_paused_canary():
    sim = canary_ready(deployed(failure_threshold=2))
    sim.set_spec(with_rollout(sim.spec, paused=True))
    decisions = judge(sim, "Fail", "Fail")

    assert decisions[-1].outcome == "RolledBack"
    assert decisions[-1].weight == 0


def test_inconclusive_analyses_are_not_counted_against_a_paused_canary():
    sim = canary_ready(deployed(inconclusive_limit=2))
    sim.set_spec(with_rollout(sim.spec, paused=True))
    decisions = judge(sim, "NoData", "Error", "NoData", "NoData")

    assert all(d.outcome is None for d in decisions)
    assert decisions[-1].status.canary is not None
    assert decisions[-1].status.canary.inconclusive_checks == 0


def test_unpausing_resumes_with_the_next_pass_and_says_so():
    sim = canary_ready(deployed(steps=[10, 50]))
    sim.set_spec(with_rollout(sim.spec, paused=True))
    judge(sim, "Pass")
    sim.set_spec(with_rollout(sim.spec, paused=False))
    resumed = sim.step().decision

    assert "paused" not in resumed.status.message
    assert "resumed" in resumed.status.message
    assert "Resumed" in reasons(resumed)
    assert resumed.weight == 10
    (advanced,) = judge(sim, "Pass")
    assert advanced.weight == 50


# --- objects stored by an older release -----------------------------------------------


def test_a_walking_canary_whose_spec_cannot_be_acted_on_is_rolled_back_without_analysis():
    sim = canary_ready(deployed(steps=[10, 50]))
    sim.script("Pass")
    sim.invalid_spec = "spec.server.env sets modelserver_model_uri"
    decision = sim.step().decision

    assert decision.outcome == "RolledBack"
    assert decision.weight == 0
    assert decision.status.history[0].reason.startswith("InvalidSpec: ")
    assert "modelserver_model_uri" in decision.status.history[0].reason
    assert list(sim.verdicts) == ["Pass"], "no analysis judges a spec nobody can act on"


def test_a_promoting_canary_is_left_to_finish_when_its_spec_turns_out_invalid():
    sim = canary_ready(deployed(steps=[10]))
    sim.stable_ready_after = 3
    judge(sim, "Pass")
    assert sim.status.phase == "Promoting"
    sim.invalid_spec = "spec.server.env sets modelserver_model_uri"
    decision = sim.step().decision
    assert decision.outcome != "RolledBack"


# --- pause and resume requests (annotations GitOps tools do not revert) -------------------


def test_a_pause_request_holds_a_walking_canary_until_a_resume_request():
    sim = canary_ready(deployed(steps=[10, 50]))
    sim.annotate(PAUSE_ANNOTATION, "t1")
    paused = sim.step().decision
    held = judge(sim, "Pass", "Pass")
    sim.annotate(RESUME_ANNOTATION, "t2")
    resumed = sim.step().decision
    (advanced,) = judge(sim, "Pass")

    assert paused.status.paused_by_request is True
    assert "PauseRequested" in reasons(paused)
    assert "Paused" in reasons(paused)
    assert paused.status.message == f"paused at step 1 (10%) by {PAUSE_ANNOTATION}"
    assert [d.weight for d in held] == [10, 10]
    assert resumed.status.paused_by_request is False
    assert {"ResumeRequested", "Resumed"} <= set(reasons(resumed))
    assert advanced.weight == 50


def test_a_pause_request_made_before_a_canary_holds_its_first_step():
    sim = deployed(steps=[10, 50])
    sim.annotate(PAUSE_ANNOTATION, "t1")
    sim.step()
    canary_ready(sim)
    held = judge(sim, "Pass", "Pass")
    assert [d.weight for d in held] == [10, 10]


def test_a_resume_request_does_not_undo_a_pause_in_the_spec():
    sim = canary_ready(deployed(steps=[10, 50], paused=True))
    sim.annotate(PAUSE_ANNOTATION, "t1")
    sim.step()
    sim.annotate(RESUME_ANNOTATION, "t2")
    resumed = sim.step().decision
    held = judge(sim, "Pass")

    assert "spec.rollout.paused still holds it" in resumed.events[0].message
    assert held[0].weight == 10
    assert held[0].status.message == "paused at step 1 (10%) by spec.rollout.paused"


def test_pause_and_resume_asked_at_once_pause_wins():
    sim = canary_ready(deployed(steps=[10, 50]))
    sim.annotate(PAUSE_ANNOTATION, "t1")
    sim.annotate(RESUME_ANNOTATION, "t1")
    decision = sim.step().decision
    assert decision.status.paused_by_request is True
    assert sorted(decision.status.handled_requests) == [PAUSE_ANNOTATION, RESUME_ANNOTATION]


def test_failed_checks_still_roll_back_a_canary_paused_by_request():
    sim = canary_ready(deployed(failure_threshold=1))
    sim.annotate(PAUSE_ANNOTATION, "t1")
    sim.step()
    (rollback,) = judge(sim, "Fail")
    assert rollback.outcome == "RolledBack"


def test_a_step_is_judged_only_once_its_pods_are_ready_and_for_a_full_interval():
    sim = canary_ready(deployed(steps=[10, 50], replicas=4))
    sim.canary_ready_after = 6  # the next step's new pods take six reconciles to start
    (advanced,) = judge(sim, "Pass")
    assert advanced.weight == 50
    started = sim.run(lambda s: s.canary.ready >= 4 and s.status.canary is not None, max_ticks=50)
    starting = [t for t in started if t.observation.canary.ready_replicas < 4]
    assert starting
    assert not any(analysis_due(t.observation) for t in starting), "not judged while starting"
    ready_at = started[-1].observation.now
    canary = sim.status.canary
    assert canary is not None
    assert canary.last_step_at is not None
    assert canary.last_step_at >= ready_at - timedelta(seconds=30), "the clock restarted"


# --- promoting one step at a time ----------------------------------------------------------


def test_promote_step_moves_to_the_next_step_now_and_restarts_its_clock():
    sim = canary_ready(deployed(steps=[10, 25, 50]))
    sim.annotate(PROMOTE_STEP_ANNOTATION, "t1")
    moved = sim.step().decision

    assert moved.weight == 25
    assert moved.status.canary is not None
    assert moved.status.canary.step == 1
    assert moved.status.canary.last_step_at == sim.ticks[-1].observation.now
    assert "StepPromoted" in reasons(moved)
    (advanced,) = judge(sim, "Pass")
    assert advanced.weight == 50, "the next analysis judges the new step"


def test_promote_step_at_the_last_step_starts_the_promotion():
    sim = canary_ready(deployed(steps=[10, 50]))
    sim.annotate(PROMOTE_STEP_ANNOTATION, "t1")
    sim.step()
    sim.annotate(PROMOTE_STEP_ANNOTATION, "t2")
    last = sim.step().decision
    assert last.status.phase == "Promoting"
    assert "PromotionStarted" in reasons(last)


def test_promote_step_moves_a_paused_canary_and_it_stays_paused():
    sim = canary_ready(deployed(steps=[10, 25, 50], paused=True))
    sim.annotate(PROMOTE_STEP_ANNOTATION, "t1")
    moved = sim.step().decision
    held = judge(sim, "Pass")

    assert moved.weight == 25
    assert held[0].weight == 25
    assert "paused at step 2" in held[0].status.message


def test_promote_step_is_ignored_with_a_warning_while_canary_pods_are_not_ready():
    sim = deployed(steps=[10, 50], progress_deadline="600s")
    sim.canary_ready_after = 5
    with_version(sim, V2)
    sim.step()
    sim.annotate(PROMOTE_STEP_ANNOTATION, "t1")
    ignored = sim.step().decision
    assert ignored.weight == 0
    assert [e.type for e in ignored.events if e.reason == "StepPromotionIgnored"] == ["Warning"]


def test_full_promote_swallows_a_step_promote_made_with_it():
    sim = canary_ready(deployed(steps=[10, 25, 50]))
    sim.annotate(PROMOTE_STEP_ANNOTATION, "t1")
    sim.annotate(PROMOTE_ANNOTATION, "t1")
    decision = sim.step().decision
    assert decision.status.phase == "Promoting"
    assert "StepPromoted" not in reasons(decision)


# --- conditions GitOps tools read ---------------------------------------------------------


def conditions(decision: Decision) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in decision.status.conditions}


def test_ready_only_once_the_generation_is_fully_rolled_out():
    sim = Simulator(make_spec(V1), stable_ready_after=2)
    deploying = sim.step().decision
    done = sim.run(lambda s: s.status.phase == "Available")[-1].decision

    assert conditions(deploying)["Ready"] == ("False", "Progressing")
    assert conditions(deploying)["Reconciling"] == ("True", "Progressing")
    assert conditions(done)["Ready"] == ("True", "Complete")
    assert conditions(done)["Reconciling"] == ("False", "Complete")
    assert conditions(done)["Stalled"] == ("False", "Complete")
    assert conditions(done)["Available"][0] == "True"


def test_a_canary_is_reconciling_until_promoted_then_ready():
    sim = canary_ready(deployed(steps=[10]))
    walking = sim.ticks[-1].decision
    sim.stable_ready_after = 2
    (promoting,) = judge(sim, "Pass")
    ticks = sim.run(lambda s: s.status.phase == "Available")

    assert conditions(walking)["Ready"] == ("False", "Progressing")
    assert conditions(walking)["Available"][0] == "True", "the stable serves meanwhile"
    assert conditions(promoting)["Reconciling"] == ("True", "Promoting")
    assert conditions(ticks[-1].decision)["Ready"] == ("True", "Complete")


def test_a_rollback_is_stalled_until_the_spec_changes():
    sim = canary_ready(deployed(failure_threshold=1))
    (rollback,) = judge(sim, "Fail")
    later = sim.step().decision
    with_version(sim, V3)
    next_canary = sim.step().decision

    for decision in (rollback, later):
        assert conditions(decision)["Stalled"] == ("True", "RolledBack")
        assert conditions(decision)["Ready"] == ("False", "RolledBack")
        assert conditions(decision)["Reconciling"] == ("False", "Complete")
        assert conditions(decision)["Available"][0] == "True"
    assert conditions(next_canary)["Stalled"][0] == "False"
    assert conditions(next_canary)["Reconciling"] == ("True", "Progressing")


def test_the_old_reconciled_condition_is_dropped():
    sim = deployed()
    stale = sim.status.model_copy(deep=True)
    stale.conditions.append(
        stale.conditions[0].model_copy(update={"type": "Reconciled", "reason": "Applied"})
    )
    sim.status = stale
    decision = sim.step().decision
    assert "Reconciled" not in conditions(decision)


# --- manual requests ----------------------------------------------------------------------


def test_promote_annotation_promotes_now_without_further_analysis():
    sim = canary_ready(deployed(steps=[10, 25, 50]))
    sim.annotate(PROMOTE_ANNOTATION, "1")
    decision = sim.step().decision

    assert "ManualPromotion" in reasons(decision)
    assert decision.status.phase == "Promoting"
    assert decision.status.handled_requests[PROMOTE_ANNOTATION] == "1"
    assert sim.settle()[-1].decision.outcome == "Promoted"


def test_a_promote_request_is_acted_on_once_per_value():
    sim = canary_ready(deployed(steps=[10, 25, 50]))
    sim.annotate(PROMOTE_ANNOTATION, "1")
    sim.settle()
    canary_ready(sim, V3)
    for _ in range(10):
        decision = sim.step().decision
        assert decision.status.phase == "Progressing"
    assert decision.weight == 10


def test_a_promote_request_made_while_no_canary_runs_does_not_promote_a_later_canary():
    sim = deployed()
    sim.annotate(PROMOTE_ANNOTATION, "early")
    sim.step()
    canary_ready(sim)
    sim.step()

    assert sim.status.phase == "Progressing"
    assert sim.status.handled_requests[PROMOTE_ANNOTATION] == "early"


def test_abort_annotation_rolls_back_at_once():
    sim = canary_ready(deployed(steps=[10, 25, 50]))
    judge(sim, "Pass")
    sim.annotate(ABORT_ANNOTATION, "now")
    decision = sim.step().decision

    assert decision.outcome == "RolledBack"
    assert decision.weight == 0
    assert decision.canary is not None
    assert decision.canary.replicas == 0
    assert decision.status.history[0].reason.startswith("Aborted")
    assert decision.status.handled_requests[ABORT_ANNOTATION] == "now"


def test_abort_of_a_canary_that_is_not_ready_yet_rolls_it_back():
    sim = deployed()
    sim.broken.add(make_revision(sim, V2))
    with_version(sim, V2)
    sim.step()
    sim.annotate(ABORT_ANNOTATION, "now")
    decision = sim.step().decision

    assert decision.outcome == "RolledBack"
    assert decision.status.history[0].reason.startswith("Aborted")


def test_abort_beats_promote_and_swallows_it():
    sim = canary_ready(deployed())
    sim.annotate(PROMOTE_ANNOTATION, "p1")
    sim.annotate(ABORT_ANNOTATION, "a1")
    decision = sim.step().decision

    assert decision.outcome == "RolledBack"
    assert decision.status.history[0].reason.startswith("Aborted")
    assert decision.status.handled_requests == {PROMOTE_ANNOTATION: "p1", ABORT_ANNOTATION: "a1"}
    sim.annotate(RETRY_ANNOTATION, "r1")
    sim.step()
    ready = sim.run(canary_is_ready)
    assert ready[-1].decision.status.phase == "Progressing", "the old promote stays spent"


def test_abort_beats_a_passing_analysis_at_the_last_step():
    sim = canary_ready(deployed(steps=[10]))
    to_next_analysis(sim)
    observation = dataclasses.replace(
        sim.observation(), annotations={ABORT_ANNOTATION: "x"}, analysis=analysis("Pass", sim.now)
    )
    decision = decide(observation)

    assert decision.outcome == "RolledBack"
    assert decision.weight == 0


def test_promote_beats_a_failing_analysis():
    sim = canary_ready(deployed(failure_threshold=1))
    to_next_analysis(sim)
    observation = dataclasses.replace(
        sim.observation(), annotations={PROMOTE_ANNOTATION: "x"}, analysis=analysis("Fail", sim.now)
    )
    decision = decide(observation)

    assert decision.status.phase == "Promoting"
    assert decision.outcome is None


def test_promoting_a_canary_that_is_not_ready_sends_it_no_traffic():
    sim = deployed()
    sim.broken.add(make_revision(sim, V2))
    with_version(sim, V2)
    sim.step()
    sim.annotate(PROMOTE_ANNOTATION, "go")
    decision = sim.step().decision

    assert decision.status.phase == "Promoting"
    assert decision.weight == 0
    assert decision.stable is not None
    assert decision.stable.revision == sim.revision
    assert sim.settle()[-1].decision.outcome == "Promoted"


def test_abort_during_promotion_is_too_late_and_is_ignored():
    sim = canary_ready(deployed(steps=[10]))
    sim.stable_ready_after = 3
    judge(sim, "Pass")
    assert sim.status.phase == "Promoting"
    sim.annotate(ABORT_ANNOTATION, "late")
    decision = sim.step().decision

    assert decision.status.phase == "Promoting"
    assert decision.status.handled_requests[ABORT_ANNOTATION] == "late"
    (too_late,) = decision.events
    assert (too_late.reason, too_late.type) == ("AbortTooLate", "Warning")
    assert "set the spec to the previous model" in too_late.message
    assert sim.settle()[-1].decision.outcome == "Promoted"


def test_a_new_revision_during_promotion_waits_for_it_then_starts_its_own_canary():
    sim = canary_ready(deployed(steps=[10]))
    promoted_revision = sim.revision
    sim.stable_ready_after = 3
    judge(sim, "Pass")
    assert sim.status.phase == "Promoting"
    with_version(sim, V3)

    finishing = sim.step().decision
    assert finishing.status.phase == "Promoting"
    assert finishing.stable is not None
    assert finishing.stable.revision == promoted_revision, "stable keeps rolling to V2"
    assert finishing.canary is not None
    assert finishing.canary.revision == promoted_revision, "the V2 pods keep their template"
    assert finishing.outcome is None

    ticks = sim.run(lambda s: s.status.canary is not None and s.status.canary.version == V3)
    handover = ticks[-1].decision
    assert handover.outcome == "Promoted"
    assert [(h.version, h.outcome) for h in handover.status.history[:1]] == [(V2, "Promoted")]
    assert handover.status.stable is not None
    assert handover.status.stable.version == V2
    assert reasons(handover)[-2:] == ["Promoted", "CanaryStarted"]
    assert "changed while 2.0.0 was promoted" in handover.events[-1].message
    assert handover.canary is not None
    assert handover.canary.revision == sim.revision
    (note,) = handover.notifications
    assert (note.kind, note.version, note.revision) == ("Promoted", V2, promoted_revision), (
        "the notification names the promoted version, not the spec's newer one"
    )


def test_rolling_back_from_a_full_step_keeps_the_canary_until_stable_has_pods_again():
    sim = canary_ready(deployed(steps=[50, 100], replicas=2, failure_threshold=1))
    judge(sim, "Pass")
    sim.run(lambda s: s.stable.ready == 0)
    assert sim.canary.ready == 2, "at 100% the replicas router serves from the canary alone"
    sim.stable_ready_after = 3

    (rollback,) = judge(sim, "Fail")
    assert rollback.outcome == "RolledBack"
    assert rollback.stable is not None
    assert rollback.stable.replicas == 2
    assert rollback.canary is not None
    assert rollback.canary.replicas == 2, "no pods at all would be an outage"
    assert rollback.requeue_after is not None

    ticks = sim.run(lambda s: s.canary.replicas == 0)
    assert all(t.observation.stable.ready_replicas == 0 for t in ticks[:-1])
    assert ticks[-1].observation.stable.ready_replicas == 2
    assert sim.status.phase == "RolledBack"


def test_retry_while_nothing_was_rolled_back_does_nothing():
    sim = canary_ready(deployed())
    sim.annotate(RETRY_ANNOTATION, "r")
    decision = sim.step().decision

    assert decision.status.canary is not None
    assert decision.status.canary.ready_at is not None
    assert decision.events == []


# --- settings changed under a running canary -----------------------------------------------


def test_shortening_the_steps_under_a_canary_holds_it_at_the_new_last_step():
    sim = canary_ready(deployed(steps=[10, 20, 30, 40]))
    judge(sim, "Pass", "Pass", "Pass")
    sim.set_spec(with_rollout(sim.spec, steps=[15, 25]))
    decision = sim.step().decision

    assert decision.weight == 25
    assert decision.status.canary is not None
    assert decision.status.canary.step == 1
    (promoting,) = judge(sim, "Pass")
    assert promoting.status.phase == "Promoting"


def test_lowering_the_failure_threshold_applies_at_the_next_failure():
    sim = canary_ready(deployed(failure_threshold=5))
    judge(sim, "Fail", "Fail")
    sim.set_spec(with_rollout(sim.spec, failure_threshold=2))
    assert sim.step().decision.outcome is None
    (decision,) = judge(sim, "Fail")

    assert decision.outcome == "RolledBack"


def test_scaling_during_a_canary_keeps_its_step_and_resizes_both_tracks():
    sim = canary_ready(deployed(replicas=4, steps=[20, 50]))
    sim.set_spec(sim.spec.model_copy(update={"replicas": 8}))
    decision = sim.step().decision

    assert decision.status.canary is not None
    assert decision.status.canary.step == 0
    assert decision.stable is not None
    assert decision.stable.replicas == 8
    assert decision.canary is not None
    assert decision.canary.replicas == 2


# --- routers as the core uses them --------------------------------------------------------


def test_gateway_canary_weight_follows_the_steps_exactly():
    sim = canary_ready(deployed(router="gatewayAPI", steps=[5, 30], replicas=2))
    assert sim.ticks[-1].decision.weight == 5
    assert sim.status.canary is not None
    assert sim.status.canary.actual_weight == 5
    (decision,) = judge(sim, "Pass")
    assert decision.weight == 30


def test_replicas_router_reports_the_share_of_ready_pods_as_actual_weight():
    sim = canary_ready(deployed(replicas=4, steps=[20]))
    canary = sim.status.canary

    assert canary is not None
    assert canary.weight == 20
    assert canary.actual_weight == 20  # 1 canary pod next to 4 stable pods


def test_a_deployment_scaled_to_zero_gets_no_canary_pods():
    sim = canary_ready(deployed(replicas=0, steps=[10, 50]))
    decision = sim.ticks[-1].decision

    assert decision.canary is not None
    assert decision.canary.replicas == 0
    assert decision.stable is not None
    assert decision.stable.replicas == 0


# --- restart safety -----------------------------------------------------------------------


def every_kind_of_tick() -> list[Observation]:
    """Observations from all stages of a canary's life, with the analysis they were fed."""
    sim = canary_ready(deployed(steps=[10, 50], failure_threshold=2))
    judge(sim, "Fail", "Pass", "NoData", "Pass")
    sim.settle()
    canary_ready(sim, V3)
    sim.annotate(ABORT_ANNOTATION, "x")
    sim.settle()
    return [
        dataclasses.replace(t.observation, analysis=analysis(t.verdict, t.observation.now))
        if t.verdict is not None
        else t.observation
        for t in sim.ticks
    ]


def test_the_same_observation_always_gives_the_same_decision():
    for observation in every_kind_of_tick():
        assert snapshot(decide(observation)) == snapshot(decide(observation))


@pytest.mark.parametrize("exclude_none", [False, True])
def test_status_read_back_from_the_api_server_gives_the_same_decision(exclude_none):
    for observation in every_kind_of_tick():
        stored = roundtrip(observation.status, exclude_none=exclude_none)
        again = dataclasses.replace(observation, status=stored)
        assert snapshot(decide(again)) == snapshot(decide(observation))


def test_a_rollback_whose_children_were_not_applied_is_applied_after_a_restart():
    sim = canary_ready(deployed(failure_threshold=1))
    sim.script("Fail")
    sim.run(lambda s: not s.verdicts)  # apply happened; undo it: the operator died before
    sim.canary.replicas, sim.canary.ready = 1, 1
    decision = sim.step().decision

    assert decision.weight == 0
    assert decision.canary is not None
    assert decision.canary.replicas == 0
    assert decision.status.phase == "RolledBack"


def test_a_lost_status_write_repeats_the_tick_without_skipping_a_step():
    sim = canary_ready(deployed(steps=[10, 20, 30]))
    sim.script("Pass")
    lost = sim.step(persist=False)  # decided, then the operator died before writing status
    assert lost.verdict == "Pass"
    assert lost.decision.weight == 20
    sim.step()  # after the restart the analysis runs again and is counted once

    assert not sim.verdicts
    assert sim.status.canary is not None
    assert sim.status.canary.step == 1
    assert sim.ticks[-1].decision.weight == 20
