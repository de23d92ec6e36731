"""What each `kubectl modeldeploy` verb asks of the operator, when it refuses, and the
exit code `status` gives for each way a rollout ends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from modeldeploy.cli.decide import (
    Refusal,
    Request,
    Result,
    Verb,
    plan,
    progress_line,
    request_value,
    result_line,
    rollout_result,
)
from modeldeploy.cli.state import Rollout
from tests.unit.cli_objects import canary_status, concluded, condition, experimenting, md

NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def planned(verb: Verb, obj: dict) -> Request:
    result = plan(verb, Rollout.of(obj), NOW)
    assert isinstance(result, Request), result
    return result


def refused(verb: Verb, obj: dict) -> str:
    result = plan(verb, Rollout.of(obj), NOW)
    assert isinstance(result, Refusal), result
    return result.message


def walking(**canary) -> dict:
    return md(canary=canary_status(**canary))


def test_promote_moves_the_walking_canary_one_step_with_the_step_annotation():
    request = planned(Verb.PROMOTE_STEP, walking(step=0, weight=20))
    assert request.annotation == "modeldeploy.dev/promote-step"
    assert request.value == "2026-03-01T12:00:00.123456Z"
    assert "from step 1/3 (20%) to step 2/3 (50%)" in request.said
    assert request.notes == ()


def test_promote_at_the_last_step_says_it_starts_the_promotion():
    request = planned(Verb.PROMOTE_STEP, walking(step=2, weight=80))
    assert "last step 3/3 (80%): it is promoted" in request.said


def test_promote_full_uses_the_promote_annotation_and_names_what_it_replaces():
    request = planned(Verb.PROMOTE_FULL, walking(step=1, weight=50))
    assert request.annotation == "modeldeploy.dev/promote"
    assert "skips its remaining steps from step 2/3 (50%), replacing stable 1.0.0" in request.said


@pytest.mark.parametrize("verb", [Verb.PROMOTE_STEP, Verb.PROMOTE_FULL, Verb.ABORT])
def test_verbs_about_the_canary_refuse_without_one(verb):
    message = refused(verb, md(phase="Available", message="stable 1.0.0 serves all traffic"))
    assert "modeldeployment fraud in ml has no canary" in message
    assert "phase Available, serving 1.0.0" in message


def test_promote_after_a_rollback_points_to_retry():
    message = refused(
        Verb.PROMOTE_STEP, md(phase="RolledBack", message="revision b2 was rolled back")
    )
    assert "revision b2 was rolled back" in message
    assert "kubectl modeldeploy retry fraud" in message


def test_step_promotion_of_unready_canary_pods_is_refused_with_the_way_out():
    message = refused(Verb.PROMOTE_STEP, walking(ready=False, weight=0))
    assert "not ready yet (0/1 ready)" in message
    assert "--full" in message
    # ... which is allowed: the operator promotes a canary that never became ready too.
    planned(Verb.PROMOTE_FULL, walking(ready=False, weight=0))


@pytest.mark.parametrize("verb", [Verb.PROMOTE_STEP, Verb.PROMOTE_FULL])
def test_promote_during_the_promotion_is_refused(verb):
    message = refused(
        verb, md(phase="Promoting", canary=canary_status(), message="promoting 2.0.0")
    )
    assert "already being promoted: promoting 2.0.0" in message


def test_abort_during_the_promotion_is_too_late_and_says_how_to_go_back():
    message = refused(Verb.ABORT, md(phase="Promoting", canary=canary_status()))
    assert "too late to abort" in message
    assert "set the spec to the previous model" in message


def test_abort_rolls_the_walking_canary_back_to_stable():
    request = planned(Verb.ABORT, walking(step=1, weight=50))
    assert request.annotation == "modeldeploy.dev/abort"
    assert "canary 2.0.0 at step 2/3 (50%) is rolled back" in request.said
    assert "returns to stable 1.0.0" in request.said


def test_a_pending_step_promotion_is_replaced_and_the_user_is_told():
    obj = walking()
    obj["metadata"]["annotations"] = {"modeldeploy.dev/promote-step": "earlier"}
    request = planned(Verb.PROMOTE_STEP, obj)
    assert any("moves one step, not two" in note for note in request.notes)
    obj["status"]["handledRequests"] = {"modeldeploy.dev/promote-step": "earlier"}
    assert planned(Verb.PROMOTE_STEP, obj).notes == ()


def test_promoting_a_paused_canary_says_it_stays_paused():
    obj = md(canary=canary_status(), paused_by_request=True)
    request = planned(Verb.PROMOTE_STEP, obj)
    assert request.notes == (
        "the canary is paused by modeldeploy.dev/pause: it moves and stays paused",
    )


def test_retry_names_the_rolled_back_version():
    history = [{"revision": "b2c3d4e5f6", "version": "2.0.0", "outcome": "RolledBack"}]
    obj = md(phase="RolledBack", rejected="b2c3d4e5f6", history=history)
    request = planned(Verb.RETRY, obj)
    assert request.annotation == "modeldeploy.dev/retry"
    assert "rolled-back 2.0.0 (revision b2c3d4e5f6) starts a new canary" in request.said


def test_retry_refuses_with_nothing_rolled_back_or_a_canary_running():
    assert "no rolled-back revision (phase Available)" in refused(Verb.RETRY, md(phase="Available"))
    assert "has canary 2.0.0 running at step 1/3 (20%)" in refused(Verb.RETRY, walking())


def test_pause_holds_the_walking_canary_or_the_next_one():
    request = planned(Verb.PAUSE, walking(step=1, weight=50))
    assert request.annotation == "modeldeploy.dev/pause"
    assert "canary 2.0.0 holds at step 2/3 (50%)" in request.said
    assert "next one holds at its first step" in planned(Verb.PAUSE, md(phase="Available")).said


def test_pause_refuses_when_a_pause_request_already_holds_even_one_not_acted_on_yet():
    assert "already paused" in refused(Verb.PAUSE, md(paused_by_request=True))
    pending = md(annotations={"modeldeploy.dev/pause": "t1"})
    assert "already paused" in refused(Verb.PAUSE, pending)


def test_resume_lifts_a_pause_request_even_one_not_acted_on_yet():
    request = planned(Verb.RESUME, md(canary=canary_status(), paused_by_request=True))
    assert request.annotation == "modeldeploy.dev/resume"
    assert "canary 2.0.0 walks on from step 1/3 (20%)" in request.said
    planned(Verb.RESUME, md(annotations={"modeldeploy.dev/pause": "t1"}))


def test_resume_refuses_what_is_not_paused_and_a_pause_in_the_spec():
    assert refused(Verb.RESUME, md()).endswith("is not paused.")
    message = refused(Verb.RESUME, md(paused=True))
    assert "paused by spec.rollout.paused, which resume does not lift" in message
    # A resume already asked for and not acted on yet: nothing more to lift.
    obj = md(paused_by_request=True, annotations={"modeldeploy.dev/resume": "t2"})
    assert refused(Verb.RESUME, obj).endswith("is not paused.")


def test_resume_with_the_spec_still_paused_warns_that_the_spec_holds():
    request = planned(Verb.RESUME, md(paused=True, paused_by_request=True))
    assert request.notes == (
        "spec.rollout.paused is true as well, and keeps holding canaries until it is false",
    )


def test_request_values_differ_for_two_requests_in_the_same_microsecond():
    first = request_value(NOW, None)
    assert first == "2026-03-01T12:00:00.123456Z"
    assert request_value(NOW, first) == "2026-03-01T12:00:00.123457Z"
    assert request_value(NOW, "older") == first


def test_a_request_value_repeating_the_annotation_is_bumped():
    obj = walking()
    obj["metadata"]["annotations"] = {"modeldeploy.dev/abort": "2026-03-01T12:00:00.123456Z"}
    assert planned(Verb.ABORT, obj).value == "2026-03-01T12:00:00.123457Z"


def ready(generation: int = 2) -> list[dict]:
    return [
        condition("Ready", "True", "Ready", generation),
        condition("Stalled", "False", "Complete", generation),
    ]


def stalled(generation: int = 2) -> list[dict]:
    return [
        condition("Ready", "False", "RolledBack", generation),
        condition("Stalled", "True", "RolledBack", generation),
    ]


@pytest.mark.parametrize(
    ("conditions", "generation", "expected"),
    [
        (ready(2), 2, Result.SUCCEEDED),
        (stalled(2), 2, Result.FAILED),
        # The last generation's verdict says nothing about a spec applied since.
        (ready(1), 2, None),
        (stalled(1), 2, None),
        ([condition("Reconciling", "True", "Progressing")], 2, None),
        ([], 2, None),
    ],
)
def test_status_exit_code_follows_the_current_generations_conditions(
    conditions, generation, expected
):
    rollout = Rollout.of(md(conditions=conditions, generation=generation))
    assert rollout_result(rollout) == expected


def test_conditions_without_their_own_generation_use_the_status_one():
    conditions = [{"type": "Ready", "status": "True", "reason": "Ready"}]
    assert rollout_result(Rollout.of(md(conditions=conditions, observed=2))) == Result.SUCCEEDED
    assert rollout_result(Rollout.of(md(conditions=conditions, observed=1))) is None


def test_progress_line_names_phase_step_and_both_weights():
    line = progress_line(Rollout.of(walking(step=1, weight=50, actual=40)))
    assert line == (
        "fraud: Progressing, canary 2.0.0 step 2/3, weight 50% (achieved 40%): "
        "canary 2.0.0 at step 1 (20%)"
    )


def test_progress_line_says_the_step_waits_for_quality_labels_and_until_when():
    obj = walking(step=0, weight=20)
    obj["spec"]["analysis"] = {"quality": {"minAccuracy": 0.9, "feedbackDeadline": "30m"}}
    obj["status"]["canary"]["awaitingFeedbackSince"] = "2026-03-01T11:59:00Z"
    obj["status"]["lastAnalysis"] = {
        "at": "2026-03-01T11:59:00Z",
        "revision": "b2c3d4e5f6",
        "verdict": "NoData",
        "awaitingFeedback": True,
    }
    assert progress_line(Rollout.of(obj)) == (
        "fraud: Progressing, canary 2.0.0 step 1/3, weight 20% (achieved 25%), waiting for "
        "quality labels (not counted as inconclusive until 2026-03-01 12:29:00 UTC): "
        "canary 2.0.0 at step 1 (20%)"
    )
    # the status verb's verdict is the conditions', waiting or not
    assert rollout_result(Rollout.of(obj)) is None


def test_progress_line_says_when_the_operator_has_not_caught_up():
    assert "act on generation 3 (status is of generation 2)" in progress_line(
        Rollout.of(md(generation=3, observed=2))
    )
    assert "waiting for the operator to write a status" in progress_line(
        Rollout.of(md(observed=None))
    )


def test_result_lines_name_the_outcome_and_the_reason():
    done = Rollout.of(md(phase="Available", conditions=ready(), message="stable 2.0.0 serves"))
    assert result_line(done, Result.SUCCEEDED) == (
        "fraud: generation 2 is rolled out: stable 2.0.0 serves"
    )
    failed = Rollout.of(md(phase="RolledBack", conditions=stalled(), message="2.0.0 rolled back"))
    assert result_line(failed, Result.FAILED) == "fraud: failed (RolledBack): 2.0.0 rolled back"


def test_an_object_without_status_reads_as_pending():
    fresh = {"metadata": {"name": "fresh", "namespace": "ml", "generation": 1}}
    rollout = Rollout.of(fresh)
    assert rollout.phase == "Pending"
    assert rollout.steps == (10, 25, 50)
    assert rollout_result(rollout) is None
    assert "no canary to promote (phase Pending)" in refused(Verb.PROMOTE_STEP, fresh)


def test_abort_stops_a_running_experiment_and_control_keeps_serving():
    request = planned(Verb.ABORT, experimenting())
    assert request.annotation == "modeldeploy.dev/abort"
    assert request.said == (
        "abort requested: the experiment stops before its verdict; its variants (deeper) get "
        "no more traffic and control 1.0.0 serves all of it"
    )


@pytest.mark.parametrize("verb", [Verb.PROMOTE_STEP, Verb.PROMOTE_FULL])
def test_promote_during_an_experiment_says_it_has_no_steps_and_what_does_end_it(verb):
    message = refused(verb, experimenting())
    assert "runs an experiment, not a canary: there are no steps to promote" in message
    assert "`kubectl modeldeploy abort fraud` stops it now" in message
    assert "`kubectl modeldeploy apply-winner fraud`" in message


def test_abort_of_a_finished_experiment_is_refused():
    assert "has no canary to abort (phase Available" in refused(Verb.ABORT, concluded())


def test_retry_runs_a_finished_experiment_again():
    request = planned(Verb.RETRY, concluded())
    assert request.annotation == "modeldeploy.dev/retry"
    assert request.said == (
        "retry requested: the concluded experiment runs again as attempt 2, with fresh counts; "
        "its last results are replaced"
    )
    stopped = experimenting("Stopped", message="stopped: aborted by modeldeploy.dev/abort")
    assert "the stopped experiment runs again as attempt 2" in planned(Verb.RETRY, stopped).said


def test_retry_of_an_experiment_refuses_while_it_runs_or_once_the_spec_moved_on():
    assert "the experiment of modeldeployment fraud in ml is running (attempt 1)" in refused(
        Verb.RETRY, experimenting()
    )
    moved_on = concluded()
    moved_on["spec"]["strategy"] = {"type": "canary"}
    assert "no longer runs an experiment (strategy.type canary)" in refused(Verb.RETRY, moved_on)


def test_a_rolled_back_revision_is_what_retry_retries_even_after_an_experiment():
    history = [{"revision": "b2c3d4e5f6", "version": "2.0.0", "outcome": "RolledBack"}]
    obj = concluded(rejected="b2c3d4e5f6", history=history)
    obj["status"]["phase"] = "RolledBack"
    assert (
        "rolled-back 2.0.0 (revision b2c3d4e5f6) starts a new canary"
        in planned(Verb.RETRY, obj).said
    )


def test_status_follows_a_running_experiment_and_ends_with_its_verdict():
    running = Rollout.of(experimenting())
    assert rollout_result(running) is None
    assert progress_line(running) == (
        "fraud: Experimenting, experiment attempt 1, verdict due 2026-03-01 15:00:00 UTC at the "
        "earliest, cut: fresh (3 failed SLO analyses; last: error-rate 0.2 > max 0.01): "
        "experiment (counting until 2026-03-01T15:00:00+00:00): control 1.0.0 79%, deeper "
        "1.1.0-deeper 21% (1 ready)"
    )
    done = Rollout.of(concluded())
    assert rollout_result(done) == Result.SUCCEEDED
    line = result_line(done, Result.SUCCEEDED)
    assert line.startswith(
        "fraud: generation 2 is rolled out: stable 1.0.0 serves all traffic; experiment "
        "Concluded: deeper wins: deeper Better"
    )
    assert line.endswith("; `kubectl modeldeploy apply-winner fraud` rolls deeper out")
    no_winner = result_line(Rollout.of(concluded(winner=None)), Result.SUCCEEDED)
    assert "experiment Concluded: no winner: " in no_winner
    assert "apply-winner" not in no_winner


def test_a_paused_experiment_says_so_in_the_status_line():
    line = progress_line(Rollout.of(experimenting(paused_by_request=True)))
    assert ", paused by modeldeploy.dev/pause: " in line
