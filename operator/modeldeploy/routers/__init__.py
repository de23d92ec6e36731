"""Traffic routers: how a canary weight becomes pods and routes.

Each router answers two pure questions: how many pods each track needs for a weight,
and which extra objects (an HTTPRoute, say) carry the split. `router_for` picks one.
"""

from modeldeploy.api import TrafficRouter
from modeldeploy.routers.base import Router, TrackReplicas
from modeldeploy.routers.gateway_api import GatewayAPIRouter
from modeldeploy.routers.replicas import ReplicasRouter

__all__ = ["Router", "TrackReplicas", "router_for"]

_ROUTERS: dict[str, Router] = {
    TrafficRouter.REPLICAS: ReplicasRouter(),
    TrafficRouter.GATEWAY_API: GatewayAPIRouter(),
}


def router_for(kind: str) -> Router:
    return _ROUTERS[kind]
