"""Scenario tests of strategy.type experiment: variants start once control serves, take
traffic only when ready, are cut by their SLO checks, and are judged against control only
after duration and minSamples; the spec is never changed, the winner's patch is offered."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest

from modeldeploy import resources
from modeldeploy.api import ModelDeploymentSpec, Verdict
from modeldeploy.rollout import Decision, Track
from modeldeploy.rollout.experiment import ExperimentDue, experiment_due
from modeldeploy.rollout.model import ArmCount
from modeldeploy.rollout.requests import ABORT_ANNOTATION, RETRY_ANNOTATION
from tests.unit.rollout_sim import IMAGE, Simulator, make_spec

V1 = "1.0.0"


def variant(name: str, weight: int) -> dict[str, Any]:
    version = f"2.0.0-{name}"
    model = {"name": "fraud", "version": version, "uri": f"pvc://models/fraud/{version}/m.ubj"}
    return {"name": name, "weight": weight, "model": model}


def experiment_spec(
    *arms: tuple[str, int], router: str = "replicas", **settings: Any
) -> ModelDeploymentSpec:
    block = {
        "variants": [variant(name, weight) for name, weight in arms or (("a", 20), ("b", 20))],
        "duration": "10m",
        "minSamples": 1000,
        "metric": {"successQuery": "sum(orders)", "totalQuery": "sum(visits)"},
        **settings,
    }
    strategy = {"type": "experiment", "experiment": block}
    return make_spec(V1, replicas=4, interval="1m", router=router, strategy=strategy)


def counting(rates: dict[str, float], samples: int = 10_000):
    """Counts as Prometheus would give them: every arm `samples` trials at its rate."""

    def counts(due: ExperimentDue) -> dict[str, ArmCount]:
        return {
            arm: ArmCount(successes=rate * samples, total=samples) for arm, rate in rates.items()
        }

    return counts


def reasons(decision: Decision) -> list[str]:
    return [str(e.reason) for e in decision.events]


def phase(sim: Simulator) -> str | None:
    return None if sim.status.experiment is None else str(sim.status.experiment.phase)


def counting_started(sim: Simulator) -> bool:
    return sim.status.experiment is not None and sim.status.experiment.ready_at is not None


def variant_cut(sim: Simulator) -> bool:
    experiment = sim.status.experiment
    return experiment is not None and any(a.state == "Cut" for a in experiment.variants)


def started(sim: Simulator) -> Simulator:
    sim.deployed()
    sim.run(counting_started)
    return sim


def test_variants_start_once_control_serves_and_take_traffic_only_when_ready():
    sim = Simulator(experiment_spec())
    first = sim.step().decision
    assert first.variants == (), "no variant before control serves in full"
    ticks = sim.run(lambda s: s.status.experiment is not None)
    begun = ticks[-1].decision
    assert "ExperimentStarted" in reasons(begun)
    assert [v.name for v in begun.variants] == ["a", "b"]
    assert all(v.weight == 0 for v in begun.variants), "no traffic to pods not ready"
    # replicas router: control's 4 pods take 60%, each variant 20%: one pod each.
    assert [v.plan.replicas for v in begun.variants] == [1, 1]
    assert begun.stable is not None
    assert begun.stable.replicas == 4, "control keeps its full size"
    assert sim.status.phase == "Experimenting"
    ready = sim.run(counting_started)
    serving = ready[-1].decision
    assert "ExperimentReady" in reasons(serving)
    assert [v.weight for v in serving.variants] == [20, 20]
    assert serving.live_tracks == (Track.STABLE, "v-a", "v-b")
    experiment = sim.status.experiment
    assert experiment is not None
    assert experiment.control.weight == 60
    # 4 control pods and 1 each: the replica ratio gives 67/17/17.
    assert [experiment.control.actual_weight] + [a.actual_weight for a in experiment.variants] == [
        67,
        17,
        17,
    ]
    ready_cond = {c.type: c for c in sim.status.conditions}
    assert ready_cond["Ready"].status == "False"
    assert ready_cond["Ready"].reason == "Experimenting"
    assert ready_cond["Reconciling"].status == "True"


def test_a_variant_that_truly_converts_better_wins_and_its_patch_is_offered():
    sim = started(Simulator(experiment_spec()))
    sim.arm_counts = counting({"control": 0.10, "a": 0.13, "b": 0.10})
    spec_before = sim.spec.model_dump()
    ticks = sim.run(lambda s: phase(s) == "Concluded")
    experiment = sim.status.experiment
    assert experiment is not None
    outcomes = {a.name: a.outcome for a in experiment.variants}
    assert outcomes == {"a": "Better", "b": "NoSignificantDifference"}
    assert experiment.winner == "a"
    a = experiment.variants[0]
    assert a.adjusted_p_value is not None
    assert a.adjusted_p_value < 0.05
    assert a.difference_low is not None
    assert a.difference_low > 0
    assert experiment.control.rate == pytest.approx(0.10)
    assert experiment.winner_patch is not None
    patch = json.loads(experiment.winner_patch)
    assert patch["spec"]["model"]["version"] == "2.0.0-a"
    assert patch["spec"]["strategy"] == {"type": "canary", "experiment": None}
    assert sim.spec.model_dump() == spec_before, "the experiment never changes the spec"
    done = ticks[-1].decision
    assert "ExperimentConcluded" in reasons(done)
    assert done.variants == (), "control serves all traffic once it is over"
    assert done.live_tracks == (Track.STABLE,)
    assert sim.status.phase == "Available"
    assert done.notifications, "the verdict is announced"
    # Nothing runs again for the same block and control.
    later = sim.run(lambda s: len(s.ticks) > len(ticks) + 20)
    assert all(t.decision.variants == () for t in later)


def test_equal_rates_end_with_no_significant_difference_and_no_winner():
    sim = started(Simulator(experiment_spec()))
    sim.arm_counts = counting({"control": 0.10, "a": 0.10, "b": 0.101})
    sim.run(lambda s: phase(s) == "Concluded")
    experiment = sim.status.experiment
    assert experiment is not None
    assert {a.outcome for a in experiment.variants} == {"NoSignificantDifference"}
    assert experiment.winner is None
    assert experiment.winner_patch is None


def test_no_verdict_before_duration_and_minimum_samples_then_insufficient_at_max_duration():
    sim = started(Simulator(experiment_spec(maxDuration="30m")))
    experiment = sim.status.experiment
    assert experiment is not None
    assert experiment.ready_at is not None
    ready_at = experiment.ready_at
    asked: list[ExperimentDue] = []

    def few(due: ExperimentDue) -> dict[str, ArmCount]:
        asked.append(due)
        return {arm: ArmCount(successes=50, total=500) for arm in ("control", "a", "b")}

    sim.arm_counts = few
    ticks = sim.run(lambda s: phase(s) == "Concluded")
    assert asked, "the counts were read"
    assert min(d.window_seconds for d in asked) >= 600, "not before duration"
    assert (sim.now - ready_at).total_seconds() >= 1800, "held until maxDuration"
    waiting = [t for t in ticks if "waiting for samples" in t.decision.status.message]
    assert waiting, "the status says why there is no verdict yet"
    experiment = sim.status.experiment
    assert experiment is not None
    assert {a.outcome for a in experiment.variants} == {"InsufficientData"}


def test_a_variant_that_fails_its_slo_checks_is_cut_early_and_the_rest_goes_on():
    sim = started(Simulator(experiment_spec()))
    sim.guardrails["b"] = deque([Verdict.FAIL] * 3)
    ticks = sim.run(variant_cut)
    cut = ticks[-1].decision
    assert "VariantCut" in reasons(cut)
    assert [v.name for v in cut.variants] == ["a"], "its pods and traffic go"
    experiment = sim.status.experiment
    assert experiment is not None
    b = experiment.variants[1]
    assert b.failed_checks == 3
    assert "3 failed SLO analyses" in b.reason
    assert experiment.control.weight == 80, "its share returns to control"
    assert experiment.phase == "Running"
    sim.arm_counts = counting({"control": 0.10, "a": 0.10})
    sim.run(lambda s: phase(s) == "Concluded")
    assert sim.status.experiment is not None
    assert [a.outcome for a in sim.status.experiment.variants] == [
        "NoSignificantDifference",
        None,
    ]


def test_when_every_variant_is_cut_the_experiment_stops_with_control_serving():
    sim = started(Simulator(experiment_spec(("a", 30))))
    sim.guardrails["a"] = deque([Verdict.FAIL] * 3)
    ticks = sim.run(lambda s: phase(s) == "Stopped")
    assert sim.status.experiment is not None
    assert "every variant was cut" in sim.status.experiment.message
    assert ticks[-1].decision.variants == ()
    assert sim.status.phase == "Available"


def test_a_variant_whose_pods_never_get_ready_is_cut_at_the_progress_deadline():
    sim = Simulator(experiment_spec(), broken_variants={"b"})
    sim.deployed()
    sim.run(counting_started)
    experiment = sim.status.experiment
    assert experiment is not None
    assert experiment.variants[1].state == "Cut"
    assert "not ready within 60s" in experiment.variants[1].reason
    assert experiment.variants[0].state == "Running"


def test_a_new_model_stops_the_experiment_and_rolls_out_as_a_canary():
    sim = started(Simulator(experiment_spec()))
    new_model = make_spec("3.0.0").model
    sim.set_spec(sim.spec.model_copy(update={"model": new_model}))
    tick = sim.step()
    assert "ExperimentStopped" in reasons(tick.decision)
    assert "CanaryStarted" in reasons(tick.decision)
    assert tick.decision.variants == ()
    assert phase(sim) == "Stopped"


def test_abort_stops_a_running_experiment_and_retry_runs_it_again():
    sim = started(Simulator(experiment_spec()))
    sim.annotate(ABORT_ANNOTATION, "1")
    stopped = sim.step().decision
    assert "ExperimentStopped" in reasons(stopped)
    assert stopped.variants == ()
    assert phase(sim) == "Stopped"
    quiet = sim.run(lambda s: len(s.ticks) > 30)
    assert all(t.decision.variants == () for t in quiet[-10:]), "not restarted by itself"
    sim.annotate(RETRY_ANNOTATION, "1")
    retried = sim.step().decision
    assert "ExperimentStarted" in reasons(retried)
    assert sim.status.experiment is not None
    assert sim.status.experiment.attempt == 2
    assert phase(sim) == "Running"


def test_a_changed_experiment_block_starts_a_new_experiment():
    sim = started(Simulator(experiment_spec()))
    first = sim.status.experiment
    assert first is not None
    sim.set_spec(experiment_spec(("a", 10), ("c", 30)))
    tick = sim.step()
    assert "ExperimentStarted" in reasons(tick.decision)
    second = sim.status.experiment
    assert second is not None
    assert second.id != first.id
    assert [v.name for v in tick.decision.variants] == ["a", "c"]


def test_the_experiment_survives_lost_writes_and_replays_without_judging_twice():
    sim = started(Simulator(experiment_spec()))
    sim.arm_counts = counting({"control": 0.10, "a": 0.13, "b": 0.10})
    for _ in range(200):
        sim.step(persist=False)
        sim.replay()
        if phase(sim) == "Concluded":
            break
        sim.step()
    assert phase(sim) == "Concluded"
    concluded = [t for t in sim.ticks if "ExperimentConcluded" in reasons(t.decision)]
    assert len(concluded) == 1


def test_experiment_due_reads_nothing_while_paused_or_before_the_arms_are_ready():
    sim = Simulator(experiment_spec())
    sim.deployed()
    sim.run(lambda s: s.status.experiment is not None)
    assert experiment_due(sim.observation()) is None, "nothing to read before ready"
    started(sim)
    sim.status.paused_by_request = True
    sim.now = sim.now.replace(year=sim.now.year + 1)
    assert experiment_due(sim.observation()) is None


def test_the_gateway_router_pins_arms_by_header_and_splits_the_rest_by_weight():
    sim = started(Simulator(experiment_spec(router="gatewayAPI")))
    decision = sim.step().decision
    spec = sim.spec
    weights = {"control": 60, **{v.name: v.weight for v in decision.variants}}
    http, grpc = resources.experiment_routes("shop", "ns", spec, weights)
    rules = http["spec"]["rules"]
    pins = {r["matches"][0]["headers"][0]["value"]: r["backendRefs"][0]["name"] for r in rules[:-1]}
    assert pins == {"control": "shop-stable", "a": "shop-v-a", "b": "shop-v-b"}
    split = {b["name"]: b["weight"] for b in rules[-1]["backendRefs"]}
    assert split == {"shop-stable": 60, "shop-v-a": 20, "shop-v-b": 20}
    assert grpc["kind"] == "GRPCRoute"
    assert grpc["spec"]["rules"][0]["matches"][0]["headers"][0]["name"] == "x-model-variant"
    # gatewayAPI: variants get pods for their share of control's 4 (ceil(4 * 20%) = 1).
    assert [v.plan.replicas for v in decision.variants] == [1, 1]


def test_only_experiment_specs_give_the_stable_pods_an_arm_name():
    plain = make_spec(V1)
    template = resources.template_of(plain, IMAGE)
    revision = resources.revision_of(template)
    stable = resources.deployment("shop", "ns", "uid", "stable", revision, template, 2)
    env = stable["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "MODELSERVER_VARIANT" not in {e["name"] for e in env}
    experiment = experiment_spec()
    assert resources.revision_of(resources.template_of(experiment, IMAGE)) == revision, (
        "turning an experiment on does not change the stable's revision"
    )
    arm = resources.deployment("shop", "ns", "uid", "v-a", revision, template, 1, variant="a")
    arm_env = {
        e["name"]: e.get("value") for e in arm["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert arm_env["MODELSERVER_VARIANT"] == "a"
    assert arm_env["MODELSERVER_TRACK"] == "v-a"
    assert arm["metadata"]["name"] == "shop-v-a"
