"""The shadow's comparison, in process: any request with a reference header is compared
row by row, and a reference that does not fit never fails the request."""

from typing import Any

import orjson
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import Serve
from tests.server.data import breast_cancer_rows, diabetes_rows
from tests.server.helpers import v2_body

INFER = "/v2/models/{}/infer"
REFERENCE = "modeldeploy-mirror-reference"


def samples(client: TestClient, name: str) -> dict[str, float]:
    """Values of `name` by their `result` or `le` label (or "" without either)."""
    text = client.get("/metrics").text
    return {
        sample.labels.get("result", sample.labels.get("le", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def predict(client: TestClient, model: str, rows: list[Any], reference: bytes | None) -> list[Any]:
    headers = {} if reference is None else {REFERENCE: reference.decode()}
    response = client.post(INFER.format(model), json=v2_body(rows), headers=headers)
    assert response.status_code == 200, response.text
    (output,) = [o for o in response.json()["outputs"] if o["name"] == "predict"]
    return list(output["data"])


def test_a_classifier_counts_agreeing_disagreeing_and_unmatched_rows(serve: Serve):
    rows = breast_cancer_rows(4).tolist()
    with serve("xgb-classifier.ubj") as client:
        labels = predict(client, "xgb-classifier", rows, None)
        # No mirrored request yet: no series at all.
        assert samples(client, "modelserver_shadow_rows_total") == {}
        flipped = [1 - labels[0], *labels[1:]]
        for reference in (
            orjson.dumps(labels),
            orjson.dumps(flipped),
            b"[1, 0]",  # not one label per row
            b"[1, 0, 1",  # not JSON
            b'{"labels": [1, 0, 1, 0]}',  # not an array
        ):
            assert predict(client, "xgb-classifier", rows, reference) == labels
        assert samples(client, "modelserver_shadow_rows_total") == {
            "agree": 7,
            "disagree": 1,
            "unmatched": 12,
        }


def test_a_regressor_observes_absolute_differences_of_the_rows_it_can_compare(serve: Serve):
    rows = diabetes_rows(3).tolist()
    with serve("xgb-regressor.ubj") as client:
        values = predict(client, "xgb-regressor", rows, None)
        shifted = [values[0] + 2.5, values[1] - 0.5, values[2]]
        for reference in (
            orjson.dumps(shifted),
            orjson.dumps(values[:2]),  # not one value per row: left out
            b'["a", "b", "c"]',  # not numbers: left out
            b"nonsense",
        ):
            predict(client, "xgb-regressor", rows, reference)
        counts = samples(client, "modelserver_shadow_absolute_difference_count")
        sums = samples(client, "modelserver_shadow_absolute_difference_sum")
        buckets = samples(client, "modelserver_shadow_absolute_difference_bucket")
    assert counts == {"": 3}
    assert abs(sums[""] - 3.0) < 1e-3
    assert buckets["0.0"] == 1
    assert buckets["0.5"] == 2
    assert buckets["2.5"] == 3
