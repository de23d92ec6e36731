"""API objects shaped as the operator and the API server write them, for the plugin's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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


WINNER_PATCH = (
    '{"spec":{"model":{"uri":"https://models.example.com/fraud/1.1.0-deeper/model.ubj",'
    '"version":"1.1.0-deeper"},"strategy":{"experiment":null,"type":"canary"}}}'
)
CUT_REASON = "3 failed SLO analyses; last: error-rate 0.2 > max 0.01"


def arm(
    name: str,
    version: str,
    weight: int,
    actual: int | None,
    ready: int = 1,
    replicas: int = 1,
    cut: str | None = None,
    **numbers: float | int | str,
) -> dict[str, Any]:
    """An arm of status.experiment; `numbers` in the API's spelling (rateLow, pValue...)."""
    status: dict[str, Any] = {
        "name": name,
        "version": version,
        "revision": f"{name[:4]}000000",
        "weight": weight,
        "replicas": replicas,
        "readyReplicas": ready,
        "state": "Cut" if cut else "Running",
        "reason": cut or "",
        "failedChecks": 3 if cut else 0,
        **numbers,
    }
    if actual is not None:
        status["actualWeight"] = actual
    return status


def running_arms() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """control and two variants while counting: fresh was cut by its SLO checks."""
    control = arm("control", "1.0.0", 80, 79, ready=3, replicas=3)
    deeper = arm("deeper", "1.1.0-deeper", 20, 21)
    fresh = arm("fresh", "1.1.0-fresh", 0, 0, cut=CUT_REASON)
    return control, [deeper, fresh]


def judged_arms() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The arms once concluded: deeper converts better, fresh was cut before the verdict."""
    control = arm(
        "control",
        "1.0.0",
        100,
        100,
        ready=3,
        replicas=3,
        successes=412,
        samples=10000,
        rate=0.0412,
        rateLow=0.03746,
        rateHigh=0.04531,
    )
    deeper = arm(
        "deeper",
        "1.1.0-deeper",
        0,
        0,
        successes=493,
        samples=10000,
        rate=0.0493,
        rateLow=0.04518,
        rateHigh=0.05377,
        difference=0.0081,
        differenceLow=0.00247,
        differenceHigh=0.01374,
        pValue=0.00511,
        adjustedPValue=0.01022,
        outcome="Better",
    )
    fresh = arm("fresh", "1.1.0-fresh", 0, 0, cut=CUT_REASON)
    return control, [deeper, fresh]


def experiment_spec() -> dict[str, Any]:
    return {
        "type": "experiment",
        "experiment": {
            "variants": [
                {"name": "deeper", "weight": 20, "model": {"version": "1.1.0-deeper"}},
                {"name": "fresh", "weight": 20, "model": {"version": "1.1.0-fresh"}},
            ],
            "duration": "3h",
            "minSamples": 5000,
            "significance": 0.05,
            "metric": {"successQuery": "...", "totalQuery": "..."},
        },
    }


def experimenting(
    experiment_phase: str = "Running",
    arms: tuple[dict[str, Any], list[dict[str, Any]]] | None = None,
    winner: str | None = None,
    message: str = "counting until 2026-03-01T15:00:00+00:00",
    **overrides: Any,
) -> dict[str, Any]:
    """A ModelDeployment whose stable (1.0.0, the spec's model) is control of an
    experiment: running (phase Experimenting), or ended (phase Available)."""
    ended = experiment_phase != "Running"
    control, variants = arms or (judged_arms() if ended else running_arms())
    obj = md(
        phase="Available" if ended else "Experimenting",
        message="stable 1.0.0 serves all traffic"
        if ended
        else "experiment (counting until 2026-03-01T15:00:00+00:00): control 1.0.0 79%, "
        "deeper 1.1.0-deeper 21% (1 ready)",
        conditions=[
            condition("Available", "True", "StableReady"),
            condition(
                "Ready", "True" if ended else "False", "Complete" if ended else "Experimenting"
            ),
            condition(
                "Reconciling",
                "False" if ended else "True",
                "Complete" if ended else "Experimenting",
            ),
        ],
        **overrides,
    )
    obj["spec"]["model"] = {
        "name": "fraud-detector",
        "version": "1.0.0",
        "uri": "https://models.example.com/fraud/1.0.0/model.ubj",
    }
    obj["spec"]["strategy"] = experiment_spec()
    experiment: dict[str, Any] = {
        "id": "3f9a0c1d2e",
        "attempt": 1,
        "phase": experiment_phase,
        "message": message,
        "startedAt": "2026-03-01T11:50:00Z",
        "readyAt": "2026-03-01T12:00:00Z" if not ended else "2026-03-01T08:00:00Z",
        "endsAt": "2026-03-01T15:00:00Z" if not ended else "2026-03-01T11:00:00Z",
        "metric": "successQuery / totalQuery",
        "control": control,
        "variants": variants,
    }
    if ended:
        experiment["startedAt"] = "2026-03-01T07:50:00Z"
        experiment["concludedAt"] = "2026-03-01T11:30:00Z"
    if winner is not None:
        experiment["winner"] = winner
        experiment["winnerPatch"] = WINNER_PATCH
    obj["status"]["experiment"] = experiment
    return obj


def concluded(winner: str | None = "deeper", **overrides: Any) -> dict[str, Any]:
    message = (
        "deeper wins: deeper Better (0.0493 vs control 0.0412, p=0.0102 after Holm). Control "
        "serves all traffic; to roll it out, make status.experiment.winnerPatch's change in "
        "Git, or run kubectl modeldeploy apply-winner"
        if winner
        else "no winner: deeper NoSignificantDifference (0.0421 vs control 0.0412, p=0.61 "
        "after Holm). Control serves all traffic"
    )
    return experimenting("Concluded", winner=winner, message=message, **overrides)


def write_kubeconfig(path: Path, servers: dict[str, str], current: str) -> Path:
    """One context per server, named after it, each with its own namespace `ns-NAME`."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": n, "cluster": {"server": url}} for n, url in servers.items()],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [
                    {"name": n, "context": {"cluster": n, "user": "u", "namespace": f"ns-{n}"}}
                    for n in servers
                ],
                "current-context": current,
            }
        )
    )
    return path
