"""The shadow phase on the real local API server (issue 16): the operator process writes
the mirror target the stable pods mount, keeps clients on the stable, and judges the
shadow's agreement from a scripted Prometheus shaped like the server's counters."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modeldeploy import model_promql as mq
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

TRACK = "modeldeploy.dev/track"


def deploy(objects: Objects, name: str, prom: ScriptedPrometheus, kind: str) -> None:
    body: dict[str, Any] = {
        "strategy": {
            "type": kind,
            "shadow": {"mirrorPercent": 50, "analyses": 2, "minAgreement": 0.95, "minRows": 100},
        },
        "rollout": {
            "steps": [50],
            "interval": "2s",
            "failureThreshold": 1,
            "progressDeadline": "60s",
        },
        "analysis": {"prometheus": {"url": prom.url, "timeout": "2s"}, "minRequests": 20},
    }
    objects.apply(model_deployment(name, **body))
    wait_for(lambda: objects.status(name).get("phase") == "Available", 60, f"{name} Available")


def agreement(prom: ScriptedPrometheus, agree: float, disagree: float) -> None:
    prom.set_series(
        mq.SHADOW_ROWS,
        series=[
            ({"track": "canary", "result": "agree"}, agree),
            ({"track": "canary", "result": "disagree"}, disagree),
            ({"track": "canary", "result": "unmatched"}, 7),
        ],
    )


def mirror_target(objects: Objects, name: str) -> dict[str, Any]:
    config = objects.get("configmap", f"{name}-mirror")
    assert config is not None, f"ConfigMap {name}-mirror missing"
    return dict(json.loads(config["data"]["mirror.json"]))


def client_tracks(objects: Objects, name: str) -> str | None:
    service = objects.get("service", name)
    assert service is not None
    return service["spec"]["selector"].get(TRACK)


def in_shadow(objects: Objects, name: str) -> bool:
    canary = objects.status(name).get("canary") or {}
    return canary.get("stage") == "Shadow" and canary.get("readyAt") is not None


def test_a_shadow_that_disagrees_is_rejected_and_never_served_clients(
    objects: Objects, operator: Any, prometheus: ScriptedPrometheus
):
    deploy(objects, "shady", prometheus, "canary")
    pod = objects.get("deployment", "shady-stable")
    assert pod is not None
    volumes = pod["spec"]["template"]["spec"]["volumes"]
    mounted = [v["configMap"] for v in volumes if "configMap" in v]
    assert [(m["name"], m.get("optional")) for m in mounted] == [("shady-mirror", True)]
    assert mirror_target(objects, "shady") == {}, "nothing to mirror to before a shadow"
    agreement(prometheus, agree=800, disagree=200)
    objects.patch_spec("shady", {"model": {"version": "2.0.0"}})

    wait_for(lambda: in_shadow(objects, "shady"), 60, "the shadow's pods")
    target = wait_for(lambda: mirror_target(objects, "shady") or None, 30, "the mirror target")
    url = f"http://shady-canary.{objects.namespace}.svc:80"
    assert target == {"url": url, "percent": 50, "model": "fraud-detector"}
    assert client_tracks(objects, "shady") == "stable", "clients never reach a shadow"

    entry = wait_for(lambda: objects.outcome("shady", "2.0.0"), 60, "the rejection")
    assert entry["outcome"] == "RolledBack"
    assert "shadow-agreement" in entry["reason"]
    checks = {c["name"]: c for c in objects.status("shady")["lastAnalysis"]["checks"]}
    assert checks["shadow-agreement"]["verdict"] == "Fail"
    assert checks["shadow-agreement"]["value"] == 0.8
    assert checks["shadow-agreement"]["min"] == 0.95
    assert "800 of 1000 mirrored rows" in checks["shadow-agreement"]["message"]
    wait_for(lambda: mirror_target(objects, "shady") == {}, 30, "the mirror switched off")
    assert client_tracks(objects, "shady") == "stable"
    assert "CanaryStarted" not in objects.event_reasons("shady")
    assert any(
        'track="canary"' in q and 'model_version="2.0.0"' in q
        for q in prometheus.queries
        if mq.SHADOW_ROWS in q
    )


def test_a_shadow_that_agrees_moves_on_to_its_canary_and_is_promoted(
    objects: Objects, operator: Any, prometheus: ScriptedPrometheus
):
    deploy(objects, "twin", prometheus, "canary")
    agreement(prometheus, agree=995, disagree=5)
    objects.patch_spec("twin", {"model": {"version": "2.0.0"}})

    wait_for(lambda: in_shadow(objects, "twin"), 60, "the shadow's pods")
    entry = wait_for(lambda: objects.outcome("twin", "2.0.0"), 90, "the promotion")
    assert entry["outcome"] == "Promoted"
    reasons = set(objects.event_reasons("twin"))
    assert {"ShadowStarted", "ShadowReady", "ShadowPassed", "CanaryStarted"} <= reasons
    assert mirror_target(objects, "twin") == {}
    assert objects.status("twin")["stable"]["version"] == "2.0.0"
