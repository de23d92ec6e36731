"""Progressive canaries on the real local API server, judged by a scripted Prometheus.

The scripted Prometheus is a real HTTP server answering the operator's PromQL with
values each test chooses; the operator runs as a real process.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.operator_harness import (
    Objects,
    model_deployment,
    objects,
    operator,
    wait_for,
)
from tests.support.scripted_prometheus import ScriptedPrometheus

pytestmark = pytest.mark.integration
__all__ = ["objects", "operator"]  # fixtures used by the tests below

NEVER_READY_IMAGE = "kwok.invalid/never-ready:latest"


@pytest.fixture
def prometheus() -> Iterator[ScriptedPrometheus]:
    with ScriptedPrometheus() as prom:
        yield prom


def canary_spec(prom: ScriptedPrometheus, **rollout: Any) -> dict[str, Any]:
    settings = {
        "steps": [20, 50],
        "interval": "2s",
        "failureThreshold": 2,
        "inconclusiveLimit": 3,
        "progressDeadline": "30s",
        **rollout,
    }
    return {
        "rollout": settings,
        "analysis": {"prometheus": {"url": prom.url, "timeout": "2s"}, "minRequests": 20},
    }


def deploy_stable(objects: Objects, name: str, prom: ScriptedPrometheus, **spec: Any) -> str:
    """A ModelDeployment at 1.0.0, Available; returns its stable revision."""
    objects.apply(model_deployment(name, **{**canary_spec(prom), **spec}))
    status = wait_for(lambda: _phase(objects, name, "Available"), 60, f"{name} Available")
    revision: str = status["stable"]["revision"]
    return revision


def new_version(objects: Objects, name: str, version: str = "2.0.0", **model: Any) -> None:
    objects.patch_spec(name, {"model": {"version": version, **model}})


def _phase(objects: Objects, name: str, phase: str) -> dict[str, Any] | None:
    status = objects.status(name)
    return status if status.get("phase") == phase else None


def _replicas(objects: Objects, deployment: str) -> int | None:
    found = objects.get("deployment", deployment)
    return None if found is None else int(found["spec"]["replicas"])


def _messages(objects: Objects, name: str, reason: str) -> list[str]:
    return [e["message"] for e in objects.events(name) if e["reason"] == reason]


def test_good_canary_walks_every_step_and_is_promoted(objects, operator, prometheus):
    prometheus.healthy()
    deploy_stable(objects, "good", prometheus)
    new_version(objects, "good")

    weights: list[int] = []

    def promoted() -> dict[str, Any] | None:
        canary = objects.status("good").get("canary")
        if canary and canary.get("weight") and canary["weight"] not in weights:
            weights.append(canary["weight"])
        return objects.outcome("good", "2.0.0")

    entry = wait_for(promoted, 90, "the canary to be promoted", interval=0.1)
    assert entry["outcome"] == "Promoted"
    assert weights == [20, 50]
    status = objects.status("good")
    assert status["phase"] == "Available"
    assert status["stable"]["version"] == "2.0.0"
    assert "canary" not in status
    wait_for(lambda: objects.get("deployment", "good-canary") is None, 30, "canary removed")
    stable = objects.get("deployment", "good-stable")
    assert stable is not None
    assert stable["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "2.0.0"
    reasons = objects.event_reasons("good")
    for reason in ("CanaryStarted", "CanaryReady", "StepAdvanced", "Promoted"):
        assert reason in reasons
    assert 'track="canary"' in " ".join(prometheus.queries)


def test_bad_canary_rolls_back_at_the_threshold_and_is_not_retried_until_asked(
    objects, operator, prometheus
):
    prometheus.healthy()
    deploy_stable(objects, "bad", prometheus)
    prometheus.set_track("canary", requests=100, error_rate=0.2)
    new_version(objects, "bad")

    entry = wait_for(lambda: objects.outcome("bad", "2.0.0"), 60, "the rollback")
    assert entry["outcome"] == "RolledBack"
    assert entry["reason"].startswith("FailedChecks")
    status = objects.status("bad")
    assert status["phase"] == "RolledBack"
    assert status["stable"]["version"] == "1.0.0"
    assert "canary" not in status
    checks = {c["name"]: c for c in status["lastAnalysis"]["checks"]}
    assert checks["error-rate"]["verdict"] == "Fail"
    assert checks["error-rate"]["value"] == pytest.approx(0.2)
    assert checks["error-rate"]["max"] == pytest.approx(0.01)
    failed = _messages(objects, "bad", "AnalysisFailed")
    assert len(failed) == 2
    assert all("error-rate" in message and "0.2" in message for message in failed)
    wait_for(lambda: _replicas(objects, "bad-canary") == 0, 30, "canary scaled to zero")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Progressing"]["reason"] == "RolledBack"
    assert conditions["Available"]["status"] == "True"

    time.sleep(5)  # two more intervals: the rejected revision must stay rejected
    status = objects.status("bad")
    assert status["phase"] == "RolledBack"
    assert "canary" not in status
    assert len([h for h in status["history"] if h["outcome"] == "RolledBack"]) == 1

    prometheus.healthy()
    objects.annotate("bad", "modeldeploy.dev/retry", "1")
    wait_for(
        lambda: (objects.status("bad")["history"][0]["outcome"] == "Promoted") or None,
        60,
        "the retried canary to be promoted",
    )
    assert "RetryRequested" in objects.event_reasons("bad")


def test_low_traffic_holds_the_step_then_rolls_back_as_inconclusive(objects, operator, prometheus):
    prometheus.healthy()
    deploy_stable(objects, "quiet", prometheus)
    prometheus.set_track("canary", requests=3)
    new_version(objects, "quiet")

    def held() -> dict[str, Any] | None:
        canary = objects.status("quiet").get("canary") or {}
        return canary if canary.get("inconclusiveChecks", 0) >= 1 else None

    canary = wait_for(held, 30, "an inconclusive analysis")
    assert canary["step"] == 0
    assert canary["weight"] == 20
    assert canary["failedChecks"] == 0
    analysis = objects.status("quiet")["lastAnalysis"]
    assert analysis["verdict"] == "NoData"
    assert analysis["requests"] == pytest.approx(3)

    entry = wait_for(lambda: objects.outcome("quiet", "2.0.0"), 60, "the rollback")
    assert entry["outcome"] == "RolledBack"
    assert entry["reason"].startswith("AnalysisInconclusive")
    assert not _messages(objects, "quiet", "AnalysisFailed")


def test_prometheus_down_holds_the_canary_until_it_answers(objects, operator, prometheus):
    prometheus.healthy()
    deploy_stable(
        objects,
        "outage",
        prometheus,
        rollout={"steps": [20, 50], "interval": "2s", "inconclusiveLimit": 50},
    )
    prometheus.set_down(True)
    new_version(objects, "outage")

    def held_twice() -> dict[str, Any] | None:
        canary = objects.status("outage").get("canary") or {}
        return canary if canary.get("inconclusiveChecks", 0) >= 2 else None

    canary = wait_for(held_twice, 30, "two inconclusive analyses")
    assert canary["step"] == 0
    assert objects.status("outage")["lastAnalysis"]["verdict"] == "Error"
    assert any("503" in m for m in _messages(objects, "outage", "AnalysisInconclusive"))

    prometheus.set_down(False)
    entry = wait_for(lambda: objects.outcome("outage", "2.0.0"), 60, "the promotion")
    assert entry["outcome"] == "Promoted"


def test_canary_pods_never_ready_roll_back_at_the_progress_deadline(objects, operator, prometheus):
    prometheus.healthy()
    deploy_stable(
        objects,
        "stuck",
        prometheus,
        rollout={"steps": [20, 50], "interval": "2s", "progressDeadline": "6s"},
    )
    objects.patch_spec("stuck", {"server": {"image": NEVER_READY_IMAGE}})

    entry = wait_for(lambda: objects.outcome("stuck", "1.0.0"), 60, "the deadline rollback")
    assert entry["outcome"] == "RolledBack"
    assert entry["reason"].startswith("ProgressDeadlineExceeded")
    assert "never became ready within 6s" in entry["reason"]
    rolled_back = _messages(objects, "stuck", "RolledBack")
    assert rolled_back
    assert "never became ready" in rolled_back[0]
    assert objects.status("stuck")["phase"] == "RolledBack"


def test_a_new_revision_supersedes_the_running_canary(objects, operator, prometheus):
    prometheus.healthy()
    deploy_stable(objects, "moving", prometheus)
    objects.patch_spec("moving", {"rollout": {"paused": True}})
    new_version(objects, "moving", "2.0.0")
    wait_for(lambda: (objects.status("moving").get("canary") or {}).get("weight"), 30, "canary")
    first = objects.status("moving")["canary"]["revision"]

    new_version(objects, "moving", "3.0.0")
    entry = wait_for(lambda: objects.outcome("moving", "2.0.0"), 30, "2.0.0 superseded")
    assert entry["outcome"] == "Superseded"
    canary = wait_for(
        lambda: (
            (objects.status("moving").get("canary") or {}).get("weight")
            and objects.status("moving")["canary"]
        ),
        30,
        "the 3.0.0 canary",
    )
    assert canary["version"] == "3.0.0"
    assert canary["revision"] != first
    assert canary["step"] == 0
    assert "CanarySuperseded" in objects.event_reasons("moving")


def test_pause_holds_and_manual_promote_and_abort_win(objects, operator, prometheus):
    prometheus.healthy()
    deploy_stable(objects, "manual", prometheus)
    objects.patch_spec("manual", {"rollout": {"paused": True}})
    new_version(objects, "manual", "2.0.0")
    wait_for(lambda: (objects.status("manual").get("canary") or {}).get("weight"), 30, "canary")
    time.sleep(5)  # two intervals of passing analyses
    canary = objects.status("manual")["canary"]
    assert (canary["step"], canary["weight"]) == (0, 20)
    assert objects.status("manual")["lastAnalysis"]["verdict"] == "Pass"

    objects.annotate("manual", "modeldeploy.dev/promote", "now")
    entry = wait_for(lambda: objects.outcome("manual", "2.0.0"), 30, "the manual promotion")
    assert entry["outcome"] == "Promoted"
    assert "ManualPromotion" in objects.event_reasons("manual")

    new_version(objects, "manual", "3.0.0")
    wait_for(lambda: (objects.status("manual").get("canary") or {}).get("weight"), 30, "canary")
    objects.annotate("manual", "modeldeploy.dev/abort", "now")
    entry = wait_for(lambda: objects.outcome("manual", "3.0.0"), 30, "the abort")
    assert entry["outcome"] == "RolledBack"
    assert entry["reason"].startswith("Aborted")
    assert objects.status("manual")["stable"]["version"] == "2.0.0"


def test_operator_killed_mid_canary_resumes_without_repeating_or_skipping(
    objects, operator, prometheus
):
    prometheus.healthy()
    deploy_stable(
        objects, "resume", prometheus, rollout={"steps": [10, 20, 30, 40, 50], "interval": "2s"}
    )
    new_version(objects, "resume")
    at_step = wait_for(
        lambda: (
            (objects.status("resume").get("canary") or {}).get("step", 0) >= 1
            and objects.status("resume")["canary"]
        ),
        60,
        "the canary to reach step 2",
    )
    operator.kill()
    frozen = objects.status("resume")["canary"]
    assert frozen["step"] >= at_step["step"]
    time.sleep(3)
    assert objects.status("resume")["canary"]["step"] == frozen["step"]
    operator.start()

    entry = wait_for(lambda: objects.outcome("resume", "2.0.0"), 90, "the promotion")
    assert entry["outcome"] == "Promoted"
    advanced = [
        int(m.group(1))
        for message in _messages(objects, "resume", "StepAdvanced")
        if (m := re.search(r"advanced to step (\d+)", message))
    ]
    assert sorted(advanced) == [2, 3, 4, 5], f"steps advanced: {advanced}"


def test_operator_killed_mid_canary_keeps_its_failed_checks(objects, operator, prometheus):
    prometheus.healthy()
    deploy_stable(
        objects,
        "grudge",
        prometheus,
        rollout={"steps": [20, 50], "interval": "2s", "failureThreshold": 3},
    )
    prometheus.set_track("canary", requests=100, error_rate=0.5)
    new_version(objects, "grudge")
    wait_for(
        lambda: (objects.status("grudge").get("canary") or {}).get("failedChecks", 0) >= 1,
        60,
        "a failed check",
    )
    operator.kill()
    time.sleep(3)
    operator.start()
    entry = wait_for(lambda: objects.outcome("grudge", "2.0.0"), 60, "the rollback")
    assert entry["outcome"] == "RolledBack"
    assert "3 failed analyses" in entry["reason"]
    assert len(_messages(objects, "grudge", "AnalysisFailed")) == 3


def test_replicas_router_sizes_the_canary_to_its_weight(objects, operator, prometheus):
    prometheus.healthy()
    deploy_stable(objects, "ratio", prometheus, replicas=4)
    objects.patch_spec("ratio", {"rollout": {"paused": True}})
    new_version(objects, "ratio")
    wait_for(lambda: (objects.status("ratio").get("canary") or {}).get("weight"), 30, "canary")
    assert _replicas(objects, "ratio-canary") == 1  # 1 of 5 ready pods = 20%
    assert _replicas(objects, "ratio-stable") == 4  # stable keeps its capacity
    wait_for(
        lambda: objects.status("ratio")["canary"].get("actualWeight") == 20, 20, "20% achieved"
    )

    objects.patch_spec("ratio", {"rollout": {"paused": False}})
    wait_for(lambda: _replicas(objects, "ratio-canary") == 4, 30, "4 canary pods at 50%")
    assert _replicas(objects, "ratio-stable") == 4
    wait_for(lambda: objects.outcome("ratio", "2.0.0"), 60, "the promotion")
    wait_for(lambda: objects.get("deployment", "ratio-canary") is None, 30, "canary removed")
    assert _replicas(objects, "ratio-stable") == 4


def _route_weights(objects: Objects, name: str, kind: str = "httproute") -> dict[str, int] | None:
    route = objects.get(kind, name)
    if route is None:
        return None
    refs = route["spec"]["rules"][0]["backendRefs"]
    return {ref["name"]: ref["weight"] for ref in refs}


def test_gateway_api_router_sets_httproute_weights(objects, operator, prometheus):
    prometheus.healthy()
    traffic = {
        "router": "gatewayAPI",
        "gatewayAPI": {"parentRefs": [{"name": "ml-gateway"}], "hostnames": ["gw.example.com"]},
    }
    deploy_stable(objects, "gw", prometheus, traffic=traffic)
    assert _route_weights(objects, "gw") == {"gw-stable": 100, "gw-canary": 0}
    # The route names both track Services, so both exist before any canary does.
    assert objects.get("service", "gw-canary") is not None
    route = objects.get("httproute", "gw")
    assert route is not None
    assert route["spec"]["parentRefs"][0]["name"] == "ml-gateway"
    assert route["spec"]["hostnames"] == ["gw.example.com"]

    objects.patch_spec("gw", {"rollout": {"paused": True}})
    new_version(objects, "gw")
    wait_for(
        lambda: _route_weights(objects, "gw") == {"gw-stable": 80, "gw-canary": 20},
        30,
        "an 80/20 split",
    )
    wait_for(
        lambda: _route_weights(objects, "gw", "grpcroute") == {"gw-stable": 80, "gw-canary": 20},
        30,
        "the same split for gRPC",
    )
    objects.patch_spec("gw", {"rollout": {"paused": False}})
    wait_for(
        lambda: _route_weights(objects, "gw") == {"gw-stable": 50, "gw-canary": 50},
        30,
        "a 50/50 split",
    )
    wait_for(lambda: objects.outcome("gw", "2.0.0"), 60, "the promotion")
    wait_for(
        lambda: _route_weights(objects, "gw") == {"gw-stable": 100, "gw-canary": 0},
        30,
        "all traffic back on stable",
    )


def test_operator_metrics_expose_weight_checks_and_outcomes(objects, operator, prometheus):
    prometheus.healthy()
    deploy_stable(objects, "seen", prometheus)
    new_version(objects, "seen")
    wait_for(lambda: objects.outcome("seen", "2.0.0"), 60, "the promotion")
    text = operator.metrics()
    namespace = objects.namespace
    assert f'modeldeploy_promotions_total{{name="seen",namespace="{namespace}"}} 1.0' in text
    assert f'modeldeploy_canary_weight{{name="seen",namespace="{namespace}"}} 0.0' in text
    assert 'check="error-rate"' in text
    assert 'modeldeploy_canary_duration_seconds_count{outcome="Promoted"} 1.0' in text
