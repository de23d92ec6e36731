"""What `make demo` prints: each decision of the operator with the values behind it."""

from __future__ import annotations

import json
import time
from typing import Any

from scripts.bench_rollback import Kubectl, status
from scripts.demo_objects import NAME

STEP_TIMEOUT = 240


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def line(current: dict[str, Any]) -> str:
    canary = current.get("canary") or {}
    stable = current.get("stable") or {}
    analysis = current.get("lastAnalysis") or {}
    checks = ", ".join(
        f"{c['name']}={c['value']:.3g}" if c.get("value") is not None else f"{c['name']}=n/a"
        for c in analysis.get("checks", [])
    )
    parts = [f"{current.get('phase', '?'):<11}", f"stable {stable.get('version', '-')}"]
    if canary:
        parts.append(
            f"canary {canary['version']} step {canary.get('step', 0) + 1} "
            f"weight {canary.get('weight', 0)}% (achieved {canary.get('actualWeight', 0)}%) "
            f"failed {canary.get('failedChecks', 0)}"
        )
    if analysis:
        parts.append(f"last analysis {analysis.get('verdict')}: {checks}")
    return " | ".join(parts)


# Phases a rollout stays in until the spec changes.
SETTLED = {"Available", "RolledBack", "Failed"}


def follow(kubectl: Kubectl, namespace: str, until: set[str], after: float) -> dict[str, Any]:
    """Print every change of the status until its phase is in `until` (after `after`);
    a rollout that settles otherwise ends the demo with the operator's message."""
    deadline = time.monotonic() + STEP_TIMEOUT
    shown = ""
    moving = False  # a settled phase before the rollout moved is the previous outcome
    while time.monotonic() < deadline:
        current = status(kubectl, namespace, NAME)
        text = line(current)
        if text != shown:
            print(f"  {text}", flush=True)
            shown = text
        phase = current.get("phase")
        moving = moving or phase not in SETTLED
        if phase in until and time.monotonic() > after:
            return current
        if moving and phase in SETTLED:
            raise SystemExit(
                f"demo: expected {' or '.join(sorted(until))}, the rollout ended {phase}: "
                f"{current.get('message', '')}"
            )
        time.sleep(1)
    raise SystemExit(f"demo: nothing happened for {STEP_TIMEOUT}s; see the operator log")


def events(kubectl: Kubectl, namespace: str) -> None:
    listed = json.loads(kubectl("-n", namespace, "get", "events", "-o", "json").stdout)["items"]
    ours = [e for e in listed if e["involvedObject"].get("kind") == "ModelDeployment"]
    for event in sorted(ours, key=lambda e: e.get("lastTimestamp") or ""):
        print(f"  {event['type']:<8} {event['reason']:<22} {event['message']}")
