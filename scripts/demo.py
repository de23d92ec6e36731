"""`make demo`: a model served, a good version promoted, a bad version rolled back.

Starts a local cluster (or uses MODELDEPLOY_KUBECONFIG), the operator, a real Prometheus
and real modelserver processes standing in for the pods (see tests/e2e/harness), sends
steady traffic, and walks through two rollouts while printing what the operator decides.
Everything runs on 127.0.0.1 and is stopped at the end, also when the demo is ended
early by SIGTERM, SIGHUP or SIGINT (Ctrl-C).
"""

from __future__ import annotations

import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.e2e.harness.load import Load
from tests.e2e.harness.models import MODEL_NAME, artifact, single_row_request
from tests.e2e.harness.pods import PodMirror
from tests.e2e.harness.prometheus import RealPrometheus
from tests.support.processes import end_gracefully_on_signals, free_port, shielded

from scripts.bench_operator import local_cluster, operator_process
from scripts.bench_rollback import Kubectl, status

NAME = "fraud"
CLUSTER = "modeldeploy-demo"
STEP_TIMEOUT = 240


def manifest(prometheus_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME},
        "spec": {
            "model": {"name": MODEL_NAME, "version": "1.0.0", **artifact("xgb-classifier.ubj")},
            "replicas": 2,
            "rollout": {"steps": [20, 50], "interval": "10s", "failureThreshold": 2},
            "analysis": {
                "prometheus": {"url": prometheus_url},
                "minRequests": 10,
                "slo": {"maxErrorRate": 0.01, "maxLatencyP99": "250ms"},
            },
        },
    }


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


def follow(kubectl: Kubectl, namespace: str, until: set[str], after: float) -> dict[str, Any]:
    """Print every change of the status until its phase is in `until` (after `after`)."""
    deadline = time.monotonic() + STEP_TIMEOUT
    shown = ""
    while time.monotonic() < deadline:
        current = status(kubectl, namespace, NAME)
        text = line(current)
        if text != shown:
            print(f"  {text}", flush=True)
            shown = text
        if current.get("phase") in until and time.monotonic() > after:
            return current
        time.sleep(1)
    raise SystemExit(f"demo: nothing happened for {STEP_TIMEOUT}s; see the operator log")


def events(kubectl: Kubectl, namespace: str) -> None:
    listed = json.loads(kubectl("-n", namespace, "get", "events", "-o", "json").stdout)["items"]
    ours = [e for e in listed if e["involvedObject"].get("kind") == "ModelDeployment"]
    for event in sorted(ours, key=lambda e: e.get("lastTimestamp") or ""):
        print(f"  {event['type']:<8} {event['reason']:<22} {event['message']}")


def main() -> None:
    end_gracefully_on_signals()
    stack = ExitStack()
    try:
        walk_through(stack)
    except KeyboardInterrupt as ended:
        say(f"{ended}")
        raise SystemExit(1) from None
    finally:
        with shielded():  # a second signal must not cut the teardown short
            stack.close()


def walk_through(stack: ExitStack) -> None:
    say("starting a local cluster")
    kubeconfig = stack.enter_context(local_cluster(CLUSTER))
    kubectl = Kubectl(kubeconfig)
    kubectl("apply", "--server-side", "-f", str(Path(__file__).parents[1] / "crds"))
    namespace = f"demo-{int(time.time())}"
    kubectl("create", "namespace", namespace)
    stack.callback(kubectl, "delete", "namespace", namespace, "--wait=false", check=False)
    logs = Path(tempfile.mkdtemp(prefix="modeldeploy-demo-"))
    stack.enter_context(operator_process(kubeconfig, namespace, logs / "operator.log",
                                         free_port()))  # fmt: skip
    prometheus = stack.enter_context(RealPrometheus())
    say(f"operator, Prometheus ({prometheus.url}) and traffic up; logs in {logs}")

    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest(prometheus.url)))
    mirror = PodMirror(kubectl, namespace, NAME, prometheus, logs).start()
    stack.callback(mirror.stop)
    load = Load(mirror, MODEL_NAME, single_row_request(), rate=20, max_seconds=900).start()
    stack.callback(load.stop)
    say("deploying fraud 1.0.0 (XGBoost classifier) as the first stable")
    follow(kubectl, namespace, {"Available"}, time.monotonic())
    print(kubectl("-n", namespace, "get", "md,deployments").stdout)

    say("rolling out 1.1.0, a healthy model: 20% -> 50% -> promoted")
    started = time.monotonic()
    kubectl("-n", namespace, "patch", "md", NAME, "--type", "merge", "-p",
            json.dumps({"spec": {"model": {"version": "1.1.0"}}}))  # fmt: skip
    follow(kubectl, namespace, {"Available"}, started + 5)

    say("rolling out 2.0.0, a model that rejects the inputs clients send")
    started = time.monotonic()
    bad = {"model": {"version": "2.0.0", **artifact("xgb-classifier-bad-features.ubj")}}
    kubectl("-n", namespace, "patch", "md", NAME, "--type", "merge", "-p",
            json.dumps({"spec": bad}))  # fmt: skip
    final = follow(kubectl, namespace, {"RolledBack"}, started)
    print(f"\n  {final['message']}")

    say("events of the ModelDeployment")
    events(kubectl, namespace)
    served = len(load.sent)
    failed = sum(1 for s in load.sent if s.status != 200)
    say(f"done: {served} requests sent, {failed} rejected, all by the bad canary")


if __name__ == "__main__":
    main()
