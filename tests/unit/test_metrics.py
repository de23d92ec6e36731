"""The operator's per-object series leave /metrics with their ModelDeployment."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from prometheus_client import REGISTRY, generate_latest

from modeldeploy import metrics
from modeldeploy.api import Verdict
from modeldeploy.health import Health
from modeldeploy.scheduler import Scheduler
from tests.unit.rollout_sim import Simulator
from tests.unit.test_experiment import counting, experiment_spec, started


def scraped_lines_naming(name: str) -> list[str]:
    return [line for line in generate_latest(REGISTRY).decode().splitlines() if name in line]


def test_deleting_a_model_deployment_drops_its_series_and_keeps_the_others() -> None:
    for name in ("gone-md", "kept-md"):
        metrics.CANARY_WEIGHT.labels("ns", name).set(20)
        metrics.CHECK_VALUE.labels("ns", name, "latency-p99").set(0.03)
        metrics.ROLLBACKS.labels("ns", name, "AnalysisFailed").inc()

    async def reconcile(_: dict[str, Any]) -> tuple[float | None, dict[str, Any] | None]:
        return None, None

    async def scenario() -> None:
        scheduler = Scheduler(reconcile, resync_seconds=300)
        body = {"metadata": {"namespace": "ns", "name": "gone-md", "resourceVersion": "1"}}
        scheduler.observe(body)
        await asyncio.sleep(0.01)
        await scheduler.forget(("ns", "gone-md"))
        await scheduler.stop()

    asyncio.run(scenario())
    assert scraped_lines_naming('name="gone-md"') == []
    kept = scraped_lines_naming('name="kept-md"')
    assert any(line.startswith("modeldeploy_canary_weight") for line in kept)
    assert any(line.startswith("modeldeploy_analysis_check_value") for line in kept)
    assert any(line.startswith("modeldeploy_rollbacks_total") for line in kept)


def test_the_leader_gauge_follows_whether_this_replica_leads() -> None:
    health = Health()
    assert REGISTRY.get_sample_value("modeldeploy_leader") == 0
    health.leading = True
    assert REGISTRY.get_sample_value("modeldeploy_leader") == 1
    health.leading = False
    assert REGISTRY.get_sample_value("modeldeploy_leader") == 0


def test_a_canarys_series_go_when_it_ends() -> None:
    metrics.CANARY_STARTED.labels("ns", "md").set(1.0)
    metrics.CANARY_READY.labels("ns", "md").set(1)
    metrics.forget_canary("ns", "md")
    assert scraped_lines_naming('name="md"') == []


def test_an_experiments_arm_weights_show_while_it_runs_and_each_verdict_counts_once() -> None:
    sim = started(Simulator(experiment_spec()))
    sim.arm_counts = counting({"control": 0.10, "a": 0.13, "b": 0.10})
    sim.guardrails["b"] = deque([Verdict.FAIL] * 3)
    previous = sim.status.experiment
    seen_running = False
    for _ in range(100):
        tick = sim.step()
        after = tick.decision.status.experiment
        metrics.export_experiment("ns", "shop", previous, after)
        previous = after
        if after is not None and after.phase == "Running":
            weights = scraped_lines_naming('modeldeploy_experiment_arm_weight{arm="control"')
            seen_running = seen_running or bool(weights)
        if after is not None and after.phase == "Concluded":
            break
    for _ in range(3):  # later reconciles see the same verdict: nothing counts twice
        metrics.export_experiment("ns", "shop", previous, previous)

    def outcome(name: str) -> float | None:
        labels = {"namespace": "ns", "name": "shop", "outcome": name}
        return REGISTRY.get_sample_value("modeldeploy_experiment_outcomes_total", labels)

    assert seen_running
    assert scraped_lines_naming("modeldeploy_experiment_arm_weight{") == []
    assert outcome("Better") == 1
    assert outcome("Cut") == 1
    metrics.forget_object("ns", "shop")
    assert outcome("Better") is None
