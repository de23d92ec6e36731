"""The operator's per-object series leave /metrics with their ModelDeployment."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY, generate_latest

from modeldeploy import metrics
from modeldeploy.health import Health
from modeldeploy.scheduler import Scheduler


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
