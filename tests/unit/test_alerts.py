"""The alert rules: promtool checks and unit-tests the plain rules file, and the chart's
PrometheusRule is shown to be that file, with its values applied.

promtool comes with Debian's prometheus package (`make tools`). Without it these tests
are skipped, or fail when CI=true. The chart tests also need the pinned helm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_chart import CHART, helm

__all__ = ["helm"]  # fixture used by the tests below

RULES = CHART / "files" / "alerts" / "modeldeploy.rules.yaml"
RULE_TESTS = Path(__file__).parent / "alerts" / "modeldeploy.rules.test.yaml"
ALERTS = {
    "ModelDeploymentRolledBack",
    "ModelDeploymentCanaryStuck",
    "ModelDeploymentCanaryRunningLong",
    "ModelDeploymentAnalysisErrors",
    "ModelDeployOperatorNoLeader",
    "ModelServingErrorRateHigh",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (make tools installs Debian's prometheus package)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true", pytrace=False)
        pytest.skip(reason)
    return found


def _promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )


def _alerts(rules: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for group in rules["groups"] for r in group["rules"] if "alert" in r}


def _records(rules: dict[str, Any]) -> dict[str, str]:
    return {
        r["record"]: r["expr"] for group in rules["groups"] for r in group["rules"] if "record" in r
    }


def _chart_rules(helm: str, *sets: str) -> dict[str, Any]:
    """The spec of the PrometheusRule the chart renders: a rules file's content."""
    args = [helm, "template", "md", str(CHART), "--set", "prometheusRule.enabled=true"]
    for value in sets:
        args += ["--set", value]
    args += ["--show-only", "templates/prometheusrule.yaml"]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    rule = yaml.safe_load(done.stdout)
    assert rule["kind"] == "PrometheusRule"
    spec: dict[str, Any] = rule["spec"]
    return spec


def _test_rules(promtool: str, rules: dict[str, Any], tests: dict[str, Any], where: Path) -> None:
    """promtool test rules of `tests` against `rules`, both written into `where`."""
    (where / "rules.yaml").write_text(yaml.safe_dump(rules))
    (where / "rules.test.yaml").write_text(yaml.safe_dump({**tests, "rule_files": ["rules.yaml"]}))
    checked = _promtool(promtool, "check", "rules", where / "rules.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool(promtool, "test", "rules", where / "rules.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_rules_file_passes_promtool_check(promtool):
    done = _promtool(promtool, "check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(_alerts(yaml.safe_load(RULES.read_text()))) == ALERTS


def test_every_alert_fires_and_holds_back_as_its_unit_tests_say(promtool):
    done = _promtool(promtool, "test", "rules", RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {
        case["alertname"]
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == ALERTS, f"alerts never shown firing: {ALERTS - tested}"


def test_the_chart_renders_the_rules_file_and_passes_the_same_unit_tests(helm, promtool, tmp_path):
    rendered = _chart_rules(helm)
    assert rendered == yaml.safe_load(RULES.read_text())
    _test_rules(promtool, rendered, yaml.safe_load(RULE_TESTS.read_text()), tmp_path)


def test_chart_values_set_the_thresholds(helm, promtool, tmp_path):
    # --set passes 0.25 as a string; the chart takes it like a number
    rendered = _chart_rules(
        helm,
        "prometheusRule.servingErrorRate=0.25",
        "prometheusRule.canaryMaxDurationSeconds=600",
    )
    assert _records(rendered) == {
        "modeldeploy:alert_threshold:serving_error_rate": "vector(0.25)",
        "modeldeploy:alert_threshold:canary_max_duration_seconds": "vector(600)",
    }
    requests = 'modelserver_requests_total{namespace="ml", modeldeployment="fraud", track="stable"'
    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # 20 % of the requests fail: under the 25 % of the values
                    {"series": requests + ', outcome="ok"}', "values": "0+80x30"},
                    {"series": requests + ', outcome="server_error"}', "values": "0+20x30"},
                    {
                        "series": 'modeldeploy_canary_started_timestamp_seconds{namespace="ml", '
                        'name="fraud"}',
                        "values": "0x30",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "ModelServingErrorRateHigh",
                        "exp_alerts": [],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "ModelDeploymentCanaryRunningLong",
                        "exp_alerts": [],
                    },
                    {
                        "eval_time": "11m",
                        "alertname": "ModelDeploymentCanaryRunningLong",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "ml",
                                    "name": "fraud",
                                },
                                "exp_annotations": _alerts(rendered)[
                                    "ModelDeploymentCanaryRunningLong"
                                ]["annotations"]
                                | {
                                    "summary": "The canary of ml/fraud has been running for 11m 0s",
                                    "description": "Far longer than its steps should take: "
                                    "paused, inconclusive analyses, or too few requests. "
                                    "kubectl describe md fraud -n ml says which.",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    _test_rules(promtool, rendered, tests, tmp_path)


def test_alerts_can_be_left_out_and_labelled_for_routing(helm):
    rendered = _alerts(
        _chart_rules(
            helm,
            "prometheusRule.disabledAlerts={ModelDeploymentCanaryRunningLong}",
            "prometheusRule.alertLabels.team=ml-platform",
        )
    )
    assert set(rendered) == ALERTS - {"ModelDeploymentCanaryRunningLong"}
    for name, alert in rendered.items():
        assert alert["labels"]["team"] == "ml-platform", name
        assert alert["labels"]["severity"] in ("warning", "critical"), name


def test_a_misspelt_disabled_alert_is_refused_with_the_names_there_are(helm):
    done = subprocess.run(
        [
            helm,
            "template",
            "md",
            str(CHART),
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "prometheusRule.disabledAlerts={ModelDeploymentRolledback}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode != 0
    assert 'there is no alert "ModelDeploymentRolledback"' in done.stderr
    assert "ModelDeploymentRolledBack" in done.stderr
