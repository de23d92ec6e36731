"""A fixed number of slots handed out by priority, first come first served within one."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PrioritySlots:
    """Like asyncio.Semaphore, but a freed slot goes to the waiter with the lowest priority
    number, so urgent work (a brand-new object) overtakes a queue of routine work."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._order = itertools.count()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []

    @asynccontextmanager
    async def hold(self, priority: int) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        # A free slot means nobody waits: a released slot goes to a waiter when there is one.
        if self._free > 0:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            # Cancelled after the slot was handed over: pass it on instead of losing it.
            if future.done() and not future.cancelled():
                self._release()
            else:
                future.cancel()
            raise

    def _release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1
