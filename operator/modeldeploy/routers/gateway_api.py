"""Gateway API canary: an HTTPRoute (REST) and a GRPCRoute (gRPC) split traffic between
the per-track Services by weight, so the split is exact whatever the pod counts; the
canary gets pods in proportion to its share so it can carry it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from modeldeploy.api import ModelDeploymentSpec
from modeldeploy.resources import experiment_routes, grpc_route, http_route
from modeldeploy.routers.base import TrackReplicas


class GatewayAPIRouter:
    routes_through_track_services = True

    def replicas(self, total: int, weight: int) -> TrackReplicas:
        if weight <= 0 or total <= 0:
            # Scaled to zero: no pods for either track, the route still carries the split.
            return TrackReplicas(stable=max(total, 0), canary=0)
        return TrackReplicas(stable=total, canary=max(1, math.ceil(total * weight / 100)))

    def achieved_weight(self, weight: int, stable_ready: int, canary_ready: int) -> int:
        return weight if canary_ready else 0

    def routes(
        self,
        name: str,
        namespace: str,
        spec: ModelDeploymentSpec,
        weight: int,
        live_tracks: Sequence[str] = ("stable", "canary"),
    ) -> list[dict[str, Any]]:
        return [
            http_route(name, namespace, spec, weight, live_tracks),
            grpc_route(name, namespace, spec, weight, live_tracks),
        ]

    def arm_replicas(self, control: int, weight: int, control_weight: int) -> int:
        # The route splits exactly; the pods only need to carry their share.
        return max(1, math.ceil(control * weight / 100)) if control > 0 else 0

    def achieved_weights(
        self, weights: Mapping[str, int], ready: Mapping[str, int]
    ) -> dict[str, int]:
        return {arm: weight if ready.get(arm, 0) else 0 for arm, weight in weights.items()}

    def experiment_routes(
        self, name: str, namespace: str, spec: ModelDeploymentSpec, weights: Mapping[str, int]
    ) -> list[dict[str, Any]]:
        return experiment_routes(name, namespace, spec, weights)
