"""The operator's own Prometheus metrics (served on --metrics-port at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "modeldeploy_reconciles_total",
    "Reconciles of ModelDeployments by result (ok, retry, conflict, invalid, error).",
    ["result"],
)
RECONCILE_DURATION = Histogram(
    "modeldeploy_reconcile_duration_seconds",
    "Time one reconcile took.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_REQUESTS = Histogram(
    "modeldeploy_kube_request_duration_seconds",
    "Kubernetes API requests of the operator by verb and resource, with their latency.",
    ["verb", "resource"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_ERRORS = Counter(
    "modeldeploy_kube_request_errors_total",
    "Kubernetes API requests of the operator that failed, by verb, resource and code "
    "(the HTTP status, or `unreachable`); 404 is an answer, not an error.",
    ["verb", "resource", "code"],
)
LEADER = Gauge(
    "modeldeploy_leader",
    "1 while this operator replica holds the leader Lease and reconciles, else 0.",
)
CANARY_STARTED = Gauge(
    "modeldeploy_canary_started_timestamp_seconds",
    "When the running canary started (Unix time); absent without a canary.",
    ["namespace", "name"],
)
CANARY_PROGRESS_DEADLINE = Gauge(
    "modeldeploy_canary_progress_deadline_seconds",
    "rollout.progressDeadline of the running canary; absent without a canary.",
    ["namespace", "name"],
)
CANARY_READY = Gauge(
    "modeldeploy_canary_ready",
    "1 once the running canary's pods became ready, 0 before; absent without a canary.",
    ["namespace", "name"],
)
BY_PHASE = Gauge(
    "modeldeploy_modeldeployments", "ModelDeployments by phase.", ["namespace", "phase"]
)
CANARY_WEIGHT = Gauge(
    "modeldeploy_canary_weight",
    "Traffic percentage the canary should get now (0 without a canary).",
    ["namespace", "name"],
)
CANARY_ACTUAL_WEIGHT = Gauge(
    "modeldeploy_canary_actual_weight",
    "Traffic percentage the canary's ready pods actually get.",
    ["namespace", "name"],
)
CHECK_VALUE = Gauge(
    "modeldeploy_analysis_check_value",
    "The value of each analysis check at the last analysis.",
    ["namespace", "name", "check"],
)
ANALYSES = Counter(
    "modeldeploy_analyses_total",
    "Analyses by overall verdict (Pass, Fail, NoData, Error).",
    ["namespace", "name", "verdict"],
)
CHECK_RESULTS = Counter(
    "modeldeploy_analysis_checks_total",
    "Check results by check and verdict.",
    ["namespace", "name", "check", "verdict"],
)
PROMOTIONS = Counter("modeldeploy_promotions_total", "Canaries promoted.", ["namespace", "name"])
ROLLBACKS = Counter(
    "modeldeploy_rollbacks_total",
    "Canaries rolled back, by reason.",
    ["namespace", "name", "reason"],
)
CANARY_DURATION = Histogram(
    "modeldeploy_canary_duration_seconds",
    "Time from canary start to its outcome (Promoted, RolledBack, Superseded).",
    ["outcome"],
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
)

_PER_OBJECT = (
    CANARY_STARTED,
    CANARY_PROGRESS_DEADLINE,
    CANARY_READY,
    CANARY_WEIGHT,
    CANARY_ACTUAL_WEIGHT,
    CHECK_VALUE,
    ANALYSES,
    CHECK_RESULTS,
    PROMOTIONS,
    ROLLBACKS,
)


def forget_canary(namespace: str, name: str) -> None:
    """The object runs no canary (any more): its canary series go."""
    for metric in (CANARY_STARTED, CANARY_PROGRESS_DEADLINE, CANARY_READY):
        metric.remove_by_labels({"namespace": namespace, "name": name})


def forget_object(namespace: str, name: str) -> None:
    """Drop a deleted ModelDeployment's series, so they stop being scraped as if live."""
    for metric in _PER_OBJECT:
        metric.remove_by_labels({"namespace": namespace, "name": name})
