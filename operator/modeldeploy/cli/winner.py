"""What `apply-winner` does with an experiment's result: pure, no I/O.

The operator never rewrites the spec (GitOps owns it): a concluded experiment leaves in
status.experiment.winnerPatch the JSON merge patch (RFC 7386) that makes the winner the
model, rolled out as a canary. `apply-winner` applies that patch for users without
GitOps, and refuses, saying why, when there is nothing to apply: no experiment, one
still running, no winner, a patch already applied, or a spec that moved on. For a
GitOps user it prints the patch to make in Git instead, since a tool that syncs the
object from Git reverts a change made to the live object."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from modeldeploy.cli.decide import Refusal
from modeldeploy.cli.experiment import CONCLUDED, STOPPED, Experiment, arm_outcome_text
from modeldeploy.cli.state import Json, Rollout
from modeldeploy.cli.text import utc_stamp

# Marks that a tool applies the object from a repository or chart, and would put back a
# spec changed in the cluster. Only marks no hand-written manifest carries by habit.
GITOPS_ANNOTATIONS = {
    "argocd.argoproj.io/tracking-id": "Argo CD",
    "meta.helm.sh/release-name": "Helm",
}
GITOPS_LABELS = {
    "kustomize.toolkit.fluxcd.io/name": "Flux",
    "helm.toolkit.fluxcd.io/name": "Flux",
}
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


@dataclass(frozen=True)
class WinnerPatch:
    winner: str
    version: str
    text: str
    """winnerPatch exactly as the operator wrote it."""
    patch: dict[str, Any]


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """`target` with the JSON merge patch applied (RFC 7386): null removes a member."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def _ref(rollout: Rollout) -> str:
    return f"modeldeployment {rollout.name} in {rollout.namespace}"


def winner_patch(rollout: Rollout) -> WinnerPatch | Refusal:
    """The winner's patch from status.experiment, or why there is none."""
    experiment = rollout.experiment
    if experiment is None:
        return Refusal(
            f"{_ref(rollout)} has no experiment in its status (strategy.type "
            f"{rollout.strategy_type}): there is no winner to apply. An experiment "
            "(strategy.type experiment) ends with one when a variant beats control."
        )
    if experiment.running:
        due = (
            f"verdict due {utc_stamp(experiment.ends_at)} at the earliest"
            if experiment.ends_at is not None
            else "not counting yet: waiting for every arm's pods"
        )
        return Refusal(
            f"the experiment of {_ref(rollout)} is still running (attempt {experiment.attempt}, "
            f"{due}): there is no winner yet. `kubectl modeldeploy status {rollout.name}` waits "
            f"for its end; `kubectl modeldeploy abort {rollout.name}` stops it."
        )
    if experiment.winner is None:
        return Refusal(_no_winner(rollout, experiment))
    arm = experiment.arm(experiment.winner)
    version = arm.version if arm is not None else "?"
    text = experiment.winner_patch or ""
    try:
        patch = json.loads(text)
    except ValueError:
        patch = None
    if not isinstance(patch, dict) or not patch:
        return Refusal(
            f"status.experiment of {_ref(rollout)} names the winner {experiment.winner} but its "
            f"winnerPatch is not a JSON merge patch ({text!r}); an operator older than the "
            "plugin may not write one. Set the winner's model in the spec by hand."
        )
    return WinnerPatch(experiment.winner, version, text, patch)


def _no_winner(rollout: Rollout, experiment: Experiment) -> str:
    outcomes = "; ".join(arm_outcome_text(v) for v in experiment.variants) or "no variants"
    control = f"control {experiment.control.version}"
    if experiment.phase == CONCLUDED:
        return (
            f"the experiment of {_ref(rollout)} concluded without a winner: no variant was "
            f"Better than {control}. Outcomes: {outcomes}. Control stays the model; there is "
            "nothing to apply."
        )
    why = f" ({experiment.message})" if experiment.message else ""
    if experiment.phase == STOPPED:
        return (
            f"the experiment of {_ref(rollout)} was stopped before its verdict{why}: there is no "
            f"winner to apply. Variants: {outcomes}. `kubectl modeldeploy retry {rollout.name}` "
            "runs it again while the spec asks for it."
        )
    return f"the experiment of {_ref(rollout)} ended {experiment.phase}{why} without a winner."


def managed_by(obj: Json) -> str | None:
    """The tool that applies this object from elsewhere, with the mark that says so."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    for key, tool in GITOPS_ANNOTATIONS.items():
        if key in annotations:
            return f"{tool} (annotation {key})"
    for key, tool in GITOPS_LABELS.items():
        if key in labels:
            return f"{tool} (label {key})"
    if labels.get(MANAGED_BY_LABEL) == "Helm":
        return f"Helm (label {MANAGED_BY_LABEL}=Helm)"
    return None


def refuse_to_apply(obj: Json, plan: WinnerPatch, force: bool) -> Refusal | None:
    """Why applying the patch to this object now would be wrong, or None."""
    rollout = Rollout.of(obj)
    spec = obj.get("spec") or {}
    patched = apply_merge_patch(obj, plan.patch)
    if patched.get("spec") == spec:
        return Refusal(
            f"the winner {plan.winner} ({plan.version}) is already applied to {_ref(rollout)}: "
            f"its spec is what the patch makes it (model {rollout.spec_version}, strategy.type "
            f"{rollout.strategy_type}). `kubectl modeldeploy status {rollout.name}` follows its "
            "rollout."
        )
    if rollout.generation is not None and rollout.observed_generation != rollout.generation:
        return Refusal(
            f"the operator has not acted on generation {rollout.generation} of {_ref(rollout)} "
            f"yet (status is of generation {rollout.observed_generation}), so the experiment's "
            "result may be of an older spec. Try again once it has (`kubectl modeldeploy get "
            f"{rollout.name}` shows it)."
        )
    if not rollout.experiments:
        return Refusal(
            f"the spec of {_ref(rollout)} no longer runs the experiment (strategy.type "
            f"{rollout.strategy_type}, model {rollout.spec_version}): its winner was found for "
            "an earlier spec, and its patch would replace the current model. If you still want "
            f"{plan.winner} ({plan.version}), set it in the spec yourself (`--dry-run` prints "
            "the patch)."
        )
    tool = managed_by(obj)
    if tool is not None and not force:
        return Refusal(
            f"{_ref(rollout)} is applied by {tool}, which puts back a spec changed in the "
            f"cluster at its next sync. Make the change in Git instead: {gitops_hint(plan)} "
            "(`--force` patches the live object anyway)."
        )
    return None


def gitops_hint(plan: WinnerPatch) -> str:
    """How to make the same change to a manifest in a repository."""
    return (
        f"`kubectl patch --local -f MANIFEST.yaml --type merge -p {shlex.quote(plan.text)} "
        "-o yaml` prints the manifest with the winner's model (without its comments; "
        "no cluster needed)"
    )


def precondition(plan: WinnerPatch, obj: Json) -> dict[str, Any]:
    """The patch sent to the API server: the winner's, and the resourceVersion the
    decision was made on, so a change made in between fails (409) instead of being
    overwritten."""
    version = (obj.get("metadata") or {}).get("resourceVersion")
    if not version:
        return plan.patch
    metadata = {**(plan.patch.get("metadata") or {}), "resourceVersion": str(version)}
    return {**plan.patch, "metadata": metadata}


def applied_lines(before: Json, after: Json, plan: WinnerPatch) -> list[str]:
    """What `apply-winner` tells the user it did, from the object before and after."""
    old, new = Rollout.of(before), Rollout.of(after)
    stable = f" against stable {old.stable.version}" if old.stable else ""
    return [
        f"{_ref(new)}: applied the experiment's winner {plan.winner} ({plan.version}): "
        f"spec.model is now {new.spec_version} (was {old.spec_version}), strategy.type "
        f"{new.strategy_type} (was {old.strategy_type}); the operator rolls {new.spec_version} "
        f"out as a canary{stable}",
        f"patch: {plan.text}",
        f"note: `kubectl modeldeploy status {new.name}` follows the canary. With GitOps, make "
        f"this change in Git instead, or the next sync reverts it: {gitops_hint(plan)}",
    ]
