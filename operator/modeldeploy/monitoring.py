"""Monitoring without a rollout (spec.monitoring): the stable against its profile and its SLO.

Every `monitoring.interval` the stable's inputs and outputs of the last interval are
compared with its profile, its quality with the bounds and the profile's reference, and
its SLO compliance over `slo.period` is counted. `assess` is pure (answers in; status,
events and notifications out); `ask` fetches the answers and decides nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from modeldeploy import api
from modeldeploy import model_promql as mq
from modeldeploy.analysis import (
    PrometheusClient,
    QueryFailed,
    QueryOutcome,
    Value,
    describe,
    judge,
    worst,
)
from modeldeploy.drift import error_budget_remaining
from modeldeploy.model_checks import (
    FEATURE_DRIFT_CHECK,
    PREDICTION_DRIFT_CHECK,
    QualityAnswers,
    Samples,
    bound_check,
    bounded_metrics,
    feature_drift,
    measure,
    prediction_drift_from_profile,
    result_of,
    usable_feedback,
)
from modeldeploy.promql import QueryContext
from modeldeploy.rollout.model import EventRecord, Notification, Reason

Verdict = api.Verdict
REFERENCE_SUFFIX = "-drop-vs-reference"
SEVERITY = {
    Reason.MODEL_DRIFT: "warning",
    Reason.MODEL_QUALITY_DEGRADED: "critical",
    Reason.SLO_BUDGET_SPENT: "critical",
}
"""How urgent a crossing is: quality and the error budget hurt users now, drift may later."""


@dataclass(frozen=True)
class MonitoringAnswers:
    features: Samples
    feature_profile: Samples
    predictions: Samples
    prediction_profile: Samples
    quality: QualityAnswers
    reference_quality: Samples
    slo_share: QueryOutcome
    slo_windows: QueryOutcome


@dataclass
class MonitoringOutcome:
    drift: api.DriftStatus | None
    slo: api.SLOStatus
    events: list[EventRecord] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)


def monitoring_due(
    spec: api.ModelDeploymentSpec, status: api.ModelDeploymentStatus, now: datetime
) -> bool:
    """Monitoring runs once per interval while a stable serves."""
    return seconds_until_due(spec, status, now) == 0


def seconds_until_due(
    spec: api.ModelDeploymentSpec, status: api.ModelDeploymentStatus, now: datetime
) -> float | None:
    """How long until the next monitoring pass; None without monitoring or a stable."""
    if spec.monitoring is None or status.stable is None or status.stable.ready_replicas < 1:
        return None
    interval = timedelta(seconds=api.duration_seconds(spec.monitoring.interval))
    last = status.slo
    if last is None or last.version != status.stable.version:
        return 0
    return max((last.at + interval - now).total_seconds(), 0.0)


# --- asking -----------------------------------------------------------------------------


async def ask(
    client: PrometheusClient, spec: api.ModelDeploymentSpec, stable: QueryContext
) -> MonitoringAnswers:
    """Every query monitoring needs, at once, for the stable's last interval."""
    monitoring = spec.monitoring
    assert monitoring is not None
    share, windows = mq.slo_compliance(spec.analysis.slo, stable, monitoring.slo.period)
    (slo_share, slo_windows), vectors = await asyncio.gather(
        asyncio.gather(client.query(share), client.query(windows)),
        asyncio.gather(
            client.vector(mq.feature_bins(stable)),
            client.vector(mq.profile_feature_shares(stable)),
            client.vector(mq.monitored_predictions(stable)),
            client.vector(mq.profile_prediction_shares(stable)),
            client.vector(mq.model_task(stable)),
            client.vector(mq.feedback_rows_both(stable, None)),
            client.vector(mq.feedback_score_buckets_both(stable, None)),
            client.vector(mq.feedback_error_both(stable, None)),
            client.vector(mq.profile_quality(stable)),
        ),
    )
    features, feature_profile, predictions, prediction_profile = vectors[:4]
    task, rows, scores, errors, reference = vectors[4:]
    return MonitoringAnswers(
        features,
        feature_profile,
        predictions,
        prediction_profile,
        QualityAnswers(task, rows, scores, errors),
        reference,
        slo_share,
        slo_windows,
    )


def unanswered(problem: str) -> MonitoringAnswers:
    """Answers when Prometheus cannot be asked at all: every check says why."""
    failed = QueryFailed(problem)
    return MonitoringAnswers(
        failed, failed, failed, failed, QualityAnswers(failed, failed, failed, failed),
        failed, failed, failed,
    )  # fmt: skip


# --- judging ----------------------------------------------------------------------------


def assess(
    spec: api.ModelDeploymentSpec,
    previous: api.ModelDeploymentStatus,
    answers: MonitoringAnswers,
    now: datetime,
) -> MonitoringOutcome:
    monitoring = spec.monitoring
    stable = previous.stable
    assert monitoring is not None
    assert stable is not None
    drift = None
    if monitoring.drift is not None or monitoring.quality is not None:
        drift = _drift_status(monitoring, stable.version, answers, previous.drift, now)
    slo = _slo_status(monitoring, stable.version, answers, previous.slo, now)
    outcome = MonitoringOutcome(drift, slo)
    _announce_drift(outcome, previous.drift, stable)
    _announce_slo(outcome, previous.slo, stable)
    return outcome


def _drift_status(
    monitoring: api.MonitoringSpec,
    version: str,
    answers: MonitoringAnswers,
    previous: api.DriftStatus | None,
    now: datetime,
) -> api.DriftStatus:
    checks: list[api.CheckResult] = []
    features: list[api.FeatureDrift] = []
    prediction = None
    quality = None
    spec = monitoring.drift
    if spec is not None and spec.features is not None:
        inputs = feature_drift(spec, "", answers.features, answers.feature_profile, "stable")
        checks.append(inputs.check)
        if inputs.result is not None:
            features = [
                api.FeatureDrift(
                    feature=c.name,
                    psi=c.value,
                    bin=c.worst_bin,
                    profile_share=c.reference_share,
                    live_share=c.observed_share,
                )
                for c in inputs.result.worst
            ]
    if spec is not None and spec.prediction is not None:
        outputs = prediction_drift_from_profile(
            spec, "", answers.predictions, answers.prediction_profile
        )
        checks.append(outputs.check)
        if outputs.result is not None:
            prediction = api.PredictionDriftStatus(
                statistic=spec.prediction.statistic,
                value=outputs.result.value,
                output=outputs.result.worst[0].name,
                max=outputs.check.max,
            )
    if monitoring.quality is not None:
        quality_checks, quality = _quality(monitoring.quality, answers)
        checks += quality_checks
    verdict = worst(c.verdict for c in checks)
    breached_since = _breached_since(verdict, previous.breached_since if previous else None, now)
    return api.DriftStatus(
        at=now,
        version=version,
        window=monitoring.interval,
        verdict=verdict,
        message=_summary(checks, verdict),
        rows=_rows(answers.features),
        features=features,
        prediction=prediction,
        quality=quality,
        checks=[c.model_copy(update={"query": ""}) for c in checks],
        breached_since=breached_since,
    )


def _rows(features: Samples) -> float | None:
    if isinstance(features, QueryFailed) or not features:
        return None
    try:
        per_feature = mq.grouped(features, mq.FEATURE)
    except ValueError:
        return None
    return max(sum(bins.values()) for bins in per_feature.values())


def _quality(
    bounds: api.MonitoringQualitySpec, answers: MonitoringAnswers
) -> tuple[list[api.CheckResult], api.QualityStatus | None]:
    usable = usable_feedback(bounds, "", answers.quality, "stable")
    if isinstance(usable, api.CheckResult):
        return [usable], None
    rows, scores, errors = usable
    reference = (
        mq.by_label(answers.reference_quality, mq.METRIC)
        if not isinstance(answers.reference_quality, QueryFailed)
        else {}
    )
    checks, status = [], None
    for metric, low, high in bounded_metrics(bounds):
        try:
            measured = measure(metric, rows, scores, errors, "stable")
        except ValueError as error:
            checks.append(result_of(metric, "", Verdict.ERROR, str(error), min=low, max=high))
            continue
        if status is None:
            status = api.QualityStatus(
                metric=metric,
                value=measured.value,
                reference=reference.get(metric),
                feedback=measured.labelled,
            )
        check = bound_check(metric, "", measured, low, high, bounds.min_feedback, "stable")
        checks.append(check)
        if check.value is not None and bounds.max_drop_vs_reference is not None:
            checks.append(_reference_check(metric, check.value, reference.get(metric), bounds))
    return checks, status


def _reference_check(
    metric: str, live: float, reference: float | None, bounds: api.MonitoringQualitySpec
) -> api.CheckResult:
    name = metric + REFERENCE_SUFFIX
    bound = bounds.max_drop_vs_reference
    if reference is None:
        message = (
            f"the profile holds no reference {metric} (modelserver_profile_quality): build "
            "the profile with labels"
        )
        return result_of(name, "", Verdict.ERROR, message, max=bound)
    worse = reference - live if metric != "mae" else live - reference
    message = f"{describe(worse, None, bound)}: live {live:.4g}, reference {reference:.4g}"
    return result_of(name, "", judge(worse, None, bound), message, max=bound, value=worse)


def _summary(checks: list[api.CheckResult], verdict: Verdict) -> str:
    if verdict == Verdict.PASS:
        return "every bound kept"
    return "; ".join(f"{c.name}: {c.message}" for c in checks if c.verdict == verdict)


def _breached_since(verdict: Verdict, previous: datetime | None, now: datetime) -> datetime | None:
    """Set at the first Fail, kept while it lasts or cannot be judged, cleared by a Pass."""
    if verdict == Verdict.FAIL:
        return previous or now
    if verdict == Verdict.PASS:
        return None
    return previous


def _slo_status(
    monitoring: api.MonitoringSpec,
    version: str,
    answers: MonitoringAnswers,
    previous: api.SLOStatus | None,
    now: datetime,
) -> api.SLOStatus:
    objective = monitoring.slo.objective
    base = {
        "at": now,
        "version": version,
        "period": monitoring.slo.period,
        "objective": objective,
    }
    earlier = previous.breached_since if previous is not None else None
    share, windows = answers.slo_share, answers.slo_windows
    if isinstance(share, QueryFailed) or isinstance(windows, QueryFailed):
        failed = share if isinstance(share, QueryFailed) else windows
        assert isinstance(failed, QueryFailed)
        return api.SLOStatus(**base, message=failed.message, breached_since=earlier)
    if not isinstance(share, Value) or not isinstance(windows, Value):
        return api.SLOStatus(
            **base,
            windows=0,
            message=f"no window with traffic in the last {monitoring.slo.period}",
            breached_since=earlier,
        )
    left = error_budget_remaining(share.value, objective)
    spent = left < 0
    return api.SLOStatus(
        **base,
        windows=round(windows.value),
        compliance=share.value,
        error_budget_remaining=left,
        message=(
            f"{share.value:.2%} of {windows.value:.0f} windows kept the SLO (objective "
            f"{objective:.2%}); {left:.0%} of the error budget left"
        ),
        breached_since=(earlier or now) if spent else None,
    )


# --- events and notifications -----------------------------------------------------------


def _announce_drift(
    outcome: MonitoringOutcome, previous: api.DriftStatus | None, stable: api.StableStatus
) -> None:
    drift = outcome.drift
    was = previous is not None and previous.breached_since is not None
    if drift is None:
        return
    if drift.breached_since is not None and not was:
        kind = Reason.MODEL_QUALITY_DEGRADED if _quality_failed(drift) else Reason.MODEL_DRIFT
        message = f"the stable {stable.version} crossed a bound: {drift.message}"
        _announce(outcome, kind, message, stable, warning=True)
    elif was and drift.verdict == Verdict.PASS:
        message = f"the stable {stable.version} is back within every bound"
        _announce(outcome, Reason.MODEL_DRIFT_RECOVERED, message, stable, warning=False)


def _quality_failed(drift: api.DriftStatus) -> bool:
    """A model that got less accurate hurts now (critical); inputs that moved may later."""
    failed = {c.name for c in drift.checks if c.verdict == Verdict.FAIL}
    return bool(failed - {FEATURE_DRIFT_CHECK, PREDICTION_DRIFT_CHECK})


def _announce(
    outcome: MonitoringOutcome,
    kind: Reason,
    message: str,
    stable: api.StableStatus,
    *,
    warning: bool,
) -> None:
    severity = SEVERITY.get(kind)
    text = f"{message} (severity {severity})" if severity else message
    outcome.events.append(EventRecord("Warning" if warning else "Normal", kind, text))
    outcome.notifications.append(Notification(kind, message, stable.version, stable.revision))


def _announce_slo(
    outcome: MonitoringOutcome, previous: api.SLOStatus | None, stable: api.StableStatus
) -> None:
    was = previous is not None and previous.breached_since is not None
    spent = outcome.slo.breached_since is not None
    if spent and not was:
        message = f"the stable {stable.version} spent its error budget: {outcome.slo.message}"
        _announce(outcome, Reason.SLO_BUDGET_SPENT, message, stable, warning=True)
    elif was and not spent and outcome.slo.compliance is not None:
        message = (
            f"the stable {stable.version} is within its error budget again: {outcome.slo.message}"
        )
        _announce(outcome, Reason.SLO_RECOVERED, message, stable, warning=False)
