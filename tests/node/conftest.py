"""Fixtures for the node tier: tests against the local cluster's real node (marker ``node``).

``node_cluster`` (session)
    A :class:`NodeCluster`: ``.cluster``, the :class:`~tests.integration.conftest.Cluster`
    of a dedicated local cluster started with its real node (``scripts/cluster.sh up``
    with ``MODELDEPLOY_REAL_NODE=1``), and ``.node``, a :class:`~tests.node.realnode.RealNode`
    (its addresses, devices and images). The cluster is removed at the end of the session,
    and the session fails when the real node left anything on the host (processes,
    interfaces, iptables chains, mounts, cgroups, files, kernel settings).
``node_namespace`` (function)
    A fresh namespace in that cluster, deleted afterwards without waiting.

The node tier's product tests (docs/node-tier.md) use these instead, which also run on
the cluster of ``MODELDEPLOY_KUBECONFIG`` (kind, with the images loaded):

``tier`` (session)
    A :class:`~tests.node.tier.TierCluster`: the local cluster with its real node and the
    images of ``make images`` imported, or ``MODELDEPLOY_KUBECONFIG``'s cluster.
``prometheus``, ``operator_release``, ``model_store`` (session)
    Prometheus with Kubernetes pod discovery, the chart's operator (``helm upgrade
    --install``) and the sample models (file server and volumes), in the cluster.
``scenario`` (function)
    A :class:`~tests.node.scenario.Scenario` in a namespace of its own; its status,
    pods, events and the operator's logs are printed when the test fails.

The binaries and images the node needs are built before the first test (progress on the
terminal). When this machine cannot run the real node (not root, not Linux, a kernel
feature missing, another cluster holding it), the tests are skipped with the reason, or
fail with ``CI=true``. Only one real node runs on a host, so the kwok-tier integration
tests run on a cluster without one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.integration.conftest import (
    CACHE,
    REPO_ROOT,
    SCRIPTS,
    TEST_CLUSTER_PREFIX,
    Cluster,
    _cluster_env,
    _down,
    _parse_env_lines,
    _print,
    _reap_abandoned_test_clusters,
    _run_streaming,
)
from tests.node import model_store as model_store_module
from tests.node import monitoring
from tests.node import operator_release as operator_release_module
from tests.node.model_store import ModelStore
from tests.node.monitoring import InClusterPrometheus
from tests.node.operator_release import OperatorRelease
from tests.node.realnode import HostState, RealNode
from tests.node.scenario import Scenario
from tests.node.tier import Images, TierCluster, missing_archives

NODE_SH = SCRIPTS / "node" / "node.sh"

# Outcome of pytest_collection_finish: the binaries (NAME -> path), or why there is no node.
_node_binaries: dict[str, str] | None = None
_no_node: str | None = None


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> None:
    """Fail loudly in CI, skip elsewhere."""
    if _in_ci():
        pytest.fail(f"no real node for the node tests (CI=true): {reason}", pytrace=False)
    pytest.skip(f"no real node for the node tests: {reason}")


def _network_env() -> dict[str, str]:
    return _parse_env_lines((SCRIPTS / "node" / "network.env").read_text())


def pytest_collection_finish(session: pytest.Session) -> None:
    """Install what the node needs and build its binaries before the first node test."""
    global _node_binaries, _no_node
    config = session.config
    if config.option.collectonly or not any(
        item.get_closest_marker("node") for item in session.items
    ):
        return
    if os.environ.get("MODELDEPLOY_KUBECONFIG"):
        _no_node = "MODELDEPLOY_KUBECONFIG names another cluster; these tests need the local one"
        done = subprocess.run(
            [str(SCRIPTS / "build-binaries.sh"), "--no-build"],
            capture_output=True,
            text=True,
            check=False,
        )
        # the node tier's product tests use these when they are built, else PATH's
        _node_binaries = _parse_env_lines(done.stdout) if done.returncode == 0 else None
        return
    install = subprocess.run(
        [str(NODE_SH), "install"], capture_output=True, text=True, check=False, timeout=900
    )
    check = subprocess.run([str(NODE_SH), "check"], capture_output=True, text=True, check=False)
    if install.returncode or check.returncode:
        _no_node = f"this machine cannot run it: {install.stdout.strip() or check.stdout.strip()}"
        return
    done = subprocess.run(
        [str(SCRIPTS / "build-binaries.sh"), "--no-build", "--node"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0:
        _node_binaries = _parse_env_lines(done.stdout)
        return
    _print(
        config, "\nnode tests: building the real node's binaries and images (first use only) ..."
    )
    started = time.monotonic()
    rc, out, tail = _run_streaming(
        config, [str(SCRIPTS / "build-binaries.sh"), "--node"], prefix="  "
    )
    if rc:
        _no_node = f"scripts/build-binaries.sh --node failed (exit {rc}):\n{tail}"
        return
    _node_binaries = _parse_env_lines(out)
    _print(config, f"node tests: ready after {time.monotonic() - started:.0f}s")


@dataclass
class NodeCluster:
    cluster: Cluster
    node: RealNode


def _node_env(name: str) -> dict[str, str]:
    env = _cluster_env(name)
    env["MODELDEPLOY_REAL_NODE"] = "1"
    return env


@pytest.fixture(scope="session")
def node_cluster(request: pytest.FixtureRequest) -> Iterator[NodeCluster]:
    config = request.config
    if os.environ.get("MODELDEPLOY_KUBECONFIG"):
        # what these check lives on this host; the node tier's product tests run there instead
        pytest.skip(
            "the host-level real node tests need the local cluster, not MODELDEPLOY_KUBECONFIG"
        )
    if _no_node is not None or _node_binaries is None:
        _unavailable(_no_node or "the node's binaries were not built")
    assert _node_binaries is not None
    _reap_abandoned_test_clusters()
    holder = subprocess.run(
        [str(NODE_SH), "owner"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if holder:
        _unavailable(
            f"cluster {holder} holds the real node (free it: "
            f"MODELDEPLOY_CLUSTER_NAME={holder} scripts/cluster.sh down)"
        )

    name = f"{TEST_CLUSTER_PREFIX}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    node_dir = CACHE / "node" / name
    network = _network_env()
    # the node's processes name its directory, the API server relay its address
    markers = (str(node_dir), f"bind={network['NODE_IP']}")
    networks = (network["CLUSTER_CIDR"], network["SERVICE_CIDR"], network["NODE_IP"])
    before = HostState.snapshot(node_dir, markers, networks)
    _print(config, f"\nnode tests: starting local cluster {name} with its real node ...")
    started = time.monotonic()
    env = _node_env(name)
    try:
        rc, out, tail = _run_streaming(
            config, [str(SCRIPTS / "cluster.sh"), "up"], env=env, prefix="  "
        )
    except BaseException:
        _down(name)
        raise
    lines = [line for line in out.splitlines() if line.strip()]
    if rc or not lines or not Path(lines[-1]).is_file():
        _down(name)
        _unavailable(f"scripts/cluster.sh up failed (exit {rc}):\n{tail}")
    _print(config, f"node tests: cluster {name} up in {time.monotonic() - started:.0f}s")
    node_env = subprocess.run(
        [str(SCRIPTS / "cluster.sh"), "node", "env"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    nc = NodeCluster(
        cluster=Cluster(
            name=name,
            kubeconfig=Path(lines[-1]),
            kubectl_bin=_node_binaries["KUBECTL_BIN"],
            helm_bin=_node_binaries.get("HELM_BIN"),
            owned=True,
        ),
        node=RealNode.from_env(_parse_env_lines(node_env)),
    )
    try:
        yield nc
    finally:
        report = _down(name)
        left = HostState.snapshot(node_dir, markers, networks).left_over(before)
        if left:
            pytest.fail(
                f"the real node of {name} left on the host: {left}\n{report}", pytrace=False
            )


def restart_missing_components(nc: NodeCluster) -> None:
    """`scripts/cluster.sh up` again: starts whatever node process is not running."""
    subprocess.run(
        [str(SCRIPTS / "cluster.sh"), "up"],
        env=_node_env(nc.cluster.name),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


def stop_component(nc: NodeCluster, component: str) -> None:
    subprocess.run(
        [str(SCRIPTS / "cluster.sh"), "node", "stop", component],
        env=_node_env(nc.cluster.name),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


@pytest.fixture
def node_namespace(node_cluster: NodeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"n-{uuid.uuid4().hex[:10]}"
    kubectl = node_cluster.cluster.kubectl
    kubectl("create", "namespace", name)
    deadline = time.monotonic() + 30
    while kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


# ---------------------------------------------------------------- the node tier's product
# The product as users install it (the chart, the images, a real Prometheus, load inside
# the cluster): on the local cluster's real node, or on the cluster MODELDEPLOY_KUBECONFIG
# names (kind in .github/workflows/e2e.yaml, the images loaded). Shared by the session.


def _external_tier_cluster(kubeconfig: str) -> Cluster:
    binaries = _node_binaries or {}
    kubectl = binaries.get("KUBECTL_BIN") or shutil.which("kubectl")
    helm = binaries.get("HELM_BIN") or shutil.which("helm")
    if not kubectl or not helm:
        _unavailable("the node tier on MODELDEPLOY_KUBECONFIG needs kubectl and helm on PATH")
    assert kubectl is not None
    cluster = Cluster(
        name="external", kubeconfig=Path(kubeconfig), kubectl_bin=kubectl, helm_bin=helm
    )
    probe = cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=30)
    if probe.returncode != 0:
        _unavailable(f"MODELDEPLOY_KUBECONFIG={kubeconfig} does not answer: {probe.stderr}")
    return cluster


@pytest.fixture(scope="session")
def tier(request: pytest.FixtureRequest) -> Iterator[TierCluster]:
    """A cluster whose tier node runs the built images (see tests/node/tier.py)."""
    external = os.environ.get("MODELDEPLOY_KUBECONFIG")
    if external:
        tc = TierCluster(
            cluster=_external_tier_cluster(external),
            images=Images.from_env(),
            store_path=os.environ.get("MODELDEPLOY_NODE_STORE", "/var/tmp/modeldeploy-node-tier"),
            local=False,
        )
    else:
        missing = missing_archives(CACHE / "images" / "manifest.tsv")
        if missing:
            _unavailable(f"images not built: {', '.join(missing)} (run `make images`)")
        nc: NodeCluster = request.getfixturevalue("node_cluster")
        started = time.monotonic()
        subprocess.run(
            [str(SCRIPTS / "cluster.sh"), "import-images"],
            env=_node_env(nc.cluster.name),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        _print(request.config, f"node tier: images imported in {time.monotonic() - started:.0f}s")
        tc = TierCluster(
            cluster=nc.cluster,
            images=Images.from_env(),
            store_path=str(nc.node.node_dir / "model-store"),
            local=True,
        )
    tc.check_node()
    try:
        yield tc
    finally:
        tc.close()


@pytest.fixture(scope="session")
def tier_namespace(tier: TierCluster) -> Iterator[str]:
    """The namespace of the tier's own pods: Prometheus and the model files."""
    name = tier.create_namespace("mdtier")
    try:
        yield name
    finally:
        monitoring.remove_cluster_objects(tier, name)
        tier.delete_namespace(name)


@pytest.fixture(scope="session")
def prometheus(tier: TierCluster, tier_namespace: str) -> InClusterPrometheus:
    return monitoring.deploy(tier, tier_namespace)


@pytest.fixture(scope="session")
def operator_release(
    tier: TierCluster, prometheus: InClusterPrometheus
) -> Iterator[OperatorRelease]:
    release = operator_release_module.install(tier, prometheus.url)
    try:
        yield release
    finally:
        if not tier.local:
            operator_release_module.uninstall(tier, release)


@pytest.fixture(scope="session")
def model_store(tier: TierCluster, tier_namespace: str) -> ModelStore:
    return model_store_module.deploy(tier, tier_namespace)


@pytest.fixture
def scenario_namespace(tier: TierCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one scenario, deleted afterwards without waiting."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:30].strip("-")
    name = tier.create_namespace(f"s-{base}")
    try:
        yield name
    finally:
        tier.delete_namespace(name)


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


@pytest.fixture
def scenario(
    tier: TierCluster,
    scenario_namespace: str,
    operator_release: OperatorRelease,
    request: pytest.FixtureRequest,
) -> Iterator[Scenario]:
    """A ModelDeployment `model` in the scenario's namespace (see tests/node/scenario.py);
    what it shows is printed when the test fails."""
    found = Scenario(tier, scenario_namespace)
    try:
        yield found
    finally:
        found.stop()
        if request.node.stash.get(_CALL_FAILED, False):
            _print(request.config, f"\n{found.diagnostics()}\n{operator_release.logs(60)}")
