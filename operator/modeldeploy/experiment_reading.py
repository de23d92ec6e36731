"""What the shell reads for a running experiment: each arm's query context, and each arm's
successes and trials since counting began (the SLO analyses reuse `analysis.analyse`)."""

from __future__ import annotations

from modeldeploy import model_promql
from modeldeploy.analysis import NoData, PrometheusClient, QueryFailed, Value
from modeldeploy.api import CONTROL, ArmStatus, ExperimentMetric, ModelDeployment
from modeldeploy.promql import QueryContext, promql_duration, render
from modeldeploy.resources import variant_track
from modeldeploy.rollout.model import ArmCount, Track


def arm_context(md: ModelDeployment, arm: ArmStatus, interval: str) -> QueryContext:
    """The placeholders of one arm: control reads the stable's series, a variant its own."""
    return QueryContext(
        namespace=md.metadata.namespace,
        name=md.metadata.name,
        track=Track.STABLE if arm.name == CONTROL else variant_track(arm.name),
        interval=interval,
        model=md.spec.model.name,
        version=arm.version,
        variant=arm.name,
    )


def window(seconds: float) -> str:
    """The counting window so far as a PromQL duration (whole seconds, at least 1)."""
    return promql_duration(f"{max(int(seconds), 1)}s")


async def count_arm(
    client: PrometheusClient, metric: ExperimentMetric, context: QueryContext
) -> ArmCount:
    """One arm's successes and trials. A query that finds no series counts 0: nothing was
    counted yet; a query that fails is the arm's problem."""
    if metric.quality is not None:
        return await _count_feedback(client, context)
    assert metric.success_query is not None
    assert metric.total_query is not None
    successes = await client.query(render(metric.success_query, context))
    total = await client.query(render(metric.total_query, context))
    for name, outcome in (("successQuery", successes), ("totalQuery", total)):
        if isinstance(outcome, QueryFailed):
            return ArmCount(problem=f"{name}: {outcome.message}")
    return ArmCount(successes=_number(successes), total=_number(total))


def _number(outcome: Value | NoData | QueryFailed) -> float:
    return outcome.value if isinstance(outcome, Value) else 0.0


async def _count_feedback(client: PrometheusClient, context: QueryContext) -> ArmCount:
    """Accuracy: correct rows out of the labelled rows the arm's predictions got."""
    answer = await client.vector(model_promql.feedback_rows(context))
    if isinstance(answer, QueryFailed):
        return ArmCount(problem=answer.message)
    try:
        rows = model_promql.by_label(answer, model_promql.RESULT)
    except ValueError as error:
        return ArmCount(problem=str(error))
    correct = rows.get(model_promql.CORRECT, 0.0)
    return ArmCount(successes=correct, total=correct + rows.get(model_promql.INCORRECT, 0.0))
