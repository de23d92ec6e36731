"""GitOps tools judge ModelDeployments right (issue 12, docs/gitops.md).

The Go module integrations/go judges objects the way the tools do: kstatus
(sigs.k8s.io/cli-utils, what Flux and kapply use), Flux's CEL health checks
(fluxcd/pkg/runtime/cel, with the expressions of examples/gitops/flux) and the Argo CD
health check of integrations/argocd in Argo CD's Lua sandbox. Here it runs on the
committed examples, then on real objects the operator wrote in every phase on the local
cluster, and `kubectl wait --for=condition=Ready` is checked against a promotion and a
rollback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy import api
from tests.integration.conftest import REPO_ROOT, Cluster
from tests.integration.operator_harness import (
    Objects,
    OperatorProcess,
    model_deployment,
    wait_for,
)
from tests.integration.test_canary import NEVER_READY_IMAGE, canary_spec
from tests.integration.test_upgrade import older_release_crd
from tests.support.scripted_prometheus import ScriptedPrometheus

GO_MODULE = REPO_ROOT / "integrations" / "go"
ARGOCD_KIND = REPO_ROOT / "integrations" / "argocd" / "modeldeploy.dev" / "ModelDeployment"
ACTIONS = ARGOCD_KIND / "actions"
EXAMPLE = REPO_ROOT / "examples" / "gitops" / "model" / "modeldeployment.yaml"
# A cold build compiles Kubernetes' apimachinery, cel-go and kstatus: minutes on 2 cores.
GO_BUILD_TIMEOUT = 1200


def _go() -> str:
    """The Go toolchain; skipped without it outside CI, a failure in CI."""
    found = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if found is None:
        reason = "Go is not installed: the GitOps checks of integrations/go need it (see README)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true)", pytrace=False)
        pytest.skip(reason)
    return found


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GOTOOLCHAIN"] = "local"
    # go.mod and go.sum are committed complete: a build never rewrites them.
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=readonly").strip()
    return env


@pytest.fixture(scope="module")
def go_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test binary of integrations/go and its argocd-action command, built once."""
    go = _go()
    out = tmp_path_factory.mktemp("go")
    programs = {"tests": out / "integrations.test", "argocd-action": out / "argocd-action"}
    for command in (
        [go, "test", "-p", "2", "-c", "-o", str(programs["tests"]), "."],
        [go, "build", "-p", "2", "-o", str(programs["argocd-action"]), "./cmd/argocd-action"],
    ):
        done = subprocess.run(
            command,
            cwd=GO_MODULE,
            env=_go_env(),
            capture_output=True,
            text=True,
            timeout=GO_BUILD_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return programs


def run_go_tests(programs: dict[str, Path], **env: str) -> str:
    """Run the Go tests (from integrations/go, where their paths start), on the objects
    of MODELDEPLOY_GITOPS_OBJECTS when given; fail with their output unless all pass."""
    base = {k: v for k, v in _go_env().items() if not k.startswith("MODELDEPLOY_GITOPS_")}
    done = subprocess.run(
        [str(programs["tests"]), "-test.v"],
        cwd=GO_MODULE,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        failed = [
            line
            for line in done.stdout.splitlines()
            if not line.startswith("=== ") and "--- PASS" not in line
        ]
        pytest.fail("Go tests of integrations/go failed:\n" + "\n".join(failed[-80:]) + done.stderr)
    return done.stdout


@pytest.mark.timeout(GO_BUILD_TIMEOUT + 300)
def test_go_checks_pass_on_the_committed_examples(go_programs):
    """Argo CD's health_test.yaml and action_test.yaml, the argocd-cm patch, and the phase
    table on the committed examples: no cluster needed."""
    output = run_go_tests(go_programs)
    assert "--- PASS: TestEveryToolReadsEveryPhase" in output
    assert "--- PASS: TestArgoCDHealthChecks" in output
    assert "--- PASS: TestArgoCDActions" in output


def test_the_example_and_every_test_object_follow_the_api():
    """What the GitOps examples deploy, and the objects the Argo CD scripts are tested on,
    are ModelDeployments as the operator reads them."""
    testdata = sorted(ARGOCD_KIND.glob("testdata/*.yaml")) + sorted(ACTIONS.glob("testdata/*.yaml"))
    for path in [EXAMPLE, *testdata]:
        manifest = yaml.safe_load(path.read_text())
        annotations = manifest["metadata"].get("annotations", {})
        if "<now>" in annotations.values():  # an expected action output
            manifest["metadata"]["annotations"] = dict.fromkeys(annotations, "t")
        parsed = api.ModelDeployment.model_validate(manifest)
        assert parsed.metadata.name == manifest["metadata"]["name"], path


# --- real objects -------------------------------------------------------------------


class Phases:
    """Dumps each phase's object, as the API server returns it, for the Go tests."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir()

    def capture(self, objects: Objects, name: str, phase: str) -> dict[str, Any]:
        md = objects.get("md", name)
        assert md is not None, f"{name} is gone"
        (self.directory / f"{phase}.json").write_text(json.dumps(md, indent=2))
        return md


def condition(md: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in (md.get("status") or {}).get("conditions", []):
        if c["type"] == kind:
            return dict(c)
    return {}


def observed(md: dict[str, Any]) -> bool:
    status = md.get("status") or {}
    return bool(status.get("observedGeneration") == md["metadata"]["generation"])


def reached(objects: Objects, name: str, phase: str, **ready: str) -> dict[str, Any] | None:
    """The object once the operator has acted on its generation and is in `phase`, with
    the Ready condition's fields as given."""
    md = objects.get("md", name)
    if md is None or not observed(md) or (md.get("status") or {}).get("phase") != phase:
        return None
    ready_condition = condition(md, "Ready")
    if any(ready_condition.get(key) != value for key, value in ready.items()):
        return None
    return md


def argocd_action(objects: Objects, programs: dict[str, Path], name: str, action: str) -> None:
    """Run an Argo CD resource action as Argo CD does: the script on the live object in
    its sandbox, then a merge patch of what changed."""
    live = objects.kubectl("get", "md", name, "-o", "json")
    done = subprocess.run(
        [str(programs["argocd-action"]), "-script", str(ACTIONS / action / "action.lua")],
        input=live,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"the Argo CD action {action} failed on {name}: {done.stderr}")
    objects.kubectl("patch", "md", name, "--type", "merge", "-p", done.stdout.strip())


def kubectl_wait(
    cluster: Cluster, namespace: str, name: str, timeout: str, condition: str = "Ready"
) -> subprocess.Popen[str]:
    """`kubectl wait --for=condition=... md/NAME`, the one-liners docs/gitops.md gives CI."""
    return subprocess.Popen(
        [
            cluster.kubectl_bin,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-n",
            namespace,
            "wait",
            f"--for=condition={condition}",
            f"md/{name}",
            f"--timeout={timeout}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def foreign_deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "example.com/someone-else:1"}]},
            },
        },
    }


@contextlib.contextmanager
def extra_namespace(cluster: Cluster, base: str) -> Iterator[str]:
    name = f"{base[:50]}-{uuid.uuid4().hex[:4]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        30,
        f"namespace {name} ready",
    )
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.integration
@pytest.mark.timeout(GO_BUILD_TIMEOUT + 600)
def test_gitops_tools_read_every_phase_of_real_objects(
    cluster, namespace, crds_installed, tmp_path, go_programs, capsys
):
    phases = Phases(tmp_path / "objects")
    objects = Objects(cluster, namespace)
    with (
        ScriptedPrometheus() as quiet,
        ScriptedPrometheus() as failing,
        extra_namespace(cluster, namespace) as walk_namespace,
    ):
        # Too little canary traffic holds a step (NoData): only the test moves "walk".
        quiet.healthy()
        quiet.set_track("canary", requests=3)
        failing.healthy()
        failing.set_track("canary", requests=100, error_rate=0.5)
        walk = Objects(cluster, walk_namespace)
        held = canary_spec(quiet, steps=[50], interval="2s", inconclusiveLimit=1000)
        operator = OperatorProcess(cluster.kubeconfig, namespace, tmp_path, "gitops")
        try:
            _walk_every_phase(
                cluster, objects, walk, phases, operator, quiet, failing, held, go_programs
            )
        finally:
            operator.stop()
        table = tmp_path / "table.md"
        output = run_go_tests(
            go_programs,
            MODELDEPLOY_GITOPS_OBJECTS=str(phases.directory),
            MODELDEPLOY_GITOPS_TABLE=str(table),
        )
    assert "--- PASS: TestEveryToolReadsEveryPhase" in output
    with capsys.disabled():  # the table belongs in the run's log
        print(f"\nGitOps verdicts on real objects:\n{table.read_text()}")


def _walk_every_phase(
    cluster: Cluster,
    objects: Objects,
    walk: Objects,
    phases: Phases,
    operator: OperatorProcess,
    quiet: ScriptedPrometheus,
    failing: ScriptedPrometheus,
    held: dict[str, Any],
    programs: dict[str, Path],
) -> None:
    objects.kubectl("apply", "--dry-run=server", "-f", str(EXAMPLE))  # the CRD takes it
    # Before the operator runs: a bare object, a name taken by someone else, a spec that
    # today's rules refuse but an older release's CRD stored.
    objects.apply(foreign_deployment("taken-stable"))
    objects.apply(model_deployment("taken"))
    objects.apply(model_deployment("pending", server={"image": NEVER_READY_IMAGE}))
    phases.capture(objects, "pending", "created")
    with older_release_crd(objects):
        sneaky = model_deployment(
            "sneaky", server={"env": [{"name": "modelserver_model_uri", "value": "http://x/m"}]}
        )
        wait_for(
            lambda: (
                objects.cluster.kubectl(
                    "-n",
                    objects.namespace,
                    "apply",
                    "-f",
                    "-",
                    input=json.dumps(sneaky),
                    check=False,
                ).returncode
                == 0
            ),
            30,
            "the older release's API server to store the object",
        )
    walk.apply(model_deployment("walk", **held))
    objects.apply(model_deployment("bad", **canary_spec(failing, steps=[50], interval="2s")))
    objects.apply(model_deployment("stuck", **canary_spec(quiet, progressDeadline="6s")))

    operator.start("--namespace", walk.namespace)
    wait_for(lambda: reached(objects, "taken", "Failed", reason="NameConflict"), 60, "conflict")
    phases.capture(objects, "taken", "failed-name-conflict")
    wait_for(lambda: reached(objects, "pending", "Pending"), 60, "pending Pending")
    phases.capture(objects, "pending", "pending")
    wait_for(lambda: reached(objects, "sneaky", "Failed", reason="InvalidSpec"), 60, "InvalidSpec")
    phases.capture(objects, "sneaky", "failed-invalid-spec")
    wait_for(lambda: reached(walk, "walk", "Available", status="True"), 60, "walk Available")
    phases.capture(walk, "walk", "available")
    wait_for(lambda: reached(objects, "bad", "Available"), 60, "bad Available")
    wait_for(lambda: reached(objects, "stuck", "Available"), 60, "stuck Available")

    # A new generation the operator has not seen: Ready=True is stale, and kubectl wait
    # knows it from the condition's observedGeneration.
    operator.stop()
    walk.patch_spec("walk", {"model": {"version": "2.0.0"}})
    phases.capture(walk, "walk", "new-generation")
    stale = kubectl_wait(cluster, walk.namespace, "walk", "2s")
    assert stale.wait(60) != 0, "kubectl wait took a Ready condition of an older generation"
    operator.start()

    objects.patch_spec("bad", {"model": {"version": "2.0.0"}})
    rolled_back_wait = kubectl_wait(cluster, objects.namespace, "bad", "40s")
    ended_wait = kubectl_wait(cluster, objects.namespace, "bad", "120s", "Reconciling=False")
    objects.patch_spec("stuck", {"server": {"image": NEVER_READY_IMAGE}})

    def walking() -> dict[str, Any] | None:
        md = reached(walk, "walk", "Progressing", reason="Progressing")
        canary = (md or {}).get("status", {}).get("canary") or {}
        return md if canary.get("readyAt") and canary.get("actualWeight") else None

    wait_for(walking, 60, "the canary to walk")
    phases.capture(walk, "walk", "canary-walking")

    argocd_action(walk, programs, "walk", "pause")
    wait_for(lambda: reached(walk, "walk", "Progressing", reason="Paused"), 30, "paused by request")
    md = phases.capture(walk, "walk", "paused-annotation")
    assert md["status"]["pausedByRequest"] is True
    argocd_action(walk, programs, "walk", "resume")
    wait_for(lambda: reached(walk, "walk", "Progressing", reason="Progressing"), 30, "resumed")
    walk.patch_spec("walk", {"rollout": {"paused": True}})
    wait_for(lambda: reached(walk, "walk", "Progressing", reason="Paused"), 30, "paused by spec")
    phases.capture(walk, "walk", "paused-spec")

    # Promoting, held: a quota leaves no room for the stable's new pod until it is lifted.
    pods = len(walk.items("pods"))
    walk.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "hold"},
            "spec": {"hard": {"pods": str(pods)}},
        }
    )
    wait_for(
        lambda: (
            ((walk.get("resourcequota", "hold") or {}).get("status") or {})
            .get("used", {})
            .get("pods")
            == str(pods)
        ),
        30,
        "the quota to count the pods",
    )
    argocd_action(walk, programs, "walk", "promote")
    wait_for(lambda: reached(walk, "walk", "Promoting"), 30, "walk Promoting")
    phases.capture(walk, "walk", "promoting")
    promoted_wait = kubectl_wait(cluster, walk.namespace, "walk", "120s")
    walk.kubectl("delete", "resourcequota", "hold")
    assert promoted_wait.wait(150) == 0, promoted_wait.communicate()
    md = phases.capture(walk, "walk", "promoted")
    assert md["status"]["phase"] == "Available"
    assert md["status"]["stable"]["version"] == "2.0.0", "kubectl wait returned before promotion"

    wait_for(lambda: reached(objects, "bad", "RolledBack"), 60, "bad rolled back")
    phases.capture(objects, "bad", "rolledback-checks")
    wait_for(lambda: reached(objects, "stuck", "RolledBack"), 60, "stuck rolled back")
    phases.capture(objects, "stuck", "rolledback-deadline")
    assert rolled_back_wait.wait(60) != 0, "kubectl wait succeeded on a rolled-back canary"
    assert "timed out" in rolled_back_wait.communicate()[1]
    # The fail-fast pair: the rollout ended, and not Ready.
    assert ended_wait.wait(60) == 0, ended_wait.communicate()
    assert kubectl_wait(cluster, objects.namespace, "bad", "1s").wait(60) != 0
