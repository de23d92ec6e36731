"""The alert rules: promtool checks and unit-tests the plain rules file, and the chart's
PrometheusRule is shown to be that file, with its values applied. Every query of the
dashboard parses in Prometheus' own parser, and the monitoring panels read the
operator's gauges as a user would read them (tests/integration/test_dashboards.py runs
every query against a real Prometheus after a real scenario).

promtool comes with Debian's prometheus package (`make tools`). Without it these tests
are skipped, or fail when CI=true. The chart tests also need the pinned helm.
"""

from __future__ import annotations

import json
import os
import re
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
DASHBOARD = CHART / "files" / "dashboards" / "modeldeploy-rollouts.json"
ALERTS = {
    "ModelDeploymentRolledBack",
    "ModelDeploymentCanaryStuck",
    "ModelDeploymentCanaryRunningLong",
    "ModelDeploymentAnalysisErrors",
    "ModelDeployOperatorNoLeader",
    "ModelServingErrorRateHigh",
    "ModelInputsDrifted",
    "ModelOutputsDrifted",
    "ModelErrorBudgetSpent",
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
        "prometheusRule.featurePSI=0.5",
        "prometheusRule.predictionPSI=0.1",
    )
    assert _records(rendered) == {
        "modeldeploy:alert_threshold:serving_error_rate": "vector(0.25)",
        "modeldeploy:alert_threshold:canary_max_duration_seconds": "vector(600)",
        "modeldeploy:alert_threshold:feature_psi": "vector(0.5)",
        "modeldeploy:alert_threshold:prediction_psi": "vector(0.1)",
    }
    requests = 'modelserver_requests_total{namespace="ml", modeldeployment="fraud", track="stable"'
    stable = '{namespace="ml", name="fraud"}'
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
                    # over the default 0.2 and under the 0.5 of the values
                    {
                        "series": 'modeldeploy_feature_psi{namespace="ml", name="fraud", '
                        'feature="amount"}',
                        "values": "0.41x30",
                    },
                    # a KS of 0.15: under the default 0.2, over the 0.1 of the values
                    {"series": "modeldeploy_prediction_psi" + stable, "values": "0.15x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "ModelInputsDrifted", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "ModelOutputsDrifted",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "ml",
                                    "name": "fraud",
                                },
                                "exp_annotations": _alerts(rendered)["ModelOutputsDrifted"][
                                    "annotations"
                                ]
                                | {
                                    "summary": "The predictions of ml/fraud drifted from its "
                                    "training profile: 0.15",
                                    "description": "The stable model's outputs are distributed "
                                    "unlike its outputs on the training data. kubectl "
                                    "modeldeploy get fraud -n ml shows the output and bin that "
                                    "moved (status.drift.prediction).",
                                },
                            }
                        ],
                    },
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


@pytest.mark.parametrize(
    "value", ["prometheusRule.featurePSI=-0.1", "prometheusRule.predictionPSI=high"]
)
def test_a_drift_bound_that_is_no_number_of_zero_or_more_is_refused(helm, value):
    done = subprocess.run(
        [
            helm,
            "template",
            "md",
            str(CHART),
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            value,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode != 0
    key = value.split("=")[0].replace(".", "/")
    assert f"at '/{key}'" in done.stderr


# --- the dashboard ----------------------------------------------------------------------

DASHBOARD_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# Grafana's own variables, as it fills them for a query over the last hour.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__range": "1h"}


def _dashboard_queries() -> dict[str, str]:
    """Every panel query, `panel title/refId` -> PromQL, with the template variables as
    Grafana fills them: All for a query variable, a textbox's own value."""
    board = json.loads(DASHBOARD.read_text())
    values = dict(GRAFANA_VARIABLES)
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            values[variable["name"]] = variable["allValue"]
        elif variable["type"] == "textbox":
            values[variable["name"]] = variable["query"]

    def fill(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown template variable ${name}"
        return values[name]

    return {
        f"{panel['title']}/{target['refId']}": DASHBOARD_VARIABLE.sub(fill, target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    }


def test_every_dashboard_query_parses(promtool, tmp_path):
    queries = _dashboard_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{index}", "expr": expr}
                    for index, expr in enumerate(queries.values())
                ],
            }
        ]
    }
    (tmp_path / "dashboard.rules.yaml").write_text(yaml.safe_dump(rules))
    done = _promtool(promtool, "check", "rules", tmp_path / "dashboard.rules.yaml")
    assert done.returncode == 0, "\n".join(queries) + done.stdout + done.stderr


def test_the_monitoring_panels_show_each_stable_once_with_the_operators_values(promtool, tmp_path):
    """Two operator replicas export the same gauges (the one that led last keeps its
    values until it restarts): each panel shows one series per stable (and feature or
    metric), with the values the operator wrote, and its bound."""
    queries = _dashboard_queries()
    fraud = 'namespace="ml", name="fraud"'
    inputs = []
    for instance in ("op-a", "op-b"):
        at = f'job="modeldeploy", instance="{instance}", {fraud}'
        inputs += [
            {"series": f'modeldeploy_feature_psi{{{at}, feature="amount"}}', "values": "0.41x10"},
            {"series": f'modeldeploy_feature_psi{{{at}, feature="tenure"}}', "values": "0.05x10"},
            {"series": f"modeldeploy_prediction_psi{{{at}}}", "values": "0.09x10"},
            {
                "series": f'modeldeploy_model_quality{{{at}, metric="accuracy"}}',
                "values": "0.92x10",
            },
            {"series": f"modeldeploy_slo_compliance{{{at}}}", "values": "0.9702x10"},
            {"series": f"modeldeploy_slo_error_budget_remaining{{{at}}}", "values": "-1.98x10"},
        ]
    expected: dict[str, list[tuple[dict[str, str], float]]] = {
        "Feature drift: PSI by feature/A": [
            ({"namespace": "ml", "name": "fraud", "feature": "amount"}, 0.41),
            ({"namespace": "ml", "name": "fraud", "feature": "tenure"}, 0.05),
        ],
        "Feature drift: PSI by feature/B": [({}, 0.2)],
        "Prediction drift/A": [({"namespace": "ml", "name": "fraud"}, 0.09)],
        "Prediction drift/B": [({}, 0.2)],
        "Live model quality/A": [
            ({"namespace": "ml", "name": "fraud", "metric": "accuracy"}, 0.92)
        ],
        "SLO compliance/A": [({"namespace": "ml", "name": "fraud"}, 0.9702)],
        "SLO compliance/B": [({}, 0.99)],
        "Error budget left/A": [({"namespace": "ml", "name": "fraud"}, -1.98)],
    }
    monitoring_panels = {
        key for key in queries if key.split("/")[0] in {k.split("/")[0] for k in expected}
    }
    assert monitoring_panels == set(expected)

    def labels(found: dict[str, str]) -> str:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in found.items()) + "}"

    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    {
                        "expr": queries[key],
                        "eval_time": "5m",
                        "exp_samples": [
                            {"labels": labels(found), "value": value} for found, value in series
                        ],
                    }
                    for key, series in expected.items()
                ],
            }
        ],
    }
    _test_rules(promtool, {"groups": []}, tests, tmp_path)
