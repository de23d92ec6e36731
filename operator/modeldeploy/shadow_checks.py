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

import asyncio
from collections.abc import Awaitable

from modeldeploy import api
from modeldeploy import model_promql as mq
from modeldeploy.analysis import PrometheusClient, QueryFailed, describe, judge
from modeldeploy.model_checks import ModelChecks, result_of
from modeldeploy.promql import SELECTOR, QueryContext, render

Verdict = api.Verdict

AGREEMENT_CHECK = "shadow-agreement"
DIFFERENCE_CHECK = "shadow-mean-abs-diff"
SHADOW_ROWS = "modelserver_shadow_rows_total"
SHADOW_DIFFERENCE_SUM = "modelserver_shadow_absolute_difference_sum"
SHADOW_DIFFERENCE_COUNT = "modelserver_shadow_absolute_difference_count"
AGREE = "agree"
DISAGREE = "disagree"


def _window_sum(metric: str, by: str | None, context: QueryContext) -> str:
    grouping = f" by ({by})" if by else ""
    series = f'{metric}{{{SELECTOR}, {mq.VERSION}="{{{{ version }}}}"}}'
    return render(f"sum{grouping} (increase({series}[{{{{ interval }}}}]))", context)


def agreement_query(context: QueryContext) -> str:
    return _window_sum(SHADOW_ROWS, mq.RESULT, context)


def difference_queries(context: QueryContext) -> tuple[str, str]:
    return (
        _window_sum(SHADOW_DIFFERENCE_SUM, None, context),
        _window_sum(SHADOW_DIFFERENCE_COUNT, None, context),
    )


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


def _single(samples: list[mq.Sample] | QueryFailed) -> mq.Sample | QueryFailed | None:
    """The one sample of a `sum` without grouping; None when no series exists yet."""
    if isinstance(samples, QueryFailed):
        return samples
    return samples[0] if samples else None


async def shadow_checks(
    client: PrometheusClient, spec: api.ShadowStrategy, shadow: QueryContext
) -> tuple[api.CheckResult, ...]:
    """The agreement checks `spec` asks for, on the shadow's window."""
    checks: list[api.CheckResult] = []
    if spec.min_agreement is not None:
        query = agreement_query(shadow)
        checks.append(judge_agreement(spec, query, await client.vector(query)))
    if spec.max_mean_abs_diff is not None:
        sum_query, count_query = difference_queries(shadow)
        total, count = await asyncio.gather(client.vector(sum_query), client.vector(count_query))
        checks.append(judge_difference(spec, sum_query, _single(total), _single(count)))
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
