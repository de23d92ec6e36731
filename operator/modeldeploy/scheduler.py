"""One loop per ModelDeployment: reconcile, then sleep until woken or due.

Watch events (the object or one of its Deployments changed) wake the loop; otherwise it
sleeps for as long as the decision core asked (next analysis, deadline), and at most the
resync period. Objects are reconciled one at a time each, concurrently across objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from modeldeploy import metrics
from modeldeploy.kube import KubeError, resource_version
from modeldeploy.slots import PrioritySlots

log = logging.getLogger("modeldeploy.scheduler")

Key = tuple[str, str]
Reconcile = Callable[[dict[str, Any]], Awaitable[tuple[float | None, dict[str, Any] | None]]]

MAX_BACKOFF_SECONDS = 60.0
# However soon the decision core asks to look again, the loop waits at least this long
# unless a watch event wakes it: no spec can make the operator query and write in a loop.
MIN_REQUEUE_SECONDS = 1.0
# Reconciles running at once: enough to keep the API server busy, few enough that a burst
# of new objects queues here instead of timing out in the HTTP connection pool.
CONCURRENT_RECONCILES = 16
# Objects with no stable track yet go first: a user waits for their first pods, while a
# re-reconcile only records progress that is already happening.
NEW_OBJECT, KNOWN_OBJECT = 0, 1


def priority_of(body: dict[str, Any]) -> int:
    return KNOWN_OBJECT if (body.get("status") or {}).get("stable") else NEW_OBJECT


class Scheduler:
    def __init__(self, reconcile: Reconcile, resync_seconds: float) -> None:
        self._reconcile = reconcile
        self._resync = resync_seconds
        self._bodies: dict[Key, dict[str, Any]] = {}
        self._wake: dict[Key, asyncio.Event] = {}
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._phases: dict[Key, str] = {}
        self._slots = PrioritySlots(CONCURRENT_RECONCILES)
        self._timers: dict[Key, asyncio.TimerHandle] = {}

    def observe(self, body: dict[str, Any]) -> None:
        """The latest state of a ModelDeployment from the watch; older states are ignored."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        known = self._bodies.get(key)
        if known is not None and resource_version(body) <= resource_version(known):
            return  # older, or the echo of our own status write: nothing new to act on
        self._bodies[key] = body
        self._note_phase(key, body)
        self.wake(key)
        if key not in self._tasks:
            self._wake.setdefault(key, asyncio.Event()).set()
            self._tasks[key] = asyncio.create_task(self._loop(key), name=f"md:{key[0]}/{key[1]}")

    def wake(self, key: Key, after: float = 0.0) -> None:
        """Reconcile `key` now, or `after` seconds from now, folding any wakes asked for in
        between into that one."""
        event = self._wake.get(key)
        if event is None:
            return
        if after <= 0:
            event.set()
            return
        if key in self._timers:
            return
        self._timers[key] = asyncio.get_running_loop().call_later(after, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.wake(key)

    async def forget(self, key: Key) -> None:
        task = self._tasks.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._bodies.pop(key, None)
        self._wake.pop(key, None)
        self._phases.pop(key, None)
        self._export_phases()
        metrics.forget_object(*key)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        for key in list(self._tasks):
            await self.forget(key)

    def _export_phases(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for (namespace, _), phase in self._phases.items():
            counts[(namespace, phase)] = counts.get((namespace, phase), 0) + 1
        metrics.BY_PHASE.clear()
        for (namespace, phase), count in counts.items():
            metrics.BY_PHASE.labels(namespace, phase).set(count)

    async def _loop(self, key: Key) -> None:
        backoff = 1.0
        wake = self._wake[key]
        while key in self._bodies:
            try:
                async with self._slots.hold(priority_of(self._bodies[key])):
                    wake.clear()
                    body = self._bodies[key]
                    delay, updated = await self._reconcile(body)
                backoff = 1.0
                if updated is not None and key in self._bodies:
                    self.observe_own_write(key, updated)
            except KubeError as error:
                log.warning("reconcile of %s/%s will be retried: %s", *key, error)
                delay = backoff
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            except Exception:
                log.exception("reconcile of %s/%s failed; retrying", *key)
                delay = backoff
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            # Jitter keeps hundreds of objects from resyncing in lockstep.
            timeout = self._resync * random.uniform(0.9, 1.0) if delay is None else delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=max(timeout, MIN_REQUEUE_SECONDS))

    def observe_own_write(self, key: Key, body: dict[str, Any]) -> None:
        """Our own status write is the newest state: use it even before the watch sees it."""
        known = self._bodies.get(key)
        if known is None or resource_version(body) >= resource_version(known):
            self._bodies[key] = body
            self._note_phase(key, body)

    def _note_phase(self, key: Key, body: dict[str, Any]) -> None:
        phase = (body.get("status") or {}).get("phase") or "Pending"
        if self._phases.get(key) != phase:
            self._phases[key] = phase
            self._export_phases()
