"""The plugin spells the operator's API names itself (it must not need the operator's
dependencies); these tests keep both spellings equal, and the plugin light."""

from __future__ import annotations

import subprocess
import sys

from modeldeploy import api, resources, rollout
from modeldeploy.cli import names


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


def loaded_after(statement: str) -> set[str]:
    """Top-level and modeldeploy modules a fresh interpreter holds after `statement`."""
    probe = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return {
        line if line.startswith("modeldeploy.") else line.split(".")[0]
        for line in done.stdout.splitlines()
    }


def test_the_plugin_needs_only_its_extra():
    loaded = loaded_after("import modeldeploy.cli.main")
    assert {"kubernetes", "rich"} <= loaded
    assert not loaded & {"kopf", "aiohttp", "prometheus_client", "httpx"}
    operator_modules = {m for m in loaded if m.startswith("modeldeploy.")} - {
        m for m in loaded if m.startswith("modeldeploy.cli")
    }
    assert operator_modules == set()


def test_the_operator_never_imports_the_plugin():
    loaded = loaded_after("import modeldeploy.__main__, modeldeploy.handlers")
    assert "modeldeploy.api" in loaded
    assert not {m for m in loaded if m.startswith("modeldeploy.cli")}
