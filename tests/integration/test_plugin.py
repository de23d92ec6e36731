"""`kubectl modeldeploy` end to end: the console script run as a user runs it, against the
real local API server with the operator running, analyses judged by a scripted Prometheus.

The `get --watch` output of the step-by-step walk is written to `get-watch.txt` in the
test's tmp directory (docs/plugin.md shows a captured one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator_harness import (
    Objects,
    model_deployment,
    objects,
    operator,
    wait_for,
)
from tests.support.scripted_prometheus import ScriptedPrometheus

pytestmark = pytest.mark.integration
__all__ = ["objects", "operator"]  # fixtures used by the tests below

PLUGIN = Path(sys.executable).with_name("kubectl-modeldeploy")
WIDTH = "120"


@pytest.fixture
def prometheus() -> Iterator[ScriptedPrometheus]:
    with ScriptedPrometheus() as prom:
        # Realistic, passing values: they show up in the captured tree.
        prom.set_track("canary", requests=240, error_rate=0.0021, p99=0.087)
        yield prom


class Plugin:
    """Runs the console script with KUBECONFIG set, as a user's shell would."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.namespace = namespace
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "COLUMNS": WIDTH}

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PLUGIN), "-n", self.namespace, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout

    def watch(self, name: str, output: Path) -> subprocess.Popen[bytes]:
        with output.open("wb") as sink:
            return subprocess.Popen(
                [str(PLUGIN), "-n", self.namespace, "get", name, "--watch"],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=self.env,
            )


@pytest.fixture
def plugin(cluster: Any, namespace: str) -> Plugin:
    return Plugin(cluster.kubeconfig, namespace)


def deploy(objects: Objects, name: str, prom: ScriptedPrometheus) -> None:
    spec: dict[str, Any] = {
        "replicas": 2,
        "rollout": {"steps": [20, 50], "interval": "2s", "failureThreshold": 2},
        "analysis": {"prometheus": {"url": prom.url, "timeout": "2s"}, "minRequests": 20},
    }
    objects.apply(model_deployment(name, **spec))
    wait_for(lambda: objects.status(name).get("phase") == "Available", 60, f"{name} Available")


def new_version(objects: Objects, name: str, version: str) -> None:
    objects.patch_spec(name, {"model": {"version": version}})


def canary(objects: Objects, name: str) -> dict[str, Any]:
    return objects.status(name).get("canary") or {}


def analysed_at_step(objects: Objects, name: str, step: int) -> bool:
    status = objects.status(name)
    analysis = status.get("lastAnalysis") or {}
    return (status.get("canary") or {}).get("step") == step and analysis.get("step") == step


def test_walk_a_canary_step_by_step_watching_it(objects, operator, prometheus, plugin, tmp_path):
    deploy(objects, "fraud", prometheus)
    capture = tmp_path / "get-watch.txt"
    watcher = plugin.watch("fraud", capture)
    try:
        said = plugin.ok("pause", "fraud")
        assert "next one holds at its first step until resumed" in said
        new_version(objects, "fraud", "2.0.0")
        # Held at step 1 by the pause request, while analyses go on.
        wait_for(lambda: analysed_at_step(objects, "fraud", 0), 60, "an analysis of step 1")

        shown = plugin.ok("get", "fraud")
        assert "Step:        1/2 (steps 20%, 50%)" in shown
        assert "Weight:      set 20%, achieved 33%" in shown  # 1 canary pod beside 2 stable
        assert "Paused:      ॥ by modeldeploy.dev/pause" in shown
        for line in ("error-rate", "latency-p99", "request-volume"):
            assert line in shown
        assert "0.0021 (max 0.01)" in shown
        assert "0.087 (max 0.25)" in shown
        assert "240 (min 20)" in shown
        assert "fraud-canary" in shown
        assert "CanaryStarted" in shown

        waiting = plugin("status", "fraud", "--timeout", "2s")
        assert waiting.returncode == 2, waiting.stdout + waiting.stderr
        assert "Progressing, canary 2.0.0 step 1/2, weight 20% (achieved 33%)" in waiting.stdout
        assert "timed out after 2s" in waiting.stdout

        said = plugin.ok("promote", "fraud")
        assert "canary 2.0.0 moves from step 1/2 (20%) to step 2/2 (50%)" in said
        assert "it moves and stays paused" in said
        wait_for(lambda: analysed_at_step(objects, "fraud", 1), 60, "an analysis of step 2")
        assert "StepPromoted" in objects.event_reasons("fraud")

        said = plugin.ok("promote", "fraud")
        assert "canary 2.0.0 is at its last step 2/2 (50%): it is promoted" in said
        done = plugin("status", "fraud", "--timeout", "90s")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "fraud: generation 2 is rolled out" in done.stdout.splitlines()[-1]
        wait_for(lambda: objects.get("deployment", "fraud-canary") is None, 30, "canary removed")

        again = plugin("promote", "fraud")
        assert again.returncode == 1
        assert "has no canary to promote (phase Available, serving 2.0.0)" in again.stderr
        assert "canary" not in objects.status("fraud")

        assert "later canaries walk their steps" in plugin.ok("resume", "fraud")
        twice = plugin("resume", "fraud")
        assert twice.returncode == 1
        assert twice.stderr.strip().endswith("is not paused.")

        history = plugin.ok("history", "fraud")
        rows = [line.split() for line in history.splitlines() if line[:1].isdigit()]
        assert history.split()[:6] == ["AGE", "AT", "VERSION", "REVISION", "OUTCOME", "REASON"]
        assert [(row[3], row[5]) for row in rows] == [("2.0.0", "Promoted"), ("1.0.0", "Deployed")]
        assert "its last step was promoted by" in history
    finally:
        watcher.send_signal(signal.SIGINT)
        code = watcher.wait(30)
    assert code == 130
    frames = capture.read_text().split("\nName:")
    steps = [line.strip() for frame in frames for line in frame.splitlines() if "Step:" in line]
    assert "Step:        1/2 (steps 20%, 50%)" in steps
    assert "Step:        2/2 (steps 20%, 50%)" in steps
    assert "Phase:       ✔ Available" in frames[-1]
    assert "Stable:      2.0.0" in frames[-1]
    assert any("0.0021 (max 0.01)" in frame for frame in frames)


def test_abort_retry_full_promotion_and_status_exit_codes(objects, operator, prometheus, plugin):
    deploy(objects, "churn", prometheus)
    plugin.ok("pause", "churn")
    new_version(objects, "churn", "2.0.0")
    wait_for(lambda: canary(objects, "churn").get("readyAt"), 60, "the canary's pods ready")

    said = plugin.ok("abort", "churn")
    assert "canary 2.0.0 at step 1/2 (20%) is rolled back" in said
    failed = plugin("status", "churn", "--timeout", "60s")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "churn: failed (RolledBack)" in failed.stdout
    assert "aborted by modeldeploy.dev/abort" in failed.stdout

    late = plugin("abort", "churn")
    assert late.returncode == 1
    assert "no canary to abort" in late.stderr
    assert "kubectl modeldeploy retry churn" in late.stderr

    said = plugin.ok("retry", "churn")
    assert "rolled-back 2.0.0 (revision" in said
    wait_for(lambda: canary(objects, "churn").get("readyAt"), 60, "the retried canary ready")
    assert "RetryRequested" in objects.event_reasons("churn")

    said = plugin.ok("promote", "churn", "--full")
    assert "canary 2.0.0 skips its remaining steps from step 1/2 (20%)" in said
    done = plugin("status", "churn", "--timeout", "90s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert objects.outcome("churn", "2.0.0") == objects.status("churn")["history"][0]
    assert objects.status("churn")["history"][0]["outcome"] == "Promoted"
    assert "ManualPromotion" in objects.event_reasons("churn")


def test_kubectl_finds_the_plugin_and_names_what_is_missing(
    cluster, crds_installed, objects, namespace
):
    # kubectl runs kubectl-modeldeploy from PATH; flags must follow the plugin's name.
    env = {
        **os.environ,
        "PATH": f"{PLUGIN.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(cluster.kubeconfig),
    }

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [cluster.kubectl_bin, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    plugins = kubectl("plugin", "list")
    assert str(PLUGIN) in plugins.stdout, plugins.stdout + plugins.stderr

    empty = kubectl("modeldeploy", "list", "-n", namespace)
    assert empty.returncode == 0, empty.stderr
    assert f"no ModelDeployments in namespace {namespace}" in empty.stdout

    objects.apply(model_deployment("listed"))
    listed = kubectl("modeldeploy", "list", "--namespace", namespace).stdout.splitlines()
    assert listed[0].split() == [
        "NAME",
        "PHASE",
        "STABLE",
        "CANARY",
        "STEP",
        "WEIGHT",
        "ACHIEVED",
        "EXPERIMENT",
        "AGE",
    ]
    assert listed[1].split()[:2] == ["listed", "Pending"]  # no operator runs here

    nothing = kubectl("modeldeploy", "apply-winner", "listed", "-n", namespace)
    assert nothing.returncode == 1
    assert "has no experiment in its status (strategy.type canary)" in nothing.stderr

    missing = kubectl("modeldeploy", "get", "nothere", "-n", namespace)
    assert missing.returncode == 3
    assert f'modeldeployment "nothere" not found in namespace {namespace}' in missing.stderr
