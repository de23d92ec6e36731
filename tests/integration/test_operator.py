"""The operator as a real process against the real local API server (issue: operator core)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator_harness import (
    Objects,
    OperatorProcess,
    model_deployment,
    objects,
    operator,
    wait_for,
)

pytestmark = pytest.mark.integration
__all__ = ["objects", "operator"]  # fixtures used by the tests below

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _available(objects: Objects, name: str) -> dict | None:
    status = objects.status(name)
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return status if conditions.get("Available") == "True" else None


def _env(container: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_minimal_example_becomes_available_with_its_children(objects, operator):
    objects.apply((EXAMPLES / "minimal.yaml").read_text())
    objects.kubectl("wait", "--for=condition=Available", "md/fraud", "--timeout=60s")
    status = wait_for(lambda: _available(objects, "fraud"), 30, "fraud Available")
    md = objects.get("md", "fraud")
    assert md is not None
    assert status["phase"] == "Available"
    assert status["observedGeneration"] == md["metadata"]["generation"]
    assert status["stable"]["version"] == "1.0.0"
    assert status["stable"]["readyReplicas"] == 1

    deployment = objects.get("deployment", "fraud-stable")
    assert deployment is not None
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ModelDeployment", "fraud", True)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "fraud"
    assert labels["app.kubernetes.io/managed-by"] == "modeldeploy"
    assert labels["app.kubernetes.io/version"] == "1.0.0"
    assert labels["modeldeploy.dev/track"] == "stable"
    assert labels["modeldeploy.dev/revision"] == status["stable"]["revision"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "modelserver:test"
    env = _env(container)
    assert env["MODELSERVER_MODEL_URI"] == "https://models.example.com/fraud/1.0.0/model.ubj"
    assert env["MODELSERVER_MODEL_NAME"] == "fraud-detector"
    assert env["MODELSERVER_TRACK"] == "stable"
    assert env["MODELSERVER_NAMESPACE"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["startupProbe"]["failureThreshold"] * 5 >= 300
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"

    for service in ("fraud", "fraud-stable"):
        assert objects.get("service", service) is not None, f"Service {service} missing"
    # With the replicas router the canary's Service comes with the first canary.
    assert objects.get("service", "fraud-canary") is None
    client = objects.get("service", "fraud")
    assert client is not None
    # no canary: clients reach the stable's pods only
    assert client["spec"]["selector"]["modeldeploy.dev/track"] == "stable"

    table = objects.kubectl("get", "md", "fraud")
    header, row = table.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "PHASE", "STABLE", "CANARY"]
    assert row.split()[:3] == ["fraud", "Available", "1.0.0"]


def test_scaling_keeps_the_revision_and_a_new_model_version_makes_a_new_one(objects, operator):
    objects.apply(model_deployment("scaled"))
    first = wait_for(lambda: _available(objects, "scaled"), 60, "scaled Available")
    revision = first["stable"]["revision"]

    objects.patch_spec("scaled", {"replicas": 3, "rollout": {"steps": [10, 60]}})
    wait_for(
        lambda: objects.status("scaled").get("stable", {}).get("readyReplicas") == 3,
        60,
        "3 ready stable replicas",
    )
    status = objects.status("scaled")
    assert status["stable"]["revision"] == revision
    assert "canary" not in status
    assert objects.get("deployment", "scaled-canary") is None
    deployment = objects.get("deployment", "scaled-stable")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 3

    objects.patch_spec("scaled", {"model": {"version": "2.0.0"}})
    status = wait_for(
        lambda: objects.status("scaled").get("canary"), 60, "a canary for the new version"
    )
    assert status["version"] == "2.0.0"
    assert status["revision"] != revision
    assert objects.status("scaled")["revision"] == status["revision"]
    assert "CanaryStarted" in objects.event_reasons("scaled")
    canary_service = wait_for(
        lambda: objects.get("service", "scaled-canary"), 30, "the canary's Service"
    )
    assert canary_service["spec"]["selector"]["modeldeploy.dev/track"] == "canary"


def test_deleting_the_model_deployment_garbage_collects_its_children(objects, operator):
    objects.apply(model_deployment("doomed"))
    wait_for(lambda: _available(objects, "doomed"), 60, "doomed Available")
    objects.kubectl("delete", "md", "doomed", "--wait=true", "--timeout=30s")

    def gone() -> bool:
        selector = "modeldeploy.dev/modeldeployment=doomed"
        leftovers = [objects.items(kind, selector) for kind in ("deployments", "services", "pods")]
        return not any(leftovers)

    wait_for(gone, 60, "Deployments, Services and pods of doomed to be collected")


def test_a_conflicting_service_is_never_overwritten(objects, operator):
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "clash", "labels": {"team": "someone-else"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 8080}]},
    }
    objects.apply(foreign)
    objects.apply(model_deployment("clash"))

    def conflict() -> dict | None:
        for condition in objects.status("clash").get("conditions", []):
            if condition["type"] == "Stalled" and condition["reason"] == "NameConflict":
                return condition
        return None

    condition = wait_for(conflict, 60, "a NameConflict condition")
    assert condition["status"] == "True"
    ready = [c for c in objects.status("clash")["conditions"] if c["type"] == "Ready"]
    assert [(c["status"], c["reason"]) for c in ready] == [("False", "NameConflict")]
    assert "Service clash already exists" in condition["message"]
    assert objects.status("clash")["phase"] == "Failed"
    service = objects.get("service", "clash")
    assert service is not None
    assert service["spec"]["selector"] == {"app": "theirs"}
    assert service["metadata"]["labels"] == {"team": "someone-else"}
    assert "ownerReferences" not in service["metadata"]
    wait_for(lambda: "NameConflict" in objects.event_reasons("clash"), 30, "a NameConflict event")
    assert operator.alive()

    objects.kubectl("delete", "service", "clash")
    wait_for(lambda: _available(objects, "clash"), 90, "clash to recover once the name is free")


def test_operator_killed_mid_reconcile_converges_without_duplicates(objects, operator, tmp_path):
    names = [f"batch-{i}" for i in range(6)]
    for name in names:
        objects.apply(model_deployment(name, replicas=2))
    wait_for(lambda: objects.items("deployments"), 30, "the first Deployment")
    operator.kill()

    operator.start()
    for name in names:
        wait_for(partial(_available, objects, name), 90, f"{name} Available")
    deployments = objects.items("deployments")
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(
        f"{name}-stable" for name in names
    )
    for name in names:
        replica_sets = objects.items("replicasets", f"modeldeploy.dev/modeldeployment={name}")
        assert len(replica_sets) == 1, f"{name} has {len(replica_sets)} ReplicaSets"
        status = objects.status(name)
        assert status["observedGeneration"] == 1
        assert [h["outcome"] for h in status["history"]] == ["Deployed"]


def test_only_the_lease_holder_reconciles_and_a_standby_takes_over(objects, operator, tmp_path):
    standby = OperatorProcess(operator.kubeconfig, operator.namespace, tmp_path, "standby")
    standby.start()
    try:
        assert operator.leading()
        assert not standby.leading()
        objects.apply(model_deployment("ha"))
        wait_for(lambda: _available(objects, "ha"), 60, "ha Available")

        operator.kill()
        wait_for(standby.leading, 40, "the standby to take the Lease")
        objects.patch_spec("ha", {"replicas": 2})
        wait_for(
            lambda: objects.status("ha").get("stable", {}).get("readyReplicas") == 2,
            60,
            "the new leader to scale ha",
        )
    finally:
        standby.stop()


def test_operator_metrics_count_reconciles_and_phases(objects, operator):
    objects.apply(model_deployment("measured"))
    wait_for(lambda: _available(objects, "measured"), 60, "measured Available")
    text = operator.metrics()
    assert 'modeldeploy_reconciles_total{result="ok"}' in text
    assert "modeldeploy_reconcile_duration_seconds_count" in text
    phase_line = (
        f'modeldeploy_modeldeployments{{namespace="{objects.namespace}",phase="Available"}}'
    )
    wait_for(lambda: phase_line in operator.metrics(), 20, "the Available phase gauge")
