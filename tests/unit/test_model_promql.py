"""The PromQL of the model-aware gates, run by Prometheus' own engine (`promtool test
rules`) over series shaped like the server's, and the parsing of the answers.

promtool comes with Debian's prometheus package (`make tools`); without it the engine
tests are skipped, or fail when CI=true (the fixture of test_alerts).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy import api, drift
from modeldeploy import model_promql as mq
from modeldeploy.promql import REQUEST_DURATION, REQUESTS_TOTAL, QueryContext
from tests.unit.test_alerts import promtool

__all__ = ["promtool"]  # fixture used by the tests below

CANARY = QueryContext("ml", "fraud", "canary", "5m", "fraud", "2.1.0")
STABLE = QueryContext("ml", "fraud", "stable", "5m", "fraud", "2.0.0")
AT = 600.0  # 10m into the series below
DURATION_BUCKETS = REQUEST_DURATION + "_bucket"


def series(name: str, track: str, version: str, values: str, **labels: str) -> dict[str, str]:
    base = {
        "namespace": "ml",
        "modeldeployment": "fraud",
        "model": "fraud",
        "track": track,
        "model_version": version,
        "pod": f"{track}-{version}",
    }
    selector = ", ".join(f'{k}="{v}"' for k, v in {**base, **labels}.items())
    return {"series": f"{name}{{{selector}}}", "values": values}


def evaluate(
    promtool: str,
    where: Path,
    inputs: list[dict[str, str]],
    expr: str,
    expected: list[tuple[dict[str, str], float]],
    eval_time: str = "15m",
) -> None:
    """promtool evaluates `expr` at `eval_time` over `inputs` (one sample a minute)."""
    samples = [
        {"labels": "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "value": value}
        for labels, value in expected
    ]
    test: dict[str, Any] = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    {"expr": expr, "eval_time": eval_time, "exp_samples": samples}
                ],
            }
        ],
    }
    (where / "rules.yaml").write_text("groups: []\n")
    (where / "test.yaml").write_text(yaml.safe_dump(test))
    done = subprocess.run(
        [promtool, "test", "rules", str(where / "test.yaml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- the queries, evaluated -------------------------------------------------------------


def test_prediction_buckets_of_both_tracks_come_from_one_window_and_their_own_versions(
    promtool: str, tmp_path: Path
):
    bucket = mq.PREDICTION_VALUE_BUCKETS
    inputs = [
        series(bucket, "canary", "2.1.0", "0+10x20", le="0.5"),
        series(bucket, "canary", "2.1.0", "0+12x20", le="+Inf"),
        # a canary of an earlier version, still counted somewhere: not this canary's rows
        series(bucket, "canary", "1.9.0", "0+99x20", le="0.5"),
        series(bucket, "stable", "2.0.0", "0+3x20", le="0.5"),
        series(bucket, "stable", "2.0.0", "0+6x20", le="+Inf"),
    ]
    evaluate(
        promtool,
        tmp_path,
        inputs,
        mq.prediction_buckets_both(CANARY, STABLE, at=AT),
        [
            ({"track": "canary", "le": "0.5"}, 50),
            ({"track": "canary", "le": "+Inf"}, 60),
            ({"track": "stable", "le": "0.5"}, 15),
            ({"track": "stable", "le": "+Inf"}, 30),
        ],
        eval_time="15m",  # later than AT: the @ modifier pins the window
    )


def test_a_track_judged_alone_is_read_alone(promtool: str, tmp_path: Path):
    alone = QueryContext("ml", "fraud", "stable", "5m", "fraud", "2.0.0")
    inputs = [
        series(mq.FEEDBACK_ROWS, "stable", "2.0.0", "0+4x20", result="correct"),
        series(mq.FEEDBACK_ROWS, "canary", "2.1.0", "0+4x20", result="correct"),
    ]
    evaluate(
        promtool,
        tmp_path,
        inputs,
        mq.feedback_rows_both(alone, None, at=AT),
        [({"track": "stable", "result": "correct"}, 20)],
    )


def test_feature_bins_sum_the_pods_of_the_track(promtool: str, tmp_path: Path):
    one = series(mq.FEATURE_BINS, "canary", "2.1.0", "0+4x20", feature="age", bin="missing")
    other = series(mq.FEATURE_BINS, "canary", "2.1.0", "0+6x20", feature="age", bin="missing")
    other["series"] = other["series"].replace('pod="canary-2.1.0"', 'pod="canary-b"')
    stable = series(mq.FEATURE_BINS, "stable", "2.0.0", "0+6x20", feature="age", bin="missing")
    evaluate(
        promtool,
        tmp_path,
        [one, other, stable],
        mq.feature_bins(CANARY, at=AT),
        [({"feature": "age", "bin": "missing"}, 50)],
    )


def test_monitored_predictions_label_scores_and_classes_like_the_profile_gauge(
    promtool: str, tmp_path: Path
):
    inputs = [
        series(mq.PREDICTION_BINS, "stable", "2.0.0", "0+4x20", bin="3"),
        series(mq.PREDICTION_CLASSES, "stable", "2.0.0", "0+2x20", **{"class": "fraud"}),
    ]
    evaluate(
        promtool,
        tmp_path,
        inputs,
        mq.monitored_predictions(STABLE, at=AT),
        [
            ({"output": "score", "bin": "3"}, 20),
            ({"output": "class", "bin": "fraud"}, 10),
        ],
    )


def test_feedback_rows_per_track_and_result(promtool: str, tmp_path: Path):
    inputs = [
        series(mq.FEEDBACK_ROWS, "canary", "2.1.0", "0+9x20", result="correct"),
        series(mq.FEEDBACK_ROWS, "canary", "2.1.0", "0+1x20", result="incorrect"),
        series(mq.FEEDBACK_ROWS, "stable", "2.0.0", "0+19x20", result="correct"),
    ]
    evaluate(
        promtool,
        tmp_path,
        inputs,
        mq.feedback_rows_both(CANARY, STABLE, at=AT),
        [
            ({"track": "canary", "result": "correct"}, 45),
            ({"track": "canary", "result": "incorrect"}, 5),
            ({"track": "stable", "result": "correct"}, 95),
        ],
    )


def test_score_buckets_and_error_sums_per_track(promtool: str, tmp_path: Path):
    score = mq.FEEDBACK_SCORE_BUCKETS
    scores = [
        series(score, "canary", "2.1.0", "0+1x20", true_class="positive", le="0.9"),
        series(score, "stable", "2.0.0", "0+2x20", true_class="negative", le="0.1"),
    ]
    evaluate(
        promtool,
        tmp_path,
        scores,
        mq.feedback_score_buckets_both(CANARY, STABLE, at=AT),
        [
            ({"track": "canary", "true_class": "positive", "le": "0.9"}, 5),
            ({"track": "stable", "true_class": "negative", "le": "0.1"}, 10),
        ],
    )
    errors = [
        series(mq.FEEDBACK_ERROR_SUM, "canary", "2.1.0", "0+3x20"),
        series(mq.FEEDBACK_ERROR_COUNT, "canary", "2.1.0", "0+2x20"),
    ]
    evaluate(
        promtool,
        tmp_path,
        errors,
        mq.feedback_error_both(CANARY, STABLE, at=AT),
        [({"track": "canary", "part": "sum"}, 15), ({"track": "canary", "part": "count"}, 10)],
    )


def test_the_model_task_and_the_profile_gauges(promtool: str, tmp_path: Path):
    inputs = [
        series(mq.MODEL_INFO, "canary", "2.1.0", "1x20", task="binary", format="xgboost"),
        series(mq.PROFILE_FEATURE_SHARES, "canary", "2.1.0", "0.25x20", feature="age", bin="0"),
        series(mq.PROFILE_PREDICTION_SHARES, "canary", "2.1.0", "0.5x20", output="score", bin="1"),
        series(mq.PROFILE_QUALITY, "canary", "2.1.0", "0.93x20", metric="accuracy"),
    ]
    for expr, labels, value in [
        (mq.model_task(CANARY), {"task": "binary"}, 1),
        (mq.profile_feature_shares(CANARY), {"feature": "age", "bin": "0"}, 0.25),
        (mq.profile_prediction_shares(CANARY), {"output": "score", "bin": "1"}, 0.5),
        (mq.profile_quality(CANARY), {"metric": "accuracy"}, 0.93),
    ]:
        evaluate(promtool, tmp_path, inputs, expr, [(labels, value)], eval_time="10m")


def test_slo_compliance_counts_windows_with_traffic_only(promtool: str, tmp_path: Path):
    """Stable over 60 minutes, one window every 5: idle until 20m, then 100 requests a
    minute, all fast; from 42m on, 50 errors a minute as well."""
    requests = "0x20 0+100x40"
    inputs = [
        series(REQUESTS_TOTAL, "stable", "2.0.0", requests, outcome="ok"),
        series(REQUESTS_TOTAL, "stable", "2.0.0", "0x40 0+50x20", outcome="server_error"),
        series(DURATION_BUCKETS, "stable", "2.0.0", requests, le="0.1"),
        series(DURATION_BUCKETS, "stable", "2.0.0", requests, le="+Inf"),
    ]
    share, count = mq.slo_compliance(api.SLOSpec(), STABLE, "1h", at=3600.0)
    # Windows ending at 25m .. 60m have traffic (8); those ending at 45m .. 60m see errors.
    evaluate(promtool, tmp_path, inputs, count, [({}, 8)], eval_time="61m")
    evaluate(promtool, tmp_path, inputs, share, [({}, 0.5)], eval_time="61m")


# --- the queries, as text ---------------------------------------------------------------


def test_values_are_escaped_and_decimal_windows_rewritten():
    odd = QueryContext("ml", "fraud", "canary", "1.5m", "fraud", 'v"2\\')
    query = mq.feature_bins(odd)
    assert 'model_version="v\\"2\\\\"' in query
    assert "[90s]" in query


def test_tracks_from_different_windows_are_refused():
    other_window = QueryContext("ml", "fraud", "stable", "10m", "fraud", "2.0.0")
    with pytest.raises(ValueError, match="one window of one object"):
        mq.prediction_buckets_both(CANARY, other_window)
    with pytest.raises(ValueError, match="canary's context first"):
        mq.prediction_buckets_both(STABLE, CANARY)


# --- answers ----------------------------------------------------------------------------


def answer(*rows: tuple[dict[str, str], str]) -> list[dict[str, Any]]:
    return [{"metric": labels, "value": [1700000000.0, value]} for labels, value in rows]


def test_an_answer_feeds_the_statistics():
    result = answer(
        ({"track": "canary", "output": "score", "bin": "0"}, "80"),
        ({"track": "canary", "output": "score", "bin": "1"}, "20"),
        ({"track": "stable", "output": "score", "bin": "0"}, "500"),
        ({"track": "stable", "output": "score", "bin": "1"}, "500"),
        ({"track": "stable", "output": "score", "bin": "missing"}, "NaN"),
    )
    samples = mq.parse_vector(result)
    canary = mq.grouped(samples, mq.OUTPUT, track="canary")
    stable = mq.grouped(samples, mq.OUTPUT, track="stable")
    assert canary == {"score": {"0": 80, "1": 20}}
    assert stable == {"score": {"0": 500, "1": 500}}
    verdict = drift.prediction_drift(stable, canary, api.DriftStatistic.PSI)
    assert verdict.value == pytest.approx(drift.psi([1, 1], [80, 20]).value)


def test_results_by_label():
    samples = mq.parse_vector(
        answer(
            ({"track": "canary", "result": "correct"}, "45"),
            ({"track": "canary", "result": "incorrect"}, "5"),
            ({"track": "stable", "result": "correct"}, "95"),
        )
    )
    assert mq.by_label(samples, mq.RESULT, track="canary") == {"correct": 45, "incorrect": 5}
    assert mq.by_label(samples, mq.RESULT, track="stable") == {"correct": 95}


def test_cumulative_buckets_become_rows_per_bucket():
    assert mq.per_bin({"+Inf": 10, "0.5": 4, "0.1": 1}) == {"0.1": 1, "0.5": 3, "+Inf": 6}
    # a pod restarting in the window can make a bucket dip: never negative rows
    assert mq.per_bin({"0.1": 5, "0.5": 4}) == {"0.1": 5, "0.5": 0}
    with pytest.raises(ValueError, match="not a number"):
        mq.per_bin({"high": 1})


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"metric": {}}, "expected a vector"),
        ([{"metric": {}}], "no usable metric and value"),
        ([{"metric": {"a": 1}, "value": [0, "1"]}], "labels that are not strings"),
        ([{"metric": {}, "value": [0, "many"]}], "no usable metric and value"),
    ],
)
def test_malformed_answers_are_refused(result, message):
    with pytest.raises(ValueError, match=message):
        mq.parse_vector(result)


def test_a_series_without_the_contracts_labels_is_named():
    samples = mq.parse_vector(answer(({"track": "canary", "bin": "0"}, "1")))
    with pytest.raises(ValueError, match="lacks the 'output' label"):
        mq.grouped(samples, mq.OUTPUT)
