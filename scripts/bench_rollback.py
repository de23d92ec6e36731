"""`make bench-rollback`: how fast a bad canary is rolled back, with a real Prometheus.

Each run serves xgb-classifier 1.0.0, puts steady load on it, then rolls out a model that
rejects the stable's inputs with interval 10s and failureThreshold 2, and measures from
the first bad request the canary served to the last request that reached the canary
(traffic back on stable). Target: interval x failureThreshold + one scrape interval + 2 s.

Where the local cluster can have its real node (and the images are built: make images),
everything runs for real: the chart's operator and the built server image on the real
node, kube-proxy splitting the traffic, Prometheus (1 s scrapes) in the cluster, load
from a pod through the Service (tests/node). Elsewhere, or with --harness processes, real
modelserver processes stand in for the pods, with Debian's Prometheus on 127.0.0.1
(tests/e2e/harness).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.e2e.harness.load import Load
from tests.e2e.harness.models import MODEL_NAME, artifact, single_row_request
from tests.e2e.harness.pods import PodMirror
from tests.e2e.harness.prometheus import RealPrometheus
from tests.integration.conftest import Cluster, _parse_env_lines
from tests.node import model_store, monitoring, operator_release
from tests.node.scenario import Scenario
from tests.node.scenario import manifest as node_manifest
from tests.node.tier import Images, TierCluster, missing_archives
from tests.support.processes import end_gracefully_on_signals, free_port, run_in_group, shielded

from scripts.bench_operator import ROOT, local_cluster, operator_process

INTERVAL_SECONDS = 10
FAILURE_THRESHOLD = 2
SCRAPE_SECONDS = 1
RATE = 20  # requests per second
REAL_NODE_CLUSTER = "modeldeploy-bench-rollback"
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))


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


def wait(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench-rollback: timed out waiting for {what}")
        time.sleep(0.2)


# ---------------------------------------------------------------- processes for pods


def process_run(kubectl: Kubectl, namespace: str, run: int, prometheus: RealPrometheus) -> float:
    name = f"rollback-{run}"
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest(name, prometheus.url)))
    with tempfile.TemporaryDirectory() as logs:
        mirror = PodMirror(kubectl, namespace, name, prometheus, Path(logs)).start()
        load = Load(mirror, MODEL_NAME, single_row_request(), rate=RATE).start()
        try:
            wait(lambda: status(kubectl, namespace, name).get("phase") == "Available", 90, name)
            wait(lambda: mirror.serving(), 60, "the stable server")
            time.sleep(3)
            bad = {"model": {"version": "2.0.0", **artifact("xgb-classifier-bad-features.ubj")}}
            kubectl(
                "-n",
                namespace,
                "patch",
                "md",
                name,
                "--type",
                "merge",
                "-p",
                json.dumps({"spec": bad}),
            )
            wait(
                lambda: status(kubectl, namespace, name).get("phase") == "RolledBack",
                180,
                "the rollback",
            )
            wait(
                lambda: not any(s.track == "canary" for s in mirror.serving()),
                60,
                "the canary servers to stop",
            )
            time.sleep(1)
        finally:
            load.stop()
            mirror.stop()
    first_bad = load.first_failure("canary")
    if first_bad is None:
        raise SystemExit("bench-rollback: the canary never served a bad request")
    last_canary = max(s.at for s in load.sent if s.track == "canary")
    return last_canary - first_bad.at


def with_processes(runs: int) -> list[float]:
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
        return [
            report(run, process_run(kubectl, namespace, run, prometheus)) for run in range(runs)
        ]


# ---------------------------------------------------------------- the real node


def real_node_unavailable() -> str | None:
    """Why the real-node variant cannot run here, or None."""
    if os.environ.get("MODELDEPLOY_KUBECONFIG"):
        return None  # a cluster with a tier node and the images, e.g. kind
    node_sh = str(ROOT / "scripts" / "node" / "node.sh")
    check = subprocess.run([node_sh, "check"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        return f"this machine cannot run the real node ({check.stdout.strip()})"
    owner = subprocess.run([node_sh, "owner"], capture_output=True, text=True, check=False)
    if owner.stdout.strip():
        return f"cluster {owner.stdout.strip()} holds the real node"
    missing = missing_archives(CACHE / "images" / "manifest.tsv")
    if missing:
        return f"images not built ({', '.join(missing)}; make images)"
    return None


@contextmanager
def real_node_cluster() -> Iterator[TierCluster]:
    """MODELDEPLOY_KUBECONFIG's cluster, or a local cluster with its real node and the
    images imported; taken down however the program ends."""
    external = os.environ.get("MODELDEPLOY_KUBECONFIG")
    build = [str(ROOT / "scripts" / "build-binaries.sh"), "--no-build" if external else "--node"]
    built = subprocess.run(build, stdout=subprocess.PIPE, text=True, check=False)
    binaries = _parse_env_lines(built.stdout) if built.returncode == 0 else {}
    kubectl = binaries.get("KUBECTL_BIN") or shutil.which("kubectl")
    helm = binaries.get("HELM_BIN") or shutil.which("helm")
    if not kubectl or not helm:
        raise SystemExit("bench-rollback: kubectl and helm are needed (scripts/build-binaries.sh)")
    if external:
        cluster = Cluster("external", Path(external), kubectl, helm)
        tier = TierCluster(cluster, Images.from_env(), "/var/tmp/modeldeploy-node-tier", False)
        try:
            yield tier
        finally:
            tier.close()
        return
    script = str(ROOT / "scripts" / "cluster.sh")
    env = {
        **os.environ,
        "MODELDEPLOY_CLUSTER_NAME": REAL_NODE_CLUSTER,
        "MODELDEPLOY_REAL_NODE": "1",
    }
    try:
        up = run_in_group([script, "up"], env=env, stdout=subprocess.PIPE, text=True)
        if up.returncode != 0:
            raise SystemExit("bench-rollback: the cluster with the real node did not start")
        kubeconfig = Path(up.stdout.strip().splitlines()[-1])
        subprocess.run([script, "import-images"], env=env, check=True, stdout=subprocess.DEVNULL)
        node = _parse_env_lines(
            subprocess.run(
                [script, "node", "env"], env=env, check=True, stdout=subprocess.PIPE, text=True
            ).stdout
        )
        cluster = Cluster(REAL_NODE_CLUSTER, kubeconfig, kubectl, helm, True)
        tier = TierCluster(cluster, Images.from_env(), f"{node['NODE_DIR']}/model-store", True)
        try:
            yield tier
        finally:
            tier.close()
    finally:
        with shielded():
            subprocess.run([script, "down"], env=env, check=False)


def real_node_run(tier: TierCluster, store: model_store.ModelStore, run: int) -> float:
    namespace = tier.create_namespace(f"bench-rollback-{run}")
    scenario = Scenario(tier, namespace)
    try:
        rollout = {
            "steps": [50],
            "interval": f"{INTERVAL_SECONDS}s",
            "failureThreshold": FAILURE_THRESHOLD,
            "progressDeadline": "120s",
        }
        analysis = {"minRequests": 10}
        model = store.http("xgb-classifier.ubj")
        scenario.deploy(node_manifest(scenario.name, model, "1.0.0", 1, rollout, analysis))
        load = scenario.start_load(rate=RATE)
        time.sleep(3)
        scenario.roll_out("2.0.0", store.http("xgb-classifier-bad-features.ubj"))
        entry = scenario.wait_outcome("2.0.0", timeout=180)
        if entry["outcome"] != "RolledBack":
            raise SystemExit(f"bench-rollback: the bad canary was not rolled back: {entry}")
        scenario.wait_settled(1)
        time.sleep(1)
        load.stop()
        outcomes = load.outcomes()
    finally:
        scenario.stop()
        tier.delete_namespace(namespace)
    # the canary rejects every request (another feature count): its answers are the 422s
    rejected = [o.at for o in outcomes if o.status == 422]
    if not rejected:
        raise SystemExit("bench-rollback: the canary never served a bad request")
    others = [o for o in outcomes if o.status not in (200, 422)]
    if others:
        print(f"run {run + 1}: {len(others)} requests failed otherwise: {others[:5]}")
    return max(rejected) - min(rejected)


def with_real_node(runs: int) -> list[float]:
    with real_node_cluster() as tier:
        tier.check_node()
        infra = tier.create_namespace("bench-rollback-infra")
        try:
            prometheus = monitoring.deploy(tier, infra)
            operator_release.install(tier, prometheus.url)
            store = model_store.deploy(tier, infra)
            return [report(run, real_node_run(tier, store, run)) for run in range(runs)]
        finally:
            monitoring.remove_cluster_objects(tier, infra)
            tier.delete_namespace(infra)


def report(run: int, took: float) -> float:
    print(f"run {run + 1}: first bad canary request to traffic back on stable: {took:.1f} s")
    return took


def main() -> None:
    end_gracefully_on_signals()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--harness", choices=("auto", "real-node", "processes"), default="auto")
    args = parser.parse_args()
    harness = args.harness
    if harness == "auto":
        why = real_node_unavailable()
        harness = "processes" if why else "real-node"
        if why:
            print(f"bench-rollback: without the real node ({why}):")
            print("  modelserver processes stand in for the pods")
    if harness == "real-node":
        print("bench-rollback: on the real node (the chart, the images, kube-proxy,")
        print("  Prometheus and load inside the cluster)")
        durations = with_real_node(args.runs)
    else:
        durations = with_processes(args.runs)
    target = INTERVAL_SECONDS * FAILURE_THRESHOLD + SCRAPE_SECONDS + 2
    print()
    print(
        f"| rollback on {harness}, {args.runs} runs (interval {INTERVAL_SECONDS}s, threshold "
        f"{FAILURE_THRESHOLD}, scrape {SCRAPE_SECONDS}s) | seconds |"
    )
    print("|---|---|")
    print(f"| min | {min(durations):.1f} |")
    print(f"| median | {statistics.median(durations):.1f} |")
    print(f"| max | {max(durations):.1f} |")
    print(f"| target (interval x threshold + scrape + 2 s) | {target:.1f} |")


if __name__ == "__main__":
    main()
