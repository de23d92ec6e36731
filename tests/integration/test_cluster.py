"""The local cluster is a real control plane: API server, controllers, scheduler, kwok nodes."""

from __future__ import annotations

import json
import re
import time
import uuid
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from .conftest import Cluster

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VALID_EXAMPLES = sorted(EXAMPLES.glob("*.yaml"))
INVALID_EXAMPLES = sorted((EXAMPLES / "invalid").glob("*.yaml"))
NEVER_READY_IMAGE = "kwok.invalid/never-ready:latest"
NETWORK_ENV = Path(__file__).resolve().parents[2] / "scripts" / "node" / "network.env"


def _network_env() -> dict[str, str]:
    """The local cluster's addresses (scripts/node/network.env: NAME=value lines)."""
    pairs = (line.split("=", 1) for line in NETWORK_ENV.read_text().splitlines())
    return {
        k: v.strip('"') for k, v in (p for p in pairs if len(p) == 2 and not p[0].startswith("#"))
    }


def _wait_for(what: str, check: Any, timeout: float = 60, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _get(cluster: Cluster, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return data


def _deployment(name: str, replicas: int, image: str = "example.invalid/app:1") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "main", "image": image}]},
                },
            },
        }
    )


def _pod(name: str, image: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": image}]},
        }
    )


def _condition(obj: dict[str, Any], type_: str) -> str | None:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


def test_two_fake_nodes_are_ready(cluster: Cluster) -> None:
    if not cluster.owned:
        pytest.skip("only for the cluster the tests started")
    nodes = _get(cluster, "nodes")["items"]
    ready = [n["metadata"]["name"] for n in nodes if _condition(n, "Ready") == "True"]
    assert len(ready) >= 2, nodes


def test_fake_nodes_are_labelled_and_take_pod_addresses_from_the_local_range(
    cluster: Cluster,
) -> None:
    if not cluster.owned:
        pytest.skip("only for the cluster the tests started")
    network = _network_env()
    fake = _get(cluster, "nodes", "-l", "modeldeploy.dev/node-tier=fake")["items"]
    assert len(fake) == 2
    for node in fake:
        cidr = IPv4Network(node["spec"]["podCIDR"])
        assert cidr.subnet_of(IPv4Network(network["CLUSTER_CIDR"])), cidr


def test_kwok_manages_only_the_annotated_fake_nodes(cluster: Cluster) -> None:
    """A node without kwok's annotation (the real node, say) is left to its own kubelet."""
    if not cluster.owned:
        pytest.skip("kwok's flags are those of the cluster the tests started")
    name = f"unmanaged-{uuid.uuid4().hex[:6]}"
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(node))
    try:
        # kwok makes a node it manages Ready within a second or two
        cluster.kubectl("wait", "--for=condition=Ready", "--timeout=30s", "node", "-l", "type=kwok")
        time.sleep(3)
        conditions = _get(cluster, "node", name).get("status", {}).get("conditions")
        assert not conditions, conditions
    finally:
        cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def test_server_reports_pinned_version(cluster: Cluster) -> None:
    if not cluster.owned:
        pytest.skip("only for the cluster the tests started")
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] != "v0.0.0", version
    assert version["major"] == "1", version


def test_deployment_becomes_available_and_is_garbage_collected(
    cluster: Cluster, namespace: str, k8s_api: Any
) -> None:
    from kubernetes import client

    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_deployment("web", 2))
    cluster.kubectl(
        "wait", "-n", namespace, "--for", "condition=Available", "--timeout=90s", "deployment/web"
    )
    dep = client.AppsV1Api(k8s_api).read_namespaced_deployment("web", namespace)
    assert dep.status is not None
    assert dep.status.ready_replicas == 2
    assert dep.status.available_replicas == 2

    pods = _get(cluster, "pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"].get("nodeName"), "scheduled by kube-scheduler"
        assert pod["status"]["phase"] == "Running"
        assert _condition(pod, "Ready") == "True"
    replicasets = _get(cluster, "replicasets", "-n", namespace, "-l", "app=web")["items"]
    assert len(replicasets) == 1
    assert replicasets[0]["metadata"]["ownerReferences"][0]["kind"] == "Deployment"

    # the garbage collector of kube-controller-manager removes what the Deployment owned
    cluster.kubectl("delete", "-n", namespace, "deployment/web", "--wait=true", "--timeout=60s")

    def gone() -> bool:
        rs = _get(cluster, "replicasets", "-n", namespace, "-l", "app=web")["items"]
        po = _get(cluster, "pods", "-n", namespace, "-l", "app=web")["items"]
        return not rs and not po

    _wait_for("ReplicaSet and pods of the deleted Deployment to be gone", gone, timeout=60)


def test_pods_become_ready_quickly(cluster: Cluster, namespace: str) -> None:
    start = time.monotonic()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_pod("quick", "example.invalid/a:1"))
    cluster.kubectl(
        "wait", "-n", namespace, "--for", "condition=Ready", "--timeout=30s", "pod/quick"
    )
    elapsed = time.monotonic() - start
    assert elapsed < 10, f"pod took {elapsed:.1f}s to become Ready"


def test_never_ready_image_runs_but_never_becomes_ready(cluster: Cluster, namespace: str) -> None:
    if not cluster.owned:
        pytest.skip("the never-ready image is a kwok stage of the cluster the tests started")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_pod("stuck", NEVER_READY_IMAGE))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_pod("fine", "example.invalid/a:1"))

    def running() -> bool:
        return bool(_get(cluster, "pod/stuck", "-n", namespace)["status"].get("phase") == "Running")

    _wait_for("the never-ready pod to be Running", running, timeout=30)
    cluster.kubectl(
        "wait", "-n", namespace, "--for", "condition=Ready", "--timeout=30s", "pod/fine"
    )
    time.sleep(3)  # long after a normal pod is Ready
    pod = _get(cluster, "pod/stuck", "-n", namespace)
    assert pod["status"]["phase"] == "Running"
    assert _condition(pod, "Ready") == "False"
    assert _condition(pod, "ContainersReady") == "False"
    assert all(not s["ready"] for s in pod["status"]["containerStatuses"])


def test_modeldeployment_crd_is_accepted(cluster: Cluster, crds_installed: list[str]) -> None:
    assert "modeldeployments.modeldeploy.dev" in crds_installed
    crd = _get(cluster, "crd", "modeldeployments.modeldeploy.dev")
    assert _condition(crd, "Established") == "True"
    assert _condition(crd, "NamesAccepted") == "True"
    assert _condition(crd, "NonStructuralSchema") in (None, "False")
    assert "md" in crd["spec"]["names"].get("shortNames", [])


@pytest.mark.parametrize("example", VALID_EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_server_dry_run(
    cluster: Cluster, crds_installed: list[str], namespace: str, example: Path
) -> None:
    done = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        str(example),
        check=False,
    )
    assert done.returncode == 0, f"{example.name} rejected:\n{done.stderr}"


def _expected_rejection(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    m = re.fullmatch(r"#\s*expect:\s*(.+?)\s*", first)
    assert m, f"{path} must start with '# expect: <substring of the rejection message>'"
    return m.group(1)


@pytest.mark.parametrize("example", INVALID_EXAMPLES, ids=lambda p: p.name)
def test_invalid_example_is_rejected_naming_the_rule(
    cluster: Cluster, crds_installed: list[str], namespace: str, example: Path
) -> None:
    expected = _expected_rejection(example)
    done = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        str(example),
        check=False,
    )
    assert done.returncode != 0, f"{example.name} was accepted by the server"
    message = " ".join(done.stderr.split())
    assert " ".join(expected.split()) in message, (
        f"{example.name}: rejection does not name the rule {expected!r}:\n{done.stderr}"
    )


def test_kubectl_get_md_shows_printer_columns(
    cluster: Cluster, crds_installed: list[str], namespace: str
) -> None:
    assert VALID_EXAMPLES, "examples/*.yaml missing"
    minimal = EXAMPLES / "minimal.yaml"
    example = minimal if minimal.exists() else VALID_EXAMPLES[0]
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", str(example))
    out = cluster.kubectl("get", "md", "-n", namespace).stdout
    header = out.splitlines()[0].split()
    assert header[0] == "NAME", out
    columns = ["PHASE", "STABLE", "CANARY", "WEIGHT", "AGE"]
    assert [c for c in header if c in columns] == columns, out
    name = yaml.safe_load(example.read_text())["metadata"]["name"]
    assert out.splitlines()[1].split()[0] == name


def test_httproute_can_be_created(cluster: Cluster, namespace: str) -> None:
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "fraud"},
        "spec": {
            "parentRefs": [{"name": "ml-gw", "namespace": "gateways"}],
            "hostnames": ["fraud.example.com"],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "fraud-stable", "port": 8080, "weight": 90},
                        {"name": "fraud-canary", "port": 8080, "weight": 10},
                    ]
                }
            ],
        },
    }
    cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(route)
    )
    got = _get(cluster, "httproute/fraud", "-n", namespace)
    weights = [b["weight"] for b in got["spec"]["rules"][0]["backendRefs"]]
    assert weights == [90, 10]
