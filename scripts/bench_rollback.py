"""`make bench-rollback`: how fast a bad canary is rolled back, with a real Prometheus.

Each run serves xgb-classifier 1.0.0 on the local cluster, with real modelserver processes
standing in for the pods (tests/e2e/harness), then rolls out a model that rejects the
stable's inputs with interval 10s and failureThreshold 2. It measures from the first
bad request the canary served to the last request that reached the canary (traffic back
on stable). Target: interval x failureThreshold + one scrape interval + 2 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.e2e.harness.load import Load
from tests.e2e.harness.models import MODEL_NAME, artifact, single_row_request
from tests.e2e.harness.pods import PodMirror
from tests.e2e.harness.prometheus import RealPrometheus
from tests.support.processes import end_gracefully_on_signals, free_port

from scripts.bench_operator import ROOT, local_cluster, operator_process

INTERVAL_SECONDS = 10
FAILURE_THRESHOLD = 2
SCRAPE_SECONDS = 1


class Kubectl:
    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig

    def __call__(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", "--kubeconfig", self.kubeconfig, *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
        )


def manifest(name: str, prometheus_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": MODEL_NAME, "version": "1.0.0", **artifact("xgb-classifier.ubj")},
            "rollout": {
                "steps": [50],
                "interval": f"{INTERVAL_SECONDS}s",
                "failureThreshold": FAILURE_THRESHOLD,
            },
            "analysis": {"prometheus": {"url": prometheus_url}, "minRequests": 10},
        },
    }


def status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    done = kubectl("-n", namespace, "get", "md", name, "-o", "json", check=False)
    if done.returncode != 0:
        return {}
    found: dict[str, Any] = json.loads(done.stdout).get("status") or {}
    return found


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench-rollback: timed out waiting for {what}")
        time.sleep(0.2)


def one_run(kubectl: Kubectl, namespace: str, run: int, prometheus: RealPrometheus) -> float:
    name = f"rollback-{run}"
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest(name, prometheus.url)))
    with tempfile.TemporaryDirectory() as logs:
        mirror = PodMirror(kubectl, namespace, name, prometheus, Path(logs)).start()
        load = Load(mirror, MODEL_NAME, single_row_request(), rate=20).start()
        try:
            wait(lambda: status(kubectl, namespace, name).get("phase") == "Available", 90, name)
            wait(lambda: mirror.serving(), 60, "the stable server")
            time.sleep(3)
            bad = {"model": {"version": "2.0.0", **artifact("xgb-classifier-bad-features.ubj")}}
            kubectl("-n", namespace, "patch", "md", name, "--type", "merge", "-p",
                    json.dumps({"spec": bad}))  # fmt: skip
            wait(lambda: status(kubectl, namespace, name).get("phase") == "RolledBack", 180,
                 "the rollback")  # fmt: skip
            wait(lambda: not any(s.track == "canary" for s in mirror.serving()), 60,
                 "the canary servers to stop")  # fmt: skip
            time.sleep(1)
        finally:
            load.stop()
            mirror.stop()
    first_bad = load.first_failure("canary")
    if first_bad is None:
        raise SystemExit("bench-rollback: the canary never served a bad request")
    last_canary = max(s.at for s in load.sent if s.track == "canary")
    return last_canary - first_bad.at


def main() -> None:
    end_gracefully_on_signals()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    target = INTERVAL_SECONDS * FAILURE_THRESHOLD + SCRAPE_SECONDS + 2
    with ExitStack() as stack:
        kubeconfig = stack.enter_context(local_cluster())
        kubectl = Kubectl(kubeconfig)
        kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        namespace = f"bench-rollback-{int(time.time())}"
        kubectl("create", "namespace", namespace)
        stack.callback(kubectl, "delete", "namespace", namespace, "--wait=false", check=False)
        log = Path(tempfile.gettempdir()) / f"{namespace}-operator.log"
        stack.enter_context(operator_process(kubeconfig, namespace, log, free_port()))
        prometheus = stack.enter_context(RealPrometheus())
        durations = []
        for run in range(args.runs):
            took = one_run(kubectl, namespace, run, prometheus)
            durations.append(took)
            print(
                f"run {run + 1}: first bad canary request to traffic back on stable: {took:.1f} s"
            )
    print()
    print(f"| rollback, {args.runs} runs (interval {INTERVAL_SECONDS}s, threshold "
          f"{FAILURE_THRESHOLD}, scrape {SCRAPE_SECONDS}s) | seconds |")  # fmt: skip
    print("|---|---|")
    print(f"| min | {min(durations):.1f} |")
    print(f"| median | {statistics.median(durations):.1f} |")
    print(f"| max | {max(durations):.1f} |")
    print(f"| target (interval x threshold + scrape + 2 s) | {target:.1f} |")


if __name__ == "__main__":
    main()
