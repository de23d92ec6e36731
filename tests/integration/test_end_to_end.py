"""End to end: a REAL Prometheus scraping REAL modelserver processes judges the canaries.

The harness in tests/e2e/harness stands in for kubelets and the Service: one server
process per Ready pod, with that pod's environment, registered with Prometheus through
file-based discovery, and requests spread over the serving pods of both tracks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness.load import Load
from tests.e2e.harness.models import MODEL_NAME, artifact, single_row_request
from tests.e2e.harness.pods import PodMirror
from tests.e2e.harness.prometheus import RealPrometheus, prometheus_binary
from tests.integration.operator_harness import Objects, objects, operator, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
__all__ = ["objects", "operator"]  # fixtures used by the tests below


@pytest.fixture
def real_prometheus() -> Iterator[RealPrometheus]:
    if prometheus_binary() is None:
        reason = "prometheus is not installed (make test installs Debian's package)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with RealPrometheus() as prometheus:
        yield prometheus


@pytest.fixture
def stack(cluster, objects, operator, real_prometheus, tmp_path) -> Iterator[dict[str, Any]]:
    """A served ModelDeployment `e2e` with real servers, real scrapes and steady load."""
    spec = {
        "model": {"name": MODEL_NAME, "version": "1.0.0", **artifact("xgb-classifier.ubj")},
        "replicas": 1,
        "rollout": {
            "steps": [25, 50],
            "interval": "5s",
            "failureThreshold": 2,
            "inconclusiveLimit": 6,
            "progressDeadline": "60s",
        },
        "analysis": {
            "prometheus": {"url": real_prometheus.url, "timeout": "3s"},
            "minRequests": 10,
            "slo": {"maxErrorRate": 0.05, "maxLatencyP99": "20ms"},
        },
    }
    objects.apply(
        {
            "apiVersion": "modeldeploy.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "e2e"},
            "spec": spec,
        }
    )
    mirror = PodMirror(cluster.kubectl, objects.namespace, "e2e", real_prometheus, tmp_path)
    mirror.start()
    load = Load(mirror, MODEL_NAME, single_row_request(), rate=10).start()
    try:
        wait_for(lambda: mirror.serving(), 60, "a stable modelserver process")
        selector = f'modelserver_requests_total{{namespace="{objects.namespace}"}}'
        wait_for(lambda: real_prometheus.query(selector), 30, "Prometheus to scrape the stable")
        yield {"mirror": mirror, "load": load, "prometheus": real_prometheus}
    finally:
        load.stop()
        mirror.stop()


def roll_out(objects: Objects, version: str, artifact_name: str) -> float:
    started = time.monotonic()
    objects.patch_spec("e2e", {"model": {"version": version, **artifact(artifact_name)}})
    return started


def checks(objects: Objects) -> dict[str, dict[str, Any]]:
    analysis = objects.status("e2e").get("lastAnalysis") or {}
    return {check["name"]: check for check in analysis.get("checks", [])}


def test_a_good_new_model_is_promoted(objects, stack):
    roll_out(objects, "1.1.0", "xgb-classifier.ubj")
    entry = wait_for(lambda: objects.outcome("e2e", "1.1.0"), 120, "the promotion")
    assert entry["outcome"] == "Promoted", entry
    assert objects.status("e2e")["stable"]["version"] == "1.1.0"
    load: Load = stack["load"]
    canary_requests = [s for s in load.sent if s.track == "canary"]
    assert canary_requests, "the canary served no requests"
    assert all(s.status == 200 for s in canary_requests)


def test_a_model_rejecting_the_stables_inputs_is_rolled_back(objects, stack):
    roll_out(objects, "2.0.0", "xgb-classifier-bad-features.ubj")
    entry = wait_for(lambda: objects.outcome("e2e", "2.0.0"), 120, "the rollback")
    assert entry["outcome"] == "RolledBack", entry
    assert entry["reason"].startswith("FailedChecks")
    error_rate = checks(objects)["error-rate"]
    assert error_rate["verdict"] == "Fail"
    assert error_rate["value"] > 0.05
    load: Load = stack["load"]
    rejected = load.first_failure("canary")
    assert rejected is not None
    assert 400 <= rejected.status < 500
    assert objects.status("e2e")["stable"]["version"] == "1.0.0"


def test_a_slow_model_is_rolled_back_by_the_latency_check(objects, stack):
    roll_out(objects, "3.0.0", "xgb-classifier-slow.ubj")
    entry = wait_for(lambda: objects.outcome("e2e", "3.0.0"), 120, "the rollback")
    assert entry["outcome"] == "RolledBack", entry
    latency = checks(objects)["latency-p99"]
    assert latency["verdict"] == "Fail"
    assert latency["value"] > 0.020
    assert checks(objects)["error-rate"]["verdict"] == "Pass"
