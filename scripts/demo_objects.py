"""What `make demo` deploys and how it reads what the clients saw. Pure functions only."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from tests.e2e.harness.models import MODEL_NAME

NAME = "fraud"


def model_deployment(
    prometheus_url: str, model: dict[str, str], server: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The demo's ModelDeployment: two replicas, canary steps of 20% and 50% judged every
    10 s, rolled back after two failed checks. `model` holds uri and sha256."""
    spec: dict[str, Any] = {
        "model": {"name": MODEL_NAME, "version": "1.0.0", **model},
        "replicas": 2,
        "rollout": {"steps": [20, 50], "interval": "10s", "failureThreshold": 2},
        "analysis": {
            "prometheus": {"url": prometheus_url},
            "minRequests": 10,
            "slo": {"maxErrorRate": 0.01, "maxLatencyP99": "250ms"},
        },
    }
    if server:
        spec["server"] = server
    return {
        "apiVersion": "modeldeploy.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME},
        "spec": spec,
    }


@dataclass(frozen=True)
class LoadSummary:
    """What the clients saw during one phase of the demo."""

    phase: str
    answered_by: dict[str, int]  # model version -> requests it answered
    failed: dict[str, int]  # "HTTP <status>" or the client's error -> requests

    def line(self) -> str:
        sent = sum(self.answered_by.values()) + sum(self.failed.values())
        served = ", ".join(f"{n} by {v}" for v, n in sorted(self.answered_by.items())) or "none"
        failed = ", ".join(f"{n} {why}" for why, n in sorted(self.failed.items())) or "none"
        return f"{self.phase}: {sent} requests, answered {served}; failed {failed}"


def summarize(results: dict[str, Any], phases: list[tuple[str, float]]) -> list[LoadSummary]:
    """The load generator's results (every request's outcome), split by the phases of the
    demo: (name, unix time it began), in order; a request belongs to the last phase begun."""
    answered: dict[str, Counter[str]] = {name: Counter() for name, _ in phases}
    failed: dict[str, Counter[str]] = {name: Counter() for name, _ in phases}
    for r in results.get("requests") or []:
        phase = phases[0][0]
        for name, began in phases:
            if r.get("at", 0.0) >= began:
                phase = name
        if r.get("status") == 200:
            answered[phase][r.get("version") or "unknown version"] += 1
        else:
            failed[phase][r.get("error") or f"HTTP {r.get('status')}"] += 1
    return [LoadSummary(name, dict(answered[name]), dict(failed[name])) for name, _ in phases]
