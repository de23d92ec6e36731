"""The A/B experiment end to end (issue 16): the chart's operator, the built server image on
the tier's node, the in-cluster Prometheus and load from a pod that plays a shop. The shop
reads each answer's x-model-variant header and converts with that arm's probability, drawn
from a fixed seed, and Prometheus scrapes its counters. Three variants share traffic with
control: one truly converts better and is found Better with its patch offered, one converts
alike and ends NoSignificantDifference, one rejects every input and is cut early.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.e2e.harness.models import MODEL_NAME
from tests.integration.conftest import _print
from tests.node.load import failed
from tests.node.model_store import ModelStore
from tests.node.monitoring import InClusterPrometheus
from tests.node.realnode import wait_for
from tests.node.scenario import Scenario, manifest

pytestmark = pytest.mark.node

GOOD = "xgb-classifier.ubj"
REJECTS_INPUTS = "xgb-classifier-bad-features.ubj"
RATE = 40
SEED = 16
CONVERSIONS = {"control": 0.10, "better": 0.30, "same": 0.10, "broken": 0.10}
ROLLOUT = {"interval": "15s", "failureThreshold": 2, "progressDeadline": "240s"}
ANALYSIS = {"minRequests": 10, "slo": {"maxErrorRate": 0.05, "maxLatencyP99": "1s"}}
ARM = '{namespace="{{ namespace }}", variant="{{ variant }}"}[{{ interval }}]'
EXPERIMENT = {
    "duration": "60s",
    "minSamples": 300,
    "minEffect": 0.05,
    "significance": 0.05,
    "metric": {
        "successQuery": f"sum(increase(loadgen_orders_total{ARM}))",
        "totalQuery": f"sum(increase(loadgen_visits_total{ARM}))",
    },
}


def variant(store: ModelStore, name: str, model: str) -> dict[str, Any]:
    served = {"name": MODEL_NAME, "version": f"1.1.0-{name}", **store.http(model)}
    return {"name": name, "weight": 20, "model": served}


def describe(arm: dict[str, Any]) -> str:
    """An arm's numbers as the closing note quotes them."""
    if arm.get("state") == "Cut":
        return f"Cut ({arm['reason']})"
    if arm.get("rate") is None:
        return f"{arm.get('outcome')} ({arm.get('samples')} samples)"
    words = f"{arm['rate']:.4f} of {arm['samples']}"
    if arm.get("pValue") is not None:
        words += (
            f", {arm['outcome']}, difference [{arm['differenceLow']:.4f}, "
            f"{arm['differenceHigh']:.4f}], p {arm['pValue']:.3g}, "
            f"Holm-adjusted {arm['adjustedPValue']:.3g}"
        )
    return words


def test_an_experiment_finds_the_better_variant_ignores_an_equal_one_and_cuts_a_broken_one(
    request: pytest.FixtureRequest,
    scenario: Scenario,
    prometheus: InClusterPrometheus,
    model_store: ModelStore,
):
    spec = manifest(scenario.name, model_store.http(GOOD), "1.0.0", 2, ROLLOUT, ANALYSIS)
    scenario.deploy(spec)
    scenario.start_load(rate=RATE, conversions=CONVERSIONS, seed=SEED)

    strategy = {
        "type": "experiment",
        "experiment": {
            **EXPERIMENT,
            "variants": [
                variant(model_store, "better", GOOD),
                variant(model_store, "same", GOOD),
                variant(model_store, "broken", REJECTS_INPUTS),
            ],
        },
    }
    scenario.patch({"strategy": strategy})

    def concluded() -> dict[str, Any] | None:
        experiment = scenario.status().get("experiment") or {}
        return experiment if experiment.get("phase") in ("Concluded", "Stopped") else None

    done = wait_for(concluded, 480, "the experiment's verdict", interval=2)
    arms = {arm["name"]: arm for arm in done["variants"]}
    control = done["control"]
    words = "; ".join(f"{name} {describe(arm)}" for name, arm in arms.items())
    _print(request.config, f"\nexperiment: control {describe(control)}; {words}")
    assert done["phase"] == "Concluded", done["message"]
    assert arms["broken"]["state"] == "Cut"
    assert "error-rate" in arms["broken"]["reason"]
    assert scenario.events("VariantCut"), "the cut is announced"
    assert arms["better"]["outcome"] == "Better"
    assert arms["better"]["adjustedPValue"] < 0.05
    assert arms["better"]["differenceLow"] > 0
    assert arms["same"]["outcome"] == "NoSignificantDifference"
    assert control["samples"] >= 300
    assert done["winner"] == "better"
    patch = json.loads(done["winnerPatch"])
    assert patch["spec"]["model"]["version"] == "1.1.0-better"
    assert patch["spec"]["strategy"] == {"type": "canary", "experiment": None}

    # Control serves all traffic again; the spec still asks for the experiment it ran.
    scenario.wait_settled(2)
    stored = scenario.tier.get("modeldeployment", scenario.name, scenario.namespace)
    assert stored is not None
    assert stored["spec"]["model"]["version"] == "1.0.0"
    assert scenario.status()["phase"] == "Available"

    assert scenario.load is not None
    outcomes = scenario.load.outcomes()
    served = {o.variant for o in outcomes if o.status == 200}
    assert {"control", "better", "same"} <= served, served
    refused = [o for o in failed(outcomes) if o.variant != "broken"]
    assert refused == [], "only the broken variant's refusals reached clients"
    visits = prometheus.value(
        f'sum(loadgen_visits_total{{namespace="{scenario.namespace}", variant="better"}})'
    )
    assert visits is not None
    assert visits >= 300
