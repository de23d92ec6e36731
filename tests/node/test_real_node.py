"""The local cluster's real node: a real kubelet runs pods from locally imported images,
kube-proxy serves their Services, CoreDNS names them, pods reach the API server, and
nothing for the pod or Service ranges can leave the machine even without kube-proxy."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.conftest import SCRIPTS
from tests.node.conftest import NodeCluster, restart_missing_components, stop_component
from tests.node.realnode import (
    default_route_device,
    http_get,
    nodecheck_pod,
    route_device,
    wait_for,
)

pytestmark = pytest.mark.node

SERVICE_PORT = 80


def _kubernetes_version() -> str:
    for line in (SCRIPTS / "versions.env").read_text().splitlines():
        if line.startswith("KUBERNETES_VERSION="):
            return line.partition("=")[2].strip()
    raise AssertionError("KUBERNETES_VERSION missing from scripts/versions.env")


def _get(nc: NodeCluster, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(nc.cluster.kubectl("get", *args, "-o", "json").stdout)
    return data


def _condition(obj: dict[str, Any], type_: str) -> str | None:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


@dataclass
class Served:
    """Pods on the real node behind one Service: `web` (ready), `never` (never ready, same
    Service), and `client`, a pod to exec commands from."""

    nc: NodeCluster
    namespace: str
    web_ip: str
    never_ip: str
    service_ip: str

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.nc.cluster.kubectl(
            "exec", "-n", self.namespace, "client", "--", *cmd, check=check, timeout=60
        )


def _answers(url: str) -> bool:
    try:
        http_get(url, timeout=2)
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def served(node_cluster: NodeCluster) -> Iterator[Served]:
    nc, node = node_cluster, node_cluster.node
    ns = f"n-served-{uuid.uuid4().hex[:6]}"
    kubectl = nc.cluster.kubectl
    kubectl("create", "namespace", ns)
    wait_for(
        lambda: kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0,
        30,
        "the namespace's default ServiceAccount",
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"tier": "web"},
            "ports": [{"port": SERVICE_PORT, "targetPort": "http"}],
        },
    }
    docs = [
        nodecheck_pod("web", node, labels={"tier": "web"}),
        nodecheck_pod("never", node, args=("serve", "-never-ready"), labels={"tier": "web"}),
        nodecheck_pod("client", node),
        service,
    ]
    kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))
    try:
        kubectl("wait", "-n", ns, "--for=condition=Ready", "--timeout=90s", "pod/web", "pod/client")
        wait_for(
            lambda: _get(nc, "pod/never", "-n", ns)["status"].get("phase") == "Running",
            60,
            "the never-ready pod to run",
        )
        service_ip = _get(nc, "service/web", "-n", ns)["spec"]["clusterIP"]
        # kube-proxy programs the ready endpoint a moment after the pod turns Ready;
        # until then the ClusterIP refuses connections
        wait_for(
            lambda: _answers(f"http://{service_ip}:{SERVICE_PORT}/"),
            60,
            "kube-proxy to send the Service's ClusterIP to the ready pod",
        )
        yield Served(
            nc=nc,
            namespace=ns,
            web_ip=_get(nc, "pod/web", "-n", ns)["status"]["podIP"],
            never_ip=_get(nc, "pod/never", "-n", ns)["status"]["podIP"],
            service_ip=service_ip,
        )
    finally:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_real_node_is_ready_run_by_its_own_kubelet_not_by_kwok(node_cluster: NodeCluster) -> None:
    node = node_cluster.node
    obj = _get(node_cluster, "node", node.name)
    assert _condition(obj, "Ready") == "True"
    info = obj["status"]["nodeInfo"]
    # kwok would report its own version for a node it managed
    assert info["kubeletVersion"] == _kubernetes_version(), info
    assert info["containerRuntimeVersion"].startswith("containerd://"), info
    assert "kwok.x-k8s.io/node" not in obj["metadata"].get("annotations", {})
    assert obj["metadata"]["labels"][node.tier_label] == "real"
    assert {"key": node.taint_key, "value": "true", "effect": "NoSchedule"} in obj["spec"]["taints"]
    addresses = {(a["type"], a["address"]) for a in obj["status"]["addresses"]}
    assert ("InternalIP", node.ip) in addresses
    assert obj["spec"]["podCIDR"] == node.node_pod_cidr

    fake = _get(node_cluster, "nodes", "-l", f"{node.tier_label}=fake")["items"]
    assert len(fake) == 2
    for n in fake:
        assert _condition(n, "Ready") == "True"
        assert n["status"]["nodeInfo"]["kubeletVersion"].startswith("kwok")
        assert IPv4Network(n["spec"]["podCIDR"]).subnet_of(IPv4Network(node.cluster_cidr))


def test_node_processes_listen_only_on_loopback_or_the_node_address(
    node_cluster: NodeCluster,
) -> None:
    node = node_cluster.node
    markers = (str(node.node_dir), f"bind={node.ip}")
    listening = subprocess.run(
        ["ss", "-H", "-l", "-t", "-u", "-n", "-p"], capture_output=True, text=True, check=True
    ).stdout
    seen = set()
    for line in listening.splitlines():
        pids = re.findall(r"pid=(\d+)", line)
        try:
            cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes().decode() for pid in pids]
        except OSError:
            continue  # gone meanwhile
        if not any(m in c for m in markers for c in cmdlines):
            continue
        local = line.split()[4]
        host = local.rsplit(":", 1)[0]
        name = re.search(r'\("([^"]+)"', line)
        assert name, line
        seen.add(name.group(1))
        assert host in ("127.0.0.1", node.ip), line
    assert {"kubelet", "kube-proxy", "containerd", "coredns", "socat"} <= seen, seen


def test_untolerating_pods_stay_off_the_real_node(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "plain"},
        "spec": {
            "replicas": 6,
            "selector": {"matchLabels": {"app": "plain"}},
            "template": {
                "metadata": {"labels": {"app": "plain"}},
                "spec": {"containers": [{"name": "main", "image": "example.invalid/app:1"}]},
            },
        },
    }
    node_cluster.cluster.kubectl(
        "apply", "-n", node_namespace, "-f", "-", input=yaml.safe_dump(deployment)
    )
    node_cluster.cluster.kubectl(
        "wait",
        "-n",
        node_namespace,
        "--for=condition=Available",
        "--timeout=90s",
        "deployment/plain",
    )
    pods = _get(node_cluster, "pods", "-n", node_namespace)["items"]
    assert len(pods) == 6
    assert all(p["spec"]["nodeName"] != node_cluster.node.name for p in pods)


def test_a_missing_image_fails_to_pull_without_leaving_the_machine(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    """No registry is asked: containerd's proxy is a closed port on the loopback address."""
    pod = nodecheck_pod("absent", node_cluster.node)
    pod["spec"]["containers"][0]["image"] = "docker.io/local/absent:1"
    node_cluster.cluster.kubectl(
        "apply", "-n", node_namespace, "-f", "-", input=yaml.safe_dump(pod)
    )

    def waiting() -> dict[str, Any] | None:
        statuses = _get(node_cluster, "pod/absent", "-n", node_namespace)["status"].get(
            "containerStatuses", []
        )
        state: dict[str, Any] = statuses[0]["state"].get("waiting", {}) if statuses else {}
        return state if state.get("reason") in ("ErrImagePull", "ImagePullBackOff") else None

    wait_for(waiting, 60, "the pull of a missing image to fail")
    events = node_cluster.cluster.kubectl(
        "get", "events", "-n", node_namespace, "--field-selector", "involvedObject.name=absent"
    ).stdout
    assert "127.0.0.1:9" in events, events


def test_pod_is_ready_under_its_probe_and_answers_on_its_pod_ip(served: Served) -> None:
    pod = _get(served.nc, "pod/web", "-n", served.namespace)
    assert pod["spec"]["nodeName"] == served.nc.node.name
    assert pod["status"]["containerStatuses"][0]["imageID"], "the imported image ran"
    assert http_get(f"http://{served.web_ip}:8080/") == "nodecheck web\n"


def test_never_ready_pod_runs_but_gets_no_service_traffic(served: Served) -> None:
    pod = _get(served.nc, "pod/never", "-n", served.namespace)
    assert pod["status"]["phase"] == "Running"
    assert _condition(pod, "Ready") == "False"
    # its server answers, but its readiness probe keeps it out of the Service
    assert http_get(f"http://{served.never_ip}:8080/") == "nodecheck never\n"
    answers = {http_get(f"http://{served.service_ip}:{SERVICE_PORT}/") for _ in range(20)}
    assert answers == {"nodecheck web\n"}


def test_service_answers_on_its_cluster_ip_from_the_host(served: Served) -> None:
    assert http_get(f"http://{served.service_ip}:{SERVICE_PORT}/") == "nodecheck web\n"


def test_service_answers_by_dns_name_from_another_pod(served: Served) -> None:
    domain = served.nc.node.cluster_domain
    fqdn = f"web.{served.namespace}.svc.{domain}"
    assert served.exec("/nodecheck", "lookup", fqdn).stdout.split() == [served.service_ip]
    out = served.exec("/nodecheck", "get", f"http://{fqdn}:{SERVICE_PORT}/").stdout
    assert out == "nodecheck web\n"
    # the short name, through the pod's search path
    assert served.exec("/nodecheck", "get", f"http://web:{SERVICE_PORT}/").stdout == out


def test_dns_serves_the_cluster_zone_only(served: Served) -> None:
    done = served.exec("/nodecheck", "lookup", "example.com.", check=False)
    assert done.returncode != 0, done.stdout
    assert "example.com" in done.stderr


def test_kubectl_logs_shows_the_requests(served: Served) -> None:
    http_get(f"http://{served.web_ip}:8080/")
    logs = served.nc.cluster.kubectl("logs", "-n", served.namespace, "pod/web").stdout
    assert "listening on :8080" in logs
    assert "GET / from" in logs


def test_pods_reach_the_api_server_with_in_cluster_config(served: Served) -> None:
    account = "/var/run/secrets/kubernetes.io/serviceaccount"
    for host in ("kubernetes.default.svc", served.nc.node.kubernetes_service_ip):
        out = served.exec(
            "/nodecheck",
            "get",
            "-ca",
            f"{account}/ca.crt",
            "-bearer-file",
            f"{account}/token",
            f"https://{host}/version",
        ).stdout
        assert json.loads(out)["gitVersion"] == _kubernetes_version()


def _connect_error(address: str, port: int, timeout: float = 10) -> int | None:
    """Try a TCP connection from the host; the errno it fails with (None: it connected)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((address, port))
        except TimeoutError:
            return errno.ETIMEDOUT
        except OSError as e:
            return e.errno
    return None


def _udp_send_error(address: str, port: int) -> int | None:
    """Send one UDP datagram from the host; the errno the kernel refuses it with, if any
    (a packet dropped by a netfilter rule on its way out fails at once with EPERM)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"ping", (address, port))
        except OSError as e:
            return e.errno
    return None


@pytest.fixture
def kube_proxy_stopped(served: Served) -> Iterator[Served]:
    """kube-proxy stopped and its rules removed; started again afterwards."""
    stop_component(served.nc, "kube-proxy")
    try:
        yield served
    finally:
        restart_missing_components(served.nc)
        wait_for(
            lambda: _connect_error(served.service_ip, SERVICE_PORT) is None,
            60,
            "the Service's ClusterIP to answer again after kube-proxy restarted",
        )


def test_without_kube_proxy_nothing_for_pods_or_services_leaves_the_machine(
    kube_proxy_stopped: Served,
) -> None:
    served, node = kube_proxy_stopped, kube_proxy_stopped.nc.node
    nat = subprocess.run(
        ["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True
    ).stdout
    assert "KUBE-SERVICES" not in nat, "kube-proxy's rules are gone"

    services = ip_network(node.service_cidr)
    node_pods = ip_network(node.node_pod_cidr)
    unused_cluster_ip = str(services[-2])
    unused_node_pod_ip = str(node_pods[-2])
    fake_range_pod_ip = str(ip_network(node.cluster_cidr)[-2])
    outward = default_route_device()
    expected = {
        served.service_ip: node.sink,  # a Service with no rule left
        unused_cluster_ip: node.sink,
        unused_node_pod_ip: node.bridge,
        fake_range_pod_ip: node.sink,
    }
    for address, device in expected.items():
        got = route_device(address)
        assert got == device, f"{address} is routed to {got}, not {device}"
        assert got != outward

    # connections fail here and now, refused by this machine (no timeout: nothing was sent
    # anywhere a reply could come from)
    for address in (served.service_ip, unused_cluster_ip, fake_range_pod_ip):
        assert _connect_error(address, SERVICE_PORT) in (errno.ECONNREFUSED, errno.EPERM), address
    # an unused pod address on the bridge: nobody answers the neighbour lookup
    assert _connect_error(unused_node_pod_ip, 8080) == errno.EHOSTUNREACH
    # and from a pod: its packets for the Service go nowhere either
    done = served.exec(
        "/nodecheck",
        "get",
        "-timeout",
        "3s",
        f"http://{served.service_ip}:{SERVICE_PORT}/",
        check=False,
    )
    assert done.returncode != 0


def test_a_route_out_of_the_machine_cannot_carry_cluster_addresses(
    node_cluster: NodeCluster,
) -> None:
    """Even when a route sends a Service or pod address to another interface, our iptables
    rule drops the packet before it leaves. The "outside" here is a network namespace this
    test makes, so nothing leaves the machine even if the rule failed."""
    node = node_cluster.node
    host_end, peer_end = "mdout0", "mdout1"
    targets = [str(ip_network(node.service_cidr)[-3]), str(ip_network(node.cluster_cidr)[-3])]

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    # the outside: a network namespace that lives as long as this process
    outside = subprocess.Popen(["unshare", "--net", "sleep", "300"])
    in_outside = ["nsenter", f"--net=/proc/{outside.pid}/ns/net"]
    try:
        wait_for(
            lambda: os.readlink(f"/proc/{outside.pid}/ns/net") != os.readlink("/proc/self/ns/net"),
            10,
            "the outside network namespace",
        )
        ip("link", "add", host_end, "type", "veth", "peer", "name", peer_end)
        ip("link", "set", peer_end, "netns", str(outside.pid))
        ip("addr", "add", "192.168.251.1/30", "dev", host_end)
        ip("link", "set", host_end, "up")
        for args in (
            ["addr", "add", "192.168.251.2/30", "dev", peer_end],
            ["link", "set", peer_end, "up"],
        ):
            subprocess.run([*in_outside, "ip", *args], check=True, capture_output=True)
        for t in targets:
            ip("route", "add", f"{t}/32", "via", "192.168.251.2", "dev", host_end)
            assert route_device(t) == host_end
        for t in targets:
            assert _udp_send_error(t, 53) == errno.EPERM, t
            assert _connect_error(t, SERVICE_PORT, timeout=2) is not None, t
        snmp = Path(f"/proc/{outside.pid}/net/snmp").read_text()
        header, values = (line.split() for line in snmp.splitlines() if line.startswith("Ip:"))
        assert values[header.index("InReceives")] == "0", "an IPv4 packet reached the outside"
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, check=False)
        outside.kill()
        outside.wait()
