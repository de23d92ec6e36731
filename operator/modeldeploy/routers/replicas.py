"""Mesh-free canary: stable and canary pods sit behind one Service, so the canary's share
of ready pods is its share of traffic.

Stable keeps its full replica count during a canary (no capacity is lost if the canary
misbehaves); the canary gets as many pods as make its share closest to the weight.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeploymentSpec
from modeldeploy.routers.base import TrackReplicas


class ReplicasRouter:
    def replicas(self, total: int, weight: int) -> TrackReplicas:
        if weight <= 0 or total <= 0:
            return TrackReplicas(stable=total, canary=0 if weight <= 0 else 1)
        if weight >= 100:
            return TrackReplicas(stable=0, canary=total)
        canary = max(1, round(total * weight / (100 - weight)))
        return TrackReplicas(stable=total, canary=canary)

    def achieved_weight(self, weight: int, stable_ready: int, canary_ready: int) -> int:
        serving = stable_ready + canary_ready
        return round(100 * canary_ready / serving) if serving else 0

    def routes(
        self, name: str, namespace: str, spec: ModelDeploymentSpec, weight: int
    ) -> list[dict[str, Any]]:
        return []
