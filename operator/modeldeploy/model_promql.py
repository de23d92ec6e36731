"""PromQL of the model-aware gates: the server's per-bin counters, read per track.

The metric and label names below are the server/operator contract of issue 15, kept here
only (docs/analysis.md lists them). Every per-bin series carries the server's usual labels
(`model`, `model_version`, `track`, `modeldeployment`; Prometheus adds `namespace` and
`pod`). Feedback series carry the track and version that made the prediction (from its
token), whichever pod counted them; so do the other series, as a pod only counts its own.

Queries that compare the canary with the stable ask for both tracks in ONE query (the
two halves joined by `or`), so both come from the same window at the same instant; an
optional evaluation time (`@`) lines up several queries too. Each half also matches the
track's model version: late feedback for an earlier canary never counts for this one.

Pure: builders return PromQL text, parsers take the `result` list of a vector answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modeldeploy import api
from modeldeploy.promql import (
    LATENCY_P99,
    REQUEST_VOLUME,
    SELECTOR,
    QueryContext,
    error_rate_query,
    promql_duration,
    render,
)

FEATURE_BINS = "modelserver_feature_bin_total"
"""Counter (with a profile): live rows per feature and profile bin; labels + `feature`, `bin`."""
PREDICTION_VALUE_BUCKETS = "modelserver_prediction_value_bucket"
"""Histogram buckets (always): the predicted value (regressors) or the positive-class
(binary) or top-class (multiclass) probability, in fixed buckets shared by every version,
so a canary's outputs compare with the stable's bucket by bucket; labels + `le`."""
PREDICTION_CLASSES = "modelserver_prediction_class_total"
"""Counter (classifiers with a profile): predicted rows per class; labels + `class`."""
PREDICTION_BINS = "modelserver_prediction_bin_total"
"""Counter (with a profile): predicted rows per bin of the profile's output; labels + `bin`."""
FEEDBACK_ROWS = "modelserver_feedback_rows_total"
"""Counter: labelled rows by `result`: correct or incorrect (classifiers), scored (regressors)."""
FEEDBACK_SCORE_BUCKETS = "modelserver_feedback_score_bucket"
"""Histogram buckets (binary classifiers): labelled rows' positive-class probability by
`true_class` (positive, negative); labels + `true_class`, `le`."""
FEEDBACK_ERROR_SUM = "modelserver_feedback_absolute_error_sum"
FEEDBACK_ERROR_COUNT = "modelserver_feedback_absolute_error_count"
"""Histogram sum and count (regressors): absolute error of labelled rows."""
SHADOW_ROWS = "modelserver_shadow_rows_total"
"""Counter (a shadow's): mirrored rows compared with the stable's answer, by `result`
(agree, disagree; unmatched: a reference that did not fit)."""
SHADOW_DIFFERENCE_SUM = "modelserver_shadow_absolute_difference_sum"
SHADOW_DIFFERENCE_COUNT = "modelserver_shadow_absolute_difference_count"
"""Histogram sum and count (a shadow regressor's): |shadow value - stable value| per row."""
MODEL_INFO = "modelserver_model_info"
"""Gauge, always 1; its `task` label is regression, binary or multiclass."""
PROFILE_FEATURE_SHARES = "modelserver_profile_feature_share"
"""Gauge: the loaded profile's training share per feature and bin; labels + `feature`, `bin`."""
PROFILE_PREDICTION_SHARES = "modelserver_profile_prediction_share"
"""Gauge: the profile's output share; labels + `output` (class or score), `bin` (the class,
or the bin of modelserver_prediction_bin_total)."""
PROFILE_QUALITY = "modelserver_profile_quality"
"""Gauge: the profile's reference quality on its labels; labels + `metric` (accuracy,
auc, mae)."""

TRACK = "track"
VERSION = "model_version"
FEATURE = "feature"
OUTPUT = "output"
BIN = "bin"
LE = "le"
CLASS = "class"
TRUE_CLASS = "true_class"
POSITIVE = "positive"
NEGATIVE = "negative"
TASK = "task"
METRIC = "metric"
RESULT = "result"
CORRECT = "correct"
INCORRECT = "incorrect"
PART = "part"
OUTPUT_VALUE = "value"
OUTPUT_CLASS = "class"
OUTPUT_SCORE = "score"

_VERSION_MATCHER = f', {VERSION}="{{{{ version }}}}"'


def _series(metric: str) -> str:
    """The track's series of `metric` for its model version, as an instant selector."""
    return metric + "{" + SELECTOR + _VERSION_MATCHER + "}"


def _at(at: float | None) -> str:
    return "" if at is None else f" @ {at:.3f}"


def _increase(metric: str, by: Sequence[str], context: QueryContext, at: float | None) -> str:
    grouping = ", ".join(by)
    template = f"sum by ({grouping}) (increase({_series(metric)}[{{{{ interval }}}}]{_at(at)}))"
    return render(template, context)


def _both_tracks(
    metric: str,
    by: Sequence[str],
    judged: QueryContext,
    stable: QueryContext | None,
    at: float | None,
) -> str:
    """Per track: the judged track's (a canary, or the stable when nothing else serves)
    and, given its context, the stable's from the same window in the same query."""
    grouping = (TRACK, *by)
    if stable is None:
        return _increase(metric, grouping, judged, at)
    if (judged.namespace, judged.name, judged.interval) != (
        stable.namespace,
        stable.name,
        stable.interval,
    ):
        raise ValueError("the canary and the stable must be read from one window of one object")
    if (judged.track, stable.track) != ("canary", "stable"):
        raise ValueError("pass the canary's context first, then the stable's")
    return f"{_increase(metric, grouping, judged, at)} or {_increase(metric, grouping, stable, at)}"


def feature_bins(context: QueryContext, at: float | None = None) -> str:
    """Live rows per feature and bin of one track in the window."""
    return _increase(FEATURE_BINS, (FEATURE, BIN), context, at)


def profile_feature_shares(context: QueryContext, at: float | None = None) -> str:
    """The training shares per feature and bin of the profile the track's pods loaded."""
    template = f"max by ({FEATURE}, {BIN}) ({_series(PROFILE_FEATURE_SHARES)}{_at(at)})"
    return render(template, context)


def profile_prediction_shares(context: QueryContext, at: float | None = None) -> str:
    """The profile's output shares per output and bin (monitoring compares the stable's)."""
    template = f"max by ({OUTPUT}, {BIN}) ({_series(PROFILE_PREDICTION_SHARES)}{_at(at)})"
    return render(template, context)


def profile_quality(context: QueryContext, at: float | None = None) -> str:
    """The profile's reference quality per metric."""
    template = f"max by ({METRIC}) ({_series(PROFILE_QUALITY)}{_at(at)})"
    return render(template, context)


def monitored_predictions(context: QueryContext, at: float | None = None) -> str:
    """Predicted rows of one track per output (score, class) and profile bin, as the
    profile's prediction shares are labelled (monitoring compares the two)."""
    score = _increase(PREDICTION_BINS, (BIN,), context, at)
    classes = _increase(PREDICTION_CLASSES, (CLASS,), context, at)
    return (
        f"sum by ({OUTPUT}, {BIN}) ("
        f'label_replace({score}, "{OUTPUT}", "{OUTPUT_SCORE}", "", "") or '
        f'label_replace(label_replace({classes}, "{BIN}", "$1", "{CLASS}", "(.*)"), '
        f'"{OUTPUT}", "{OUTPUT_CLASS}", "", ""))'
    )


def prediction_buckets_both(
    canary: QueryContext, stable: QueryContext | None, at: float | None = None
) -> str:
    """Predicted rows per track and cumulative value bucket (`le`), one window."""
    return _both_tracks(PREDICTION_VALUE_BUCKETS, (LE,), canary, stable, at)


def prediction_classes_both(
    canary: QueryContext, stable: QueryContext | None, at: float | None = None
) -> str:
    """Predicted rows per track and class, one window (empty without a profile)."""
    return _both_tracks(PREDICTION_CLASSES, (CLASS,), canary, stable, at)


def feedback_rows_both(
    canary: QueryContext, stable: QueryContext | None, at: float | None = None
) -> str:
    """Labelled rows per track and result (correct, incorrect, scored), one window."""
    return _both_tracks(FEEDBACK_ROWS, (RESULT,), canary, stable, at)


def feedback_rows(context: QueryContext) -> str:
    """One track's labelled rows by result (correct, incorrect, scored) in the window."""
    return _increase(FEEDBACK_ROWS, (RESULT,), context, None)


def feedback_score_buckets_both(
    canary: QueryContext, stable: QueryContext | None, at: float | None = None
) -> str:
    """Labelled rows per track, true class and cumulative score bucket (for AUC)."""
    return _both_tracks(FEEDBACK_SCORE_BUCKETS, (TRUE_CLASS, LE), canary, stable, at)


def feedback_error_both(
    canary: QueryContext, stable: QueryContext | None, at: float | None = None
) -> str:
    """Absolute error summed over labelled rows, and their count, per track (`part`)."""
    return _sum_and_count(FEEDBACK_ERROR_SUM, FEEDBACK_ERROR_COUNT, canary, stable, at)


def shadow_rows(shadow: QueryContext) -> str:
    """A shadow's compared rows by result, one window."""
    return _increase(SHADOW_ROWS, (RESULT,), shadow, None)


def shadow_difference(shadow: QueryContext) -> str:
    """A shadow's absolute differences summed over its compared rows, and their count
    (`part`), one window."""
    return _sum_and_count(SHADOW_DIFFERENCE_SUM, SHADOW_DIFFERENCE_COUNT, shadow, None, None)


def _sum_and_count(
    sum_metric: str,
    count_metric: str,
    canary: QueryContext,
    stable: QueryContext | None,
    at: float | None,
) -> str:
    """A histogram's sum and count per track in one query, told apart by `part`."""
    halves = [
        f'label_replace({_both_tracks(metric, (), canary, stable, at)}, "{PART}", "{part}", "", "")'
        for metric, part in ((sum_metric, "sum"), (count_metric, "count"))
    ]
    return " or ".join(halves)


def model_task(context: QueryContext, at: float | None = None) -> str:
    """The task of the track's model: one series whose `task` label says it."""
    template = f"max by ({TASK}) ({_series(MODEL_INFO)}{_at(at)})"
    return render(template, context)


def slo_compliance(
    slo: api.SLOSpec, context: QueryContext, period: str, at: float | None = None
) -> tuple[str, str]:
    """(share of windows within the SLO, windows with traffic) over `period`.

    A window is one `{{ interval }}` of the track, evaluated every interval; it keeps the
    SLO when its error rate is at most maxErrorRate and its p99 latency at most
    maxLatencyP99 (the rollout's own queries). A window without handled requests counts
    in neither number: its 0/0 error rate would compare as a breach.
    """
    within = (
        f"((({error_rate_query(slo.count_rejected_requests)}) <= bool {slo.max_error_rate:g}) "
        f"* (({LATENCY_P99}) <= bool {api.duration_seconds(slo.max_latency_p99):g})) "
        f"and on () ({REQUEST_VOLUME} > 0)"
    )
    window = f"[{promql_duration(period)}:{{{{ interval }}}}]{_at(at)}"
    share = render(f"avg_over_time(({within}){window})", context)
    count = render(f"count_over_time(({within}){window})", context)
    return share, count


# --- answers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


def parse_vector(result: Any) -> list[Sample]:
    """The samples of a vector answer's `data.result`; NaN samples are left out.

    Raises ValueError when the answer is not shaped like a vector.
    """
    if not isinstance(result, list):
        raise ValueError(f"expected a vector (a list of series), got {type(result).__name__}")
    samples = []
    for series in result:
        try:
            labels = series["metric"]
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ValueError(
                f"a series of the answer has no usable metric and value: {exc!r}"
            ) from exc
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise ValueError("a series of the answer has labels that are not strings")
        if not math.isnan(value):
            samples.append(Sample(labels, value))
    return samples


def grouped(
    samples: Iterable[Sample], outer: str, inner: str = BIN, *, track: str | None = None
) -> dict[str, dict[str, float]]:
    """Values by `outer` label, then `inner` label: {feature: {bin: rows}}, say.

    With `track`, only that track's samples. A sample without either label is a broken
    contract, not data: ValueError names the label.
    """
    out: dict[str, dict[str, float]] = {}
    for sample in samples:
        if track is not None and sample.labels.get(TRACK) != track:
            continue
        for label in (outer, inner):
            if label not in sample.labels:
                raise ValueError(f"a series lacks the {label!r} label: {dict(sample.labels)}")
        bins = out.setdefault(sample.labels[outer], {})
        bins[sample.labels[inner]] = bins.get(sample.labels[inner], 0.0) + sample.value
    return out


def by_label(
    samples: Iterable[Sample], label: str, *, track: str | None = None
) -> dict[str, float]:
    """Values by one label ({bin: rows}, {outcome: rows}), optionally of one track."""
    out: dict[str, float] = {}
    for sample in samples:
        if track is not None and sample.labels.get(TRACK) != track:
            continue
        if label not in sample.labels:
            raise ValueError(f"a series lacks the {label!r} label: {dict(sample.labels)}")
        out[sample.labels[label]] = out.get(sample.labels[label], 0.0) + sample.value
    return out


def per_bin(cumulative: Mapping[str, float]) -> dict[str, float]:
    """Rows per bucket from a histogram's cumulative `le` counts, each bucket labelled by
    its upper edge. Raises ValueError for a label that is not a number."""
    try:
        ordered = sorted(cumulative.items(), key=lambda item: float(item[0]))
    except ValueError as exc:
        raise ValueError(f"a histogram bucket's le label is not a number: {exc}") from exc
    out, below = {}, 0.0
    for edge, count in ordered:
        # counters of pods that restarted in the window can make a bucket dip below the
        # one before it by a fraction: never count negative rows
        out[edge] = max(count - below, 0.0)
        below = max(count, below)
    return out
