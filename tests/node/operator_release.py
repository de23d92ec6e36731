"""The operator installed as users install it: `helm upgrade --install` of charts/modeldeploy.

The chart's Deployment runs the built operator image (two replicas, one leader on a Lease)
with in-cluster configuration and the chart's RBAC, on the tier's node, annotated for
Prometheus' pod discovery. ModelDeployments without their own image and Prometheus get
the built server image and the tier's Prometheus (`defaultServerImage`,
`defaultPrometheusUrl`). `upgrade --install` of the release `modeldeploy` in
`modeldeploy-system` also takes over a release a CI job installed before the tests, so
there is never a second operator.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

from tests.integration.conftest import REPO_ROOT
from tests.node.realnode import wait_for
from tests.node.tier import NODE_SELECTOR, TOLERATIONS, TierCluster

RELEASE = "modeldeploy"
NAMESPACE = "modeldeploy-system"
CHART = REPO_ROOT / "charts" / "modeldeploy"
METRICS_PORT = 8080


def image_values(reference: str) -> list[str]:
    """`--set` arguments naming an image reference: repository, and tag or digest."""
    if "@" in reference:
        repository, digest = reference.split("@", 1)
        return ["--set", f"image.repository={repository}", "--set", f"image.digest={digest}"]
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return [
            "--set",
            f"image.repository={reference[:colon]}",
            "--set",
            f"image.tag={reference[colon + 1 :]}",
        ]
    return ["--set", f"image.repository={reference}"]


@dataclass
class OperatorRelease:
    tier: TierCluster
    namespace: str = NAMESPACE
    name: str = RELEASE

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/name=modeldeploy,app.kubernetes.io/instance={self.name}"

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    def pods(self) -> list[dict[str, Any]]:
        done = self.tier.kubectl(
            "get", "pods", "-n", self.namespace, "-l", self.selector, "-o", "json"
        )
        items: list[dict[str, Any]] = json.loads(done.stdout)["items"]
        return items

    def leader(self) -> str | None:
        """The pod holding the leader Lease (the chart names the Lease after the release)."""
        lease = self.tier.get("lease", self.name, self.namespace)
        if lease is None:
            return None
        holder = lease.get("spec", {}).get("holderIdentity")
        return str(holder) if holder else None

    def can_i(self, verb: str, resource: str, namespace: str | None = None) -> bool:
        where = ["-n", namespace] if namespace else ["--all-namespaces"]
        done = self.tier.kubectl(
            "auth", "can-i", verb, resource, "--as", self.service_account, *where, check=False
        )
        return done.stdout.strip() == "yes"

    def logs(self, tail: int = 200) -> str:
        done = self.tier.kubectl(
            "logs",
            "-n",
            self.namespace,
            "-l",
            self.selector,
            f"--tail={tail}",
            "--prefix",
            check=False,
        )
        return str(done.stdout + done.stderr)


def install(tier: TierCluster, prometheus_url: str) -> OperatorRelease:
    helm = tier.cluster.helm_bin
    assert helm, "no helm binary (scripts/build-binaries.sh builds one; or put helm on PATH)"
    release = OperatorRelease(tier)
    values = [
        *image_values(tier.images.operator),
        "--set",
        "image.pullPolicy=IfNotPresent",
        "--set",
        f"defaultServerImage={tier.images.server}",
        "--set",
        f"defaultPrometheusUrl={prometheus_url}",
        "--set-json",
        f"nodeSelector={json.dumps(NODE_SELECTOR)}",
        "--set-json",
        f"tolerations={json.dumps(TOLERATIONS)}",
        "--set-json",
        "podAnnotations="
        + json.dumps(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
                "prometheus.io/path": "/metrics",
            }
        ),
    ]
    command = [
        helm,
        "upgrade",
        "--install",
        release.name,
        str(CHART),
        "--kubeconfig",
        str(tier.cluster.kubeconfig),
        "--namespace",
        release.namespace,
        "--create-namespace",
        # A CRD applied by kubectl (or by the 0.1.0 chart's crds/) is adopted, as the chart
        # README tells users to.
        "--take-ownership",
        "--wait",
        "--timeout",
        "5m",
        *values,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=330)
    if done.returncode != 0:
        raise AssertionError(
            f"helm upgrade --install failed (exit {done.returncode}):\n{done.stderr}\n"
            f"{release.logs()}"
        )
    wait_for(release.leader, 60, "an operator replica to take the leader Lease")
    return release


def uninstall(tier: TierCluster, release: OperatorRelease) -> None:
    helm = tier.cluster.helm_bin
    if helm:
        subprocess.run(
            [
                helm,
                "uninstall",
                release.name,
                "--namespace",
                release.namespace,
                "--kubeconfig",
                str(tier.cluster.kubeconfig),
                "--wait",
                "--timeout",
                "2m",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=150,
        )
