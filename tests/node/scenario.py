"""One ModelDeployment on the tier's node, driven and watched as a user would.

A `Scenario` applies a ModelDeployment served by the built server image on the tier's
node, waits for its stable pods, puts load on its Service from inside the cluster, rolls a
new model out and waits for the outcome, recording the status the operator wrote all
along (tests/node/test_rollouts.py, scripts/bench_rollback.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.harness.models import MODEL_NAME
from tests.node import load as load_module
from tests.node.load import LoadPod
from tests.node.realnode import wait_for
from tests.node.rollout_watch import StatusRecorder
from tests.node.tier import NODE_SELECTOR, TOLERATIONS, TierCluster, pod_ready


def manifest(
    name: str,
    model: dict[str, Any],
    version: str,
    replicas: int,
    rollout: dict[str, Any],
    analysis: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": MODEL_NAME, "version": version, **model},
            "replicas": replicas,
            # the image is the chart's defaultServerImage; the pods go to the tier's node
            "server": {
                "imagePullPolicy": "IfNotPresent",
                "nodeSelector": NODE_SELECTOR,
                "tolerations": TOLERATIONS,
            },
            "rollout": rollout,
            "analysis": analysis,
        },
    }


@dataclass
class Scenario:
    tier: TierCluster
    namespace: str
    name: str = "model"
    recorder: StatusRecorder | None = None
    load: LoadPod | None = None
    started: float = field(default_factory=time.time)

    def deploy(self, spec: dict[str, Any], timeout: float = 240) -> None:
        """Apply the ModelDeployment; return once its stable pods are all ready."""
        self.tier.apply(spec, namespace=self.namespace)
        self.recorder = StatusRecorder(
            str(self.tier.cluster.kubeconfig), self.namespace, self.name
        ).start()
        replicas = spec["spec"]["replicas"]

        def stable_ready() -> bool:
            stable = self.status().get("stable") or {}
            return self.status().get("phase") == "Available" and (
                stable.get("readyReplicas") == replicas
            )

        wait_for(stable_ready, timeout, f"{self.name}'s stable pods to be ready", interval=1)

    def start_load(
        self,
        rate: float = 20,
        duration: float = 600,
        rows: Sequence[tuple[Any, Any]] | None = None,
        feedback: bool = False,
        conversions: Mapping[str, float] | None = None,
        seed: int = 1,
    ) -> LoadPod:
        self.load = load_module.start(
            self.tier,
            self.namespace,
            self.name,
            rate,
            duration,
            rows=rows,
            feedback=feedback,
            conversions=conversions,
            seed=seed,
        )
        return self.load

    def status(self) -> dict[str, Any]:
        obj = self.tier.get("modeldeployment", self.name, self.namespace)
        return dict((obj or {}).get("status") or {})

    def roll_out(self, version: str, model: dict[str, Any]) -> float:
        """Change the model: the operator starts a canary. Returns when it was asked."""
        at = time.time()
        self.patch({"model": {"version": version, **model}})
        return at

    def patch(self, spec: dict[str, Any]) -> None:
        """Merge `spec` into the ModelDeployment's spec, as `kubectl patch --type merge`."""
        self.tier.kubectl(
            "patch",
            "md",
            self.name,
            "-n",
            self.namespace,
            "--type",
            "merge",
            "-p",
            json.dumps({"spec": spec}),
        )

    def outcome(self, version: str) -> dict[str, Any] | None:
        """The history entry that ended `version`'s canary (Promoted, RolledBack, ...)."""
        for entry in self.status().get("history", []):
            if entry["version"] == version and entry["outcome"] != "Deployed":
                return dict(entry)
        return None

    def wait_outcome(self, version: str, timeout: float = 300) -> dict[str, Any]:
        return wait_for(lambda: self.outcome(version), timeout, f"the outcome of {version}", 1)

    def pods(self, track: str | None = None) -> list[dict[str, Any]]:
        selector = f"modeldeploy.dev/modeldeployment={self.name}"
        if track:
            selector += f",modeldeploy.dev/track={track}"
        done = self.tier.kubectl("get", "pods", "-n", self.namespace, "-l", selector, "-o", "json")
        pods: list[dict[str, Any]] = json.loads(done.stdout)["items"]
        return pods

    def wait_settled(self, replicas: int, timeout: float = 180) -> None:
        """Until only the stable's pods are left, all of them ready (the canary's gone)."""

        def settled() -> bool:
            pods = self.pods()
            return len(pods) == replicas and all(
                pod_ready(p) and p["metadata"]["labels"].get("modeldeploy.dev/track") == "stable"
                for p in pods
            )

        wait_for(settled, timeout, "only the stable's pods to be left", interval=1)

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        done = self.tier.kubectl(
            "get",
            "events",
            "-n",
            self.namespace,
            "--field-selector",
            f"involvedObject.name={self.name},involvedObject.kind=ModelDeployment",
            "-o",
            "json",
        )
        events: list[dict[str, Any]] = json.loads(done.stdout)["items"]
        events.sort(key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["name"]))
        return [e for e in events if reason is None or e.get("reason") == reason]

    def stop(self) -> None:
        if self.recorder is not None:
            self.recorder.stop()

    def diagnostics(self) -> str:
        """What a failed scenario leaves to look at: status, pods, events."""
        parts = []
        for args in (
            ("get", "md,deployments,pods", "-o", "wide"),
            ("get", "events", "--sort-by=.lastTimestamp"),
            ("get", "md", self.name, "-o", "jsonpath={.status}"),
        ):
            done = self.tier.kubectl(*args, "-n", self.namespace, check=False)
            parts.append(f"$ kubectl {' '.join(args)}\n{done.stdout}{done.stderr}")
        return "\n".join(parts)
