"""Reconcile slots: a freed slot goes to the most urgent waiter, and none is ever lost."""

from __future__ import annotations

import asyncio

import pytest

from modeldeploy.slots import PrioritySlots

URGENT, ROUTINE = 0, 1


async def run_in_order(slots: PrioritySlots, arrivals: list[tuple[str, int]]) -> list[str]:
    """Hold the only slot, queue `arrivals`, release: the order in which they ran."""
    ran: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with slots.hold(ROUTINE):
            await release.wait()

    async def worker(name: str, priority: int) -> None:
        async with slots.hold(priority):
            ran.append(name)
            await asyncio.sleep(0)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    workers = []
    for name, priority in arrivals:
        workers.append(asyncio.create_task(worker(name, priority)))
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *workers)
    return ran


def test_urgent_work_overtakes_queued_routine_work_and_each_kind_keeps_its_order() -> None:
    arrivals = [("r1", ROUTINE), ("r2", ROUTINE), ("u1", URGENT), ("r3", ROUTINE), ("u2", URGENT)]
    ran = asyncio.run(run_in_order(PrioritySlots(1), arrivals))
    assert ran == ["u1", "u2", "r1", "r2", "r3"]


def test_no_more_than_size_hold_a_slot_at_once() -> None:
    async def scenario() -> int:
        slots = PrioritySlots(3)
        busy = peak = 0

        async def work(priority: int) -> None:
            nonlocal busy, peak
            async with slots.hold(priority):
                busy += 1
                peak = max(peak, busy)
                await asyncio.sleep(0.001)
                busy -= 1

        await asyncio.gather(*(work(i % 2) for i in range(40)))
        return peak

    assert asyncio.run(scenario()) == 3


def test_a_waiter_cancelled_while_queued_or_just_handed_the_slot_loses_no_slot() -> None:
    async def scenario() -> list[str]:
        slots = PrioritySlots(1)
        ran: list[str] = []
        release = asyncio.Event()

        tasks: dict[str, asyncio.Task[None]] = {}

        async def holder() -> None:
            async with slots.hold(ROUTINE):
                await release.wait()
            # Leaving handed the slot to the next waiter, which has not resumed yet.
            tasks["handed"].cancel()

        async def worker(name: str) -> None:
            async with slots.hold(ROUTINE):
                ran.append(name)

        first = asyncio.create_task(holder())
        await asyncio.sleep(0)
        queued = asyncio.create_task(worker("cancelled while queued"))
        handed = tasks["handed"] = asyncio.create_task(worker("cancelled once handed the slot"))
        last = asyncio.create_task(worker("last"))
        await asyncio.sleep(0)
        queued.cancel()
        release.set()
        await first
        await asyncio.wait_for(last, timeout=1)
        for task in (queued, handed):
            with pytest.raises(asyncio.CancelledError):
                await task
        return ran

    assert asyncio.run(scenario()) == ["last"]
