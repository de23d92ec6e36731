"""The agreement checks of a shadow: how often it predicts what the stable answered.

Every mirrored request carries the stable's predicted values; the shadow compares its
own row by row and counts (server metrics, docs/server.md): classifiers in
`modelserver_shadow_rows_total` by `result` (agree, disagree; unmatched when a
reference did not fit the rows), regressors in the histogram
`modelserver_shadow_absolute_difference`. Both are read for the shadow's model version on
the canary track, over the analysis window.

`judge_*` are pure; `shadow_checks` asks Prometheus.
"""

from __future__ import annotations

from collections.abc import Awaitable

from modeldeploy import api
from modeldeploy import model_promql as mq
from modeldeploy.analysis import PrometheusClient, QueryFailed, describe, judge
from modeldeploy.model_checks import ModelChecks, result_of
from modeldeploy.promql import QueryContext

Verdict = api.Verdict

AGREEMENT_CHECK = "shadow-agreement"
DIFFERENCE_CHECK = "shadow-mean-abs-diff"
AGREE = "agree"
DISAGREE = "disagree"


def _too_few(compared: float, min_rows: int) -> str:
    return (
        f"{compared:.0f} mirrored rows compared in the window, fewer than minRows {min_rows}: "
        "the stable mirrors too little traffic (mirrorPercent), or the copies do not reach "
        "the shadow (modelserver_mirror_requests_total on the stable says why)"
    )


def judge_agreement(
    spec: api.ShadowStrategy, query: str, rows: list[mq.Sample] | QueryFailed
) -> api.CheckResult:
    """The share of compared rows on which the shadow predicted the stable's class."""
    bound = spec.min_agreement
    if isinstance(rows, QueryFailed):
        return result_of(AGREEMENT_CHECK, query, Verdict.ERROR, rows.message, min=bound)
    counts = {sample.labels.get(mq.RESULT, ""): sample.value for sample in rows}
    agree, disagree = counts.get(AGREE, 0.0), counts.get(DISAGREE, 0.0)
    compared = agree + disagree
    if compared < spec.min_rows:
        message = _too_few(compared, spec.min_rows)
        return result_of(AGREEMENT_CHECK, query, Verdict.NO_DATA, message, min=bound)
    agreement = agree / compared
    message = (
        f"agreement {describe(agreement, bound, None)} "
        f"({agree:.0f} of {compared:.0f} mirrored rows)"
    )
    return result_of(
        AGREEMENT_CHECK,
        query,
        judge(agreement, bound, None),
        message,
        min=bound,
        value=agreement,
    )


def judge_difference(
    spec: api.ShadowStrategy,
    query: str,
    total: mq.Sample | QueryFailed | None,
    count: mq.Sample | QueryFailed | None,
) -> api.CheckResult:
    """The mean absolute difference between the shadow's and the stable's values."""
    bound = spec.max_mean_abs_diff
    for answer in (total, count):
        if isinstance(answer, QueryFailed):
            return result_of(DIFFERENCE_CHECK, query, Verdict.ERROR, answer.message, max=bound)
    compared = count.value if isinstance(count, mq.Sample) else 0.0
    if compared < spec.min_rows:
        message = _too_few(compared, spec.min_rows)
        return result_of(DIFFERENCE_CHECK, query, Verdict.NO_DATA, message, max=bound)
    mean = (total.value if isinstance(total, mq.Sample) else 0.0) / compared
    message = (
        f"mean absolute difference {describe(mean, None, bound)} over {compared:.0f} mirrored rows"
    )
    return result_of(
        DIFFERENCE_CHECK, query, judge(mean, None, bound), message, max=bound, value=mean
    )


def _part(samples: list[mq.Sample] | QueryFailed, part: str) -> mq.Sample | QueryFailed | None:
    """The `part` (sum or count) of a sum-and-count answer; None when no series exists yet."""
    if isinstance(samples, QueryFailed):
        return samples
    return next((sample for sample in samples if sample.labels.get(mq.PART) == part), None)


async def shadow_checks(
    client: PrometheusClient, spec: api.ShadowStrategy, shadow: QueryContext
) -> tuple[api.CheckResult, ...]:
    """The agreement checks `spec` asks for, on the shadow's window."""
    checks: list[api.CheckResult] = []
    if spec.min_agreement is not None:
        query = mq.shadow_rows(shadow)
        checks.append(judge_agreement(spec, query, await client.vector(query)))
    if spec.max_mean_abs_diff is not None:
        query = mq.shadow_difference(shadow)
        both = await client.vector(query)
        checks.append(judge_difference(spec, query, _part(both, "sum"), _part(both, "count")))
    return tuple(checks)


async def with_shadow_checks(
    model: Awaitable[ModelChecks] | None,
    client: PrometheusClient,
    spec: api.ShadowStrategy,
    shadow: QueryContext,
) -> ModelChecks:
    """A shadow's model-aware checks and its agreement checks, as one set."""
    agreement = await shadow_checks(client, spec, shadow)
    found = await model if model is not None else ModelChecks(())
    return ModelChecks((*found.checks, *agreement), found.awaiting_feedback)
