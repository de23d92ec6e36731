"""Leader election on a coordination.k8s.io Lease: only the holder reconciles.

The timings are client-go's. A renewal writes renewTime and holds the Lease for
`duration` seconds from it; standbys take an expired Lease only. The leader renews every
`retry_period` on a connection of its own, each attempt cut off at the renew deadline
(`renew_deadline` after the renewTime of the last renewal that succeeded). If the deadline
passes without a renewal, or another replica holds the Lease, the leader gives up at once,
`duration - renew_deadline` seconds before a standby may take over: that margin is for
stopping what was in flight and for clocks that drift apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from modeldeploy.kube import Kube, KubeError

log = logging.getLogger("modeldeploy.leader")


@dataclass(frozen=True)
class LeaseTimings:
    duration: int = 15
    """Seconds a renewal holds the Lease (the Lease's leaseDurationSeconds)."""
    renew_deadline: float = 10.0
    """Seconds after the last renewal by which the leader must have renewed, or stop."""
    retry_period: float = 2.0
    """Seconds between renewals, and between attempts to acquire."""

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, "
                f"got retry period {self.retry_period} s, renew deadline "
                f"{self.renew_deadline} s, lease duration {self.duration} s: the leader must "
                "give up before a standby may take its Lease; the defaults are 2, 10 and 15"
            )


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def may_take(lease: dict[str, Any] | None, identity: str, now: datetime) -> bool:
    """Whether `identity` may write itself in as holder: free, its own, or expired."""
    if lease is None:
        return True
    spec = lease.get("spec", {})
    holder = spec.get("holderIdentity")
    if not holder or holder == identity:
        return True
    renewed = _parse_time(spec.get("renewTime")) or _parse_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds", LeaseTimings.duration)
    return renewed is None or renewed + timedelta(seconds=duration) < now


def claimed(
    lease: dict[str, Any] | None,
    namespace: str,
    name: str,
    identity: str,
    now: datetime,
    duration: int = LeaseTimings.duration,
) -> dict[str, Any]:
    """The Lease with `identity` as holder, renewed now for `duration` seconds."""
    spec = dict((lease or {}).get("spec", {}))
    if spec.get("holderIdentity") != identity:
        spec["acquireTime"] = _micro_time(now)
        spec["leaseTransitions"] = int(spec.get("leaseTransitions", 0)) + (1 if lease else 0)
    spec.update(holderIdentity=identity, leaseDurationSeconds=duration, renewTime=_micro_time(now))
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if lease is not None:
        metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    }


class LeaderLease:
    """`kube` should be used for nothing else: a renewal must never wait for a connection
    that reconciles hold."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings or LeaseTimings()
        # Event-loop time of the last renewal that succeeded, taken when its renewTime was:
        # standbys count the Lease's expiry from renewTime, not from when the reply came.
        self._renewed_at: float | None = None

    async def _try(self) -> bool:
        lease = await self.kube.get("coordination.k8s.io/v1", "Lease", self.namespace, self.name)
        now = datetime.now(UTC)
        started = asyncio.get_running_loop().time()
        if not may_take(lease, self.identity, now):
            return False
        manifest = claimed(
            lease, self.namespace, self.name, self.identity, now, self.timings.duration
        )
        try:
            if lease is None:
                await self.kube.create(manifest)
            else:
                await self.kube.replace(manifest)
        except KubeError as error:
            if error.status == 409:
                return False  # someone else wrote the Lease first
            raise
        self._renewed_at = started
        return True

    async def acquire(self) -> None:
        waiting_logged = False
        while True:
            try:
                # Bounded like a renewal, so a slow reply never starts a term half spent.
                async with asyncio.timeout(self.timings.renew_deadline):
                    if await self._try():
                        log.info("became leader (Lease %s/%s)", self.namespace, self.name)
                        return
            except (KubeError, TimeoutError) as error:
                log.warning("could not read the leader Lease: %r", error)
            if not waiting_logged:
                log.info(
                    "standing by: another replica holds Lease %s/%s", self.namespace, self.name
                )
                waiting_logged = True
            await asyncio.sleep(self.timings.retry_period)

    async def keep(self, on_lost: Callable[[], Awaitable[None]]) -> None:
        """Renew until leadership is lost, then await `on_lost` before anything else runs."""
        if self._renewed_at is None:
            raise RuntimeError("keep() needs the Lease: call acquire() first")
        loop = asyncio.get_running_loop()
        while True:
            deadline = self._renewed_at + self.timings.renew_deadline
            await asyncio.sleep(min(self.timings.retry_period, max(deadline - loop.time(), 0.0)))
            try:
                if loop.time() >= deadline:
                    raise TimeoutError
                async with asyncio.timeout_at(deadline):
                    held = await self._try()
            except TimeoutError:
                log.error(
                    "lost leadership: the Lease was not renewed within %s s",
                    self.timings.renew_deadline,
                )
                break
            except KubeError as error:
                log.warning("could not renew the leader Lease: %s", error)
                continue
            if not held:
                log.error("lost leadership: another replica holds the Lease")
                break
        await on_lost()

    async def release(self) -> None:
        """Hand the Lease over at a clean exit, so a standby need not wait for it to expire."""
        async with asyncio.timeout(self.timings.renew_deadline):
            lease = await self.kube.get(
                "coordination.k8s.io/v1", "Lease", self.namespace, self.name
            )
            if lease is None or lease.get("spec", {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = None
            await self.kube.replace(lease)
