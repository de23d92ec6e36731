"""A test run killed by SIGTERM (what a CI timeout sends) leaves no cluster process behind.

A pytest run in a subprocess starts its own local cluster through the `cluster` fixture
and holds it; this test sends that run's pytest process, and only it, a SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.operator_harness import wait_for
from tests.support.processes import cluster_processes, start_in_group, stop_group

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))

PROBE = """
import os
from pathlib import Path
import time

import pytest


@pytest.mark.integration
def test_holds_a_cluster(cluster):
    Path(os.environ["PROBE_CLUSTER_FILE"]).write_text(cluster.name)
    time.sleep(300)
"""


@pytest.fixture
def local_clusters() -> None:
    """The run under test must start a cluster of local processes of its own."""
    if os.environ.get("MODELDEPLOY_KUBECONFIG"):
        pytest.skip("MODELDEPLOY_KUBECONFIG is set: test runs start no cluster of their own")
    built = subprocess.run(
        [str(REPO_ROOT / "scripts" / "build-binaries.sh"), "--no-build"],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        reason = f"the local cluster binaries are not built: {built.stderr.strip()}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.mark.usefixtures("local_clusters")
def test_a_run_ended_by_sigterm_takes_its_cluster_down(tmp_path: Path) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    name_file = tmp_path / "cluster-name"
    log = tmp_path / "run.log"
    env = {
        **os.environ,
        "PROBE_CLUSTER_FILE": str(name_file),
        "MODELDEPLOY_CLUSTER_RUNTIME": "binary",
    }
    plugins = ["-p", "tests.conftest", "-p", "tests.integration.conftest"]
    with log.open("w") as output:
        run = start_in_group(
            [sys.executable, "-m", "pytest", *plugins, "-p", "no:cacheprovider", "-q", str(probe)],
            cwd=REPO_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )

    def cluster_name() -> str | None:
        if run.poll() is not None:
            pytest.fail(f"the run ended before its cluster was up:\n{log.read_text()[-3000:]}")
        return name_file.read_text() if name_file.exists() else None

    name = ""
    try:
        name = wait_for(cluster_name, 300, "the run's cluster to be up")
        assert cluster_processes(CACHE, name), "the run's cluster has no process"
        run.send_signal(signal.SIGTERM)
        run.wait(240)
    finally:
        if run.poll() is None:
            stop_group(run, grace=5)
        left = cluster_processes(CACHE, name) if name else []
        if left:  # do not leave them running for the rest of the session
            subprocess.run(
                [str(REPO_ROOT / "scripts" / "cluster.sh"), "down"],
                env={**env, "MODELDEPLOY_CLUSTER_NAME": name},
                capture_output=True,
                check=False,
                timeout=180,
            )

    assert not left, f"processes of cluster {name} outlived the run:\n{log.read_text()[-3000:]}"
    assert not (CACHE / "kwok" / "clusters" / name).exists(), "the cluster's state was left"
    assert "SIGTERM: stopping what was started" in log.read_text()
