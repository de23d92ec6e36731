"""The per-object reconcile loops: what wakes them, and how often they run."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from modeldeploy.scheduler import Scheduler

KEY = ("ml", "fraud")


def body(resource_version: int) -> dict[str, Any]:
    return {
        "metadata": {"namespace": KEY[0], "name": KEY[1], "resourceVersion": str(resource_version)}
    }


def recording_scheduler() -> tuple[Scheduler, list[float]]:
    """A scheduler whose reconciles only record when they ran."""
    runs: list[float] = []

    async def reconcile(_: dict[str, Any]) -> tuple[float | None, dict[str, Any] | None]:
        runs.append(time.monotonic())
        return None, None

    return Scheduler(reconcile, resync_seconds=300), runs


def test_a_burst_of_child_changes_is_folded_into_one_reconcile_after_it_settles() -> None:
    async def scenario() -> tuple[int, list[float]]:
        scheduler, runs = recording_scheduler()
        scheduler.observe(body(1))
        await asyncio.sleep(0.05)
        first = len(runs)
        burst_at = time.monotonic()
        for _ in range(5):
            scheduler.wake(KEY, after=0.2)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        await scheduler.stop()
        return first, [at - burst_at for at in runs[first:]]

    first, later = asyncio.run(scenario())
    assert first == 1
    assert len(later) == 1, "five changes, one reconcile"
    assert 0.2 <= later[0] < 0.45


def test_a_change_to_the_object_itself_is_reconciled_at_once() -> None:
    async def scenario() -> list[float]:
        scheduler, runs = recording_scheduler()
        scheduler.observe(body(1))
        await asyncio.sleep(0.05)
        changed_at = time.monotonic()
        scheduler.observe(body(2))
        await asyncio.sleep(0.1)
        await scheduler.stop()
        return [at - changed_at for at in runs[1:]]

    (delay,) = asyncio.run(scenario())
    assert delay < 0.05


def test_a_decision_asking_to_look_again_at_once_is_not_a_hot_loop() -> None:
    """A spec such as `interval: 0s` stored by an older release must not make the
    operator query Prometheus and write status many times a second."""

    async def scenario() -> int:
        runs = 0

        async def reconcile(_: dict[str, Any]) -> tuple[float | None, dict[str, Any] | None]:
            nonlocal runs
            runs += 1
            return 0.0, None

        scheduler = Scheduler(reconcile, resync_seconds=300)
        scheduler.observe(body(1))
        await asyncio.sleep(2.5)
        await scheduler.stop()
        return runs

    assert asyncio.run(scenario()) <= 4, "at most one reconcile a second, plus the first"
