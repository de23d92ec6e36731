"""Every class of bad input is a 4xx whose message says exactly what is wrong."""

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import Serve
from tests.server.data import breast_cancer_rows
from tests.server.helpers import v2_body

INFER = "/v2/models/xgb-classifier/infer"
PREDICT = "/v1/models/xgb-classifier:predict"
ROW = breast_cancer_rows(1)[0].tolist()


def tensor(**changes: Any) -> dict[str, Any]:
    body = v2_body([ROW])
    body["inputs"][0].update(changes)
    return body


def error_of(client: TestClient, body: Any, path: str = INFER) -> tuple[int, str]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post(path, content=content)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        # 422: a valid request that this model cannot take (counted as rejected).
        (
            tensor(shape=[1, 29], data=ROW[:29]),
            422,
            "expects 30 features per row, got shape [1, 29]",
        ),
        (tensor(shape=[30]), 422, "shape must be [rows, features]"),
        (tensor(shape=[0, 30], data=[]), 422, "rows >= 1"),
        (tensor(datatype="BYTES"), 422, "datatype BYTES is not supported; supported: BOOL,"),
        ({"inputs": []}, 422, "expected exactly 1 input tensor of shape [rows, 30], got 0"),
        ({"inputs": [tensor()["inputs"][0]] * 2}, 422, "got 2 inputs"),
        (
            {**tensor(), "outputs": [{"name": "margin"}]},
            422,
            "unknown output 'margin'; this model has: predict, predict_proba",
        ),
        (
            tensor(datatype="FP64", data=[[1e39] * 30]),
            422,
            "row 0, column 0 is 1e+39, out of range for float32 or infinite",
        ),
        # 400: not a valid request, whatever the model (counted as client_error).
        (tensor(shape=[1, 30], data=ROW[:29]), 400, "shape [1, 30] needs 30 values, data has 29"),
        (tensor(shape=[2, 30], data=[ROW, ROW[:29]]), 400, "ragged data"),
        (
            tensor(shape=[2, 30], data=[ROW]),
            400,
            "nested data has shape [1, 30], declared shape is [2, 30]",
        ),
        (tensor(shape=[-1, 30]), 400, "shape [-1, 30] has a negative dimension"),
        (tensor(datatype="fp32"), 400, "unknown datatype 'fp32'; supported: BOOL, INT8,"),
        (tensor(data=[["a"] * 30]), 400, "datatype FP32 does not accept strings"),
        (tensor(data=[[True] * 30]), 400, "datatype FP32 does not accept booleans"),
        (
            tensor(datatype="INT64"),
            400,
            "datatype INT64 needs integers (JSON integers of at most 64 bits),"
            " got 17.99 at row 0, column 0",
        ),
        (tensor(datatype="BOOL", data=[[1] * 30]), 400, "datatype BOOL does not accept integers"),
        (tensor(data=[[None] * 30]), 400, "null at flat position 0"),
        (tensor(data=[[{"a": 1}] * 30]), 400, "unexpected dict at flat position 0"),
        (
            tensor(data=[[10**40] * 30], datatype="INT64"),
            400,
            "datatype INT64 needs integers (JSON integers of at most 64 bits), got 1e+40",
        ),
        (
            tensor(data=[[1] * 29 + [2**31]], datatype="INT32"),
            400,
            "datatype INT32 takes integers from -2147483648 to 2147483647,"
            " got 2147483648 at row 0, column 29",
        ),
        (
            tensor(data=[[-(2**31) - 1] * 30], datatype="INT32"),
            400,
            "got -2147483649 at row 0, column 0",
        ),
        (
            tensor(data=[[2**63] * 30], datatype="INT64"),
            400,
            "datatype INT64 takes integers from -9223372036854775808 to 9223372036854775807",
        ),
        (
            tensor(data=[[-1] * 30], datatype="UINT8"),
            400,
            "datatype UINT8 takes integers from 0 to 255, got -1 at row 0, column 0",
        ),
        (tensor(data=[[256] * 30], datatype="UINT8"), 400, "got 256 at row 0, column 0"),
        (
            tensor(data=[[1e39] * 30]),
            400,
            "row 0, column 0 is 1e+39, out of range for its datatype FP32",
        ),
        (tensor(data=5), 400, "inputs.0.data: Input should be a valid list"),
        (tensor(shape=["1", 30]), 400, "inputs.0.shape.0: Input should be a valid integer"),
        ({"input": []}, 400, "inputs: Field required"),
        ([1, 2], 400, "invalid request body: must be a JSON object, got [1, 2]"),
        (b'{"inputs": [', 400, "malformed JSON: EOF while parsing"),
        (b"", 400, "malformed JSON"),
        (b"\xff\xfe", 400, "malformed JSON"),
    ],
)
def test_bad_v2_request_is_rejected_with_its_reason(
    classifier: TestClient, body: Any, status: int, message: str
):
    code, error = error_of(classifier, body)
    assert code == status
    assert message in error


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"instances": [ROW[:29]]}, 422, "the model expects 30 features per row, got 29"),
        ({"instances": [ROW, ROW[:29]]}, 400, "instances: ragged data"),
        ({"instances": []}, 422, "at least one row"),
        ({"instances": ROW}, 422, "must be a list of rows"),
        ({"instances": [["x"] * 30]}, 422, "does not accept strings"),
        ({"rows": [ROW]}, 400, "instances: Field required"),
        (b"{", 400, "malformed JSON"),
    ],
)
def test_bad_v1_request_is_rejected_with_its_reason(
    classifier: TestClient, body: Any, status: int, message: str
):
    code, error = error_of(classifier, body, PREDICT)
    assert code == status
    assert message in error


def test_unknown_model_name_is_404_naming_the_served_model(classifier: TestClient):
    for path in ("/v2/models/fraud/infer", "/v1/models/fraud:predict", "/v2/models/fraud"):
        response = classifier.post(path, json=v2_body([ROW])) if "i" in path[-6:] else None
        response = response or classifier.get(path)
        assert response.status_code == 404
        assert response.json()["error"] == (
            "model 'fraud' not found; this server serves 'xgb-classifier'"
        )


def test_unknown_version_is_404(classifier: TestClient):
    response = classifier.post("/v2/models/xgb-classifier/versions/7/infer", json=v2_body([ROW]))
    assert response.status_code == 404
    assert "has no version '7'; served version: '1'" in response.json()["error"]


def test_oversized_body_is_413(serve: Serve):
    with serve("xgb-classifier.ubj", max_body_bytes=4096) as client:
        code, error = error_of(client, v2_body([ROW] * 50))
    assert code == 413
    assert "larger than the limit of 4096 bytes" in error


def test_oversized_body_without_length_header_is_413(serve: Serve):
    chunks = [json.dumps(v2_body([ROW] * 50)).encode()]
    with serve("xgb-classifier.ubj", max_body_bytes=4096) as client:
        response = client.post(INFER, content=iter(chunks))  # sent chunked
    assert response.status_code == 413


def test_a_binary_header_on_a_json_body_is_a_400_not_a_5xx(classifier: TestClient):
    response = classifier.post(
        INFER,
        content=json.dumps(v2_body([ROW])).encode(),
        headers={"Inference-Header-Content-Length": "10"},
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("the JSON header (the first 10 bytes of the body")


def test_nan_is_refused_by_a_model_that_cannot_take_missing_values(serve: Serve):
    with serve("sklearn-pipeline.skops") as client:
        response = client.post(
            "/v2/models/sklearn-pipeline/infer",
            content=b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",'
            b' "data": [5.1, NaN, 1.4, 0.2]}]}',
        )
    assert response.status_code == 422
    assert response.json()["error"] == (
        "input 'x': row 0, column 1 is NaN (missing value), which this model does not accept"
    )


def test_infinity_is_refused_even_where_nan_is_allowed(classifier: TestClient):
    content = json.dumps(v2_body([[float("inf"), *ROW[1:]]])).encode()  # writes Infinity
    response = classifier.post(INFER, content=content)
    assert response.status_code == 422
    assert "row 0, column 0 is inf" in response.json()["error"]


def test_unknown_route_answers_with_an_error_body(classifier: TestClient):
    response = classifier.get("/v3/nothing")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


def test_wrong_method_on_an_inference_path_is_405(classifier: TestClient):
    for path in (INFER, PREDICT):
        response = classifier.get(path)
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.json() == {"error": "GET not allowed; use POST"}


def test_model_expecting_other_features_rejects_the_stables_requests(
    serve: Serve, models_dir: Path
):
    with serve("xgb-classifier-bad-features.ubj") as client:
        response = client.post("/v2/models/xgb-classifier-bad-features/infer", json=v2_body([ROW]))
    assert response.status_code == 422
    assert "expects 20 features per row, got shape [1, 30]" in response.json()["error"]
