"""A child kind the cluster does not serve (GRPCRoute before Gateway API v1.1) is left out
with one warning; any other failure of an apply still fails the reconcile."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

from modeldeploy import resources
from modeldeploy.config import OperatorConfig
from modeldeploy.kube import Kube, KubeError
from modeldeploy.reconciler import Reconciler
from modeldeploy.routers import router_for
from tests.unit.rollout_sim import make_spec

NOT_SERVED = "the server could not find the requested resource"


class ClusterWithoutGRPCRoute:
    """Applies everything but GRPCRoutes, which it answers 404 (no such resource type)."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    async def apply(self, manifest: dict[str, Any], force: bool = False) -> dict[str, Any]:
        if manifest["kind"] == "GRPCRoute":
            raise KubeError(NOT_SERVED, 404, transient=False)
        if manifest["kind"] == "Service":
            raise KubeError("admission webhook denied the request", 403, transient=False)
        self.applied.append(manifest["kind"])
        return manifest


def routes() -> list[dict[str, Any]]:
    spec = make_spec(router="gatewayAPI")
    found = router_for(spec.traffic.router).routes("fraud", "ml", spec, 10)
    return [resources.owned(resources.with_hash(route), "fraud", "uid") for route in found]


def test_an_unserved_grpcroute_is_left_out_with_one_warning(caplog: pytest.LogCaptureFixture):
    cluster = ClusterWithoutGRPCRoute()
    reconciler = Reconciler(cast(Kube, cluster), OperatorConfig())
    http_route, grpc_route = routes()
    assert (http_route["kind"], grpc_route["kind"]) == ("HTTPRoute", "GRPCRoute")
    with caplog.at_level(logging.WARNING, logger="modeldeploy.reconciler"):
        for _ in range(3):
            asyncio.run(reconciler._apply(http_route, None))
            asyncio.run(reconciler._apply(grpc_route, None))
    assert cluster.applied == ["HTTPRoute"] * 3, "the HTTP routing goes on regardless"
    warnings = [r.getMessage() for r in caplog.records if "GRPCRoute" in r.getMessage()]
    assert len(warnings) == 1
    assert "Gateway API v1.1" in warnings[0]


def test_other_apply_failures_still_fail_the_reconcile():
    reconciler = Reconciler(cast(Kube, ClusterWithoutGRPCRoute()), OperatorConfig())
    service = resources.service("fraud", "ml", "uid")
    with pytest.raises(KubeError, match="webhook denied"):
        asyncio.run(reconciler._apply(service, None))
