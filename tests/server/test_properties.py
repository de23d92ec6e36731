"""No request body, however malformed, gets a 5xx or breaks the server; the fast way of
decoding the common request answers as the validated way does."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelserver.codecs import Decoded, decode_v2, decode_v2_request, parse_body
from modelserver.schemas import InferenceRequest
from modelserver.tensors import InvalidInput, ModelInput
from tests.server.helpers import make_settings, serving_app

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)
numbers = st.integers(-(2**70), 2**70) | st.floats() | st.booleans() | st.none()
rows = st.lists(st.lists(numbers, min_size=0, max_size=32), min_size=0, max_size=4)
datatypes = st.sampled_from(["FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES", "fp32", ""])
shapes = st.lists(st.integers(-3, 40) | st.just(2**64), max_size=3) | json_values
v2_tensors = st.fixed_dictionaries(
    {"name": st.text(max_size=5), "shape": shapes, "datatype": datatypes | json_values},
    optional={"data": rows | st.lists(numbers, max_size=70) | json_values},
)
v2_bodies = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(v2_tensors, max_size=2) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=14)}), max_size=2)
        | json_values,
        "id": json_values,
        "parameters": json_values,
    },
)


@pytest.fixture(scope="module")
def client(models_dir: Path) -> Iterator[TestClient]:
    with serving_app(make_settings(models_dir / "xgb-classifier.ubj")) as (test_client, _):
        yield test_client


def post(client: TestClient, path: str, content: bytes) -> None:
    response = client.post(path, content=content)
    assert response.status_code < 500, response.text
    assert "error" in response.json() or response.status_code == 200


relaxed = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@relaxed
@given(body=v2_bodies)
def test_random_v2_bodies_never_get_a_5xx(client: TestClient, body: dict[str, Any]):
    post(client, "/v2/models/xgb-classifier/infer", json.dumps(body).encode())


@relaxed
@given(body=json_values | st.fixed_dictionaries({"instances": rows | json_values}))
def test_random_v1_bodies_never_get_a_5xx(client: TestClient, body: Any):
    post(client, "/v1/models/xgb-classifier:predict", json.dumps(body).encode())


@relaxed
@given(content=st.binary(max_size=200))
def test_random_bytes_never_get_a_5xx(client: TestClient, content: bytes):
    post(client, "/v2/models/xgb-classifier/infer", content)


binary_tensors = st.fixed_dictionaries(
    {"name": st.text(max_size=5), "shape": shapes, "datatype": datatypes | st.just("BF16")},
    optional={
        "parameters": st.fixed_dictionaries(
            {"binary_data_size": st.integers(-2, 300) | json_values}
        )
        | json_values,
        "data": rows,
    },
)


@relaxed
@given(
    header=st.fixed_dictionaries(
        {"inputs": st.lists(binary_tensors, max_size=2)},
        optional={"parameters": json_values, "outputs": json_values},
    )
    | json_values,
    payload=st.binary(max_size=300),
    header_length=st.none() | st.integers(0, 400) | st.binary(max_size=4),
)
def test_random_binary_requests_never_get_a_5xx(
    client: TestClient, header: Any, payload: bytes, header_length: int | bytes | None
):
    text = json.dumps(header).encode()
    if isinstance(header_length, bytes):
        length = header_length
    else:
        length = str(len(text) if header_length is None else header_length).encode()
    response = client.post(
        "/v2/models/xgb-classifier/infer",
        content=text + payload,
        headers={"Inference-Header-Content-Length": length},
    )
    assert response.status_code < 500, response.text


@st.composite
def plain_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """One-input requests for a model of 3 features, well formed but for at most one field
    of any value: the bodies that decoding takes without pydantic, and their neighbours."""
    count = draw(st.integers(1, 3))
    plain_numbers = st.floats(width=32) | st.integers(-99, 99)
    element = draw(st.sampled_from([plain_numbers, numbers]))
    values = draw(st.lists(element, min_size=3 * count, max_size=3 * count))
    tensor: dict[str, Any] = {
        "name": draw(st.text(max_size=5)),
        "shape": [count, 3],
        "datatype": draw(datatypes),
        "data": draw(
            st.sampled_from([values, [values[i : i + 3] for i in range(0, len(values), 3)]])
        ),
    }
    body: dict[str, Any] = {"inputs": [tensor]}
    if draw(st.booleans()):
        tensor["parameters"] = draw(st.none() | st.sampled_from([{}, {"content_type": "np"}]))
    if draw(st.booleans()):
        body["id"] = draw(st.none() | st.text(max_size=3) | st.just("x" * 257))
    if draw(st.booleans()):
        body["parameters"] = draw(st.none() | st.sampled_from([{}, {"content_type": "pd"}]))
    spoiled = draw(st.sampled_from([None, "name", "shape", "datatype", "data", "parameters"]))
    if spoiled is not None:
        tensor[spoiled] = draw(json_values | st.just([True, 3]))
    if draw(st.booleans()):
        body[draw(st.sampled_from(["id", "parameters", "outputs", "other"]))] = draw(json_values)
    return body


def decoded_or_refused(decode: Callable[[], Decoded]) -> tuple[Any, ...]:
    try:
        rows, outputs, request_id = decode()
    except InvalidInput as error:
        return ("refused", error.status_code, str(error))
    assert isinstance(rows, np.ndarray)
    return ("decoded", rows.dtype, rows.tolist(), outputs, request_id)


@relaxed
@given(body=plain_bodies() | v2_bodies)
def test_plain_requests_decode_as_validated_requests_do(body: dict[str, Any]):
    """decode_v2 takes the common request without pydantic: the same rows, outputs and id,
    or the same refusal, as the request validated by pydantic."""
    model = ModelInput(3, np.float32, False, ("predict", "predict_proba"))
    encoded = json.dumps(body).encode()

    fast = decoded_or_refused(lambda: decode_v2(encoded, model))
    validated = decoded_or_refused(
        lambda: decode_v2_request(parse_body(encoded, InferenceRequest), model)
    )

    # NaN != NaN: compare the rows' text, which shows NaN alike.
    assert repr(fast) == repr(validated)
