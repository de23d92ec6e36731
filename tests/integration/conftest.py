"""Fixtures for integration tests against a real Kubernetes API server.

Fixtures (all tests here are marked ``integration``):

``cluster`` (session)
    A :class:`Cluster` with ``.kubeconfig`` (Path), ``.name``, ``.kubectl_bin``,
    ``.helm_bin`` (None when not built), ``.owned`` and
    ``.kubectl(*args, check=True, input=None, timeout=120) -> CompletedProcess[str]``.
    With ``MODELDEPLOY_KUBECONFIG`` set, that cluster is used as is and never torn down
    (it must have kwok's fake nodes: a cluster ``make cluster`` started, not kind).
    Otherwise ``scripts/cluster.sh up`` starts a dedicated cluster with a unique name
    (local processes with kwok fake nodes, even where kind works) and
    ``scripts/cluster.sh down`` removes it at the end of the session, leaving no process,
    also when the run ends early on SIGTERM (a CI timeout), SIGHUP or SIGINT.
``crds_installed`` (session)
    Applies every file in ``crds/`` and waits until the CRDs are Established.
``namespace`` (function)
    A fresh namespace with a unique name, deleted afterwards (without waiting).
``k8s_api`` (session)
    A ``kubernetes.client.ApiClient`` configured from the cluster's kubeconfig.

The pinned binaries are built (minutes, the first time only) before the first test
runs, from ``pytest_collection_finish``, so that the per-test timeout does not cover the
build, and its progress is printed to the terminal. When no cluster can be had, the
tests are skipped with the reason, or fail when ``CI=true``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import cluster_processes, shielded, start_in_group, stop_group

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts"
CRDS_DIR = REPO_ROOT / "crds"
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
TEST_CLUSTER_PREFIX = "mdtest"

# Outcome of the build done in pytest_collection_finish: binaries (NAME -> path) or an error.
_binaries: dict[str, str] | None = None
_build_error: str | None = None


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> None:
    """Fail loudly in CI, skip elsewhere."""
    if _in_ci():
        pytest.fail(
            f"no Kubernetes cluster for the integration tests (CI=true): {reason}", pytrace=False
        )
    pytest.skip(f"no Kubernetes cluster for the integration tests: {reason}")


def _print(config: pytest.Config, line: str) -> None:
    """Write a progress line to the real terminal, whatever the capture mode."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
    else:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _run_streaming(
    config: pytest.Config, cmd: list[str], env: dict[str, str] | None = None, prefix: str = ""
) -> tuple[int, str, str]:
    """Run cmd, echoing its stderr lines live; returns (rc, stdout, last stderr lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=40)
    # A group of its own: an interrupted `cluster.sh up` must not leave kwokctl running on.
    proc = start_in_group(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert proc.stderr is not None
    assert proc.stdout is not None
    try:
        for line in proc.stderr:
            line = line.rstrip("\n")
            tail.append(line)
            _print(config, prefix + line)
        out = proc.stdout.read()
        rc = proc.wait()
    except BaseException:
        stop_group(proc)
        raise
    return rc, out, "\n".join(tail)


def _parse_env_lines(text: str) -> dict[str, str]:
    result = {}
    for line in text.splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            parts = shlex.split(value)
            result[key] = parts[0] if parts else ""
    return result


def _external_kubeconfig() -> str | None:
    return os.environ.get("MODELDEPLOY_KUBECONFIG") or None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or find) the pinned binaries before the first integration test runs."""
    global _binaries, _build_error
    config = session.config
    if config.option.collectonly:
        return
    if not any(item.get_closest_marker("integration") for item in session.items):
        return
    # First try without building: instant when the cache is warm.
    done = subprocess.run(
        [str(SCRIPTS / "build-binaries.sh"), "--no-build"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0:
        _binaries = _parse_env_lines(done.stdout)
        return
    if _external_kubeconfig() is not None and _which("kubectl"):
        return  # an external cluster and a kubectl: nothing to build
    _print(config, "")
    _print(config, "integration tests: building the local control plane binaries (first use only;")
    _print(config, "  this takes 10-25 minutes on 2 cores, progress follows) ...")
    started = time.monotonic()
    try:
        rc, out, tail = _run_streaming(config, [str(SCRIPTS / "build-binaries.sh")], prefix="  ")
    except FileNotFoundError as e:
        _build_error = f"cannot run scripts/build-binaries.sh: {e}"
        return
    if rc == 0:
        _binaries = _parse_env_lines(out)
        _print(config, f"integration tests: binaries ready after {time.monotonic() - started:.0f}s")
    else:
        _build_error = f"scripts/build-binaries.sh failed (exit {rc}):\n{tail}"
        _print(config, "integration tests: " + _build_error)


def _which(name: str) -> str | None:
    for d in os.environ.get("PATH", "").split(os.pathsep):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return (
            f"kubectl {' '.join(map(str, self.cmd[3:]))} exited {self.returncode}\n"
            f"stdout: {self.stdout}\nstderr: {self.stderr}"
        )


@dataclass
class Cluster:
    name: str
    kubeconfig: Path
    kubectl_bin: str
    helm_bin: str | None = None
    owned: bool = False

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *map(str, args)]
        done = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise KubectlError(done.returncode, cmd, done.stdout, done.stderr)
        return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cluster_env(name: str) -> dict[str, str]:
    env = dict(os.environ)
    env["MODELDEPLOY_CLUSTER_NAME"] = name
    env.pop("MODELDEPLOY_KUBECONFIG", None)
    # local processes even where kind works: the kwok tier needs kwok's fake nodes and
    # stages, the real node exists only there (kind runs the node tier, through
    # MODELDEPLOY_KUBECONFIG: docs/local-cluster.md)
    env["MODELDEPLOY_CLUSTER_RUNTIME"] = "binary"
    # the kwok tier needs no real node (one per host, taken by tests/node's cluster)
    env.setdefault("MODELDEPLOY_REAL_NODE", "0")
    return env


def _down(name: str) -> str:
    # A signal (a CI timeout's SIGTERM, a second Ctrl-C) must not cut the teardown short.
    with shielded():
        done = subprocess.run(
            [str(SCRIPTS / "cluster.sh"), "down"],
            cwd=REPO_ROOT,
            env=_cluster_env(name),
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        # belt and braces: nothing of this cluster may outlive the session
        stray = cluster_processes(CACHE, name)
        for pid in stray:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return done.stderr + (f"\nkilled stray processes {stray}" if stray else "")


def _reap_abandoned_test_clusters() -> None:
    """Remove test clusters left by a pytest run that died (its pid is in the name)."""
    clusters = CACHE / "kwok" / "clusters"
    if not clusters.is_dir():
        return
    for d in clusters.iterdir():
        m = re.fullmatch(rf"{TEST_CLUSTER_PREFIX}-(\d+)-[0-9a-f]+", d.name)
        if m and not _pid_alive(int(m.group(1))):
            _down(d.name)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    config = request.config
    external = _external_kubeconfig()
    if external is not None:
        kubectl = (_binaries or {}).get("KUBECTL_BIN") or _which("kubectl")
        if not kubectl:
            _unavailable(_build_error or "no kubectl for MODELDEPLOY_KUBECONFIG")
        assert kubectl is not None
        c = Cluster(
            name="external",
            kubeconfig=Path(external),
            kubectl_bin=kubectl,
            helm_bin=(_binaries or {}).get("HELM_BIN") or _which("helm"),
        )
        probe = c.kubectl("get", "--raw", "/readyz", check=False, timeout=30)
        if probe.returncode != 0:
            _unavailable(f"MODELDEPLOY_KUBECONFIG={external} does not answer: {probe.stderr}")
        fake = c.kubectl("get", "nodes", "-l", "type=kwok", "-o", "name", check=False, timeout=30)
        if not fake.stdout.strip():
            _unavailable(
                f"MODELDEPLOY_KUBECONFIG={external} has no kwok fake nodes: these tests need "
                "the local-process cluster (make cluster); on kind, run the node tier "
                "(pytest -m node tests/node, docs/local-cluster.md)"
            )
        yield c
        return

    if _build_error is not None:
        _unavailable(_build_error)
    _reap_abandoned_test_clusters()
    name = f"{TEST_CLUSTER_PREFIX}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    # From here on, whatever ends the session (a failed start, a skip, the last test, or a
    # signal: see the root conftest) takes the cluster down.
    try:
        yield _start(config, name)
    finally:
        report = _down(name)
        left = cluster_processes(CACHE, name)
        if left:
            _print(config, f"integration tests: processes left by {name}: {left}\n{report}")


def _start(config: pytest.Config, name: str) -> Cluster:
    _print(config, f"\nintegration tests: starting local cluster {name} ...")
    started = time.monotonic()
    rc, out, tail = _run_streaming(
        config, [str(SCRIPTS / "cluster.sh"), "up"], env=_cluster_env(name), prefix="  "
    )
    if rc != 0:
        _unavailable(f"scripts/cluster.sh up failed (exit {rc}):\n{tail}")
    lines = [line for line in out.splitlines() if line.strip()]
    kubeconfig = Path(lines[-1]) if lines else None
    if kubeconfig is None or not kubeconfig.is_file():
        _unavailable(f"scripts/cluster.sh up printed no kubeconfig path:\n{tail}")
    assert kubeconfig is not None
    _print(config, f"integration tests: cluster {name} up in {time.monotonic() - started:.0f}s")
    binaries = _binaries or {}
    return Cluster(
        name=name,
        kubeconfig=kubeconfig,
        kubectl_bin=binaries.get("KUBECTL_BIN") or _which("kubectl") or "kubectl",
        helm_bin=binaries.get("HELM_BIN"),
        owned=True,
    )


def _crd_names(path: Path) -> list[str]:
    return [
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
    ]


@pytest.fixture(scope="session")
def crds_installed(cluster: Cluster) -> list[str]:
    """Apply every CRD file in crds/; returns the CRD names, all Established."""
    files = sorted(p for p in CRDS_DIR.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    if not files:
        pytest.fail("crds/ holds no CRD file")
    names: list[str] = []
    for f in files:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
        names += _crd_names(f)
    cluster.kubectl(
        "wait", "--for", "condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names)
    )
    # kubectl's discovery cache learns the new kinds (and short names) on first use;
    # wait until the API server serves them.
    deadline = time.monotonic() + 30
    while True:
        served = cluster.kubectl("api-resources", "-o", "name", check=False).stdout.split()
        if all(n in served for n in names) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return names


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace with a unique name; deleted afterwards without waiting for it."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    # the namespace is usable once its default ServiceAccount exists (pods need it)
    deadline = time.monotonic() + 30
    while cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    try:
        yield name
    finally:
        cluster.kubectl(
            "delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False
        )


@pytest.fixture(scope="session")
def k8s_api(cluster: Cluster) -> Iterator[Any]:
    """A kubernetes.client.ApiClient configured from the cluster's kubeconfig."""
    from kubernetes import config as k8s_config

    api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield api
    finally:
        api.close()
