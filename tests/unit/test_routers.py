"""Traffic routers: how a canary weight becomes pods per track and routes."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modeldeploy.api import ModelDeploymentSpec, TrafficRouter
from modeldeploy.routers import TrackReplicas, router_for
from modeldeploy.routers.gateway_api import GatewayAPIRouter
from modeldeploy.routers.replicas import ReplicasRouter

replicas_router = ReplicasRouter()
gateway_router = GatewayAPIRouter()

totals = st.integers(0, 200)
weights = st.integers(0, 100)
partial_weights = st.integers(1, 99)


def share_error(total: int, canary: int, weight: int) -> Fraction:
    return abs(Fraction(canary, total + canary) - Fraction(weight, 100))


def gateway_spec() -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "m", "version": "1", "uri": "pvc://store/m.ubj"},
            "traffic": {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
        }
    )


def test_router_for_each_kind():
    assert isinstance(router_for(TrafficRouter.REPLICAS), ReplicasRouter)
    assert isinstance(router_for("replicas"), ReplicasRouter)
    assert isinstance(router_for(TrafficRouter.GATEWAY_API), GatewayAPIRouter)
    assert isinstance(router_for("gatewayAPI"), GatewayAPIRouter)


# --- replicas -----------------------------------------------------------------------------


@given(total=totals)
def test_replicas_no_canary_pods_at_weight_zero(total):
    assert replicas_router.replicas(total, 0) == TrackReplicas(stable=total, canary=0)


@given(weight=weights)
def test_replicas_a_deployment_scaled_to_zero_gets_no_canary_pods(weight):
    assert replicas_router.replicas(0, weight) == TrackReplicas(stable=0, canary=0)


@given(total=st.integers(1, 200), weight=partial_weights)
def test_replicas_stable_keeps_its_capacity_and_the_canary_share_is_the_closest(total, weight):
    split = replicas_router.replicas(total, weight)

    assert split.stable == total
    assert split.canary >= 1
    # No other canary size gives a share nearer the weight; ties go to fewer pods.
    ideal = total * weight / (100 - weight)
    for other in range(1, math.ceil(ideal) + 2):
        if other < split.canary:
            assert share_error(total, other, weight) > share_error(total, split.canary, weight)
        else:
            assert share_error(total, other, weight) >= share_error(total, split.canary, weight)


@pytest.mark.parametrize(
    ("total", "weight", "canary"),
    [
        (4, 20, 1),  # 1 of 5 pods: 20%
        (10, 50, 10),  # 10 of 20: 50%
        (3, 60, 5),  # 5 of 8 = 62.5% beats 4 of 7 = 57.1%
        (3, 10, 1),  # never less than one pod: 25% is the least a canary can take
        (9, 10, 1),  # 1 of 10
        (1, 50, 1),
    ],
)
def test_replicas_examples(total, weight, canary):
    assert replicas_router.replicas(total, weight) == TrackReplicas(stable=total, canary=canary)


@given(total=st.integers(1, 200))
def test_replicas_a_full_step_moves_all_pods_to_the_canary(total):
    assert replicas_router.replicas(total, 100) == TrackReplicas(stable=0, canary=total)


@given(total=st.integers(1, 200), low=partial_weights, high=partial_weights)
def test_replicas_canary_pods_grow_with_the_weight(total, low, high):
    low, high = sorted((low, high))
    assert (
        replicas_router.replicas(total, low).canary <= replicas_router.replicas(total, high).canary
    )


@given(stable=st.integers(0, 100), canary=st.integers(0, 100), weight=weights)
def test_replicas_achieved_weight_is_the_canary_share_of_ready_pods(stable, canary, weight):
    achieved = replicas_router.achieved_weight(weight, stable, canary)

    if stable + canary == 0:
        assert achieved == 0
    else:
        assert abs(achieved - 100 * canary / (stable + canary)) <= 0.5
    assert 0 <= achieved <= 100


def test_replicas_achieved_weight_examples():
    assert replicas_router.achieved_weight(20, 4, 1) == 20
    assert replicas_router.achieved_weight(20, 4, 0) == 0
    assert replicas_router.achieved_weight(20, 0, 2) == 100


def test_replicas_router_needs_no_routes():
    assert replicas_router.routes("m", "ns", gateway_spec(), 30) == []


# --- Gateway API --------------------------------------------------------------------------


@given(total=totals, weight=weights)
def test_gateway_stable_keeps_its_capacity_and_the_canary_can_carry_its_share(total, weight):
    split = gateway_router.replicas(total, weight)

    assert split.stable == total
    if total == 0 or weight == 0:
        assert split.canary == 0
    else:
        assert split.canary >= 1
        assert split.canary >= total * weight / 100
        assert split.canary < total * weight / 100 + 1


def test_gateway_achieved_weight_is_the_route_weight_once_canary_pods_are_ready():
    assert gateway_router.achieved_weight(25, 4, 1) == 25
    assert gateway_router.achieved_weight(25, 4, 0) == 0
    assert gateway_router.achieved_weight(25, 0, 3) == 25


@given(weight=weights)
def test_gateway_routes_send_nothing_to_a_track_that_may_not_serve(weight):
    def backends(live_tracks: tuple[str, ...]) -> dict[str, int]:
        routes = gateway_router.routes("m", "ns", gateway_spec(), weight, live_tracks)
        (split,) = {
            tuple((b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"])
            for route in routes
        }  # every route carries the same split
        return dict(split)

    assert backends(()) == {"m-stable": 0, "m-canary": 0}
    assert backends(("stable",))["m-canary"] == 0
    assert backends(("canary",))["m-stable"] == 0


@given(weight=weights)
def test_gateway_routes_are_an_httproute_and_a_grpcroute_carrying_the_weight(weight):
    routes = gateway_router.routes("m", "ns", gateway_spec(), weight)

    assert [route["kind"] for route in routes] == ["HTTPRoute", "GRPCRoute"]
    for route in routes:
        (rule,) = route["spec"]["rules"]
        assert {b["name"]: b["weight"] for b in rule["backendRefs"]} == {
            "m-stable": 100 - weight,
            "m-canary": weight,
        }
