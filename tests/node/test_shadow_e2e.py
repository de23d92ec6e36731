"""The shadow phase end to end (issue 16): the chart's operator, the built server image on
the tier's node, the in-cluster Prometheus and load from a pod. The stable's pods copy
every request to the shadow through the mounted NAME-mirror, with their own answer; the
shadow counts how often it agrees. A retrained copy of the stable agrees and moves on to
its canary; a model trained with a fifth of its labels flipped disagrees and is rejected,
and no client ever gets an answer from it.
"""

from __future__ import annotations

import pytest
from tests.integration.conftest import _print
from tests.node.load import failed
from tests.node.model_store import ModelStore
from tests.node.monitoring import InClusterPrometheus
from tests.node.scenario import Scenario, manifest
from tests.node.test_model_gates import (
    ANALYSIS,
    GOOD,
    RATE,
    WEAK,
    gated_files,
    last_checks,
    rows,
    with_profile,
)

pytestmark = pytest.mark.node
__all__ = ["gated_files"]  # fixture used below

# The stable pods learn the mirror target when the kubelet refreshes the mounted
# ConfigMap (up to about a minute): analyses before the first copies are inconclusive.
ROLLOUT = {
    "steps": [50],
    "interval": "30s",
    "failureThreshold": 1,
    "inconclusiveLimit": 8,
    "progressDeadline": "240s",
}
SHADOW = {"analyses": 2, "minAgreement": 0.95, "minRows": 100}


def test_a_shadow_that_agrees_moves_on_and_one_that_disagrees_never_answers_a_client(
    request: pytest.FixtureRequest,
    scenario: Scenario,
    prometheus: InClusterPrometheus,
    gated_files: ModelStore,
):
    spec = manifest(scenario.name, with_profile(gated_files, GOOD), "1.0.0", 2, ROLLOUT, ANALYSIS)
    spec["spec"]["strategy"] = {"type": "canary", "shadow": SHADOW}
    scenario.deploy(spec)
    scenario.start_load(rate=RATE, rows=rows())

    scenario.roll_out("1.1.0", with_profile(gated_files, GOOD))
    promoted = scenario.wait_outcome("1.1.0", timeout=420)
    assert promoted["outcome"] == "Promoted", promoted
    passed = [e["message"] for e in scenario.events("ShadowPassed")]
    assert passed, "the retrained copy went through its shadow first"
    assert scenario.events("CanaryStarted"), "then through its canary"

    scenario.roll_out("2.0.0", with_profile(gated_files, WEAK))
    rejected = scenario.wait_outcome("2.0.0", timeout=420)
    checks = last_checks(scenario)
    agreement = checks["shadow-agreement"]
    namespace = scenario.namespace
    copies = prometheus.value(
        f'sum(modelserver_mirror_requests_total{{namespace="{namespace}", result="sent"}})'
    )
    dropped = prometheus.value(
        f'sum(modelserver_mirror_requests_total{{namespace="{namespace}", result="dropped"}})'
    )
    _print(
        request.config,
        f"\nshadow: retrained copy passed ({passed[-1]}); flipped-label model "
        f"{agreement['message']} ({agreement['verdict']}); error-rate "
        f"{checks['error-rate']['message']}; latency {checks['latency-p99']['message']}; "
        f"copies sent {copies}, dropped {dropped}",
    )
    assert rejected["outcome"] == "RolledBack", rejected
    assert "shadow-agreement" in rejected["reason"], rejected
    assert agreement["verdict"] == "Fail"
    assert agreement["value"] < 0.95
    assert checks["error-rate"]["verdict"] == "Pass", "only its answers gave it away"
    assert copies is not None
    assert copies > 0

    scenario.wait_settled(2)
    assert scenario.load is not None
    outcomes = scenario.load.outcomes()
    assert failed(outcomes) == []
    served = {o.version for o in outcomes}
    assert "2.0.0" not in served, f"a client got the shadow's answer: {served}"
    assert served <= {"1.0.0", "1.1.0"}
    mirror = scenario.tier.get("configmap", f"{scenario.name}-mirror", namespace)
    assert mirror is not None
    assert mirror["data"]["mirror.json"] == "{}", "no copies once the shadow is gone"
