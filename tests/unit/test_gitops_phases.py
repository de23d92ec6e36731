"""Every phase the operator can write is read by every tool we ship for it: the plugin's
tones, the Argo CD health check, the table the Go tests judge each tool on, and the
table of docs/gitops.md. A new phase added to the API without them fails here."""

from __future__ import annotations

from pathlib import Path

import yaml

from modeldeploy import api
from modeldeploy.cli import view

ROOT = Path(__file__).parents[2]
HEALTH = ROOT / "integrations/argocd/modeldeploy.dev/ModelDeployment/health.lua"
PHASES = ROOT / "integrations/go/testdata/phases.yaml"
GITOPS = ROOT / "docs/gitops.md"


def test_the_plugin_has_a_tone_for_every_phase():
    assert set(view.PHASE_TONES) == {str(phase) for phase in api.Phase}


def test_the_argo_cd_health_check_has_a_branch_for_every_phase():
    script = HEALTH.read_text()
    missing = [p for p in api.Phase if f'phase == "{p}"' not in script]
    assert not missing, f"health.lua says Unknown for {missing}"


def test_the_go_phase_table_and_the_docs_table_judge_every_phase():
    cases = yaml.safe_load(PHASES.read_text())
    judged = {case["phase"].split()[0].rstrip(",") for case in cases}
    rows = {
        line.split("|")[1].strip().split()[0].rstrip(",")
        for line in GITOPS.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| phase")
    }
    for phase in api.Phase:
        assert phase in judged, f"no object in phase {phase} in {PHASES.name}"
        assert phase in rows, f"no row for phase {phase} in docs/gitops.md"
