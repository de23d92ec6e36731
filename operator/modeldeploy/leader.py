"""Leader election on a coordination.k8s.io Lease: only the holder reconciles.

Standby replicas wait for the Lease to expire; the leader renews it and stops the operator
the moment a renewal fails, so two replicas never act at once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from modeldeploy.kube import Kube, KubeError

log = logging.getLogger("modeldeploy.leader")

LEASE_SECONDS = 15
RENEW_EVERY_SECONDS = 5.0
RETRY_SECONDS = 2.0


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
    duration = spec.get("leaseDurationSeconds", LEASE_SECONDS)
    return renewed is None or renewed + timedelta(seconds=duration) < now


def claimed(
    lease: dict[str, Any] | None, namespace: str, name: str, identity: str, now: datetime
) -> dict[str, Any]:
    """The Lease with `identity` as holder, renewed now."""
    spec = dict((lease or {}).get("spec", {}))
    if spec.get("holderIdentity") != identity:
        spec["acquireTime"] = _micro_time(now)
        spec["leaseTransitions"] = int(spec.get("leaseTransitions", 0)) + (1 if lease else 0)
    spec.update(
        holderIdentity=identity, leaseDurationSeconds=LEASE_SECONDS, renewTime=_micro_time(now)
    )
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
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity

    async def _try(self) -> bool:
        lease = await self.kube.get("coordination.k8s.io/v1", "Lease", self.namespace, self.name)
        now = datetime.now(UTC)
        if not may_take(lease, self.identity, now):
            return False
        manifest = claimed(lease, self.namespace, self.name, self.identity, now)
        try:
            if lease is None:
                await self.kube.create(manifest)
            else:
                await self.kube.replace(manifest)
        except KubeError as error:
            if error.status == 409:
                return False  # someone else wrote the Lease first
            raise
        return True

    async def acquire(self) -> None:
        waiting_logged = False
        while True:
            try:
                if await self._try():
                    log.info("became leader (Lease %s/%s)", self.namespace, self.name)
                    return
            except KubeError as error:
                log.warning("could not read the leader Lease: %s", error)
            if not waiting_logged:
                log.info(
                    "standing by: another replica holds Lease %s/%s", self.namespace, self.name
                )
                waiting_logged = True
            await asyncio.sleep(RETRY_SECONDS)

    async def keep(self) -> None:
        """Renew until a renewal fails for longer than the Lease lasts; then return."""
        last_renewal = datetime.now(UTC)
        while True:
            await asyncio.sleep(RENEW_EVERY_SECONDS)
            try:
                if await self._try():
                    last_renewal = datetime.now(UTC)
                    continue
                log.error("lost leadership: another replica holds the Lease")
                return
            except KubeError as error:
                log.warning("could not renew the leader Lease: %s", error)
            if datetime.now(UTC) - last_renewal > timedelta(seconds=LEASE_SECONDS - 2):
                log.error("lost leadership: could not renew the Lease in time")
                return

    async def release(self) -> None:
        lease = await self.kube.get("coordination.k8s.io/v1", "Lease", self.namespace, self.name)
        if lease is None or lease.get("spec", {}).get("holderIdentity") != self.identity:
            return
        lease["spec"]["holderIdentity"] = None
        await self.kube.replace(lease)
