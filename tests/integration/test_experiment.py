"""The A/B experiment on the real local API server (issue 16): the operator process starts
each variant's Deployment and Service, pins arms by header and splits the rest by weight in
the HTTPRoute, cuts a variant whose SLO checks fail, and after the duration judges the arms
from a scripted Prometheus; the spec is never changed, and the winner's patch, applied,
rolls the winner out as a canary."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.operator_harness import (
    Objects,
    model_deployment,
    objects,
    operator,
    wait_for,
)
from tests.integration.test_model_gates import prometheus
from tests.support.scripted_prometheus import ScriptedPrometheus

pytestmark = pytest.mark.integration
__all__ = ["objects", "operator", "prometheus"]  # fixtures used by the tests below

SUCCESS = 'sum(increase(shop_orders_total{variant="{{ variant }}"}[{{ interval }}]))'
TOTAL = 'sum(increase(shop_visits_total{variant="{{ variant }}"}[{{ interval }}]))'


def variant(name: str, weight: int) -> dict[str, Any]:
    version = f"2.0.0-{name}"
    model = {
        "name": "fraud-detector",
        "version": version,
        "uri": f"https://models.example.com/fraud/{version}/model.ubj",
        "sha256": "cd" * 32,
    }
    return {"name": name, "weight": weight, "model": model}


def deploy(objects: Objects, name: str, prom: ScriptedPrometheus) -> None:
    body: dict[str, Any] = {
        "replicas": 2,
        "traffic": {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "shop-gw"}]}},
        "strategy": {
            "type": "experiment",
            "experiment": {
                "variants": [variant("deep", 25), variant("slow", 25)],
                "duration": "8s",
                "minSamples": 1000,
                "metric": {"successQuery": SUCCESS, "totalQuery": TOTAL},
            },
        },
        "rollout": {
            "steps": [50],
            "interval": "2s",
            "failureThreshold": 2,
            "progressDeadline": "60s",
        },
        "analysis": {"prometheus": {"url": prom.url, "timeout": "2s"}, "minRequests": 20},
    }
    objects.apply(model_deployment(name, **body))


def conversions(prom: ScriptedPrometheus, arm: str, orders: float, visits: float) -> None:
    prom.set('shop_orders_total{variant="' + arm + '"}', value=orders)
    prom.set('shop_visits_total{variant="' + arm + '"}', value=visits)


def env_of(objects: Objects, deployment: str) -> dict[str, str]:
    found = objects.get("deployment", deployment)
    assert found is not None, f"Deployment {deployment} missing"
    container = found["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def stored(objects: Objects, name: str) -> dict[str, Any]:
    found = objects.get("modeldeployment", name)
    assert found is not None
    return found


def experiment(objects: Objects, name: str) -> dict[str, Any]:
    return dict(objects.status(name).get("experiment") or {})


def test_an_experiment_cuts_a_failing_variant_finds_the_better_one_and_offers_its_patch(
    objects: Objects, operator: Any, prometheus: ScriptedPrometheus
):
    prometheus.healthy("v-deep")
    prometheus.set_track("v-slow", requests=100, error_rate=0.3, p99=0.05)
    conversions(prometheus, "control", 1_000, 10_000)
    conversions(prometheus, "deep", 1_400, 10_000)
    conversions(prometheus, "slow", 0, 0)
    deploy(objects, "shop", prometheus)
    generation = stored(objects, "shop")["metadata"]["generation"]

    wait_for(lambda: experiment(objects, "shop").get("readyAt"), 90, "the variants' pods")
    assert objects.status("shop")["phase"] == "Experimenting"
    assert env_of(objects, "shop-stable")["MODELSERVER_VARIANT"] == "control"
    deep = env_of(objects, "shop-v-deep")
    assert (deep["MODELSERVER_VARIANT"], deep["MODELSERVER_TRACK"]) == ("deep", "v-deep")
    assert deep["MODELSERVER_MODEL_VERSION"] == "2.0.0-deep"
    assert objects.get("service", "shop-v-deep") is not None

    def split() -> dict[str, int] | None:
        route = objects.get("httproute", "shop")
        if route is None:
            return None
        return {r["name"]: r["weight"] for r in route["spec"]["rules"][-1]["backendRefs"]}

    wait_for(
        lambda: split() == {"shop-stable": 50, "shop-v-deep": 25, "shop-v-slow": 25},
        30,
        "the weighted split",
    )
    route = objects.get("httproute", "shop")
    assert route is not None
    pins = {
        rule["matches"][0]["headers"][0]["value"]: rule["backendRefs"][0]["name"]
        for rule in route["spec"]["rules"][:-1]
    }
    assert pins == {"control": "shop-stable", "deep": "shop-v-deep", "slow": "shop-v-slow"}

    # slow's error rate fails its SLO twice: it is cut, its share returns to control.
    wait_for(lambda: objects.get("deployment", "shop-v-slow") is None, 60, "slow cut")
    assert objects.get("service", "shop-v-slow") is None
    slow = experiment(objects, "shop")["variants"][1]
    assert slow["state"] == "Cut"
    assert "error-rate" in slow["reason"]
    assert "VariantCut" in objects.event_reasons("shop")

    done = wait_for(
        lambda: (
            experiment(objects, "shop")
            if experiment(objects, "shop").get("phase") == "Concluded"
            else None
        ),
        90,
        "the verdict",
    )
    deep_arm = done["variants"][0]
    assert deep_arm["outcome"] == "Better"
    assert deep_arm["adjustedPValue"] < 0.05
    assert deep_arm["rate"] == pytest.approx(0.14)
    assert done["control"]["rate"] == pytest.approx(0.10)
    assert done["winner"] == "deep"
    assert any(
        'shop_orders_total{variant="deep"}[' in q and "s]))" in q for q in prometheus.queries
    ), "the window since the arms were ready was filled in"
    # Control serves all traffic again; nothing of the spec changed.
    wait_for(lambda: objects.get("deployment", "shop-v-deep") is None, 30, "deep removed")
    wait_for(lambda: split() == {"shop-stable": 100, "shop-canary": 0}, 30, "all on control")
    assert objects.status("shop")["phase"] == "Available"
    assert stored(objects, "shop")["metadata"]["generation"] == generation

    # The patch in status makes the winner the model, rolled out as a canary.
    prometheus.healthy()
    objects.kubectl(
        "patch", "modeldeployment", "shop", "--type", "merge", "-p", done["winnerPatch"]
    )
    spec = stored(objects, "shop")["spec"]
    assert spec["model"]["version"] == "2.0.0-deep"
    assert spec["strategy"]["type"] == "canary"
    assert "experiment" not in spec["strategy"]
    entry = wait_for(lambda: objects.outcome("shop", "2.0.0-deep"), 90, "the winner promoted")
    assert entry["outcome"] == "Promoted"
    assert json.loads(done["winnerPatch"])["spec"]["model"]["sha256"] == "cd" * 32
