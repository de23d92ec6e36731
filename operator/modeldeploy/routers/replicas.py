"""Mesh-free canary: stable and canary pods sit behind one Service, so the canary's share
of ready pods is its share of traffic.

Stable keeps its full replica count during a canary (no capacity is lost if the canary
misbehaves); the canary gets as many pods as make its share closest to the weight, ties
going to fewer canary pods. A deployment scaled to zero gets no canary pods: one pod would
take all of its traffic, whatever the step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from modeldeploy.api import ModelDeploymentSpec
from modeldeploy.routers.base import TrackReplicas


def _share_error(total: int, canary: int, weight: int) -> Fraction:
    return abs(Fraction(canary, total + canary) - Fraction(weight, 100))


class ReplicasRouter:
    routes_through_track_services = False

    def replicas(self, total: int, weight: int) -> TrackReplicas:
        if weight <= 0 or total <= 0:
            return TrackReplicas(stable=max(total, 0), canary=0)
        if weight >= 100:
            return TrackReplicas(stable=0, canary=total)
        # canary / (total + canary) == weight / 100 at canary == ideal; the share grows with
        # the canary's pods, so the closest share is at the floor or the ceiling of it.
        ideal = Fraction(total * weight, 100 - weight)
        candidates = {max(1, math.floor(ideal)), max(1, math.ceil(ideal))}
        canary = min(sorted(candidates), key=lambda c: _share_error(total, c, weight))
        return TrackReplicas(stable=total, canary=canary)

    def achieved_weight(self, weight: int, stable_ready: int, canary_ready: int) -> int:
        serving = stable_ready + canary_ready
        return round(100 * canary_ready / serving) if serving else 0

    def routes(
        self,
        name: str,
        namespace: str,
        spec: ModelDeploymentSpec,
        weight: int,
        live_tracks: Sequence[str] = ("stable", "canary"),
    ) -> list[dict[str, Any]]:
        return []

    def arm_replicas(self, control: int, weight: int, control_weight: int) -> int:
        # Pods in the ratio of the weights; at least one, so the arm is measured at all.
        if control <= 0 or control_weight <= 0:
            return 0
        return max(1, round(control * weight / control_weight))

    def achieved_weights(
        self, weights: Mapping[str, int], ready: Mapping[str, int]
    ) -> dict[str, int]:
        serving = sum(ready.get(arm, 0) for arm in weights)
        return {arm: round(100 * ready.get(arm, 0) / serving) if serving else 0 for arm in weights}

    def experiment_routes(
        self, name: str, namespace: str, spec: ModelDeploymentSpec, weights: Mapping[str, int]
    ) -> list[dict[str, Any]]:
        return []
