"""Autoscaling on the real node (issue 14, item 6): metrics-server built from its Go module
serves the resource metrics API (tests/node/metrics_server.py), and the HPA the operator
creates for a ModelDeployment's stable track reads it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.conftest import _print
from tests.node import metrics_server as metrics_server_module
from tests.node.load import failed
from tests.node.metrics_server import MetricsServer
from tests.node.model_store import ModelStore
from tests.node.monitoring import InClusterPrometheus
from tests.node.realnode import wait_for
from tests.node.scenario import Scenario, manifest
from tests.node.tier import TierCluster, pod_ready

pytestmark = pytest.mark.node

MODEL = "xgb-classifier.ubj"
RATE = 20  # requests per second, each on a new connection
MAX_REPLICAS = 3
# A small CPU request and target: the load of one loadgen pod is far above them, so the HPA
# scales out within a couple of its 15 s syncs instead of needing a load this host cannot
# make.
AUTOSCALING = {"minReplicas": 1, "maxReplicas": MAX_REPLICAS, "targetCPUUtilization": 20}
CPU_REQUEST = "20m"
ANALYSIS = {"minRequests": 10, "slo": {"maxErrorRate": 0.05, "maxLatencyP99": "1s"}}
ROLLOUT = {
    "steps": [50],
    "interval": "5s",
    "failureThreshold": 1,
    "inconclusiveLimit": 6,
    "progressDeadline": "180s",
}


@pytest.fixture(scope="module")
def metrics_server(
    tier: TierCluster, tier_namespace: str, request: pytest.FixtureRequest
) -> Iterator[MetricsServer]:
    certificate = None
    if tier.local:
        # the real node's kubelet serves a self-signed certificate from its --cert-dir
        node_dir = request.getfixturevalue("node_cluster").node.node_dir
        certificate = node_dir / "kubelet-pki" / "kubelet.crt"
    server = metrics_server_module.deploy(tier, tier_namespace, certificate)
    try:
        yield server
    finally:
        metrics_server_module.remove(tier, server)


def test_kubectl_top_shows_what_the_tiers_pods_use(
    tier: TierCluster,
    tier_namespace: str,
    prometheus: InClusterPrometheus,
    metrics_server: MetricsServer,
) -> None:
    used = wait_for(
        lambda: {
            pod: cpu
            for pod, cpu in metrics_server.pod_cpu(tier_namespace).items()
            if pod.startswith("prometheus-")
        },
        60,
        "metrics of the Prometheus pod",
        interval=1,
    )
    assert all(cpu > 0 for cpu in used.values()), used
    top = tier.kubectl("top", "pods", "-n", tier_namespace).stdout
    assert any(line.startswith(tuple(used)) for line in top.splitlines()), top
    nodes = tier.kubectl("top", "nodes").stdout
    assert tier.check_node() in nodes, nodes


def ready_stable_pods(scenario: Scenario) -> int:
    return sum(1 for pod in scenario.pods("stable") if pod_ready(pod))


def test_the_hpa_scales_the_stable_track_out_under_load_and_a_canary_keeps_its_size(
    request: pytest.FixtureRequest,
    scenario: Scenario,
    prometheus: InClusterPrometheus,
    model_store: ModelStore,
    metrics_server: MetricsServer,
) -> None:
    spec = manifest(scenario.name, model_store.http(MODEL), "1.0.0", 1, ROLLOUT, ANALYSIS)
    spec["spec"]["server"]["resources"] = {"requests": {"cpu": CPU_REQUEST}}
    spec["spec"]["autoscaling"] = AUTOSCALING
    scenario.deploy(spec)
    hpa: dict[str, Any] = scenario.tier.get("hpa", scenario.name, scenario.namespace) or {}
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{scenario.name}-stable", hpa

    scenario.start_load(rate=RATE)
    loaded = time.time()
    wait_for(lambda: ready_stable_pods(scenario) >= 2, 240, "the HPA to scale the stable out", 1)
    scaled_out = time.time() - loaded
    hpa = scenario.tier.get("hpa", scenario.name, scenario.namespace) or {}
    size = hpa["status"]["desiredReplicas"]
    utilization = hpa["status"]["currentMetrics"][0]["resource"]["current"]
    wait_for(
        lambda: (scenario.status().get("replicas") or 0) >= 2,
        60,
        "status.replicas (the scale subresource) to follow the HPA",
    )

    scenario.roll_out("1.1.0", model_store.http(MODEL))
    canary_sizes: set[int] = set()

    def promoted() -> dict[str, Any] | None:
        canary = scenario.tier.get("deployment", f"{scenario.name}-canary", scenario.namespace)
        if canary is not None:
            canary_sizes.add(canary["spec"]["replicas"])
        return scenario.outcome("1.1.0")

    outcome = wait_for(promoted, 300, "the canary of 1.1.0 to end", 1)
    stable_after = scenario.tier.get("deployment", f"{scenario.name}-stable", scenario.namespace)
    assert scenario.load is not None
    scenario.load.stop()
    scenario.stop()
    outcomes = scenario.load.outcomes()
    _print(
        request.config,
        f"\nHPA: {ready_stable_pods(scenario)} ready stable pods {scaled_out:.0f} s after the "
        f"load started (desired {size}, CPU {utilization}); canary Deployment sizes seen: "
        f"{sorted(canary_sizes)}; failed requests {len(failed(outcomes))} of {len(outcomes)}",
    )

    assert 2 <= size <= MAX_REPLICAS, hpa
    assert outcome["outcome"] == "Promoted", outcome
    # at 50 % on the Service router the canary gets as many pods as the stable has: the
    # HPA's size, not spec.replicas (1)
    assert max(canary_sizes, default=0) >= 2, canary_sizes
    assert stable_after is not None
    assert stable_after["spec"]["replicas"] >= 2, "the promotion reset the HPA's size"
    assert scenario.status()["stable"]["version"] == "1.1.0"
    assert failed(outcomes) == []
