"""The plugin spells the operator's API names itself (it must not need the operator's
dependencies); these tests keep both spellings equal, and the two apart."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from modeldeploy import api, experiment_stats, model_checks, monitoring, resources, rollout
from modeldeploy.cli import experiment, experiment_view, names, state
from modeldeploy.rollout import shadow

CLI = Path(names.__file__).parent
PACKAGE = CLI.parent


def test_api_names_are_the_operators():
    assert (names.GROUP, names.VERSION, names.PLURAL, names.KIND) == (
        api.GROUP,
        api.VERSION,
        api.PLURAL,
        api.KIND,
    )
    assert (names.MD_LABEL, names.TRACK_LABEL, names.REVISION_LABEL) == (
        resources.MD_LABEL,
        resources.TRACK_LABEL,
        resources.REVISION_LABEL,
    )


def test_request_annotations_are_the_operators():
    assert set(names.MANUAL_ANNOTATIONS) == set(rollout.MANUAL_ANNOTATIONS)
    assert names.PROMOTE_STEP_ANNOTATION == rollout.PROMOTE_STEP_ANNOTATION
    assert names.PROMOTE_ANNOTATION == rollout.PROMOTE_ANNOTATION
    assert names.ABORT_ANNOTATION == rollout.ABORT_ANNOTATION
    assert names.RETRY_ANNOTATION == rollout.RETRY_ANNOTATION
    assert names.PAUSE_ANNOTATION == rollout.PAUSE_ANNOTATION
    assert names.RESUME_ANNOTATION == rollout.RESUME_ANNOTATION


def test_model_check_names_and_the_feedback_default_are_the_operators():
    assert names.FEATURE_DRIFT_CHECK == model_checks.FEATURE_DRIFT_CHECK
    assert names.REFERENCE_SUFFIX == monitoring.REFERENCE_SUFFIX
    deadline = api.QualitySpec.model_fields["feedback_deadline"].default
    assert deadline == state.DEFAULT_FEEDBACK_DEADLINE


def test_the_shadow_default_is_the_operators():
    analyses = api.ShadowStrategy.model_fields["analyses"].default
    assert analyses == state.DEFAULT_SHADOW_ANALYSES
    assert shadow.SHADOW_STAGE == "Shadow"  # what the plugin and the Argo CD script read


def test_the_experiment_names_and_default_are_the_operators():
    assert experiment.CONTROL == api.CONTROL
    phases = (experiment.RUNNING, experiment.CONCLUDED, experiment.STOPPED)
    assert phases == tuple(api.ExperimentPhase)
    assert experiment.CUT == api.ArmState.CUT
    assert experiment.BETTER == experiment_stats.Outcome.BETTER
    assert set(experiment_view.OUTCOME_TONES) == set(experiment_stats.Outcome)
    significance = api.ExperimentStrategy.model_fields["significance"].default
    assert significance == experiment.DEFAULT_SIGNIFICANCE
    assert resources.variant_track("deeper") == "v-deeper"  # the tree sorts these last


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_the_plugin_needs_only_its_extra():
    allowed = {"kubernetes", "rich", "urllib3"}  # urllib3 comes with kubernetes
    for path in CLI.glob("*.py"):
        for module in imported_modules(path):
            top = module.split(".")[0]
            if module.startswith("modeldeploy"):
                assert module.startswith("modeldeploy.cli"), f"{path.name} imports {module}"
            else:
                assert top in sys.stdlib_module_names or top in allowed, (
                    f"{path.name} imports {module}, which the cli extra does not install"
                )


def test_the_operator_never_imports_the_plugin():
    for path in PACKAGE.rglob("*.py"):
        if CLI in path.parents:
            continue
        imports = imported_modules(path)
        assert not {m for m in imports if m.startswith("modeldeploy.cli")}, path
