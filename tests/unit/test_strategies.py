"""Scenario tests of the blueGreen and direct strategies (the canary's are in test_rollout)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from modeldeploy.api import ModelDeploymentSpec
from modeldeploy.rollout import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    Decision,
    Track,
    analysis_due,
    analysis_track,
)
from tests.unit.rollout_sim import Simulator, make_spec

V1, V2, V3 = "1.0.0", "2.0.0", "3.0.0"


def reasons(decision: Decision) -> list[str]:
    return [str(e.reason) for e in decision.events]


def conditions(decision: Decision) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in decision.status.conditions}


def blue_green(**settings: Any) -> Simulator:
    block = {"previewDuration": "60s", "scaleDownDelay": "120s", **settings}
    spec = make_spec(V1, replicas=3, strategy={"type": "blueGreen", "blueGreen": block})
    return Simulator(spec).deployed()


def direct(intervals: int = 2, **rollout: Any) -> Simulator:
    strategy = {"type": "direct", "direct": {"analysisIntervals": intervals}}
    return Simulator(make_spec(V1, replicas=3, strategy=strategy, **rollout)).deployed()


def new_version(sim: Simulator, version: str = V2) -> None:
    sim.set_spec(sim.spec.model_copy(update={"model": make_spec(version).model}))


def until(sim: Simulator, predicate) -> Decision:
    return sim.run(predicate)[-1].decision


def switched(sim: Simulator) -> bool:
    canary = sim.status.canary
    return canary is not None and canary.switched_at is not None


# --- blueGreen ------------------------------------------------------------------------------


def test_the_preview_runs_at_full_size_and_gets_no_live_traffic():
    sim = blue_green()
    new_version(sim)
    previews = sim.run(
        lambda s: s.status.canary is not None and s.status.canary.ready_at is not None
    )
    for tick in previews:
        d = tick.decision
        assert d.live_tracks == (Track.STABLE,), "the clients' Service selects stable alone"
        assert d.weight == 0
        assert d.canary is not None
        assert d.canary.replicas == 3
        assert d.stable is not None
        assert d.stable.replicas == 3
    assert "PreviewStarted" in reasons(previews[0].decision)
    assert not analysis_due(sim.observation()), "no preview analysis unless asked for"


def test_after_the_preview_all_traffic_switches_at_once_and_the_previous_stands_by():
    sim = blue_green()
    old = sim.revision
    new_version(sim)
    switch = until(sim, switched)

    assert switch.live_tracks == (Track.CANARY,)
    assert switch.weight == 100
    assert "Switched" in reasons(switch)
    status = switch.status
    assert status.phase == "Promoting"
    assert status.stable is not None
    assert status.stable.version == V2, "the new revision is the stable one in status"
    assert status.previous is not None
    assert (status.previous.version, status.previous.standby) == (V1, True)
    assert switch.stable is not None
    assert switch.stable.revision == old, "the previous version keeps running"
    assert switch.canary is not None
    assert switch.canary.replicas == 3
    assert conditions(switch)["Reconciling"] == ("True", "Promoting")


def test_after_the_scale_down_delay_the_stable_deployment_takes_the_new_version():
    sim = blue_green()
    new_version(sim)
    switch = until(sim, switched)
    switched_at = switch.status.canary.switched_at if switch.status.canary else None
    assert switched_at is not None
    ticks = sim.run(lambda s: s.status.phase == "Available")
    done = ticks[-1].decision

    assert ticks[-1].observation.now - switched_at >= timedelta(seconds=120)
    assert done.outcome == "Promoted"
    assert done.live_tracks == (Track.STABLE,), "no canary Deployment left to route to"
    assert done.canary is None
    assert done.stable is not None
    assert done.stable.revision == sim.revision
    assert done.status.previous is None
    assert conditions(done)["Ready"] == ("True", "Complete")
    assert switch.stable is not None
    assert switch.stable.revision != sim.revision


def test_a_failing_live_analysis_switches_back_at_once():
    sim = blue_green(postPromotionAnalysis="90s")
    old = sim.revision
    new_version(sim)
    until(sim, switched)
    sim.script("Fail", "Fail", "Fail")
    back = until(sim, lambda s: s.status.phase == "RolledBack")

    assert back.outcome == "RolledBack"
    assert back.live_tracks == (Track.STABLE,), "all traffic back on the standby at once"
    assert sim.step().decision.live_tracks == (Track.STABLE,), "and stays there"
    assert back.weight == 0
    assert back.stable is not None
    assert back.stable.revision == old
    assert back.canary is not None
    assert back.canary.replicas == 0
    assert back.status.stable is not None
    assert back.status.stable.version == V1
    assert back.status.previous is None
    assert conditions(back)["Stalled"] == ("True", "RolledBack")


def test_an_abort_while_the_previous_stands_by_switches_back_and_after_is_too_late():
    sim = blue_green()
    new_version(sim)
    until(sim, switched)
    sim.annotate(ABORT_ANNOTATION, "t1")
    back = sim.step().decision
    assert back.outcome == "RolledBack"
    assert back.status.stable is not None
    assert back.status.stable.version == V1

    sim = blue_green(scaleDownDelay="30s")
    new_version(sim)
    until(sim, switched)
    until(sim, lambda s: s.status.previous is not None and not s.status.previous.standby)
    sim.annotate(ABORT_ANNOTATION, "t1")
    late = sim.step().decision
    assert "AbortTooLate" in reasons(late)


def test_without_auto_promote_the_preview_waits_for_a_promote_request():
    sim = blue_green(autoPromote=False)
    new_version(sim)
    sim.run(lambda s: s.status.canary is not None and s.status.canary.ready_at is not None)
    for _ in range(30):
        waiting = sim.step().decision
    assert waiting.live_tracks == (Track.STABLE,)
    assert conditions(waiting)["Ready"] == ("False", "Paused")
    assert "awaiting a promote request" in waiting.status.message
    sim.annotate(PROMOTE_ANNOTATION, "t1")
    switch = sim.step().decision
    assert switch.live_tracks == (Track.CANARY,)


def test_with_preview_analysis_the_preview_must_pass_and_failures_roll_back_before_traffic():
    sim = blue_green(previewAnalysis=True)
    new_version(sim)
    sim.run(lambda s: s.status.canary is not None and s.status.canary.ready_at is not None)
    assert analysis_track(sim.observation()) == Track.CANARY
    sim.script("Fail", "Fail", "Fail")
    back = until(sim, lambda s: s.status.phase == "RolledBack")
    assert back.status.stable is not None
    assert back.status.stable.version == V1
    assert all(t.decision.live_tracks != (Track.CANARY,) for t in sim.ticks), "never switched"


def test_preview_pods_that_never_get_ready_are_rolled_back_at_the_deadline():
    sim = blue_green()
    sim.canary_ready_after = None
    new_version(sim)
    back = until(sim, lambda s: s.status.phase == "RolledBack")
    assert back.status.history[0].reason.startswith("ProgressDeadlineExceeded")


# --- direct ---------------------------------------------------------------------------------


def test_direct_replaces_stable_in_place_then_judges_it():
    sim = direct()
    old = sim.revision
    new_version(sim)
    start = sim.step().decision

    assert start.stable is not None
    assert start.stable.revision == sim.revision, "the stable Deployment takes it at once"
    assert start.canary is None
    assert start.status.previous is not None
    assert start.status.previous.revision == old
    assert "Replacing" in reasons(start)
    sim.run(lambda s: s.status.canary is not None and s.status.canary.ready_at is not None)
    assert analysis_track(sim.observation()) == Track.STABLE


def test_direct_is_promoted_once_every_analysis_passed():
    sim = direct(intervals=2)
    new_version(sim)
    sim.script("Pass", "Pass")
    done = until(sim, lambda s: s.status.phase == "Available" and s.status.canary is None)
    assert done.outcome == "Promoted"
    assert done.status.previous is None
    assert conditions(done)["Ready"] == ("True", "Complete")


def test_a_failing_direct_analysis_rolls_the_previous_version_back_in_place():
    sim = direct(intervals=3, failure_threshold=1)
    old = sim.revision
    new_version(sim)
    sim.script("Pass", "Fail")
    back = until(sim, lambda s: s.status.phase == "RolledBack")

    assert back.stable is not None
    assert back.stable.revision == old
    assert back.status.stable is not None
    assert back.status.stable.version == V1
    assert back.status.rejected_revision == sim.revision
    assert back.status.history[0].reason.startswith("FailedChecks")


def test_direct_with_no_analyses_is_done_once_its_pods_are_ready():
    sim = direct(intervals=0)
    new_version(sim)
    done = until(sim, lambda s: s.status.phase == "Available" and s.status.canary is None)
    assert done.outcome == "Promoted"


def test_direct_pods_that_never_get_ready_roll_back_at_the_deadline():
    sim = direct()
    sim.stable_ready_after = None
    new_version(sim)
    back = until(sim, lambda s: s.status.phase == "RolledBack")
    assert back.status.history[0].reason.startswith("ProgressDeadlineExceeded")
    assert back.stable is not None
    assert back.stable.revision != sim.revision


def test_a_revision_replaced_before_it_passed_is_no_rollback_target():
    sim = direct(intervals=3, failure_threshold=1)
    original = sim.revision
    new_version(sim, V2)
    sim.run(lambda s: s.status.canary is not None and s.status.canary.ready_at is not None)
    new_version(sim, V3)
    sim.step()
    assert sim.status.previous is not None
    assert sim.status.previous.revision == original
    sim.script("Fail")
    back = until(sim, lambda s: s.status.phase == "RolledBack")
    assert back.stable is not None
    assert back.stable.revision == original


# --- autoscaling ----------------------------------------------------------------------------


def test_with_autoscaling_the_canary_follows_the_stable_size_the_hpa_set():
    spec = make_spec(V1, replicas=2, steps=(50,))
    scaled = spec.model_copy(
        update={
            "autoscaling": ModelDeploymentSpec.model_validate(
                {
                    **spec.model_dump(by_alias=True),
                    "autoscaling": {"minReplicas": 2, "maxReplicas": 8},
                }
            ).autoscaling
        }
    )
    sim = Simulator(scaled).deployed()
    sim.stable.replicas = sim.stable.ready = 6  # what the HPA made of it
    new_version(sim)
    decision = sim.step().decision

    assert decision.canary is not None
    assert decision.canary.replicas == 6, "50% of the HPA's 6 pods, not of spec.replicas 2"
    assert decision.status.replicas == 6
    settled = Simulator(scaled).deployed().ticks[-1].decision
    assert "spec.replicas is ignored while autoscaling is on" in settled.status.message
