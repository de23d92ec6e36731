"""What the operator reads for an experiment's verdict, against a scripted Prometheus over
real HTTP: each arm's queries with its placeholders filled in, series that do not exist
yet counting zero, failures named, and accuracy from the feedback counters by result."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from modeldeploy import experiment_reading
from modeldeploy import model_promql as mq
from modeldeploy.analysis import PrometheusClient
from modeldeploy.api import ArmStatus, ExperimentMetric, ModelDeployment
from modeldeploy.rollout.model import ArmCount
from tests.support.scripted_prometheus import ScriptedPrometheus
from tests.unit.test_experiment import experiment_spec

ORDERS = (
    'sum(increase(orders_total{ns="{{ namespace }}", variant="{{ variant }}"}[{{ interval }}]))'
)
VISITS = 'sum(increase(visits_total{track="{{ track }}", variant="{{ variant }}"}[{{ interval }}]))'


@pytest.fixture
def prom() -> Iterator[ScriptedPrometheus]:
    with ScriptedPrometheus() as server:
        yield server


def shop() -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "apiVersion": "modeldeploy.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "shop", "namespace": "ml"},
            "spec": experiment_spec().model_dump(mode="json", by_alias=True, exclude_none=True),
        }
    )


def count(url: str, metric: ExperimentMetric, arm: ArmStatus, window: str = "600s") -> ArmCount:
    context = experiment_reading.arm_context(shop(), arm, window)

    async def run() -> ArmCount:
        async with PrometheusClient(url) as client:
            return await experiment_reading.count_arm(client, metric, context)

    return asyncio.run(run())


CONTROL = ArmStatus(name="control", version="1.0.0")
VARIANT_A = ArmStatus(name="a", version="2.0.0-a")
BUSINESS = ExperimentMetric(success_query=ORDERS, total_query=VISITS)


def test_each_arm_reads_its_own_series_over_the_window(prom: ScriptedPrometheus):
    prom.set('orders_total{ns="ml", variant="a"}[600s]', value=130.4)
    prom.set('visits_total{track="v-a", variant="a"}[600s]', value=1000.2)
    assert count(prom.url, BUSINESS, VARIANT_A) == ArmCount(successes=130.4, total=1000.2)
    prom.set('visits_total{track="stable", variant="control"}', value=2000)
    found = count(prom.url, BUSINESS, CONTROL)
    assert found.total == 2000
    assert found.successes == 0, "a counter nobody incremented yet has no series: zero"


def test_a_query_prometheus_refuses_is_the_arms_problem(prom: ScriptedPrometheus):
    prom.set_error("parse error: unexpected }", "visits_total")
    found = count(prom.url, BUSINESS, VARIANT_A)
    assert found.problem is not None
    assert found.problem.startswith("totalQuery: ")
    assert "unexpected }" in found.problem


def test_the_window_is_whole_seconds_since_the_arms_were_ready():
    assert experiment_reading.window(754.9) == "754s"
    assert experiment_reading.window(0.2) == "1s"


def test_accuracy_counts_correct_out_of_labelled_rows_of_the_arms_predictions(
    prom: ScriptedPrometheus,
):
    prom.set_series(
        mq.FEEDBACK_ROWS,
        'track="v-a"',
        'model_version="2.0.0-a"',
        series=[({"result": "correct"}, 450.0), ({"result": "incorrect"}, 50.0)],
    )
    quality = ExperimentMetric(quality="accuracy")
    assert count(prom.url, quality, VARIANT_A) == ArmCount(successes=450.0, total=500.0)
    assert count(prom.url, quality, CONTROL) == ArmCount(successes=0.0, total=0.0)
    asked = [q for q in prom.queries if mq.FEEDBACK_ROWS in q]
    assert any('track="stable"' in q and 'model_version="1.0.0"' in q for q in asked)
