"""`kubectl modeldeploy apply-winner`: when it refuses and why, and what it sends. The
decisions are pure; the command runs in-process against a real HTTP server on 127.0.0.1
answering as kube-apiserver does, which records the patch it receives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from modeldeploy import api
from modeldeploy.cli.decide import Refusal
from modeldeploy.cli.main import main
from modeldeploy.cli.state import Rollout
from modeldeploy.cli.winner import (
    WinnerPatch,
    apply_merge_patch,
    managed_by,
    refuse_to_apply,
    winner_patch,
)
from modeldeploy.rollout.experiment import winner_patch as operators_winner_patch
from tests.support import LocalServer, Reply, Request
from tests.unit.cli_objects import (
    WINNER_PATCH,
    arm,
    concluded,
    experimenting,
    md,
    write_kubeconfig,
)

MD_PATH = "/apis/modeldeploy.dev/v1alpha1/namespaces/ml/modeldeployments/fraud"
CONCLUDED = (
    Path(__file__).parents[2]
    / "integrations/argocd/modeldeploy.dev/ModelDeployment/testdata/experiment_concluded.yaml"
)


def plan_of(obj: dict) -> WinnerPatch:
    planned = winner_patch(Rollout.of(obj))
    assert isinstance(planned, WinnerPatch), planned
    return planned


def refusal_of(obj: dict) -> str:
    planned = winner_patch(Rollout.of(obj))
    assert isinstance(planned, Refusal), planned
    return planned.message


def test_the_winners_patch_is_read_from_status():
    planned = plan_of(concluded())
    assert (planned.winner, planned.version, planned.text) == (
        "deeper",
        "1.1.0-deeper",
        WINNER_PATCH,
    )
    assert planned.patch["spec"]["strategy"] == {"experiment": None, "type": "canary"}


def test_no_experiment_nothing_to_apply():
    message = refusal_of(md(phase="Available"))
    assert message.startswith(
        "modeldeployment fraud in ml has no experiment in its status (strategy.type canary)"
    )


def test_a_running_experiment_has_no_winner_yet_and_the_refusal_says_when_it_will():
    message = refusal_of(experimenting())
    assert "is still running (attempt 1, verdict due 2026-03-01 15:00:00 UTC at the earliest)" in (
        message
    )
    assert "`kubectl modeldeploy status fraud` waits for its end" in message


def test_no_winner_says_what_each_variant_came_to():
    obj = concluded(winner=None)
    obj["status"]["experiment"]["variants"] = [
        arm(
            "deeper",
            "1.1.0-deeper",
            0,
            0,
            samples=10000,
            rate=0.0421,
            difference=0.0009,
            differenceLow=-0.0048,
            differenceHigh=0.0066,
            adjustedPValue=0.61,
            outcome="NoSignificantDifference",
        ),
        arm("fresh", "1.1.0-fresh", 0, 0, samples=800, outcome="InsufficientData"),
        arm("wide", "1.1.0-wide", 0, 0, cut="its pods were not ready within 600s"),
    ]
    message = refusal_of(obj)
    assert message == (
        "the experiment of modeldeployment fraud in ml concluded without a winner: no variant "
        "was Better than control 1.0.0. Outcomes: deeper NoSignificantDifference (+0.09 pp "
        "[-0.48..+0.66] vs control, adjusted p 0.61); fresh InsufficientData (800 samples); "
        "wide cut: its pods were not ready within 600s. Control stays the model; there is "
        "nothing to apply."
    )


def test_a_stopped_experiment_has_no_winner_and_retry_runs_it_again():
    obj = experimenting(
        "Stopped",
        arms=(arm("control", "1.0.0", 100, 100), [arm("deeper", "1.1.0-deeper", 0, 0)]),
        message="stopped: aborted by modeldeploy.dev/abort; control serves all traffic",
    )
    message = refusal_of(obj)
    assert "was stopped before its verdict (stopped: aborted by modeldeploy.dev/abort" in message
    assert "Variants: deeper not judged." in message
    assert "`kubectl modeldeploy retry fraud` runs it again" in message


def test_a_winner_without_a_readable_patch_is_refused():
    obj = concluded()
    obj["status"]["experiment"]["winnerPatch"] = "{not json"
    assert "winnerPatch is not a JSON merge patch ('{not json')" in refusal_of(obj)


def test_merge_patch_null_removes_and_objects_merge():
    target = {"spec": {"model": {"version": "1", "uri": "a"}, "strategy": {"type": "x", "e": {}}}}
    patch = {"spec": {"model": {"version": "2"}, "strategy": {"e": None, "type": "canary"}}}
    assert apply_merge_patch(target, patch) == {
        "spec": {"model": {"version": "2", "uri": "a"}, "strategy": {"type": "canary"}}
    }


def test_the_operators_patch_applied_by_the_plugin_makes_the_winner_the_model():
    obj = yaml.safe_load(CONCLUDED.read_text())
    before = api.ModelDeployment.model_validate(obj)
    experiment, settings = before.status.experiment, before.spec.strategy.experiment
    assert experiment is not None
    assert settings is not None
    text = operators_winner_patch(before.spec, "deeper")
    assert text == experiment.winner_patch
    after = api.ModelDeployment.model_validate(apply_merge_patch(obj, json.loads(text)))
    assert after.spec.model == settings.variants[0].model
    assert (after.spec.strategy.type, after.spec.strategy.experiment) == ("canary", None)
    # nothing else changes
    unchanged = {"model": before.spec.model, "strategy": before.spec.strategy}
    assert after.spec.model_copy(update=unchanged) == before.spec


def applied_by_hand(obj: dict) -> dict:
    return apply_merge_patch(obj, json.loads(WINNER_PATCH))


def test_a_patch_already_applied_is_not_applied_again():
    obj = applied_by_hand(concluded())
    refused = refuse_to_apply(obj, plan_of(obj), force=False)
    assert refused is not None
    assert refused.message.startswith(
        "the winner deeper (1.1.0-deeper) is already applied to modeldeployment fraud in ml: "
        "its spec is what the patch makes it (model 1.1.0-deeper, strategy.type canary)"
    )


def test_a_spec_that_moved_on_or_is_not_observed_yet_is_not_patched():
    moved = concluded()
    moved["spec"]["model"]["version"] = "3.0.0"
    moved["spec"]["strategy"] = {"type": "canary"}
    refused = refuse_to_apply(moved, plan_of(moved), force=False)
    assert refused is not None
    assert "no longer runs the experiment (strategy.type canary, model 3.0.0)" in refused.message
    assert "its patch would replace the current model" in refused.message
    unseen = concluded(generation=3, observed=2)
    refused = refuse_to_apply(unseen, plan_of(unseen), force=False)
    assert refused is not None
    assert "has not acted on generation 3" in refused.message


@pytest.mark.parametrize(
    ("where", "key", "value", "tool"),
    [
        ("annotations", "argocd.argoproj.io/tracking-id", "app:modeldeploy.dev/...", "Argo CD"),
        ("labels", "kustomize.toolkit.fluxcd.io/name", "fraud-model", "Flux"),
        ("labels", "app.kubernetes.io/managed-by", "Helm", "Helm"),
    ],
)
def test_an_object_a_gitops_tool_applies_is_patched_only_with_force(where, key, value, tool):
    obj = concluded()
    obj["metadata"].setdefault(where, {})[key] = value
    assert (managed_by(obj) or "").startswith(tool)
    refused = refuse_to_apply(obj, plan_of(obj), force=False)
    assert refused is not None
    assert f"is applied by {tool}" in refused.message
    assert "Make the change in Git instead" in refused.message
    assert "kubectl patch --local -f MANIFEST.yaml --type merge -p '" in refused.message
    assert refuse_to_apply(obj, plan_of(obj), force=True) is None


def test_a_hand_applied_object_is_not_taken_for_a_gitops_one():
    obj = concluded()
    obj["metadata"]["labels"] = {"app.kubernetes.io/instance": "fraud"}
    assert managed_by(obj) is None
    assert refuse_to_apply(obj, plan_of(obj), force=False) is None


class ApiServer:
    """Serves one ModelDeployment; a merge patch changes it, as kube-apiserver would."""

    def __init__(self, obj: dict) -> None:
        self.obj = obj
        self.requests: list[Request] = []
        self.server = LocalServer(self._answer)
        self.changed_after_reads = False
        """Someone else updates the object right after each read."""

    def _answer(self, request: Request) -> Reply:
        self.requests.append(request)
        if request.method == "GET" and self.changed_after_reads:
            answer = json.dumps(self.obj)
            self.obj["metadata"]["resourceVersion"] += "0"
            return Reply(200, answer)
        if request.method == "PATCH":
            patch = json.loads(request.body)
            stored = str(self.obj["metadata"].get("resourceVersion"))
            sent = (patch.get("metadata") or {}).get("resourceVersion", stored)
            if sent != stored:
                conflict = {
                    "kind": "Status",
                    "code": 409,
                    "message": "the object has been modified",
                }
                return Reply(409, json.dumps(conflict))
            self.obj = apply_merge_patch(self.obj, patch)
            self.obj["metadata"]["resourceVersion"] = str(int(stored) + 1)
        return Reply(200, json.dumps(self.obj))


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch) -> Iterator[ApiServer]:
    obj = concluded()
    obj["metadata"]["resourceVersion"] = "41"
    fake = ApiServer(obj)
    with fake.server:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        kubeconfig = write_kubeconfig(tmp_path / "config", {"main": fake.server.url}, "main")
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        yield fake


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "-n", "ml"])
    out, err = capsys.readouterr()
    return code, out, err


def test_apply_winner_merge_patches_the_spec_and_says_what_changed(cluster, capsys):
    code, out, err = run(capsys, "apply-winner", "fraud")
    assert (code, err) == (0, "")
    patch = next(r for r in cluster.requests if r.method == "PATCH")
    assert patch.path == MD_PATH
    assert patch.headers["content-type"] == "application/merge-patch+json"
    sent = json.loads(patch.body)
    # null removes strategy.experiment; the resourceVersion guards against a change in between
    assert sent == {**json.loads(WINNER_PATCH), "metadata": {"resourceVersion": "41"}}
    assert cluster.obj["spec"]["model"]["version"] == "1.1.0-deeper"
    assert cluster.obj["spec"]["strategy"] == {"type": "canary"}
    flat = " ".join(out.split())
    assert flat.startswith(
        "modeldeployment fraud in ml: applied the experiment's winner deeper (1.1.0-deeper): "
        "spec.model is now 1.1.0-deeper (was 1.0.0), strategy.type canary (was experiment); "
        "the operator rolls 1.1.0-deeper out as a canary against stable 1.0.0"
    )
    assert f"patch: {WINNER_PATCH}" in flat
    assert "With GitOps, make this change in Git instead" in flat
    # once applied, a second run changes nothing
    code, _, err = run(capsys, "apply-winner", "fraud")
    assert code == 1
    assert "is already applied" in err
    assert [r.method for r in cluster.requests].count("PATCH") == 1


def test_dry_run_prints_only_the_patch_and_changes_nothing(cluster, capsys):
    code, out, err = run(capsys, "apply-winner", "fraud", "--dry-run")
    assert (code, out, err) == (0, WINNER_PATCH + "\n", "")
    assert [r.method for r in cluster.requests] == ["GET"]


def test_a_refusal_exits_1_and_sends_nothing(cluster, capsys):
    cluster.obj = experimenting()
    code, out, err = run(capsys, "apply-winner", "fraud", "--dry-run")
    assert (code, out) == (1, "")
    assert err.startswith("refused: the experiment of modeldeployment fraud in ml is still running")
    assert [r.method for r in cluster.requests] == ["GET"]


def test_a_change_between_reading_and_patching_is_not_overwritten(cluster, capsys):
    cluster.changed_after_reads = True
    code, _, err = run(capsys, "apply-winner", "fraud")
    assert code == 3
    assert "it changed after the plugin read it (409 Conflict)" in err
    assert cluster.obj["spec"]["strategy"]["type"] == "experiment"
