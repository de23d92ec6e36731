"""blueGreen and direct on the real local API server, judged by a scripted Prometheus."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.operator_harness import (
    Objects,
    model_deployment,
    objects,
    operator,
    wait_for,
)
from tests.integration.test_canary import canary_spec, deploy_stable, new_version, prometheus

pytestmark = pytest.mark.integration
__all__ = ["objects", "operator", "prometheus"]  # fixtures used by the tests below

TRACK = "modeldeploy.dev/track"


def blue_green(**settings: Any) -> dict[str, Any]:
    block = {"previewDuration": "4s", "scaleDownDelay": "6s", **settings}
    return {"strategy": {"type": "blueGreen", "blueGreen": block}}


def direct(intervals: int = 2) -> dict[str, Any]:
    return {"strategy": {"type": "direct", "direct": {"analysisIntervals": intervals}}}


def selector(objects: Objects, service: str) -> dict[str, str]:
    found = objects.get("service", service)
    assert found is not None, f"Service {service} missing"
    return dict(found["spec"]["selector"])


def deployed_version(objects: Objects, deployment: str) -> str | None:
    found = objects.get("deployment", deployment)
    if found is None:
        return None
    return str(found["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"])


def test_blue_green_previews_without_live_traffic_switches_at_once_then_settles(
    objects, operator, prometheus
):
    prometheus.healthy()
    deploy_stable(objects, "bg", prometheus, **blue_green())
    new_version(objects, "bg")

    wait_for(lambda: (objects.status("bg").get("canary") or {}).get("readyAt"), 60, "preview")
    if not (objects.status("bg").get("canary") or {}).get("switchedAt"):
        assert selector(objects, "bg")[TRACK] == "stable", "no live traffic before the switch"
    assert selector(objects, "bg-next")[TRACK] == "canary"

    status = wait_for(lambda: (s := objects.status("bg")).get("previous") and s, 60, "the switch")
    if status["phase"] == "Promoting":
        assert selector(objects, "bg")[TRACK] == "canary", "all traffic on the new pods"
        assert status["stable"]["version"] == "2.0.0"
        assert status["previous"]["version"] == "1.0.0"
    assert "Switched" in objects.event_reasons("bg")

    entry = wait_for(lambda: objects.outcome("bg", "2.0.0"), 90, "the promotion")
    assert entry["outcome"] == "Promoted"
    assert selector(objects, "bg")[TRACK] == "stable", "no canary left: the stable only"
    assert deployed_version(objects, "bg-stable") == "2.0.0"
    wait_for(lambda: objects.get("deployment", "bg-canary") is None, 30, "canary removed")
    assert "previous" not in objects.status("bg")


def test_a_blue_green_switch_is_undone_at_once_when_live_traffic_fails(
    objects, operator, prometheus
):
    prometheus.healthy()
    deploy_stable(
        objects,
        "bgback",
        prometheus,
        **blue_green(scaleDownDelay="60s", postPromotionAnalysis="20s"),
    )
    new_version(objects, "bgback")
    wait_for(lambda: (objects.status("bgback").get("canary") or {}).get("switchedAt"), 60, "switch")
    prometheus.set_track("canary", requests=100, error_rate=0.3)

    entry = wait_for(lambda: objects.outcome("bgback", "2.0.0"), 60, "the switch back")
    assert entry["outcome"] == "RolledBack"
    assert entry["reason"].startswith("FailedChecks")
    status = objects.status("bgback")
    assert status["stable"]["version"] == "1.0.0"
    assert selector(objects, "bgback").get(TRACK) != "canary"
    assert deployed_version(objects, "bgback-stable") == "1.0.0", "the standby served all along"


def test_direct_replaces_stable_in_place_and_is_promoted_after_its_analyses(
    objects, operator, prometheus
):
    prometheus.healthy()
    prometheus.healthy("stable")
    deploy_stable(objects, "dir", prometheus, **direct(intervals=2))
    new_version(objects, "dir")

    entry = wait_for(lambda: objects.outcome("dir", "2.0.0"), 90, "the promotion")
    assert entry["outcome"] == "Promoted"
    assert deployed_version(objects, "dir-stable") == "2.0.0"
    assert objects.get("deployment", "dir-canary") is None, "direct runs no canary Deployment"
    assert any('track="stable"' in q for q in prometheus.queries), "it judges the stable track"


def test_a_failing_direct_replacement_is_rolled_back_in_place(objects, operator, prometheus):
    prometheus.healthy()
    prometheus.healthy("stable")
    deploy_stable(objects, "dirback", prometheus, **direct(intervals=3))
    prometheus.set_track("stable", requests=100, error_rate=0.3)
    new_version(objects, "dirback")

    entry = wait_for(lambda: objects.outcome("dirback", "2.0.0"), 90, "the rollback")
    assert entry["outcome"] == "RolledBack"
    status = objects.status("dirback")
    assert status["stable"]["version"] == "1.0.0"
    wait_for(
        lambda: deployed_version(objects, "dirback-stable") == "1.0.0", 30, "stable rolled back"
    )


def test_turning_autoscaling_on_hands_the_stable_size_to_an_hpa_without_resetting_it(
    objects, operator, prometheus
):
    prometheus.healthy()
    deploy_stable(objects, "auto", prometheus, replicas=3)
    before = objects.get("deployment", "auto-stable")
    assert before is not None
    objects.patch_spec("auto", {"autoscaling": {"minReplicas": 2, "maxReplicas": 6}})

    hpa = wait_for(lambda: objects.get("hpa", "auto"), 60, "the HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "auto-stable"

    def reapplied() -> dict[str, Any] | None:
        found = objects.get("deployment", "auto-stable", managed_fields=True)
        hash_key = "modeldeploy.dev/applied-hash"
        old, new = (d["metadata"]["annotations"][hash_key] for d in (before, found or before))
        return found if found is not None and new != old else None

    after = wait_for(reapplied, 60, "the stable Deployment applied without its size")
    assert after["spec"]["replicas"] == 3, "dropping the field must not reset it to 1 pod"
    owners = {
        entry["manager"]
        for entry in after["metadata"]["managedFields"]
        if "f:replicas" in entry.get("fieldsV1", {}).get("f:spec", {})
    }
    assert "modeldeploy-handover" in owners
    assert "modeldeploy" not in owners, "the operator no longer applies the size"
    wait_for(
        lambda: "spec.replicas is ignored" in objects.status("auto").get("message", ""),
        30,
        "status saying spec.replicas is ignored",
    )


def test_kubectl_scale_sizes_a_model_deployment_that_is_not_autoscaled(
    objects, operator, prometheus
):
    prometheus.healthy()
    deploy_stable(objects, "scaled", prometheus, replicas=1)
    objects.kubectl("scale", "md", "scaled", "--replicas=3")
    md = objects.get("md", "scaled")
    assert md is not None
    assert md["spec"]["replicas"] == 3
    wait_for(
        lambda: (
            (objects.get("deployment", "scaled-stable") or {}).get("spec", {}).get("replicas") == 3
        ),
        60,
        "the stable Deployment scaled to 3",
    )
    wait_for(lambda: objects.status("scaled").get("replicas") == 3, 60, "status.replicas 3")


# A hold-out set behind HTTPS with its pin: no volume, so the Job's pod needs no claim.
HOLDOUT_CHECK = {
    "dataset": {
        "uri": "https://data.example.com/holdout.csv",
        "sha256": "cd" * 32,
        "format": "csv",
        "labelColumn": "y",
    },
    "metric": "auc",
    "min": 0.9,
    "maxDropVsStable": 0.01,
}


def validation_jobs(objects: Objects, name: str) -> list[dict[str, Any]]:
    jobs = objects.items("jobs", f"app.kubernetes.io/instance={name}")
    return sorted(jobs, key=lambda job: job["metadata"]["creationTimestamp"])


def test_a_first_revision_with_an_offline_check_serves_no_client_until_it_passes(
    objects, operator, prometheus
):
    """kwok completes the Job's pod without the validate command's report, so each Job is
    an Error: retried in a new Job, then rejected at the inconclusive limit. Until then and
    after, the clients' Service selects no pod."""
    spec = canary_spec(prometheus, inconclusiveLimit=2)
    objects.apply(model_deployment("first", validation=HOLDOUT_CHECK, **spec))

    job = wait_for(lambda: next(iter(validation_jobs(objects, "first")), None), 60, "a Job")
    assert selector(objects, "first")[TRACK] not in ("stable", "canary"), "no client yet"
    assert objects.status("first")["phase"] == "Pending"
    args = " ".join(job["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--candidate-url=http://first-stable." in args, args
    assert "--stable-url" not in args, "a first revision has no stable to compare with"

    entry = wait_for(lambda: objects.outcome("first", "1.0.0"), 120, "the rejection")
    assert entry["outcome"] == "RolledBack"
    assert entry["reason"].startswith("ValidationInconclusive"), entry
    assert "left no result" in entry["reason"], entry
    assert len(validation_jobs(objects, "first")) == 2, "one new Job per attempt"
    status = objects.status("first")
    assert status["phase"] == "RolledBack"
    assert "nothing serves" in status["message"]
    assert status["validation"]["verdict"] == "Error"
    assert selector(objects, "first")[TRACK] not in ("stable", "canary")
    wait_for(
        lambda: (objects.get("deployment", "first-stable") or {})["spec"]["replicas"] == 0,
        30,
        "its pods scaled to zero",
    )
    assert "ValidationError" in objects.event_reasons("first")

    objects.annotate("first", "modeldeploy.dev/retry", "1")
    wait_for(lambda: len(validation_jobs(objects, "first")) == 3, 60, "a Job for the retry")
