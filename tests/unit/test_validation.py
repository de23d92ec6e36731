"""The validation Job's manifest and the verdict on a finished Job: every bound, both
directions (scores and losses), a first deployment, failures and timeouts."""

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from modeldeploy import resources
from modeldeploy.api import ValidationSpec
from modeldeploy.validation import (
    job_name,
    model_url,
    termination_message,
    validation_job,
    verdict,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CANDIDATE = "http://fraud-canary.ml.svc/v2/models/fraud-detector/versions/2.1.0"
STABLE = "http://fraud-stable.ml.svc/v2/models/fraud-detector/versions/2.0.0"


def spec(**fields: Any) -> ValidationSpec:
    body: dict[str, Any] = {
        "dataset": {"uri": "pvc://holdout/fraud/h.csv", "format": "csv", "labelColumn": "y"},
        "metric": "auc",
    }
    return ValidationSpec.model_validate(body | fields)


def job(validation: ValidationSpec | None = None, **options: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "name": "fraud",
        "namespace": "ml",
        "uid": "0f7c",
        "revision": "a81f3c9e0b",
        "validation": validation or spec(min=0.9),
        "image": "registry.example.com/modelserver:1.2.0",
        "candidate_url": CANDIDATE,
        "stable_url": STABLE,
    }
    return validation_job(**(arguments | options))


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def args(manifest: dict[str, Any]) -> dict[str, str]:
    command = container(manifest)["args"]
    assert command[0] == "validate"
    return dict(arg.removeprefix("--").split("=", 1) for arg in command[1:])


# --- the Job ----------------------------------------------------------------------------------


def test_the_job_runs_one_pod_once_locked_down():
    manifest = job()
    assert manifest["apiVersion"] == "batch/v1"
    assert manifest["kind"] == "Job"
    assert manifest["spec"]["backoffLimit"] == 0
    pod = manifest["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    validate = container(manifest)
    assert validate["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert validate["command"] == ["modelserver"]
    assert validate["image"] == "registry.example.com/modelserver:1.2.0"
    assert validate["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert validate["terminationMessagePath"] == "/dev/termination-log"
    writable = {
        mount["mountPath"] for mount in validate["volumeMounts"] if not mount.get("readOnly")
    }
    assert writable == {"/var/cache/modelserver", "/tmp"}
    empty_dirs = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
    assert empty_dirs == {"cache", "tmp"}


def test_the_job_is_owned_and_labelled_but_selected_by_no_service():
    manifest = job()
    assert manifest["metadata"]["ownerReferences"] == [resources.owner_reference("fraud", "0f7c")]
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert labels[resources.MD_LABEL] == "fraud"
    assert labels[resources.REVISION_LABEL] == "a81f3c9e0b"
    assert labels["modeldeploy.dev/validation-attempt"] == "1"
    assert manifest["metadata"]["labels"] == labels
    for track in (None, "stable", "canary"):
        selector = resources.service("fraud", "ml", "0f7c", track)["spec"]["selector"]
        assert not selector.items() <= labels.items(), f"the {track} Service selects the Job"
    assert resources.HASH_ANNOTATION in manifest["metadata"]["annotations"]


@pytest.mark.parametrize(("timeout", "seconds"), [("10m", 600), ("1m30s", 90), ("2h", 7200)])
def test_the_deadline_is_the_timeout(timeout: str, seconds: int):
    manifest = job(spec(min=0.9, timeout=timeout))
    assert manifest["spec"]["activeDeadlineSeconds"] == seconds
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 3600


def test_the_arguments_name_the_dataset_metric_and_both_endpoints():
    validation = spec(
        dataset={"uri": "pvc://holdout/fraud/h.parquet", "format": "parquet", "labelColumn": "-y"},
        metric="logLoss",
        max=0.3,
        maxRows=5000,
    )
    assert args(job(validation)) == {
        "dataset-uri": "/mnt/dataset/fraud/h.parquet",
        "dataset-format": "parquet",
        "label-column": "-y",
        "metric": "logLoss",
        "candidate-url": CANDIDATE,
        "stable-url": STABLE,
        "cache-dir": "/var/cache/modelserver",
        "termination-log": "/dev/termination-log",
        "max-rows": "5000",
    }


def test_a_pvc_dataset_is_mounted_read_only_and_a_download_is_pinned():
    mounted = job()
    assert {"name": "dataset", "mountPath": "/mnt/dataset", "readOnly": True} in container(mounted)[
        "volumeMounts"
    ]
    assert {
        "name": "dataset",
        "persistentVolumeClaim": {"claimName": "holdout", "readOnly": True},
    } in mounted["spec"]["template"]["spec"]["volumes"]
    digest = "AB" * 32
    remote = job(
        spec(
            min=0.9,
            dataset={
                "uri": "https://data.example.com/h.csv",
                "sha256": digest,
                "format": "csv",
                "labelColumn": "y",
            },
        )
    )
    assert args(remote)["dataset-uri"] == "https://data.example.com/h.csv"
    assert args(remote)["dataset-sha256"] == digest.lower()
    assert all(
        "persistentVolumeClaim" not in v for v in remote["spec"]["template"]["spec"]["volumes"]
    )


def test_a_first_deployment_has_no_stable_endpoint():
    assert "stable-url" not in args(job(stable_url=None))


def test_scheduling_follows_the_servers():
    manifest = job(
        image_pull_policy="IfNotPresent",
        node_selector={"pool": "ml"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    pod = manifest["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "ml"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert container(manifest)["imagePullPolicy"] == "IfNotPresent"
    plain = job()["spec"]["template"]["spec"]
    assert "nodeSelector" not in plain
    assert "tolerations" not in plain


@pytest.mark.parametrize("length", [1, 20, 41, 42, 50, 56])
def test_job_names_fit_63_characters(length: int):
    name = ("f" * length)[:length]
    made = job_name(name, "a81f3c9e0b", spec(min=0.9), 3)
    assert len(made) <= 63
    assert DNS_LABEL.match(made)
    assert "-val-a81f3c9e0b-" in made
    if length <= 41:
        assert made.startswith(f"{name}-val-")


def test_job_names_are_unique_per_object_revision_spec_and_attempt():
    validation = spec(min=0.9)
    base = job_name("fraud", "a81f3c9e0b", validation, 1)
    assert job_name("fraud", "a81f3c9e0b", validation, 1) == base
    others = {
        job_name("fraud", "0000000000", validation, 1),
        job_name("fraud", "a81f3c9e0b", validation, 2),
        job_name("fraud", "a81f3c9e0b", spec(min=0.8), 1),
        job_name("fraud2", "a81f3c9e0b", validation, 1),
    }
    assert base not in others
    assert len(others) == 4
    long_a, long_b = "m" * 55 + "a", "m" * 55 + "b"
    assert job_name(long_a, "a81f3c9e0b", validation, 1) != job_name(
        long_b, "a81f3c9e0b", validation, 1
    )
    assert job(attempt=2)["metadata"]["name"] == job_name("fraud", "a81f3c9e0b", spec(min=0.9), 2)


def test_model_urls_pin_the_version_and_escape_names():
    assert model_url("fraud-canary", "ml", "fraud-detector", "2.1.0") == CANDIDATE
    assert model_url("s", "ns", "a b", "1/2").endswith("/v2/models/a%20b/versions/1%2F2")


# --- the termination message ------------------------------------------------------------------


def pod(created: str, state: dict[str, Any], name: str = "validate") -> dict[str, Any]:
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"containerStatuses": [{"name": name, "state": state}]},
    }


def test_the_termination_message_of_the_newest_ended_pod():
    line = '{"metric": "auc", "candidate": 0.9, "stable": 0.8, "rows": 10}'
    pods = [
        pod("2026-12-01T07:00:00Z", {"terminated": {"reason": "Error", "message": "old"}}),
        pod("2026-12-01T07:05:00Z", {"terminated": {"reason": "Completed", "message": line}}),
    ]
    assert termination_message(pods) == line
    killed = [pod("2026-12-01T07:00:00Z", {"terminated": {"reason": "OOMKilled", "exitCode": 137}})]
    assert termination_message(killed) == "OOMKilled"
    assert termination_message([pod("2026-12-01T07:00:00Z", {"running": {}})]) is None
    assert termination_message([]) is None


# --- verdicts ---------------------------------------------------------------------------------


def finished(condition: str = "Complete", reason: str | None = None) -> dict[str, Any]:
    entry = {"type": condition, "status": "True"} | ({"reason": reason} if reason else {})
    return {"status": {"conditions": [entry]}}


def measured(metric: str, candidate: float, stable: float | None, rows: int = 1000) -> str:
    return json.dumps({"metric": metric, "candidate": candidate, "stable": stable, "rows": rows})


def judged(validation: ValidationSpec, candidate: float, stable: float | None, has_stable=True):
    return verdict(
        finished(), measured(validation.metric, candidate, stable), validation, has_stable
    )


def test_a_running_job_is_pending():
    validation = spec(min=0.9)
    not_yet_failed = {"status": {"conditions": [{"type": "Failed", "status": "False"}]}}
    for running in ({}, {"status": {"active": 1}}, not_yet_failed):
        result = verdict(running, None, validation, True)
        assert result.verdict == "Pending"
        assert result.min == 0.9


@pytest.mark.parametrize(
    ("bounds", "metric", "candidate", "stable", "message"),
    [
        ({"min": 0.9}, "auc", 0.81, 0.93, "auc 0.81 < min 0.9"),
        ({"max": 50}, "rmse", 52.1, 40, "rmse 52.1 > max 50"),
        (
            {"maxDropVsStable": 0.01},
            "auc",
            0.89,
            0.93,
            "auc dropped 0.04 vs stable 0.93 > maxDropVsStable 0.01",
        ),
        (
            {"maxDropVsStable": 0.01},
            "logLoss",
            0.25,
            0.2,
            "logLoss rose 0.05 vs stable 0.2 > maxDropVsStable 0.01",
        ),
        (
            {"minImprovementOverStable": 0.01},
            "accuracy",
            0.905,
            0.9,
            "accuracy rose only 0.005 vs stable 0.9 < minImprovementOverStable 0.01",
        ),
        (
            {"minImprovementOverStable": 1},
            "mae",
            9.5,
            10,
            "mae fell only 0.5 vs stable 10 < minImprovementOverStable 1",
        ),
        (
            {"minImprovementOverStable": 0},
            "f1",
            0.7,
            0.8,
            "f1 did not improve (0.7) vs stable 0.8 < minImprovementOverStable 0",
        ),
    ],
)
def test_each_bound_fails_naming_itself(bounds, metric, candidate, stable, message):
    result = judged(spec(metric=metric, **bounds), candidate, stable)
    assert result.verdict == "Fail"
    assert result.message == message
    assert (result.candidate, result.stable, result.rows) == (candidate, stable, 1000)


@pytest.mark.parametrize(
    ("bounds", "metric", "candidate", "stable"),
    [
        ({"min": 0.9, "max": 1}, "auc", 0.9, 0.95),
        ({"maxDropVsStable": 0.01}, "auc", 0.92, 0.93),  # 0.93 - 0.92 is 0.01000...0009
        ({"maxDropVsStable": 0.01}, "logLoss", 0.21, 0.2),
        ({"maxDropVsStable": 0}, "rmse", 40, 41),  # a lower loss is better
        ({"minImprovementOverStable": 0.01}, "accuracy", 0.91, 0.9),
        ({"minImprovementOverStable": 1}, "rmse", 39, 40),
    ],
)
def test_values_within_the_bounds_pass(bounds, metric, candidate, stable):
    result = judged(spec(metric=metric, **bounds), candidate, stable)
    assert result.verdict == "Pass", result.message


def test_every_failed_bound_is_named():
    result = judged(spec(min=0.9, maxDropVsStable=0.01), 0.85, 0.93)
    assert result.message == (
        "auc 0.85 < min 0.9; auc dropped 0.08 vs stable 0.93 > maxDropVsStable 0.01"
    )


def test_a_pass_says_what_was_checked():
    result = judged(spec(min=0.9, maxDropVsStable=0.01), 0.93, 0.91)
    assert result.message == "auc 0.93 (stable 0.91) within min 0.9, maxDropVsStable 0.01"


def test_a_first_deployment_is_judged_by_absolute_bounds_only():
    validation = spec(min=0.9, maxDropVsStable=0.01, minImprovementOverStable=0.02)
    result = judged(validation, 0.91, None, has_stable=False)
    assert result.verdict == "Pass"
    assert result.message == (
        "auc 0.91 within min 0.9; no stable yet, so maxDropVsStable and "
        "minImprovementOverStable not checked"
    )
    assert (result.stable, result.max_drop_vs_stable, result.min_improvement_over_stable) == (
        None,
        None,
        None,
    )
    assert judged(validation, 0.85, None, has_stable=False).message == "auc 0.85 < min 0.9"


def test_a_timed_out_job_is_an_error():
    result = verdict(finished("Failed", "DeadlineExceeded"), None, spec(min=0.9), True)
    assert result.verdict == "Error"
    assert result.message == (
        "validation did not finish within its timeout of 10m (the Job was stopped at its deadline)"
    )


def test_a_failed_job_is_an_error_with_its_reason():
    line = json.dumps({"error": "dataset sha256 mismatch: ...", "kind": "dataset"})
    result = verdict(finished("Failed", "BackoffLimitExceeded"), line, spec(min=0.9), True)
    assert result.verdict == "Error"
    assert result.message == "validation failed (dataset): dataset sha256 mismatch: ..."


@pytest.mark.parametrize(
    ("termination", "message"),
    [
        (
            "Traceback (most recent call last):\n  ...\nImportError: no module named arro3\n",
            "the validation Job failed (BackoffLimitExceeded): ImportError: no module named arro3",
        ),
        ("OOMKilled", "the validation Job failed (BackoffLimitExceeded): OOMKilled"),
        (None, "the validation Job failed (BackoffLimitExceeded) without saying why"),
    ],
)
def test_a_job_that_failed_without_a_result_line_is_an_error(termination, message):
    result = verdict(finished("Failed", "BackoffLimitExceeded"), termination, spec(min=0.9), True)
    assert result.verdict == "Error"
    assert result.message == message


@pytest.mark.parametrize(
    ("termination", "has_stable", "message"),
    [
        ("", True, "succeeded but left no result in its termination message: none"),
        (measured("f1", 0.9, 0.9), True, "the validation Job measured 'f1', the spec asks for auc"),
        (measured("auc", 0.9, None), True, "reported no stable value, and a stable exists"),
        (
            json.dumps({"metric": "auc", "candidate": "high"}),
            False,
            "reported no candidate value",
        ),
    ],
)
def test_a_result_that_cannot_be_judged_is_an_error(termination, has_stable, message):
    result = verdict(finished(), termination, spec(min=0.9), has_stable)
    assert result.verdict == "Error"
    assert message in result.message


def test_a_result_line_among_logs_is_found():
    logs = "INFO dataset h.csv: 1000 rows\n" + measured("auc", 0.95, 0.94) + "\n"
    assert verdict(finished(), logs, spec(min=0.9), True).verdict == "Pass"


def test_the_result_becomes_the_status():
    result = judged(spec(min=0.9, maxDropVsStable=0.01), 0.81, 0.93)
    at = datetime(2026, 12, 1, 7, tzinfo=UTC)
    status = result.status(
        revision="a81f3c9e0b", job="fraud-val-a81f3c9e0b-1a2b3c", attempts=1, at=at
    )
    assert status.model_dump(mode="json", by_alias=True, exclude_none=True) == {
        "revision": "a81f3c9e0b",
        "verdict": "Fail",
        "metric": "auc",
        "candidate": 0.81,
        "stable": 0.93,
        "rows": 1000,
        "min": 0.9,
        "maxDropVsStable": 0.01,
        "message": "auc 0.81 < min 0.9; auc dropped 0.12 vs stable 0.93 > maxDropVsStable 0.01",
        "attempts": 1,
        "job": "fraud-val-a81f3c9e0b-1a2b3c",
        "at": "2026-12-01T07:00:00Z",
    }
