"""The node tier's cluster: where the product runs as users run it, and how tests reach it.

A :class:`TierCluster` is the local cluster with its real node (``tests/node/conftest.py``
starts it and imports the images) or the cluster of ``MODELDEPLOY_KUBECONFIG``, such as
kind with the images loaded (``.github/workflows/e2e.yaml``). Nothing here assumes that the
host reaches pod or Service addresses: Prometheus and the load generator are read through
the API server's proxy, and files reach pods through ``kubectl exec``.

Node-tier pods select the nodes labelled ``modeldeploy.dev/node-tier=real`` and tolerate
the real node's taint: the local real node carries both, kind's node the label
(``scripts/kind/cluster.yaml``).

Images (``docker.io/local/NAME:TAG``, what the real node imports and what kind stores
``local/NAME:TAG`` as) can be named otherwise with ``MODELDEPLOY_OPERATOR_IMAGE``,
``MODELDEPLOY_SERVER_IMAGE``, ``MODELDEPLOY_PROMETHEUS_IMAGE``,
``MODELDEPLOY_METRICS_SERVER_IMAGE`` and ``MODELDEPLOY_LOADGEN_IMAGE``.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import config as k8s_config
from tests.integration.conftest import REPO_ROOT, SCRIPTS, Cluster, _parse_env_lines
from tests.node.realnode import wait_for

_NETWORK = _parse_env_lines((SCRIPTS / "node" / "network.env").read_text())
TIER_LABEL = _NETWORK["NODE_TIER_LABEL"]
TAINT_KEY = _NETWORK["NODE_TAINT_KEY"]

IMAGE_VARIABLES = {
    "operator": "MODELDEPLOY_OPERATOR_IMAGE",
    "server": "MODELDEPLOY_SERVER_IMAGE",
    "prometheus": "MODELDEPLOY_PROMETHEUS_IMAGE",
    "metrics_server": "MODELDEPLOY_METRICS_SERVER_IMAGE",
    "loadgen": "MODELDEPLOY_LOADGEN_IMAGE",
}
# the names of make images and scripts/node-tier-images.sh, as kind and the real node store them
IMAGE_NAMES = {
    "operator": "modeldeploy-operator",
    "server": "modelserver",
    "prometheus": "modeldeploy-prometheus",
    "metrics_server": "modeldeploy-metrics-server",
    "loadgen": "modeldeploy-loadgen",
}


def project_version() -> str:
    match = re.search(r'^version = "([^"]+)"$', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    assert match, "no version in pyproject.toml"
    return match.group(1)


def image_tags() -> dict[str, str]:
    """The tag of each image: the project version, and the pinned module versions of
    Prometheus and metrics-server."""
    version = project_version()
    pins = _parse_env_lines((SCRIPTS / "versions.env").read_text())
    return {
        "operator": version,
        "server": version,
        "prometheus": pins["PROMETHEUS_VERSION"],
        "metrics_server": pins["METRICS_SERVER_VERSION"],
        "loadgen": version,
    }


@dataclass(frozen=True)
class Images:
    operator: str
    server: str
    prometheus: str
    metrics_server: str
    loadgen: str

    @classmethod
    def from_env(cls) -> Images:
        tags = image_tags()
        found = {
            key: os.environ.get(variable) or f"docker.io/local/{IMAGE_NAMES[key]}:{tags[key]}"
            for key, variable in IMAGE_VARIABLES.items()
        }
        return cls(**found)


def missing_archives(manifest: Path) -> list[str]:
    """The images the tier needs that make images has not built (NAME:TAG), from its manifest."""
    built = set()
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) >= 3 and Path(fields[2]).is_file():
                built.add(f"{fields[0]}:{fields[1]}")
    tags = image_tags()
    wanted = [f"{IMAGE_NAMES[key]}:{tags[key]}" for key in IMAGE_NAMES]
    return [name for name in wanted if name not in built]


NODE_SELECTOR = {TIER_LABEL: "real"}
TOLERATIONS = [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]

# what every pod of the tier's own (Prometheus, load, files) runs with
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def placed(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """The pod spec on the node tier's node: its label selected, the real node's taint
    tolerated."""
    return {
        **pod_spec,
        "nodeSelector": {**pod_spec.get("nodeSelector", {}), TIER_LABEL: "real"},
        "tolerations": [*pod_spec.get("tolerations", []), *TOLERATIONS],
    }


@dataclass
class TierCluster:
    cluster: Cluster
    images: Images
    # a directory on the tier's node for the model store (hostPath); it goes with the node
    store_path: str
    # the local cluster's real node (else a cluster of MODELDEPLOY_KUBECONFIG)
    local: bool
    api: Any = None

    def __post_init__(self) -> None:
        if self.api is None:
            self.api = k8s_config.new_client_from_config(config_file=str(self.cluster.kubeconfig))

    def close(self) -> None:
        self.api.close()

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> Any:
        return self.cluster.kubectl(*args, check=check, input=input, timeout=timeout)

    def apply(self, *objects: dict[str, Any], namespace: str | None = None) -> None:
        where = ["-n", namespace] if namespace else []
        document = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        self.kubectl(
            "apply", *where, "--server-side", "--force-conflicts", "-f", "-", input=document
        )

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        where = ["-n", namespace] if namespace else []
        done = self.kubectl("get", kind, name, *where, "-o", "json", check=False)
        if done.returncode != 0:
            if "NotFound" in done.stderr:
                return None
            raise AssertionError(f"kubectl get {kind} {name}: {done.stderr}")
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    def create_namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.kubectl("create", "namespace", name)
        wait_for(
            lambda: self.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
            30,
            f"the default ServiceAccount of namespace {name}",
        )
        return name

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)

    def proxy(
        self,
        kind: str,
        namespace: str,
        name: str,
        port: int,
        path: str,
        params: list[tuple[str, str]] | None = None,
        method: str = "GET",
        timeout: float = 15,
    ) -> bytes:
        """A request to a pod or Service (`kind` pods or services) through the API server's
        proxy: works wherever kubectl does, whatever the host can reach."""
        resource = f"/api/v1/namespaces/{namespace}/{kind}/{name}:{port}/proxy/{path.lstrip('/')}"
        method, url, headers, body, post = self.api.param_serialize(
            method=method,
            resource_path=resource,
            query_params=params or [],
            header_params={"Accept": "*/*"},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(
            method,
            url,
            header_params=headers,
            body=body,
            post_params=post,
            _request_timeout=timeout,
        )
        response.read()
        data: bytes = response.data
        if response.status >= 400:
            raise AssertionError(
                f"{method} {resource} through the API server answered {response.status}: "
                f"{data[:500]!r}"
            )
        return data

    def check_node(self) -> str:
        """The name of a Ready node the tier's pods can run on; fails saying how to get one."""
        done = self.kubectl("get", "nodes", "-l", f"{TIER_LABEL}=real", "-o", "json")
        nodes = json.loads(done.stdout)["items"]
        ready = [
            n["metadata"]["name"]
            for n in nodes
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        assert ready, (
            f"no Ready node labelled {TIER_LABEL}=real: the node tier's pods select it "
            "(kind: create the cluster with scripts/kind/cluster.yaml, or "
            f"kubectl label node NAME {TIER_LABEL}=real)"
        )
        return str(ready[0])


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", []) or []
    )
