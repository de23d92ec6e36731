"""Helpers for tests on the local cluster's real node: where it is, pods on it, host state.

``RealNode`` is what ``scripts/cluster.sh node env`` says about the node (addresses,
device names, images). ``on_real_node`` makes a pod spec tolerate and select it;
``nodecheck_pod`` is a pod of the node's test image. ``HostState`` snapshots everything
the node may leave on the host, to check that ``down`` leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# where kubelet, containerd and the CNI plugins write whatever their configuration says
FIXED_PLACES = (
    "/var/lib/kubelet",
    "/run/containerd",
    "/var/run/netns",
    "/run/netns",
    "/var/lib/cni",
)


@dataclass(frozen=True)
class RealNode:
    name: str
    ip: str
    cluster_cidr: str
    node_pod_cidr: str
    bridge: str
    bridge_ip: str
    service_cidr: str
    kubernetes_service_ip: str
    sink: str
    cluster_domain: str
    tier_label: str
    taint_key: str
    node_dir: Path
    kube_proxy_bin: str
    nodecheck_image: str
    pause_image: str

    @classmethod
    def from_env(cls, env: dict[str, str]) -> RealNode:
        return cls(
            name=env["NODE_NAME"],
            ip=env["NODE_IP"],
            cluster_cidr=env["CLUSTER_CIDR"],
            node_pod_cidr=env["NODE_POD_CIDR"],
            bridge=env["BRIDGE"],
            bridge_ip=env["BRIDGE_IP"],
            service_cidr=env["SERVICE_CIDR"],
            kubernetes_service_ip=env["KUBERNETES_SERVICE_IP"],
            sink=env["SINK"],
            cluster_domain=env["CLUSTER_DOMAIN"],
            tier_label=env["NODE_TIER_LABEL"],
            taint_key=env["NODE_TAINT_KEY"],
            node_dir=Path(env["NODE_DIR"]),
            kube_proxy_bin=env["KUBE_PROXY_BIN"],
            nodecheck_image=env["NODECHECK_IMAGE"],
            pause_image=env["PAUSE_IMAGE"],
        )


def on_real_node(pod_spec: dict[str, Any], node: RealNode) -> dict[str, Any]:
    """The pod spec, selecting the real node and tolerating its taint."""
    spec = dict(pod_spec)
    spec["nodeSelector"] = {**spec.get("nodeSelector", {}), node.tier_label: "real"}
    spec["tolerations"] = [
        *spec.get("tolerations", []),
        {"key": node.taint_key, "operator": "Exists", "effect": "NoSchedule"},
    ]
    return spec


def nodecheck_pod(
    name: str,
    node: RealNode,
    args: tuple[str, ...] = ("serve",),
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod of the node's test image (see scripts/node/nodecheck), ready when /healthz is."""
    container = {
        "name": "main",
        "image": node.nodecheck_image,
        "imagePullPolicy": "IfNotPresent",
        "args": list(args),
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    spec = on_real_node({"containers": [container], "terminationGracePeriodSeconds": 2}, node)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": spec,
    }


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll until `probe` returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def http_get(url: str, timeout: float = 5) -> str:
    """GET from the host; the body as text (raises on errors and non-2xx answers)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read()
    return body.decode()


def route_device(address: str) -> str:
    """The device the host's routing table sends packets for `address` to."""
    out = _run("ip", "-o", "route", "get", address)
    m = re.search(r"\bdev (\S+)", out)
    assert m, f"ip route get {address}: {out}"
    return m.group(1)


def default_route_device() -> str | None:
    m = re.search(r"\bdev (\S+)", _run("ip", "-o", "route", "show", "default"))
    return m.group(1) if m else None


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


@dataclass
class HostState:
    """What the real node may leave on the host; compare a snapshot before and after."""

    links: set[str] = field(default_factory=set)
    chains: set[str] = field(default_factory=set)
    nft_tables: set[str] = field(default_factory=set)
    mounts: set[str] = field(default_factory=set)
    processes: set[str] = field(default_factory=set)
    cgroups: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)
    conntrack: set[str] = field(default_factory=set)
    sysctls: dict[str, str] = field(default_factory=dict)

    @classmethod
    def snapshot(
        cls, node_dir: Path, markers: tuple[str, ...], networks: tuple[str, ...]
    ) -> HostState:
        """The host now: mounts under `node_dir` or the fixed places of kubelet, containerd
        and CNI; processes whose command line names one of `markers` or that run in the
        node's cgroups; connection tracking entries with an address in `networks`."""
        state = cls()
        links = json.loads(_run("ip", "-j", "link", "show"))
        state.links = {link["ifname"] for link in links}
        for table in ("raw", "mangle", "nat", "filter"):
            saved = _run("iptables-save", "-t", table)
            state.chains |= {f"{table}/{c}" for c in re.findall(r"^:(\S+)", saved, re.M)}
            state.chains |= {f"{table}/rule {r}" for r in re.findall(r"^(-A .*)$", saved, re.M)}
        state.nft_tables = set(_run("nft", "list", "tables").splitlines())
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith((str(node_dir), *FIXED_PLACES)):
                state.mounts.add(point)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                cgroups = (proc / "cgroup").read_text()
            except OSError:
                continue
            if any(m in cmdline for m in markers) or ":/modeldeploy/" in cgroups:
                state.processes.add(f"{proc.name} {cmdline[:200]}")
        cgroup_root = Path("/sys/fs/cgroup")
        state.cgroups = {str(p) for p in cgroup_root.glob("*/modeldeploy")} | {
            str(p) for p in cgroup_root.glob("modeldeploy")
        }
        for pattern in (
            "/var/lib/cni/**/*",
            "/var/log/containers/*",
            "/var/lib/kubelet/**/*",
            "/run/containerd/**/*",
            "/run/modeldeploy-node",
        ):
            state.files |= {str(p) for p in Path("/").glob(pattern.lstrip("/"))}
        nets = [ip_network(n) for n in networks]
        for entry in _run("conntrack", "-L").splitlines():
            addresses = re.findall(r"\b(?:src|dst)=(\S+)", entry)
            if any(ip_address(a) in n for a in addresses for n in nets):
                state.conntrack.add(entry)
        for key in (
            "net/ipv4/ip_forward",
            "vm/overcommit_memory",
            "vm/panic_on_oom",
            "kernel/panic",
            "kernel/panic_on_oops",
            "net/ipv4/conf/all/route_localnet",
        ):
            state.sysctls[key] = Path("/proc/sys", key).read_text().strip()
        return state

    def left_over(self, before: HostState) -> dict[str, Any]:
        """What this snapshot has that `before` had not (and sysctls that differ)."""
        found: dict[str, Any] = {}
        for name in (
            "links",
            "chains",
            "nft_tables",
            "mounts",
            "processes",
            "cgroups",
            "files",
            "conntrack",
        ):
            extra = sorted(getattr(self, name) - getattr(before, name))
            if extra:
                found[name] = extra
        changed = {
            k: (before.sysctls[k], v) for k, v in self.sysctls.items() if before.sysctls[k] != v
        }
        if changed:
            found["sysctls (before, after)"] = changed
        return found
