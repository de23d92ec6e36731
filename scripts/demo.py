"""`make demo`: a model served, a good version promoted, a bad version rolled back.

Starts a local cluster (or uses MODELDEPLOY_KUBECONFIG) and walks through two rollouts,
printing every decision of the operator with the values behind it.

Where the local cluster has its real node (root on Linux, docs/local-cluster.md), or
MODELDEPLOY_KUBECONFIG names a cluster whose node is labelled as the real node and holds
the images (kind: docs/local-cluster.md, "kind"), every part runs there as a pod: the
operator installed by the chart, the model servers, Prometheus finding them by Kubernetes
service discovery, and a load generator sending through the model's Service
(scripts/demo_node.py).

Elsewhere (no root, another cluster holding the real node, images not built), it says why
and runs the process harness instead: the operator, a real Prometheus and real
modelserver processes standing in for the pods (tests/e2e/harness), all on 127.0.0.1.

Everything is stopped at the end, also when the demo is ended early by SIGTERM, SIGHUP or
SIGINT (Ctrl-C).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from tests.e2e.harness.load import Load
from tests.e2e.harness.models import MODEL_NAME, artifact, single_row_request
from tests.e2e.harness.pods import PodMirror
from tests.e2e.harness.prometheus import RealPrometheus
from tests.support.processes import end_gracefully_on_signals, free_port, shielded

from scripts import demo_node
from scripts.bench_operator import ROOT, local_cluster, operator_process
from scripts.bench_rollback import Kubectl
from scripts.demo_objects import NAME, model_deployment
from scripts.demo_status import events, follow, say

CLUSTER = "modeldeploy-demo"


def main() -> None:
    end_gracefully_on_signals()
    stack = ExitStack()
    started = time.monotonic()
    try:
        external = bool(os.environ.get("MODELDEPLOY_KUBECONFIG"))
        say("the cluster of MODELDEPLOY_KUBECONFIG" if external else "starting a local cluster")
        # MODELDEPLOY_REAL_NODE=0 runs the process harness even where the real node can run
        real_node = os.environ.get("MODELDEPLOY_REAL_NODE", "auto")
        kubeconfig = stack.enter_context(local_cluster(CLUSTER, real_node))
        kubectl = Kubectl(kubeconfig)
        why = demo_node.why_not(kubectl, CLUSTER, external)
        if real_node in ("0", "false", "no") and not external:
            why = f"MODELDEPLOY_REAL_NODE={real_node}"
        if why is None:
            say("real pods: every part of the demo runs as a pod from the built images")
            tier = demo_node.tier_cluster(kubeconfig, CLUSTER, external)
            stack.callback(tier.close)
            seen = demo_node.walk_through(tier, kubectl)
            say("what the clients saw, every request (from the load generator's results)")
            for summary in seen:
                print(f"  {summary.line()}")
        else:
            say(f"no real pods here ({why}): running the process harness instead,")
            print("   modelserver processes on 127.0.0.1 stand in for the pods (tests/e2e/harness)")
            walk_through_harness(stack, kubeconfig, kubectl)
        say(f"done in {time.monotonic() - started:.0f} s")
    except KeyboardInterrupt as ended:
        say(f"{ended}")
        raise SystemExit(1) from None
    finally:
        with shielded():  # a second signal must not cut the teardown short
            stack.close()


def walk_through_harness(stack: ExitStack, kubeconfig: str, kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    namespace = f"demo-{int(time.time())}"
    kubectl("create", "namespace", namespace)
    stack.callback(kubectl, "delete", "namespace", namespace, "--wait=false", check=False)
    logs = Path(tempfile.mkdtemp(prefix="modeldeploy-demo-"))
    stack.enter_context(operator_process(kubeconfig, namespace, logs / "operator.log",
                                         free_port()))  # fmt: skip
    prometheus = stack.enter_context(RealPrometheus())
    say(f"operator, Prometheus ({prometheus.url}) and traffic up; logs in {logs}")

    manifest = model_deployment(prometheus.url, artifact("xgb-classifier.ubj"))
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))
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
    say(f"clients: {served} requests sent, {failed} rejected, all by the bad canary")


if __name__ == "__main__":
    main()
