"""Rollouts for real: the chart's operator, the built server image under a real kubelet,
kube-proxy splitting the traffic by ready pods, a real Prometheus finding the pods by
their annotations, and load from inside the cluster through the model's Service.

Every scenario runs in a namespace of its own, on the operator, Prometheus and model
files the session shares. Each prints what the canary really served at every step
against the weight the operator set, and checks that clients saw no failed request
beyond those the bad canary itself rejected.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from tests.integration.conftest import _print
from tests.node.load import Outcome, failed
from tests.node.model_store import ModelStore
from tests.node.monitoring import InClusterPrometheus
from tests.node.operator_release import OperatorRelease
from tests.node.realnode import wait_for
from tests.node.rollout_watch import share_table, step_shares, step_windows
from tests.node.scenario import Scenario, manifest

pytestmark = pytest.mark.node

GOOD = "xgb-classifier.ubj"
REJECTS_INPUTS = "xgb-classifier-bad-features.ubj"
SLOW = "xgb-classifier-slow.ubj"

ROLLOUT = {
    "interval": "10s",
    "failureThreshold": 2,
    "inconclusiveLimit": 6,
    "progressDeadline": "120s",
}
# Latency is judged loosely where it is not what a scenario is about: on a loaded 2-core
# host, pods starting next to a serving pod push its p99 past half a second for seconds
# (measured here: 645 ms while two canary pods started). The slow model takes over 20 ms
# for any request, so its scenario sets a limit the good model keeps and it cannot.
ANALYSIS = {"minRequests": 10, "slo": {"maxErrorRate": 0.05, "maxLatencyP99": "1s"}}
SLOW_LIMIT = "15ms"
RATE = 20  # requests per second, each on a new connection
# Binomial noise of a share over ~100 requests is about 5 points: a canary getting no
# traffic, or all of it, is far outside this; chance is not.
SHARE_TOLERANCE = 20
MIN_REQUESTS_FOR_SHARE = 40


def _start(
    scenario: Scenario,
    prometheus: InClusterPrometheus,
    model: dict[str, str],
    replicas: int,
    rollout: dict[str, Any],
    analysis: dict[str, Any] = ANALYSIS,
) -> Scenario:
    """The stable version 1.0.0 serving, under load, scraped by Prometheus."""
    namespace = scenario.namespace
    scenario.deploy(manifest(scenario.name, model, "1.0.0", replicas, rollout, analysis))
    scenario.start_load(rate=RATE)
    wait_for(
        lambda: (
            len(prometheus.scraped(namespace)) == replicas
            and prometheus.value(
                f'sum(modelserver_requests_total{{namespace="{namespace}", track="stable"}})'
            )
        ),
        60,
        "Prometheus to discover and scrape the stable pods",
    )
    return scenario


def _finish(scenario: Scenario, replicas: int) -> list[Outcome]:
    """Once only the stable pods are left and a little more load went through: every
    request's outcome."""
    scenario.wait_settled(replicas)
    time.sleep(3)
    assert scenario.load is not None
    scenario.load.stop()
    scenario.stop()
    return scenario.load.outcomes()


def _report_shares(
    request: pytest.FixtureRequest,
    scenario: Scenario,
    prometheus: InClusterPrometheus,
    title: str,
    outcomes: list[Outcome],
) -> list[Any]:
    assert scenario.recorder is not None
    windows = step_windows(scenario.recorder.snapshots, time.time())
    shares = step_shares(prometheus, scenario.namespace, scenario.name, windows)
    statuses = Counter(o.status or o.error for o in outcomes)
    _print(
        request.config,
        f"\n{share_table(title, shares)}\nclient requests by outcome: {dict(statuses)}",
    )
    return shares


def _check_shares(shares: list[Any]) -> None:
    for s in shares:
        if s.settled_total >= MIN_REQUESTS_FOR_SHARE and s.settled_share is not None:
            assert abs(s.settled_share - s.window.actual_weight) <= SHARE_TOLERANCE, s


def test_a_healthy_version_from_a_volume_is_promoted_step_by_step_without_a_failed_request(
    request, scenario: Scenario, prometheus, model_store: ModelStore
):
    model_store.claim(scenario.namespace)
    try:
        replicas = 3
        rollout = {**ROLLOUT, "steps": [25, 50]}
        _start(scenario, prometheus, model_store.pvc(GOOD), replicas, rollout)
        # Prometheus found the pods by the operator's annotations and labelled them
        for target in prometheus.scraped(scenario.namespace):
            assert target["labels"]["pod"].startswith("model-stable-"), target
            assert target["labels"]["modeldeploy_dev_track"] == "stable", target

        scenario.roll_out("1.1.0", model_store.pvc(GOOD))
        entry = scenario.wait_outcome("1.1.0")
        outcomes = _finish(scenario, replicas)
        shares = _report_shares(
            request, scenario, prometheus, "promotion, 3 stable replicas, steps 25/50", outcomes
        )
    finally:
        model_store.release(scenario.namespace)

    assert entry["outcome"] == "Promoted", entry
    assert scenario.status()["stable"]["version"] == "1.1.0"
    assert [w.window.step for w in shares] == [0, 1]
    _check_shares(shares)
    assert failed(outcomes) == []
    served = Counter(o.version for o in outcomes)
    assert served["1.0.0"] > 0
    assert served["1.1.0"] > 0


def test_a_version_rejecting_the_inputs_is_rolled_back_by_its_error_rate(
    request, scenario: Scenario, prometheus, model_store: ModelStore
):
    rollout = {**ROLLOUT, "steps": [50]}
    _start(scenario, prometheus, model_store.http(GOOD), 1, rollout)
    asked = scenario.roll_out("2.0.0", model_store.http(REJECTS_INPUTS))
    entry = scenario.wait_outcome("2.0.0")
    outcomes = _finish(scenario, 1)
    shares = _report_shares(request, scenario, prometheus, "rollback by error rate", outcomes)

    assert entry["outcome"] == "RolledBack", entry
    assert entry["reason"].startswith("FailedChecks"), entry
    checks = {c["name"]: c for c in scenario.status()["lastAnalysis"]["checks"]}
    assert checks["error-rate"]["verdict"] == "Fail", checks
    assert scenario.status()["stable"]["version"] == "1.0.0"
    _check_shares(shares)
    rejected = [o for o in outcomes if o.status == 422]
    assert rejected, "the canary rejected no request"
    assert min(o.at for o in rejected) > asked
    # the rejections were the canary's; nothing else failed
    assert failed(outcomes, allowed_status=frozenset({422})) == []


def test_a_slow_version_is_rolled_back_by_its_latency(
    request, scenario: Scenario, prometheus, model_store: ModelStore
):
    rollout = {**ROLLOUT, "steps": [50]}
    analysis = {**ANALYSIS, "slo": {"maxErrorRate": 0.05, "maxLatencyP99": SLOW_LIMIT}}
    _start(scenario, prometheus, model_store.http(GOOD), 1, rollout, analysis)
    scenario.roll_out("3.0.0", model_store.http(SLOW))
    entry = scenario.wait_outcome("3.0.0")
    outcomes = _finish(scenario, 1)
    _report_shares(request, scenario, prometheus, "rollback by latency", outcomes)

    assert entry["outcome"] == "RolledBack", entry
    checks = {c["name"]: c for c in scenario.status()["lastAnalysis"]["checks"]}
    assert checks["latency-p99"]["verdict"] == "Fail", checks
    assert checks["error-rate"]["verdict"] == "Pass", checks
    assert Counter(o.version for o in outcomes)["3.0.0"] > 0, "the slow canary served nothing"
    assert failed(outcomes) == []


def test_a_model_failing_its_checksum_never_serves_and_is_rolled_back_at_the_deadline(
    request, scenario: Scenario, prometheus, model_store: ModelStore
):
    rollout = {**ROLLOUT, "steps": [50], "progressDeadline": "30s"}
    _start(scenario, prometheus, model_store.http(GOOD), 1, rollout)
    wrong = {**model_store.http(GOOD), "sha256": model_store.http(SLOW)["sha256"]}
    scenario.roll_out("4.0.0", wrong)
    entry = scenario.wait_outcome("4.0.0")
    outcomes = _finish(scenario, 1)
    _report_shares(request, scenario, prometheus, "checksum mismatch", outcomes)

    assert entry["outcome"] == "RolledBack", entry
    assert entry["reason"].startswith("ProgressDeadlineExceeded"), entry
    # the server's termination message, through the kubelet, in status and in the Events
    assert "sha256 mismatch" in entry["reason"], entry
    rolled_back = scenario.events("RolledBack")
    assert rolled_back, "no RolledBack event"
    assert "sha256 mismatch" in rolled_back[-1]["message"], rolled_back[-1]
    not_ready = scenario.events("CanaryNotReady")
    assert any("sha256 mismatch" in e["message"] for e in not_ready), not_ready
    assert {o.version for o in outcomes} == {"1.0.0"}
    assert failed(outcomes) == []


def test_the_operator_pod_deleted_mid_canary_is_replaced_without_repeating_or_skipping_a_step(
    request,
    tier,
    scenario: Scenario,
    prometheus,
    operator_release: OperatorRelease,
    model_store: ModelStore,
):
    steps = [10, 20, 30, 40]
    rollout = {**ROLLOUT, "steps": steps}
    _start(scenario, prometheus, model_store.http(GOOD), 1, rollout)
    scenario.roll_out("1.1.0", model_store.http(GOOD))
    assert scenario.recorder is not None
    recorder = scenario.recorder

    def at_second_step() -> bool:
        latest = recorder.latest()
        return latest is not None and latest.ready and latest.step == 1

    wait_for(at_second_step, 120, "the canary's second step")
    leader = operator_release.leader()
    assert leader is not None
    tier.kubectl("delete", "pod", leader, "-n", operator_release.namespace, "--wait=false")
    entry = scenario.wait_outcome("1.1.0")
    outcomes = _finish(scenario, 1)
    shares = _report_shares(
        request, scenario, prometheus, "operator pod deleted at step 2", outcomes
    )

    assert entry["outcome"] == "Promoted", entry
    new_leader = operator_release.leader()
    assert new_leader is not None
    assert new_leader != leader
    # every step walked once, in order: status and Events agree
    assert [s.window.step for s in shares] == [0, 1, 2, 3]
    advanced = [e["message"] for e in scenario.events("StepAdvanced")]
    assert len(advanced) == len(steps) - 1, advanced
    for number in range(2, len(steps) + 1):
        assert sum(f"to step {number} of" in m for m in advanced) == 1, advanced
    assert len(scenario.events("PromotionStarted")) == 1
    assert failed(outcomes) == []


def test_no_request_of_the_operator_was_refused_by_its_chart_roles(
    prometheus: InClusterPrometheus, operator_release: OperatorRelease
):
    """After every scenario: the chart's RBAC let the operator do all it did."""
    refused = prometheus.value(
        "sum(max_over_time(modeldeploy_kube_request_errors_total"
        f'{{namespace="{operator_release.namespace}", code=~"401|403"}}[3h]))'
    )
    assert not refused, f"{refused} API requests refused:\n{operator_release.logs()}"
