"""The chart's Grafana dashboard and alert rules against the REAL Prometheus of the
end-to-end tests, after a promotion and a rollback.

The stack of test_end_to_end (real modelserver processes, a real Prometheus, the operator)
runs a good model to promotion and a model rejecting the stable's inputs to rollback,
with Prometheus scraping the operator too and evaluating the chart's rules file. Then
every query of every panel runs as Grafana would run it (template variables substituted,
over the scenario's time range): each must parse and return data, but for the few panels
listed below, whose emptiness is checked against its reason. The template variables'
own queries must find the namespace, the ModelDeployment and the operator.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.harness.prometheus import OPERATOR_JOB, RealPrometheus
from tests.integration.conftest import REPO_ROOT
from tests.integration.operator_harness import (
    Objects,
    OperatorProcess,
    objects,
    operator,
    wait_for,
)
from tests.integration.test_end_to_end import real_prometheus, roll_out, stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
__all__ = ["objects", "operator", "real_prometheus", "stack"]  # fixtures used below

FILES = REPO_ROOT / "charts" / "modeldeploy" / "files"
DASHBOARD = FILES / "dashboards" / "modeldeploy-rollouts.json"
ALERT_RULES = FILES / "alerts" / "modeldeploy.rules.yaml"
MODELDEPLOYMENT = "e2e"  # the stack's ModelDeployment
STEP_SECONDS = 2
RATE_INTERVAL = "15s"  # Grafana's $__rate_interval for a 1 s scrape interval, with room
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass(frozen=True)
class Query:
    panel: str
    ref: str
    expr: str

    def __str__(self) -> str:
        return f"panel {self.panel!r}, query {self.ref}"


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(board: dict[str, Any]) -> list[Query]:
    return [
        Query(panel["title"], target["refId"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def substitute(expr: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown template variable ${name} in {expr}"
        return values[name]

    return VARIABLE.sub(value, expr)


def query_range(prometheus: RealPrometheus, expr: str, start: float, end: float) -> Any:
    reply = httpx.post(
        f"{prometheus.url}/api/v1/query_range",
        data={"query": expr, "start": start, "end": end, "step": STEP_SECONDS},
        timeout=10,
    )
    body = reply.json()
    assert body["status"] == "success", f"Prometheus refused {expr}: {body.get('error')}"
    return body["data"]["result"]


def has_numbers(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(value)) for series in result for _, value in series["values"])


def no_failed_api_requests(operator: OperatorProcess) -> str | None:
    """The panel is empty because the operator never had a request fail."""
    failed = [
        line
        for line in operator.metrics().splitlines()
        if line.startswith("modeldeploy_kube_request_errors_total{")
    ]
    return None if not failed else f"the operator reports failed requests: {failed}"


def not_exported(gauge: str) -> Callable[[OperatorProcess], str | None]:
    """The panel is empty because no ModelDeployment of the scenario has spec.monitoring,
    so the operator exports no such gauge (tests/unit/test_alerts.py fills these panels
    from series shaped like the operator's)."""

    def check(operator: OperatorProcess) -> str | None:
        lines = [line for line in operator.metrics().splitlines() if line.startswith(gauge + "{")]
        return None if not lines else f"the operator exports {lines}"

    return check


# Panels that may stay empty in this scenario, and the check that their emptiness is right.
MAY_BE_EMPTY: dict[str, Callable[[OperatorProcess], str | None]] = {
    "Kubernetes API errors per second": no_failed_api_requests,
    "Feature drift: PSI by feature": not_exported("modeldeploy_feature_psi"),
    "Prediction drift": not_exported("modeldeploy_prediction_psi"),
    "Live model quality": not_exported("modeldeploy_model_quality"),
    "SLO compliance": not_exported("modeldeploy_slo_compliance"),
    "Error budget left": not_exported("modeldeploy_slo_error_budget_remaining"),
}


def label_values(prometheus: RealPrometheus, definition: str, values: dict[str, str]) -> set[str]:
    """Grafana's label_values(selector, label), through the series API."""
    match = re.fullmatch(r"label_values\((.*), (\w+)\)", substitute(definition, values))
    assert match, f"not a label_values() query: {definition}"
    selector, label = match.groups()
    reply = httpx.get(
        f"{prometheus.url}/api/v1/series", params={"match[]": selector}, timeout=10
    ).json()
    assert reply["status"] == "success", f"Prometheus refused {selector}: {reply.get('error')}"
    return {series[label] for series in reply["data"] if label in series}


def test_every_dashboard_query_runs_and_the_rollback_alert_fires(
    objects: Objects, operator: OperatorProcess, stack: dict[str, Any]
) -> None:
    prometheus: RealPrometheus = stack["prometheus"]
    prometheus.scrape_operator(f"127.0.0.1:{operator.metrics_port}")
    prometheus.load_rules(ALERT_RULES)
    # A busy host must not turn this scenario's promotion into a rollback: a good model
    # can miss the stack's 20 ms p99 there (the slow-model test's business), and the load
    # can fall short of 10 requests in 5 s.
    objects.patch_spec(
        MODELDEPLOYMENT,
        {
            "rollout": {"interval": "6s"},
            "analysis": {"minRequests": 5, "slo": {"maxLatencyP99": "1s"}},
        },
    )
    started = time.time()
    ns = objects.namespace

    roll_out(objects, "1.1.0", "xgb-classifier.ubj")
    promoted = wait_for(lambda: objects.outcome(MODELDEPLOYMENT, "1.1.0"), 120, "the promotion")
    assert promoted["outcome"] == "Promoted", promoted
    roll_out(objects, "2.0.0", "xgb-classifier-bad-features.ubj")
    rolled_back = wait_for(lambda: objects.outcome(MODELDEPLOYMENT, "2.0.0"), 120, "the rollback")
    assert rolled_back["outcome"] == "RolledBack", rolled_back
    # the operator's last counters reach Prometheus with its next scrape
    rollbacks = f'modeldeploy_rollbacks_total{{namespace="{ns}", name="{MODELDEPLOYMENT}"}}'
    wait_for(lambda: prometheus.query(rollbacks), 30, "Prometheus to scrape the rollback")
    end = time.time()
    # steps counted back from the end, so that the last one sees what was just scraped
    start = end - STEP_SECONDS * math.ceil((end - started) / STEP_SECONDS)

    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    values = {
        "namespace": ns,
        "modeldeployment": MODELDEPLOYMENT,
        "operator": ".*",
        "__rate_interval": RATE_INTERVAL,
        "__range": f"{math.ceil(end - start)}s",
        **{name: v["query"] for name, v in variables.items() if v["type"] == "textbox"},
    }

    found = {
        "namespace": ns,
        "modeldeployment": MODELDEPLOYMENT,
        "operator": OPERATOR_JOB,
    }
    for name, expected in found.items():
        options = label_values(prometheus, variables[name]["definition"], values)
        assert expected in options, f"variable ${name} offers {options}, not {expected}"

    empty: list[str] = []
    for query in queries(board):
        expr = substitute(query.expr, values)
        result = query_range(prometheus, expr, start, end)
        if has_numbers(result):
            continue
        check = MAY_BE_EMPTY.get(query.panel)
        assert check is not None, f"{query} returned no data: {expr}"
        problem = check(operator)
        assert problem is None, f"{query} returned no data, but {problem}: {expr}"
        empty.append(str(query))
    print(f"{len(queries(board))} dashboard queries ran; empty as expected: {empty}")

    # the numbers a user reads off the dashboard after this scenario
    by_title = {q.panel: substitute(q.expr, values) for q in queries(board) if q.ref == "A"}
    assert [float(s["value"][1]) for s in prometheus.query(by_title["Promotions"])] == [1.0]
    assert [float(s["value"][1]) for s in prometheus.query(by_title["Rollbacks"])] == [1.0]
    reasons = prometheus.query(by_title["Rollbacks by reason"])
    assert [s["metric"]["reason"] for s in reasons] == ["FailedChecks"]

    # the rules file, as the chart ships it, alerts on this very rollback
    firing = (
        f'ALERTS{{alertname="ModelDeploymentRolledBack", alertstate="firing", namespace="{ns}", '
        f'name="{MODELDEPLOYMENT}", reason="FailedChecks"}}'
    )
    wait_for(lambda: prometheus.query(firing), 30, "the ModelDeploymentRolledBack alert")
    # The canary's rejected requests made the serving error-rate alert pending (for: 10m),
    # if it got the 20 requests in 5 minutes the alert judges by (with room for increase()
    # missing what a series was born with); a busy host may send fewer.
    rejected = [s for s in stack["load"].sent if s.track == "canary" and s.status == 422]
    pending = (
        f'max_over_time(ALERTS{{alertname="ModelServingErrorRateHigh", namespace="{ns}", '
        f'modeldeployment="{MODELDEPLOYMENT}", track="canary"}}[{values["__range"]}])'
    )
    if len(rejected) >= 40:
        assert prometheus.query(pending), "ModelServingErrorRateHigh never saw the canary"
    assert not prometheus.query('ALERTS{alertname="ModelDeployOperatorNoLeader"}')
