"""Autoscaling on the real node (issue 14, item 6): metrics-server built from its Go module
serves the resource metrics API (tests/node/metrics_server.py), and the HPA the operator
creates for a ModelDeployment's stable track reads it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.node import metrics_server as metrics_server_module
from tests.node.metrics_server import MetricsServer
from tests.node.monitoring import InClusterPrometheus
from tests.node.realnode import wait_for
from tests.node.tier import TierCluster

pytestmark = pytest.mark.node


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
