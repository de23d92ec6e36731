"""The operator's own Prometheus metrics (served on --metrics-port at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from modeldeploy.api import ArmState, DriftStatus, ExperimentPhase, ExperimentStatus, SLOStatus

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
FEATURE_PSI = Gauge(
    "modeldeploy_feature_psi",
    "spec.monitoring: PSI of the stable's live inputs against its profile, for the most "
    "drifted features of the last pass.",
    ["namespace", "name", "feature"],
)
PREDICTION_PSI = Gauge(
    "modeldeploy_prediction_psi",
    "spec.monitoring: the drift statistic (psi or ks) of the stable's outputs against its profile.",
    ["namespace", "name"],
)
MODEL_QUALITY = Gauge(
    "modeldeploy_model_quality",
    "spec.monitoring: the stable's live quality from feedback (accuracy, auc or mae).",
    ["namespace", "name", "metric"],
)
SLO_COMPLIANCE = Gauge(
    "modeldeploy_slo_compliance",
    "spec.monitoring: share of the windows of slo.period in which the stable kept its SLO.",
    ["namespace", "name"],
)
SLO_ERROR_BUDGET = Gauge(
    "modeldeploy_slo_error_budget_remaining",
    "spec.monitoring: share of the stable's error budget left (below 0: overspent).",
    ["namespace", "name"],
)
EXPERIMENT_ARM_WEIGHT = Gauge(
    "modeldeploy_experiment_arm_weight",
    "A running experiment's traffic % per arm (control or a variant), as the router achieved it.",
    ["namespace", "name", "arm"],
)
EXPERIMENT_OUTCOMES = Counter(
    "modeldeploy_experiment_outcomes_total",
    "Judged experiment variants by outcome (Better, Worse, NoSignificantDifference, "
    "InsufficientData) and variants cut by their SLO checks (Cut).",
    ["namespace", "name", "outcome"],
)

_PER_OBJECT = (
    CANARY_STARTED,
    CANARY_PROGRESS_DEADLINE,
    CANARY_READY,
    CANARY_WEIGHT,
    CANARY_ACTUAL_WEIGHT,
    CHECK_VALUE,
    FEATURE_PSI,
    PREDICTION_PSI,
    MODEL_QUALITY,
    SLO_COMPLIANCE,
    SLO_ERROR_BUDGET,
    ANALYSES,
    CHECK_RESULTS,
    PROMOTIONS,
    ROLLBACKS,
    EXPERIMENT_ARM_WEIGHT,
    EXPERIMENT_OUTCOMES,
)


def forget_canary(namespace: str, name: str) -> None:
    """The object runs no canary (any more): its canary series go."""
    for metric in (CANARY_STARTED, CANARY_PROGRESS_DEADLINE, CANARY_READY):
        metric.remove_by_labels({"namespace": namespace, "name": name})


def forget_object(namespace: str, name: str) -> None:
    """Drop a deleted ModelDeployment's series, so they stop being scraped as if live."""
    for metric in _PER_OBJECT:
        metric.remove_by_labels({"namespace": namespace, "name": name})


def export_monitoring(
    namespace: str, name: str, drift: DriftStatus | None, slo: SLOStatus | None
) -> None:
    """The last monitoring pass as gauges; series of features no longer among the worst go."""
    where = {"namespace": namespace, "name": name}
    for metric in (FEATURE_PSI, PREDICTION_PSI, MODEL_QUALITY):
        metric.remove_by_labels(where)
    if drift is not None:
        for feature in drift.features:
            FEATURE_PSI.labels(namespace, name, feature.feature).set(feature.psi)
        if drift.prediction is not None:
            PREDICTION_PSI.labels(namespace, name).set(drift.prediction.value)
        if drift.quality is not None and drift.quality.value is not None:
            MODEL_QUALITY.labels(namespace, name, drift.quality.metric).set(drift.quality.value)
    if slo is not None and slo.compliance is not None:
        SLO_COMPLIANCE.labels(namespace, name).set(slo.compliance)
    if slo is not None and slo.error_budget_remaining is not None:
        SLO_ERROR_BUDGET.labels(namespace, name).set(slo.error_budget_remaining)


def export_experiment(
    namespace: str,
    name: str,
    before: ExperimentStatus | None,
    after: ExperimentStatus | None,
) -> None:
    """Arm weights while an experiment runs; each arm's outcome (or cut) once, when it
    appears in status."""
    EXPERIMENT_ARM_WEIGHT.remove_by_labels({"namespace": namespace, "name": name})
    if after is None:
        return
    if after.phase == ExperimentPhase.RUNNING:
        for arm in (after.control, *after.variants):
            if arm.state == ArmState.RUNNING:
                EXPERIMENT_ARM_WEIGHT.labels(namespace, name, arm.name).set(arm.actual_weight or 0)
    known = (
        {}
        if before is None or before.id != after.id or before.attempt != after.attempt
        else {arm.name: (arm.state, arm.outcome) for arm in before.variants}
    )
    for arm in after.variants:
        outcome = "Cut" if arm.state == ArmState.CUT else arm.outcome
        if outcome is not None and known.get(arm.name) != (arm.state, arm.outcome):
            EXPERIMENT_OUTCOMES.labels(namespace, name, outcome).inc()
