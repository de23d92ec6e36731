"""The Prometheus series that the operator's analysis reads (names fixed by contract)."""

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from modelserver.metrics import BulkHistogram, outcome
from tests.server.conftest import Serve
from tests.server.data import breast_cancer_rows
from tests.server.helpers import FailingModel, loaded, make_settings, serving_app, v2_body

LABELS = {
    "model": "fraud",
    "model_version": "2.1.0",
    "track": "canary",
    "modeldeployment": "fraud-md",
    "variant": "",
}


def samples(registry_text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(registry_text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset({**LABELS, **labels}.items())), 0.0)


@pytest.fixture
def fraud(serve: Serve):
    settings = {
        "model_name": "fraud",
        "model_version": "2.1.0",
        "track": "canary",
        "deployment": "fraud-md",
    }
    with serve("xgb-classifier.ubj", **settings) as client:
        yield client


def test_requests_are_counted_by_endpoint_protocol_status_code_and_outcome(fraud):
    row = breast_cancer_rows(1).tolist()
    fraud.post("/v2/models/fraud/infer", json=v2_body(row))
    fraud.post("/v2/models/fraud/infer", json=v2_body(row))
    fraud.post("/v2/models/fraud/infer", content=b"{")
    fraud.post("/v2/models/other/infer", json=v2_body(row))
    fraud.get("/v2/models/fraud/infer")
    fraud.post("/v1/models/fraud:predict", json={"instances": [row[0][:3]]})
    text = fraud.get("/metrics").text
    total = "modelserver_requests_total"
    assert value(text, total, endpoint="v2_infer", protocol="rest", code="200", outcome="ok") == 2
    assert (
        value(text, total, endpoint="v2_infer", protocol="rest", code="400", outcome="client_error")
        == 1
    )
    assert (
        value(text, total, endpoint="v2_infer", protocol="rest", code="404", outcome="client_error")
        == 1
    )
    assert (
        value(text, total, endpoint="v2_infer", protocol="rest", code="405", outcome="client_error")
        == 1
    )
    assert (
        value(text, total, endpoint="v1_predict", protocol="rest", code="422", outcome="rejected")
        == 1
    )
    duration = "modelserver_request_duration_seconds_count"
    assert value(text, duration, endpoint="v2_infer", protocol="rest") == 2, (
        "client errors are not timed"
    )
    assert value(text, duration, endpoint="v1_predict", protocol="rest") == 1


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (200, "ok"),
        (400, "client_error"),
        (404, "client_error"),
        (405, "client_error"),
        (408, "client_error"),
        (413, "client_error"),
        (422, "rejected"),
        (499, "client_error"),
        (500, "server_error"),
        (503, "server_error"),
    ],
)
def test_every_status_code_has_one_outcome(code: int, expected: str):
    assert outcome(code) == expected


def test_a_body_too_large_is_a_client_error(serve: Serve):
    settings = {
        "model_name": "fraud",
        "model_version": "2.1.0",
        "track": "canary",
        "deployment": "fraud-md",
        "max_body_bytes": 4096,
    }
    with serve("xgb-classifier.ubj", **settings) as client:
        client.post("/v2/models/fraud/infer", json=v2_body(breast_cancer_rows(50).tolist()))
        text = client.get("/metrics").text
    total = "modelserver_requests_total"
    assert (
        value(text, total, endpoint="v2_infer", protocol="rest", code="413", outcome="client_error")
        == 1
    )


def test_health_metadata_and_metrics_requests_are_not_counted(fraud):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/fraud", "/metrics"):
        fraud.get(path)
    text = fraud.get("/metrics").text
    assert not [key for key in samples(text) if key[0] == "modelserver_requests_total"]


def test_client_errors_do_not_move_the_models_latency(fraud):
    row = breast_cancer_rows(1).tolist()
    fraud.post("/v2/models/fraud/infer", json=v2_body(row))
    fraud.post("/v2/models/fraud/infer", content=b"{")
    fraud.post("/v2/models/other/infer", json=v2_body(row))
    fraud.post("/v2/models/fraud/infer", json=v2_body([row[0][:3]]))
    text = fraud.get("/metrics").text
    observed = value(
        text, "modelserver_request_duration_seconds_count", endpoint="v2_infer", protocol="rest"
    )
    assert observed == 2, "the answered and the rejected request, not the 400 and the 404"


def test_duration_buckets_resolve_milliseconds(fraud):
    fraud.post("/v2/models/fraud/infer", json=v2_body(breast_cancer_rows(1).tolist()))
    text = fraud.get("/metrics").text
    bucket = "modelserver_request_duration_seconds_bucket"
    for bound in ("0.0005", "0.001", "0.0025", "0.005", "0.01", "0.25", "10.0", "+Inf"):
        assert (
            bucket,
            frozenset({**LABELS, "endpoint": "v2_infer", "protocol": "rest", "le": bound}.items()),
        ) in (samples(text))


def test_rows_and_prediction_values_are_observed(fraud):
    fraud.post("/v2/models/fraud/infer", json=v2_body(breast_cancer_rows(7).tolist()))
    text = fraud.get("/metrics").text
    assert value(text, "modelserver_request_rows_sum") == 7
    assert value(text, "modelserver_prediction_value_count") == 7
    # Positive-class probabilities: every value is at most 1.
    assert value(text, "modelserver_prediction_value_bucket", le="1.0") == 7
    assert value(text, "modelserver_batch_rows_sum") == 7


def test_model_info_and_load_time_describe_the_model(fraud, models_dir: Path):
    text = fraud.get("/metrics").text
    digest = (models_dir / "xgb-classifier.ubj.sha256").read_text().strip()
    info = value(text, "modelserver_model_info", format="xgboost", task="binary", sha256=digest)
    assert info == 1
    assert value(text, "modelserver_model_load_seconds") > 0
    assert value(text, "modelserver_inflight_requests") == 0


def test_no_namespace_or_pod_labels_are_emitted(fraud):
    text = fraud.get("/metrics").text
    for _, labels in samples(text):
        names = {name for name, _ in labels}
        assert not names & {"namespace", "pod"}


def test_model_failure_is_a_5xx_and_counted_apart_from_rejections(tmp_path: Path):
    settings = make_settings(
        tmp_path / "unused.ubj",
        model_name="fraud",
        model_version="2.1.0",
        track="canary",
        deployment="fraud-md",
    )
    with serving_app(settings, loaded(FailingModel(fail_on=13.0), tmp_path)) as (client, _):
        broken = client.post("/v2/models/fraud/infer", json=v2_body([[13.0, 1.0]]))
        rejected = client.post("/v2/models/fraud/infer", json=v2_body([[1.0]]))
        text = client.get("/metrics").text
    assert broken.status_code == 500
    assert broken.json() == {"error": "inference failed: RuntimeError: the model broke"}
    assert rejected.status_code == 422
    total = "modelserver_requests_total"
    assert (
        value(text, total, endpoint="v2_infer", protocol="rest", code="500", outcome="server_error")
        == 1
    )
    assert (
        value(text, total, endpoint="v2_infer", protocol="rest", code="422", outcome="rejected")
        == 1
    )


@pytest.mark.parametrize(
    "values",
    [
        np.array([-5.0, 0.0, 0.1, 0.1000001, 0.5, 0.99, 1.0, 7.0, np.nan]),
        np.array([0.1, np.nan, 0.1000001, np.inf], dtype=np.float32),  # a few: one by one
    ],
)
def test_bulk_histogram_counts_like_one_observation_at_a_time(values: np.ndarray):
    registry_bulk, registry_single = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("h", "h", buckets=(0.0, 0.1, 0.5, 1.0), registry=registry_bulk)
    single = BulkHistogram("h", "h", buckets=(0.0, 0.1, 0.5, 1.0), registry=registry_single)
    bulk.observe_many(values)
    for one in values[np.isfinite(values)]:
        single.observe(float(one))
    assert registry_bulk.get_sample_value("h_sum") == pytest.approx(
        registry_single.get_sample_value("h_sum")
    )
    for bound in ("0.0", "0.1", "0.5", "1.0", "+Inf"):
        assert registry_bulk.get_sample_value(
            "h_bucket", {"le": bound}
        ) == registry_single.get_sample_value("h_bucket", {"le": bound})
