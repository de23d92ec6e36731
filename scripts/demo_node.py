"""`make demo` with real pods: on the local cluster's real node, or on the cluster of
MODELDEPLOY_KUBECONFIG (kind) whose node is labelled as the real node and holds the images.

Everything runs as users run it, built from the same pieces as the node tier (tests/node):
the operator installed by the chart from the built image, the model servers of the built
server image reading the sample models from a volume (pvc://), a Prometheus that finds
them by Kubernetes service discovery, and a load generator sending through the model's
Service, each request on a new connection.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.harness.models import MODELS
from tests.integration.conftest import Cluster, _parse_env_lines
from tests.node import load as load_module
from tests.node import model_store, monitoring, operator_release
from tests.node.tier import (
    NODE_SELECTOR,
    TIER_LABEL,
    TOLERATIONS,
    Images,
    TierCluster,
    missing_archives,
)

from scripts.bench_operator import ROOT
from scripts.bench_rollback import Kubectl
from scripts.demo_objects import NAME, LoadSummary, model_deployment, summarize
from scripts.demo_status import events, follow, say

CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
CLUSTER_SH = ROOT / "scripts" / "cluster.sh"
GOOD = "xgb-classifier.ubj"
BAD = "xgb-classifier-bad-features.ubj"  # rejects the inputs the clients send
LOAD_RATE = 20


def _ready_tier_nodes(kubectl: Kubectl) -> list[str]:
    listed = kubectl("get", "nodes", "-l", f"{TIER_LABEL}=real", "-o", "json", check=False)
    if listed.returncode:
        return []
    return [
        n["metadata"]["name"]
        for n in json.loads(listed.stdout)["items"]
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in n.get("status", {}).get("conditions", [])
        )
    ]


def why_not(kubectl: Kubectl, cluster: str, external: bool) -> str | None:
    """Why the demo cannot run real pods on this cluster, or None when it can."""
    if _ready_tier_nodes(kubectl):
        if external:
            return None  # its images were loaded as docs/local-cluster.md ("kind") shows
        missing = missing_archives(CACHE / "images" / "manifest.tsv")
        return f"images not built: {', '.join(missing)} (make images)" if missing else None
    if external:
        return (
            f"MODELDEPLOY_KUBECONFIG's cluster has no Ready node labelled {TIER_LABEL}=real "
            "(kind: scripts/kind/cluster.yaml)"
        )
    # scripts/cluster.sh knows why it added none: not root, a kernel feature, another holder
    told = subprocess.run(
        [str(CLUSTER_SH), "status"], env=_cluster_env(cluster), capture_output=True, text=True,
        check=False,
    ).stdout  # fmt: skip
    said = [line for line in told.splitlines() if line.startswith("real node:")]
    return said[0] if said else "the cluster has no real node that is Ready"


def _cluster_env(cluster: str) -> dict[str, str]:
    return {**os.environ, "MODELDEPLOY_CLUSTER_NAME": cluster}


def tier_cluster(kubeconfig: str, cluster: str, external: bool) -> TierCluster:
    """The cluster as the node tier's pieces drive it; the pinned kubectl and helm."""
    built = subprocess.run(
        [str(ROOT / "scripts" / "build-binaries.sh"), "--no-build"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    binaries = _parse_env_lines(built)
    if external:
        store = os.environ.get("MODELDEPLOY_NODE_STORE", "/var/tmp/modeldeploy-node-tier")
    else:
        node = subprocess.run(
            [str(CLUSTER_SH), "node", "env"], env=_cluster_env(cluster), capture_output=True,
            text=True, check=True,
        ).stdout  # fmt: skip
        store = str(Path(_parse_env_lines(node)["NODE_DIR"]) / "model-store")
    return TierCluster(
        cluster=Cluster(
            name=cluster,
            kubeconfig=Path(kubeconfig),
            kubectl_bin=binaries["KUBECTL_BIN"],
            helm_bin=binaries["HELM_BIN"],
        ),
        images=Images.from_env(),
        store_path=store,
        local=not external,
    )


@dataclass
class Demo:
    tier: TierCluster
    kubectl: Kubectl
    namespace: str = ""

    def show_pods(self) -> None:
        """Every pod of the demo: on which node it runs, its address."""
        shown = self.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        mine = ("NAMESPACE", self.namespace, operator_release.NAMESPACE)
        for row in shown.splitlines():
            if row.split(" ", 1)[0] in mine:
                print(f"  {row}")

    def set_model(self, version: str, model: dict[str, str]) -> None:
        patch = {"spec": {"model": {"version": version, **model}}}
        self.kubectl("-n", self.namespace, "patch", "md", NAME, "--type", "merge", "-p",
                     json.dumps(patch))  # fmt: skip

    def store_models(self) -> model_store.ModelStore:
        """The two sample models the demo serves, on a volume of the node (pvc://models/)."""
        self.tier.apply(*model_store.objects(self.tier), namespace=self.namespace)
        self.kubectl("-n", self.namespace, "wait", "--for=condition=Ready", "pod/models",
                     "--timeout=120s")  # fmt: skip
        for name in (GOOD, BAD):
            model_store.upload(self.tier, self.namespace, MODELS / name)
        store = model_store.ModelStore(self.tier, self.namespace)
        store.claim(self.namespace)
        return store


def steady_traffic(load: load_module.LoadPod, requests: int = 5 * LOAD_RATE) -> None:
    """Until the stable has answered a few seconds of load, so a rollout begins on traffic."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if load.results(with_requests=False)["counts"].get("200", 0) >= requests:
            return
        time.sleep(1)
    raise SystemExit(f"demo: the stable did not answer {requests} requests in 60 s")


def walk_through(tier: TierCluster, kubectl: Kubectl) -> list[LoadSummary]:
    """Deploy, promote a good version, roll a bad one back; what the clients saw."""
    images = tier.images
    if tier.local:
        say("importing the images into the real node's containerd (about 20 s the first time)")
        subprocess.run([str(CLUSTER_SH), "import-images"], env=_cluster_env(tier.cluster.name),
                       check=True)  # fmt: skip
    demo = Demo(tier, kubectl, tier.create_namespace("demo"))
    ns = demo.namespace

    say(f"Prometheus ({images.prometheus}) in {ns}, finding pods by Kubernetes discovery")
    prometheus = monitoring.deploy(tier, ns)
    say(f"the chart installs the operator ({images.operator}): two replicas, one leader")
    release = operator_release.install(tier, prometheus.url)
    print(f"  leader: {release.leader()}")
    say("the sample models on a volume of the node, for pvc:// URIs")
    store = demo.store_models()

    try:
        say(f"deploying fraud 1.0.0 (XGBoost classifier) on {images.server}")
        server: dict[str, Any] = {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS}
        manifest = model_deployment(prometheus.url, store.pvc(GOOD), server)
        tier.apply(manifest, namespace=ns)
        follow(kubectl, ns, {"Available"}, time.monotonic())

        say(f"{LOAD_RATE} requests a second from a pod through Service {NAME}, "
            "a new connection each (kube-proxy balances connections)")  # fmt: skip
        load = load_module.start(tier, ns, NAME, rate=LOAD_RATE, duration=600)
        phases = [("1.0.0 stable", time.time())]
        demo.show_pods()
        steady_traffic(load)

        say("rolling out 1.1.0, a healthy model: 20% -> 50% -> promoted")
        started = time.monotonic()
        phases.append(("rollout of 1.1.0", time.time()))
        demo.set_model("1.1.0", store.pvc(GOOD))
        follow(kubectl, ns, {"Available"}, started + 5)
        demo.show_pods()

        say("rolling out 2.0.0, a model that rejects the inputs clients send")
        started = time.monotonic()
        phases.append(("rollout of 2.0.0", time.time()))
        demo.set_model("2.0.0", store.pvc(BAD))
        final = follow(kubectl, ns, {"RolledBack"}, started)
        print(f"\n  {final['message']}")
        load.stop()

        say("events of the ModelDeployment")
        events(kubectl, ns)
        return summarize(load.results(), phases)
    finally:
        if not tier.local:  # someone else's cluster: leave it as it was
            tier.delete_namespace(ns)
            store.release(ns)
            monitoring.remove_cluster_objects(tier, ns)
            operator_release.uninstall(tier, release)
