"""The interface every traffic router implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from modeldeploy.api import ModelDeploymentSpec


@dataclass(frozen=True)
class TrackReplicas:
    stable: int
    canary: int


class Router(Protocol):
    # Whether the split itself goes through the per-track Services, so both must exist
    # before any canary does.
    routes_through_track_services: bool

    def replicas(self, total: int, weight: int) -> TrackReplicas:
        """Pods per track when the canary should take `weight` percent of `total` pods' load."""

    def achieved_weight(self, weight: int, stable_ready: int, canary_ready: int) -> int:
        """The canary's share of traffic that the current pods actually give."""

    def routes(
        self,
        name: str,
        namespace: str,
        spec: ModelDeploymentSpec,
        weight: int,
        live_tracks: Sequence[str] = ("stable", "canary"),
    ) -> list[dict[str, Any]]:
        """Extra objects that carry the split (empty when pods alone do)."""

    def arm_replicas(self, control: int, weight: int, control_weight: int) -> int:
        """Pods of an experiment variant that should take `weight` percent of the traffic
        while control's `control` pods take `control_weight` percent."""

    def achieved_weights(
        self, weights: Mapping[str, int], ready: Mapping[str, int]
    ) -> dict[str, int]:
        """Each experiment arm's share of traffic that the ready pods actually give, from
        the wanted `weights` and `ready` pods, both by arm name."""

    def experiment_routes(
        self, name: str, namespace: str, spec: ModelDeploymentSpec, weights: Mapping[str, int]
    ) -> list[dict[str, Any]]:
        """Extra objects that carry an experiment's split by arm (empty when pods alone do)."""
