"""API objects shaped as the operator and the API server write them, for the plugin's tests."""

from __future__ import annotations

from typing import Any

NOW = "2026-03-01T12:00:00Z"
UID = "7d1c0a52-0000-4000-8000-000000000001"


def condition(kind: str, status: str, reason: str, generation: int = 2) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": "",
        "lastTransitionTime": "2026-03-01T11:58:00Z",
        "observedGeneration": generation,
    }


def canary_status(
    step: int = 0,
    weight: int = 20,
    actual: int | None = 25,
    ready: bool = True,
    failed: int = 0,
    version: str = "2.0.0",
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "revision": "b2c3d4e5f6",
        "version": version,
        "step": step,
        "weight": weight,
        "failedChecks": failed,
        "inconclusiveChecks": 0,
        "startedAt": "2026-03-01T11:58:00Z",
        "replicas": 1,
        "readyReplicas": 1 if ready else 0,
    }
    if actual is not None:
        status["actualWeight"] = actual
    if ready:
        status["readyAt"] = "2026-03-01T11:58:05Z"
    return status


def md(
    phase: str = "Progressing",
    canary: dict[str, Any] | None = None,
    generation: int = 2,
    observed: int | None = 2,
    conditions: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    handled: dict[str, str] | None = None,
    paused: bool = False,
    paused_by_request: bool = False,
    rejected: str | None = None,
    history: list[dict[str, Any]] | None = None,
    analysis: dict[str, Any] | None = None,
    message: str = "canary 2.0.0 at step 1 (20%)",
    steps: tuple[int, ...] = (20, 50, 80),
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "message": message,
        "revision": "b2c3d4e5f6",
        "stable": {"revision": "a1b2c3d4e5", "version": "1.0.0", "replicas": 3, "readyReplicas": 3},
        "conditions": conditions if conditions is not None else [],
        "pausedByRequest": paused_by_request,
        "handledRequests": handled or {},
        "history": history or [],
    }
    if observed is not None:
        status["observedGeneration"] = observed
    if canary is not None:
        status["canary"] = canary
    if rejected is not None:
        status["rejectedRevision"] = rejected
    if analysis is not None:
        status["lastAnalysis"] = analysis
    return {
        "apiVersion": "modeldeploy.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "fraud",
            "namespace": "ml",
            "uid": UID,
            "generation": generation,
            "creationTimestamp": "2026-03-01T11:00:00Z",
            "annotations": annotations or {},
        },
        "spec": {
            "model": {"name": "fraud-detector", "version": "2.0.0"},
            "rollout": {
                "steps": list(steps),
                "failureThreshold": 3,
                "inconclusiveLimit": 5,
                "paused": paused,
            },
        },
        "status": status,
    }


def analysis(*checks: dict[str, Any], verdict: str = "Pass", step: int = 0) -> dict[str, Any]:
    return {
        "at": "2026-03-01T11:59:30Z",
        "revision": "b2c3d4e5f6",
        "step": step,
        "verdict": verdict,
        "requests": 120.0,
        "checks": list(checks),
    }


def check(
    name: str,
    value: float | None,
    verdict: str = "Pass",
    *,
    max: float | None = None,
    min: float | None = None,
    message: str = "",
) -> dict[str, Any]:
    result: dict[str, Any] = {"name": name, "query": "...", "verdict": verdict, "message": message}
    if value is not None:
        result["value"] = value
    if max is not None:
        result["max"] = max
    if min is not None:
        result["min"] = min
    return result


def deployment(
    track: str,
    version: str,
    revision: str,
    replicas: int,
    ready: int,
    *,
    generation: int = 1,
    observed: int = 1,
    total: int | None = None,
    updated: int | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"fraud-{track}",
            "generation": generation,
            "creationTimestamp": "2026-03-01T11:00:00Z",
            "labels": {
                "modeldeploy.dev/modeldeployment": "fraud",
                "modeldeploy.dev/track": track,
                "modeldeploy.dev/revision": revision,
                "app.kubernetes.io/version": version,
            },
        },
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas if total is None else total,
            "readyReplicas": ready,
            "updatedReplicas": replicas if updated is None else updated,
        },
    }


def pod(
    name: str,
    track: str,
    ready: bool = True,
    phase: str = "Running",
    waiting: str | None = None,
    restarts: int = 0,
    version: str | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = (
        {"waiting": {"reason": waiting}} if waiting else {"running": {"startedAt": NOW}}
    )
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": "2026-03-01T11:58:00Z",
            "labels": {
                "modeldeploy.dev/modeldeployment": "fraud",
                "modeldeploy.dev/track": track,
                "app.kubernetes.io/version": version or ("1.0.0" if track == "stable" else "2.0.0"),
            },
        },
        "spec": {"containers": [{"name": "modelserver"}]},
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": "modelserver", "ready": ready, "restartCount": restarts, "state": state}
            ],
        },
    }


def event(
    reason: str,
    message: str,
    at: str,
    kind: str = "Normal",
    uid: str = UID,
    count: int = 1,
    resource_version: str = "100",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"fraud.{reason.lower()}",
            "creationTimestamp": at,
            "resourceVersion": resource_version,
        },
        "involvedObject": {"kind": "ModelDeployment", "name": "fraud", "uid": uid},
        "type": kind,
        "reason": reason,
        "message": message,
        "lastTimestamp": at,
        "count": count,
    }
