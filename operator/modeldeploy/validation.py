"""The offline champion-challenger check, operator side (pure): the Kubernetes Job that
runs `modelserver validate` from the server image, and the verdict on what it reported.

The Job's pod writes one JSON line to its termination message (docs/validation.md):
`{"metric": "auc", "candidate": 0.93, "stable": 0.91, "rows": 1000}` when it measured,
`{"error": "...", "kind": "dataset"}` (exit status 1) when it could not. The bounds are
judged here, so changing them needs no new Job.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from modeldeploy.api import (
    LOWER_IS_BETTER,
    ValidationSpec,
    ValidationStatus,
    ValidationVerdict,
    duration_seconds,
)
from modeldeploy.resources import (
    CACHE_DIR,
    MANAGED_BY,
    MD_LABEL,
    REVISION_LABEL,
    SERVER_USER,
    owner_reference,
    with_hash,
)

CONTAINER = "validate"
COMPONENT = "validation"
ATTEMPT_LABEL = "modeldeploy.dev/validation-attempt"
DATASET_MOUNT = "/mnt/dataset"
TERMINATION_LOG = "/dev/termination-log"
JOB_TTL_SECONDS = 3600
# Kubernetes names and label values hold 63 characters at most.
_NAME_LIMIT = 63
_KEY_LENGTH = 6
_NAME_HASH_LENGTH = 4
# Differences of metrics are compared with this slack, so 0.93 - 0.92 counts as 0.01.
_TOLERANCE = 1e-9
_REASON_LIMIT = 500


def job_name(name: str, revision: str, validation: ValidationSpec, attempt: int) -> str:
    """`NAME-val-REVISION-KEY`, within 63 characters.

    KEY hashes the validation spec and the attempt, so a changed dataset or bound, or a retry
    after an Error, gets a Job of its own instead of the result of an earlier one. A NAME too
    long to fit is cut and followed by a hash of the whole name, so that names stay unique.
    """
    spec = validation.model_dump(mode="json", by_alias=True)
    key = _digest(json.dumps({"spec": spec, "attempt": attempt}, sort_keys=True))[:_KEY_LENGTH]
    suffix = f"-val-{revision}-{key}"
    room = _NAME_LIMIT - len(suffix)
    if len(name) > room:
        name = f"{name[: room - _NAME_HASH_LENGTH - 1].rstrip('-')}-{_digest(name)[:4]}"
    return name + suffix


def model_url(service: str, namespace: str, model_name: str, version: str) -> str:
    """A model's V2 URL behind a Service of the ModelDeployment (port 80), pinned to its
    version: a pod serving another version answers 404 instead of a wrong result."""
    return (
        f"http://{service}.{namespace}.svc/v2/models/{quote(model_name, safe='')}"
        f"/versions/{quote(version, safe='')}"
    )


def dataset_location(uri: str) -> tuple[str, dict[str, Any] | None]:
    """The URI the Job is given and, for pvc://claim/path, the volume to mount."""
    if not uri.startswith("pvc://"):
        return uri, None
    # Split by hand: a path is a path, `#` and `?` in a file name are not URL syntax here.
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    volume = {"name": "dataset", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    return f"{DATASET_MOUNT}/{path}", volume


def job_labels(name: str, revision: str, attempt: int) -> dict[str, str]:
    """Not the serving pods' component, so no Service of the ModelDeployment selects these."""
    return {
        "app.kubernetes.io/name": "modelserver",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "modeldeploy",
        MD_LABEL: name,
        REVISION_LABEL: revision,
        ATTEMPT_LABEL: str(attempt),
    }


def validation_args(
    validation: ValidationSpec, dataset_uri: str, candidate_url: str, stable_url: str | None
) -> list[str]:
    """Arguments of `modelserver validate`; `--flag=value`, so no value reads as a flag."""
    dataset = validation.dataset
    args = [
        "validate",
        f"--dataset-uri={dataset_uri}",
        f"--dataset-format={dataset.format}",
        f"--label-column={dataset.label_column}",
        f"--metric={validation.metric}",
        f"--candidate-url={candidate_url}",
        f"--cache-dir={CACHE_DIR}",
        f"--termination-log={TERMINATION_LOG}",
    ]
    if dataset.sha256 is not None:
        args.append(f"--dataset-sha256={dataset.sha256.lower()}")
    if stable_url is not None:
        args.append(f"--stable-url={stable_url}")
    if validation.max_rows is not None:
        args.append(f"--max-rows={validation.max_rows}")
    return args


def validation_job(
    name: str,
    namespace: str,
    uid: str,
    revision: str,
    validation: ValidationSpec,
    image: str,
    candidate_url: str,
    stable_url: str | None,
    *,
    attempt: int = 1,
    image_pull_policy: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    ttl_seconds: int = JOB_TTL_SECONDS,
) -> dict[str, Any]:
    """The Job that checks `revision` (served at `candidate_url`) against the stable (at
    `stable_url`; None on a first deployment). One pod, never restarted, stopped at the
    validation timeout; owned by the ModelDeployment, so deleting it deletes the Job."""
    dataset_uri, dataset_volume = dataset_location(validation.dataset.uri)
    labels = job_labels(name, revision, attempt)
    mounts: list[dict[str, Any]] = [
        {"name": "cache", "mountPath": CACHE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if dataset_volume is not None:
        mounts.append({"name": "dataset", "mountPath": DATASET_MOUNT, "readOnly": True})
        volumes.append(dataset_volume)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        # The command, not the image's entrypoint: any image with modelserver on PATH works.
        "command": ["modelserver"],
        "args": validation_args(validation, dataset_uri, candidate_url, stable_url),
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if image_pull_policy is not None:
        container["imagePullPolicy"] = image_pull_policy
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SERVER_USER,
            "runAsGroup": SERVER_USER,
            "fsGroup": SERVER_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = [dict(toleration) for toleration in tolerations]
    return with_hash(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job_name(name, revision, validation, attempt),
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [owner_reference(name, uid)],
            },
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": math.ceil(duration_seconds(validation.timeout)),
                "ttlSecondsAfterFinished": ttl_seconds,
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        }
    )


def termination_message(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """What the Job's validate container left: its termination message, or, when it has
    none, the reason it was terminated (OOMKilled, Error, ...). None while no pod ended."""
    for pod in sorted(pods, key=_creation, reverse=True):
        for status in pod.get("status", {}).get("containerStatuses", []):
            terminated = status.get("state", {}).get("terminated")
            if status.get("name") == CONTAINER and terminated:
                return str(terminated.get("message") or terminated.get("reason") or "") or None
    return None


def _creation(pod: Mapping[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("creationTimestamp", ""))


@dataclass(frozen=True)
class ValidationResult:
    verdict: ValidationVerdict
    metric: str
    message: str
    candidate: float | None = None
    stable: float | None = None
    rows: int | None = None
    min: float | None = None
    max: float | None = None
    max_drop_vs_stable: float | None = None
    min_improvement_over_stable: float | None = None

    def status(self, *, revision: str, job: str, attempts: int, at: datetime) -> ValidationStatus:
        return ValidationStatus(
            revision=revision,
            verdict=self.verdict,
            metric=self.metric,
            candidate=self.candidate,
            stable=self.stable,
            rows=self.rows,
            min=self.min,
            max=self.max,
            max_drop_vs_stable=self.max_drop_vs_stable,
            min_improvement_over_stable=self.min_improvement_over_stable,
            message=self.message,
            attempts=attempts,
            job=job,
            at=at,
        )


def verdict(
    job: Mapping[str, Any],
    termination: str | None,
    validation: ValidationSpec,
    has_stable: bool,
) -> ValidationResult:
    """Pending while the Job runs; Pass or Fail on the reported values; Error for a Job
    that failed, timed out or reported nothing usable, with the reason.

    `termination` is the validate container's termination message (see
    termination_message). Relative bounds are judged only when `has_stable`.
    """
    judged = _Judged(validation, has_stable)
    finished = _finished(job)
    if finished is None:
        return judged.result(ValidationVerdict.PENDING, "the validation Job is running")
    report = _report(termination)
    if finished.startswith("Failed"):
        reason = finished.removeprefix("Failed:")
        if reason == "DeadlineExceeded":
            return judged.error(
                f"validation did not finish within its timeout of {validation.timeout} "
                "(the Job was stopped at its deadline)"
            )
        if report is not None and "error" in report:
            return judged.error(
                f"validation failed ({report.get('kind', 'unknown')}): {report['error']}"
            )
        last = _last_line(termination)
        detail = f": {last}" if last else " without saying why"
        return judged.error(f"the validation Job failed ({reason or 'Failed'}){detail}")
    if report is None or "error" in report:
        return judged.error(
            "the validation Job succeeded but left no result in its termination message: "
            f"{_last_line(termination) or 'none'}"
        )
    return _judge(report, judged)


@dataclass(frozen=True)
class _Judged:
    """The spec a verdict is reached against; the bounds it applied go into every result."""

    validation: ValidationSpec
    has_stable: bool

    def result(
        self,
        outcome: ValidationVerdict,
        message: str,
        candidate: float | None = None,
        stable: float | None = None,
        rows: int | None = None,
    ) -> ValidationResult:
        validation = self.validation
        return ValidationResult(
            outcome,
            str(validation.metric),
            _one_line(message),
            candidate=candidate,
            stable=stable,
            rows=rows,
            min=validation.min,
            max=validation.max,
            max_drop_vs_stable=validation.max_drop_vs_stable if self.has_stable else None,
            min_improvement_over_stable=(
                validation.min_improvement_over_stable if self.has_stable else None
            ),
        )

    def error(self, message: str) -> ValidationResult:
        return self.result(ValidationVerdict.ERROR, message)


def _finished(job: Mapping[str, Any]) -> str | None:
    """`Complete`, `Failed:REASON`, or None while the Job runs."""
    for condition in job.get("status", {}).get("conditions", []) or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "Complete"
        if condition.get("type") == "Failed":
            return f"Failed:{condition.get('reason', '')}"
    return None


def _report(termination: str | None) -> dict[str, Any] | None:
    """The last JSON object line of the message (a message taken from the logs has others)."""
    for line in reversed((termination or "").splitlines()):
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict) and ("error" in parsed or "metric" in parsed):
            return parsed
    return None


def _judge(report: dict[str, Any], judged: _Judged) -> ValidationResult:
    validation = judged.validation
    metric = str(validation.metric)
    if report.get("metric") != metric:
        return judged.error(
            f"the validation Job measured {report.get('metric')!r}, the spec asks for {metric}"
        )
    candidate = _number(report.get("candidate"))
    stable = _number(report.get("stable")) if judged.has_stable else None
    rows = report.get("rows") if isinstance(report.get("rows"), int) else None
    if candidate is None:
        return judged.error(f"the validation Job reported no candidate value: {json.dumps(report)}")
    if judged.has_stable and stable is None:
        return judged.error("the validation Job reported no stable value, and a stable exists")
    failures = _failures(metric, candidate, stable, validation)
    if failures:
        outcome, message = ValidationVerdict.FAIL, "; ".join(failures)
    else:
        outcome, message = ValidationVerdict.PASS, _passed(metric, candidate, stable, validation)
    return judged.result(outcome, message, candidate, stable, rows)


def _failures(
    metric: str, candidate: float, stable: float | None, validation: ValidationSpec
) -> list[str]:
    failures = []
    if validation.min is not None and candidate < validation.min:
        failures.append(f"{metric} {_n(candidate)} < min {_n(validation.min)}")
    if validation.max is not None and candidate > validation.max:
        failures.append(f"{metric} {_n(candidate)} > max {_n(validation.max)}")
    if stable is None:
        return failures
    lower_is_better = metric in LOWER_IS_BETTER
    # A drop in quality: a fall of a score, a rise of a loss.
    drop = candidate - stable if lower_is_better else stable - candidate
    worse = "rose" if lower_is_better else "dropped"
    better = "fell" if lower_is_better else "rose"
    limit = validation.max_drop_vs_stable
    if limit is not None and drop > limit + _TOLERANCE:
        failures.append(
            f"{metric} {worse} {_n(drop)} vs stable {_n(stable)} > maxDropVsStable {_n(limit)}"
        )
    wanted = validation.min_improvement_over_stable
    if wanted is not None and -drop < wanted - _TOLERANCE:
        change = f"{better} only {_n(-drop)}" if -drop > 0 else f"did not improve ({_n(candidate)})"
        failures.append(
            f"{metric} {change} vs stable {_n(stable)} < minImprovementOverStable {_n(wanted)}"
        )
    return failures


def _passed(metric: str, candidate: float, stable: float | None, validation: ValidationSpec) -> str:
    judged = [
        f"{label} {_n(value)}"
        for label, value in (
            ("min", validation.min),
            ("max", validation.max),
            ("maxDropVsStable", validation.max_drop_vs_stable if stable is not None else None),
            (
                "minImprovementOverStable",
                validation.min_improvement_over_stable if stable is not None else None,
            ),
        )
        if value is not None
    ]
    message = f"{metric} {_n(candidate)}"
    if stable is not None:
        message += f" (stable {_n(stable)})"
    if judged:
        message += f" within {', '.join(judged)}"
    skipped = [
        label
        for label, value in (
            ("maxDropVsStable", validation.max_drop_vs_stable),
            ("minImprovementOverStable", validation.min_improvement_over_stable),
        )
        if value is not None and stable is None
    ]
    if skipped:
        message += f"; no stable yet, so {' and '.join(skipped)} not checked"
    return message


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _n(value: float) -> str:
    return f"{value:.4g}"


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:_REASON_LIMIT] if lines else ""


def _one_line(text: str) -> str:
    one = " ".join(text.split())
    return one if len(one) <= _REASON_LIMIT else one[: _REASON_LIMIT - 3] + "..."


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
