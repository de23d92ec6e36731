"""The model-aware checks of one analysis: prediction drift, feature drift, quality.

The judged track is a canary compared with the stable from the same window, or (direct
and a switched blue-green, where nothing else serves) the stable, whose outputs are then
compared with its profile's and whose quality is judged without a drop against a stable.

`judge_*` are pure: Prometheus samples in, check results out. `model_checks` asks
Prometheus and is the only function here that does I/O.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass

from modeldeploy import api, drift
from modeldeploy import model_promql as mq
from modeldeploy.analysis import PrometheusClient, QueryFailed, describe, judge
from modeldeploy.promql import QueryContext

Verdict = api.Verdict
Samples = list[mq.Sample] | QueryFailed

PREDICTION_DRIFT_CHECK = "prediction-drift"
FEATURE_DRIFT_CHECK = "feature-drift"
QUALITY_CHECK = "quality"
DROP_SUFFIX = "-drop-vs-stable"


@dataclass(frozen=True)
class Judgement:
    """A drift check and, when it could be computed, the drift behind it (monitoring keeps
    the worst features and the output in status)."""

    check: api.CheckResult
    result: drift.DriftResult | None = None


@dataclass(frozen=True)
class ModelChecks:
    checks: tuple[api.CheckResult, ...]
    awaiting_feedback: frozenset[str] = frozenset()
    """Checks that are NoData only because too few labels arrived yet."""


def result_of(
    name: str,
    query: str,
    verdict: Verdict,
    message: str,
    *,
    min: float | None = None,
    max: float | None = None,
    value: float | None = None,
) -> api.CheckResult:
    return api.CheckResult(
        name=name, query=query, value=value, min=min, max=max, verdict=verdict, message=message
    )


def _failure(*answers: Samples) -> str:
    """The message of the first failed query among `answers`."""
    return next(a.message for a in answers if isinstance(a, QueryFailed))


def _num(value: float) -> str:
    return f"{value:.4g}"


# --- prediction drift -------------------------------------------------------------------


def judge_prediction_drift(
    spec: api.DriftSpec,
    query: str,
    buckets: Samples,
    classes: Samples,
    track: str,
) -> api.CheckResult:
    """The judged track's outputs against the stable's, bucket by bucket: the predicted
    value's fixed histogram buckets and, for classifiers with a profile, the classes."""
    assert spec.prediction is not None
    bound = spec.prediction.bound()
    name = PREDICTION_DRIFT_CHECK
    if isinstance(buckets, QueryFailed) or isinstance(classes, QueryFailed):
        return result_of(name, query, Verdict.ERROR, _failure(buckets, classes), max=bound)
    try:
        judged = {mq.OUTPUT_VALUE: mq.per_bin(mq.by_label(buckets, mq.LE, track=track))}
        stable = {mq.OUTPUT_VALUE: mq.per_bin(mq.by_label(buckets, mq.LE, track="stable"))}
        judged_classes = mq.by_label(classes, mq.CLASS, track=track)
        stable_classes = mq.by_label(classes, mq.CLASS, track="stable")
    except ValueError as error:
        return result_of(name, query, Verdict.ERROR, str(error), max=bound)
    if judged_classes and stable_classes:
        judged[mq.OUTPUT_CLASS] = judged_classes
        stable[mq.OUTPUT_CLASS] = stable_classes
    return _prediction_verdict(spec, query, stable, judged, "stable", track).check


def judge_prediction_drift_from_profile(
    spec: api.DriftSpec, query: str, predicted: Samples, profile: Samples
) -> api.CheckResult:
    """The stable's outputs (nothing else serves) against its profile's output shares."""
    return prediction_drift_from_profile(spec, query, predicted, profile).check


def prediction_drift_from_profile(
    spec: api.DriftSpec, query: str, predicted: Samples, profile: Samples
) -> Judgement:
    assert spec.prediction is not None
    bound = spec.prediction.bound()
    sides = _with_profile(PREDICTION_DRIFT_CHECK, query, predicted, profile, mq.OUTPUT, bound)
    if isinstance(sides, api.CheckResult):
        return Judgement(sides)
    live, reference = sides
    return _prediction_verdict(spec, query, reference, live, "profile", "stable")


def _with_profile(
    name: str, query: str, observed: Samples, profile: Samples, label: str, bound: float
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]] | api.CheckResult:
    """The live and the profile's bins by `label` (feature, output), or the Error check
    saying why they cannot be compared."""
    if isinstance(observed, QueryFailed) or isinstance(profile, QueryFailed):
        return result_of(name, query, Verdict.ERROR, _failure(observed, profile), max=bound)
    if not profile:
        return result_of(name, query, Verdict.ERROR, _NO_PROFILE_SERIES, max=bound)
    try:
        return mq.grouped(observed, label), mq.grouped(profile, label)
    except ValueError as error:
        return result_of(name, query, Verdict.ERROR, str(error), max=bound)


def _prediction_verdict(
    spec: api.DriftSpec,
    query: str,
    reference: Mapping[str, Mapping[str, float]],
    observed: Mapping[str, Mapping[str, float]],
    reference_name: str,
    observed_name: str,
) -> Judgement:
    assert spec.prediction is not None
    bound = spec.prediction.bound()
    name = PREDICTION_DRIFT_CHECK
    observed_rows = max((math.fsum(b.values()) for b in observed.values()), default=0.0)
    reference_rows = max((math.fsum(b.values()) for b in reference.values()), default=0.0)
    few = [
        f"{side} {rows:.0f}"
        for side, rows in ((observed_name, observed_rows), (reference_name, reference_rows))
        if rows < spec.min_rows and side != "profile"
    ]
    if few:
        message = (
            f"predicted rows in the window: {', '.join(few)}, fewer than drift.minRows "
            f"{spec.min_rows}: too few to tell drift from noise"
        )
        return Judgement(result_of(name, query, Verdict.NO_DATA, message, max=bound))
    try:
        result = drift.prediction_drift(reference, observed, spec.prediction.statistic, worst=1)
    except drift.UnorderedBins as error:
        return Judgement(result_of(name, query, Verdict.ERROR, str(error), max=bound))
    except drift.NotEnoughData as error:
        return Judgement(result_of(name, query, Verdict.NO_DATA, str(error), max=bound))
    worst = result.worst[0]
    statistic = str(spec.prediction.statistic)
    message = (
        f"{statistic} {describe(result.value, None, bound)}; output {worst.name}, bin "
        f"{worst.worst_bin}: {reference_name} {_share(worst.reference_share)}, "
        f"{observed_name} {_share(worst.observed_share)}"
    )
    verdict = judge(result.value, None, bound)
    return Judgement(
        result_of(name, query, verdict, message, max=bound, value=result.value), result
    )


def _share(share: float) -> str:
    return f"{share:.1%}"


# --- feature drift ----------------------------------------------------------------------

_NO_PROFILE_SERIES = (
    "the pods export no profile shares (modelserver_profile_feature_share and "
    "modelserver_profile_prediction_share): did the server load model.profile, and does "
    "Prometheus scrape it?"
)


def judge_feature_drift(
    spec: api.DriftSpec, query: str, observed: Samples, profile: Samples, track: str
) -> api.CheckResult:
    """Each feature's live bins of the judged track against its profile's training shares;
    the largest PSI is the value, the worst features are named."""
    return feature_drift(spec, query, observed, profile, track).check


def feature_drift(
    spec: api.DriftSpec, query: str, observed: Samples, profile: Samples, track: str
) -> Judgement:
    assert spec.features is not None
    bound = spec.features.max_psi
    name = FEATURE_DRIFT_CHECK
    sides = _with_profile(name, query, observed, profile, mq.FEATURE, bound)
    if isinstance(sides, api.CheckResult):
        return Judgement(sides)
    live, reference = sides
    rows = max((math.fsum(bins.values()) for bins in live.values()), default=0.0)
    if rows < spec.min_rows:
        message = (
            f"{rows:.0f} {track} rows in the window, fewer than drift.minRows "
            f"{spec.min_rows}: too few to tell drift from noise"
        )
        return Judgement(result_of(name, query, Verdict.NO_DATA, message, max=bound))
    try:
        result = drift.feature_drift(reference, live, worst=spec.features.worst_features)
    except drift.NotEnoughData as error:
        return Judgement(result_of(name, query, Verdict.NO_DATA, str(error), max=bound))
    worst = ", ".join(
        f"{c.name} {_num(c.value)} (bin {c.worst_bin}: profile {_share(c.reference_share)}, "
        f"live {_share(c.observed_share)})"
        for c in result.worst
    )
    message = f"psi {describe(result.value, None, bound)}; worst features: {worst}"
    verdict = judge(result.value, None, bound)
    return Judgement(
        result_of(name, query, verdict, message, max=bound, value=result.value), result
    )


# --- quality ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityAnswers:
    task: Samples
    rows: Samples
    scores: Samples
    errors: Samples


@dataclass(frozen=True)
class Measured:
    value: float | None
    """None: the track has no labelled rows of that kind."""
    labelled: float


def model_task(samples: list[mq.Sample]) -> str | None:
    tasks = {sample.labels.get(mq.TASK, "") for sample in samples} - {""}
    return tasks.pop() if len(tasks) == 1 else None


def bounded_metrics(bounds: api.QualityBounds) -> list[tuple[str, float | None, float | None]]:
    """(metric, min, max) of each quality metric the bounds name."""
    named: list[tuple[str, float | None, float | None]] = []
    if bounds.min_accuracy is not None:
        named.append(("accuracy", bounds.min_accuracy, None))
    if bounds.min_auc is not None:
        named.append(("auc", bounds.min_auc, None))
    if bounds.max_mae is not None:
        named.append(("mae", None, bounds.max_mae))
    return named


def measure(
    metric: str,
    rows: list[mq.Sample],
    scores: list[mq.Sample],
    errors: list[mq.Sample],
    track: str,
) -> Measured:
    """One quality metric of one track from its feedback series. Raises ValueError on a
    broken answer."""
    if metric == "accuracy":
        results = mq.by_label(rows, mq.RESULT, track=track)
        correct, incorrect = results.get(mq.CORRECT, 0.0), results.get(mq.INCORRECT, 0.0)
        labelled = correct + incorrect
        if labelled <= 0:
            return Measured(None, labelled)
        return Measured(drift.accuracy(correct, incorrect).value, labelled)
    if metric == "auc":
        by_class = mq.grouped(scores, mq.TRUE_CLASS, mq.LE, track=track)
        negatives = mq.per_bin(by_class.get(mq.NEGATIVE, {}))
        positives = mq.per_bin(by_class.get(mq.POSITIVE, {}))
        order = drift.bin_order([*negatives, *positives])
        if not order:
            return Measured(None, 0.0)
        negative_counts, positive_counts = drift.aligned(negatives, positives, order)
        labelled = math.fsum(negative_counts) + math.fsum(positive_counts)
        try:
            return Measured(drift.histogram_auc(negative_counts, positive_counts).value, labelled)
        except drift.NotEnoughData:
            return Measured(None, labelled)  # one class only: AUC is undefined
    parts = mq.by_label(errors, mq.PART, track=track)
    count = parts.get("count", 0.0)
    return Measured(parts.get("sum", 0.0) / count if count > 0 else None, count)


def usable_feedback(
    bounds: api.QualityBounds, query: str, answers: QualityAnswers, whose: str
) -> tuple[list[mq.Sample], list[mq.Sample], list[mq.Sample]] | api.CheckResult:
    """The feedback series (rows, scores, errors), or the Error check saying why the bounds
    cannot judge: a failed query, an unknown task, a bound the model's task cannot have."""
    task, rows, scores, errors = answers.task, answers.rows, answers.scores, answers.errors
    if (
        isinstance(task, QueryFailed)
        or isinstance(rows, QueryFailed)
        or isinstance(scores, QueryFailed)
        or isinstance(errors, QueryFailed)
    ):
        message = _failure(task, rows, scores, errors)
        return result_of(QUALITY_CHECK, query, Verdict.ERROR, message)
    known = model_task(task)
    problem = (
        f"the model's task is unknown: no single modelserver_model_info series of the "
        f"{whose} version (does Prometheus scrape its pods?)"
        if known is None
        else bounds.task_problem(known)
    )
    if problem is not None:
        return result_of(QUALITY_CHECK, query, Verdict.ERROR, problem)
    return rows, scores, errors


def judge_quality(
    spec: api.QualitySpec,
    query: str,
    answers: QualityAnswers,
    track: str,
    compare_with_stable: bool,
) -> ModelChecks:
    """Each quality metric the spec bounds, and its drop against the stable's when a stable
    serves alongside. Too few labels make a check NoData and mark it as waiting for
    feedback (the rollout holds without counting it, until feedbackDeadline)."""
    usable = usable_feedback(spec, query, answers, "judged")
    if isinstance(usable, api.CheckResult):
        return ModelChecks((usable,))
    rows, scores, errors = usable
    checks: list[api.CheckResult] = []
    awaiting: set[str] = set()
    for metric, low, high in bounded_metrics(spec):
        try:
            judged = measure(metric, rows, scores, errors, track)
            stable = (
                measure(metric, rows, scores, errors, "stable") if compare_with_stable else None
            )
        except ValueError as error:
            checks.append(result_of(metric, query, Verdict.ERROR, str(error), min=low, max=high))
            continue
        check = bound_check(metric, query, judged, low, high, spec.min_feedback, track)
        checks.append(check)
        if check.verdict == Verdict.NO_DATA:
            awaiting.add(metric)
        if stable is not None and spec.max_drop_vs_stable is not None:
            drop = _drop_check(metric, query, judged, stable, spec.max_drop_vs_stable, spec)
            checks.append(drop)
            if drop.verdict == Verdict.NO_DATA:
                awaiting.add(drop.name)
    return ModelChecks(tuple(checks), frozenset(awaiting))


def _waiting(labelled: float, min_feedback: int, side: str) -> str:
    return (
        f"{labelled:.0f} labelled {side} rows in the window, fewer than minFeedback "
        f"{min_feedback}: waiting for feedback"
    )


def bound_check(
    metric: str,
    query: str,
    judged: Measured,
    low: float | None,
    high: float | None,
    min_feedback: int,
    track: str,
) -> api.CheckResult:
    """One measured quality metric against its bounds; NoData below minFeedback."""
    if judged.labelled < min_feedback:
        message = _waiting(judged.labelled, min_feedback, track)
        return result_of(metric, query, Verdict.NO_DATA, message, min=low, max=high)
    if judged.value is None:
        message = f"{metric} is undefined on these labels (one class only)"
        return result_of(metric, query, Verdict.NO_DATA, message, min=low, max=high)
    message = f"{describe(judged.value, low, high)} on {judged.labelled:.0f} labelled {track} rows"
    return result_of(
        metric,
        query,
        judge(judged.value, low, high),
        message,
        min=low,
        max=high,
        value=judged.value,
    )


def _drop_check(
    metric: str,
    query: str,
    judged: Measured,
    stable: Measured,
    bound: float,
    spec: api.QualitySpec,
) -> api.CheckResult:
    name = metric + DROP_SUFFIX
    for side, measured in (("canary", judged), ("stable", stable)):
        if measured.labelled < spec.min_feedback:
            message = _waiting(measured.labelled, spec.min_feedback, side)
            return result_of(name, query, Verdict.NO_DATA, message, max=bound)
    if judged.value is None or stable.value is None:
        message = f"{metric} is undefined on these labels (one class only)"
        return result_of(name, query, Verdict.NO_DATA, message, max=bound)
    # a drop is how much worse the canary is: lower accuracy or AUC, higher MAE
    worse = stable.value - judged.value if metric != "mae" else judged.value - stable.value
    message = (
        f"{describe(worse, None, bound)}: canary {_num(judged.value)}, stable {_num(stable.value)}"
    )
    return result_of(name, query, judge(worse, None, bound), message, max=bound, value=worse)


# --- asking Prometheus ------------------------------------------------------------------


async def model_checks(
    client: PrometheusClient,
    spec: api.AnalysisSpec,
    judged: QueryContext,
    stable: QueryContext | None,
) -> ModelChecks:
    """The drift and quality checks `spec` asks for. `stable` is the stable's context when
    a stable serves alongside the judged canary, None when the judged track is alone."""
    checks: list[api.CheckResult] = []
    awaiting: frozenset[str] = frozenset()
    track = judged.track
    if spec.drift is not None and spec.drift.prediction is not None:
        if stable is not None:
            buckets_query = mq.prediction_buckets_both(judged, stable)
            classes_query = mq.prediction_classes_both(judged, stable)
            buckets, classes = await asyncio.gather(
                client.vector(buckets_query), client.vector(classes_query)
            )
            checks.append(
                judge_prediction_drift(spec.drift, buckets_query, buckets, classes, track)
            )
        else:
            predicted_query = mq.monitored_predictions(judged)
            predicted, profile = await asyncio.gather(
                client.vector(predicted_query),
                client.vector(mq.profile_prediction_shares(judged)),
            )
            checks.append(
                judge_prediction_drift_from_profile(spec.drift, predicted_query, predicted, profile)
            )
    if spec.drift is not None and spec.drift.features is not None:
        features_query = mq.feature_bins(judged)
        observed, profile = await asyncio.gather(
            client.vector(features_query), client.vector(mq.profile_feature_shares(judged))
        )
        checks.append(judge_feature_drift(spec.drift, features_query, observed, profile, track))
    if spec.quality is not None:
        rows_query = mq.feedback_rows_both(judged, stable)
        task, rows, scores, errors = await asyncio.gather(
            client.vector(mq.model_task(judged)),
            client.vector(rows_query),
            client.vector(mq.feedback_score_buckets_both(judged, stable)),
            client.vector(mq.feedback_error_both(judged, stable)),
        )
        quality = judge_quality(
            spec.quality,
            rows_query,
            QualityAnswers(task, rows, scores, errors),
            track,
            compare_with_stable=stable is not None,
        )
        checks += quality.checks
        awaiting = quality.awaiting_feedback
    return ModelChecks(tuple(checks), awaiting)
