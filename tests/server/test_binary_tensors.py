"""Triton's client, as a user runs it (binary tensor data by default), against the real
server process; and every malformed binary request answered with a 4xx that says why."""

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as triton
import xgboost
from tritonclient.utils import InferenceServerException

from tests.server.data import breast_cancer_rows, iris_rows
from tests.server.server_process import ServerProcess, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MODEL = "xgb-classifier"
INFER = f"/v2/models/{MODEL}/infer"
ROWS = breast_cancer_rows(4)


def sha256_of(models_dir: Path, name: str) -> str:
    return (models_dir / f"{name}.sha256").read_text().strip()


def start(models_dir: Path, tmp_path: Path, model: str, *extra: str):
    path = models_dir / model
    args = ["--model-uri", str(path), "--model-sha256", sha256_of(models_dir, model)]
    if model.endswith(".skops"):
        args += ["--model-format", "sklearn"]
    return running_server([*args, "--cache-dir", str(tmp_path), *extra], tmp_path)


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("binary-server")
    with start(models_dir, tmp_path, "xgb-classifier.ubj") as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def booster(models_dir: Path) -> xgboost.Booster:
    return xgboost.Booster(model_file=models_dir / "xgb-classifier.ubj")


def tensor(values: npt.NDArray[Any], datatype: str, binary: bool = True) -> triton.InferInput:
    given = triton.InferInput("input-0", list(values.shape), datatype)
    given.set_data_from_numpy(values, binary_data=binary)
    return given


def positive_probability(booster: xgboost.Booster, rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return np.asarray(booster.inplace_predict(rows.astype(np.float32)))


def test_health_and_readiness_through_tritonclient(client: triton.InferenceServerClient):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version="1")
    assert not client.is_model_ready("fraud")


def test_server_metadata_declares_the_binary_tensor_extension(
    client: triton.InferenceServerClient,
):
    metadata = client.get_server_metadata()
    assert metadata["name"] == "modelserver"
    assert "binary_tensor_data" in metadata["extensions"]
    model = client.get_model_metadata(MODEL)
    assert model["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 30]}]


def test_tritonclient_defaults_binary_both_ways_give_xgboosts_predictions(
    client: triton.InferenceServerClient, booster: xgboost.Booster
):
    values = ROWS.astype(np.float32)
    result = client.infer(MODEL, [tensor(values, "FP32")])  # everything as the client defaults
    outputs = {output["name"]: output for output in result.get_response()["outputs"]}
    assert outputs["predict"]["parameters"] == {"content_type": "np", "binary_data_size": 4 * 8}
    assert "data" not in outputs["predict"]
    positive = positive_probability(booster, values)
    probabilities = result.as_numpy("predict_proba")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (4, 2)
    np.testing.assert_allclose(probabilities[:, 1], positive, rtol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("predict"), (positive > 0.5).astype(np.int64))


# Each datatype with the values it carries (rounded where the datatype has no fractions).
DATATYPES = {
    "FP16": lambda rows: rows.astype(np.float16),
    "FP32": lambda rows: rows.astype(np.float32),
    "FP64": lambda rows: rows,
    "BF16": lambda rows: rows.astype(ml_dtypes.bfloat16),
    "INT8": lambda rows: np.clip(np.rint(rows), -128, 127).astype(np.int8),
    "INT16": lambda rows: np.rint(rows).astype(np.int16),
    "INT32": lambda rows: np.rint(rows).astype(np.int32),
    "INT64": lambda rows: np.rint(rows).astype(np.int64),
    "UINT8": lambda rows: np.clip(np.rint(rows), 0, 255).astype(np.uint8),
    "UINT16": lambda rows: np.rint(rows).astype(np.uint16),
    "UINT32": lambda rows: np.rint(rows).astype(np.uint32),
    "UINT64": lambda rows: np.rint(rows).astype(np.uint64),
    "BOOL": lambda rows: rows > np.median(rows, axis=0),
}


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_every_datatype_as_binary_data_predicts_what_xgboost_does_on_its_values(
    client: triton.InferenceServerClient, booster: xgboost.Booster, datatype: str
):
    values = DATATYPES[datatype](ROWS)
    result = client.infer(MODEL, [tensor(values, datatype)])
    positive = positive_probability(booster, values.astype(np.float32))
    np.testing.assert_allclose(result.as_numpy("predict_proba")[:, 1], positive, rtol=1e-6)


@pytest.mark.parametrize("datatype", [name for name in DATATYPES if name != "BF16"])
def test_binary_and_json_inputs_give_the_same_answer(
    client: triton.InferenceServerClient, datatype: str
):
    values = DATATYPES[datatype](ROWS)
    binary = client.infer(MODEL, [tensor(values, datatype, binary=True)])
    as_json = client.infer(MODEL, [tensor(values, datatype, binary=False)])
    for name in ("predict", "predict_proba"):
        np.testing.assert_array_equal(binary.as_numpy(name), as_json.as_numpy(name))


def test_outputs_are_selected_each_binary_or_json_as_asked(client: triton.InferenceServerClient):
    values = ROWS.astype(np.float32)
    only_probabilities = client.infer(
        MODEL, [tensor(values, "FP32")], outputs=[triton.InferRequestedOutput("predict_proba")]
    )
    assert [output["name"] for output in only_probabilities.get_response()["outputs"]] == [
        "predict_proba"
    ]
    mixed = client.infer(
        MODEL,
        [tensor(values, "FP32", binary=False)],
        outputs=[
            triton.InferRequestedOutput("predict", binary_data=False),
            triton.InferRequestedOutput("predict_proba", binary_data=True),
        ],
    )
    predict, probabilities = mixed.get_response()["outputs"]
    assert predict["data"] == mixed.as_numpy("predict").tolist()
    assert probabilities["parameters"]["binary_data_size"] == 4 * 2 * 4
    np.testing.assert_array_equal(
        mixed.as_numpy("predict_proba"), only_probabilities.as_numpy("predict_proba")
    )


def test_request_id_and_version_path_work_with_binary_data(client: triton.InferenceServerClient):
    result = client.infer(
        MODEL, [tensor(ROWS.astype(np.float32), "FP32")], model_version="1", request_id="r-9"
    )
    assert result.get_response()["id"] == "r-9"
    assert result.get_response()["model_version"] == "1"


def test_a_binary_response_is_the_json_header_then_the_raw_outputs(server: ServerProcess):
    """What a client without tritonclient reads: the headers say where the JSON ends."""
    values = ROWS[:2].astype(np.float32)
    header = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [2, 30],
                "datatype": "FP32",
                "parameters": {"binary_data_size": values.nbytes},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    response = post_binary(server, header, values.tobytes())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:length])
    predict, _ = answer["outputs"]
    assert predict["datatype"] == "INT64"
    assert predict["parameters"]["binary_data_size"] == 16
    raw = response.content[length:]
    assert len(raw) == 16 + 16
    assert np.frombuffer(raw[:16], "<i8").tolist() == [0, 0]
    np.testing.assert_allclose(np.frombuffer(raw[16:], "<f4").reshape(2, 2).sum(axis=1), 1.0)


def test_a_binary_request_answered_as_json_when_no_output_is_asked_binary(server: ServerProcess):
    values = ROWS[:1].astype(np.float32)
    header = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [1, 30],
                "datatype": "FP32",
                "parameters": {"binary_data_size": values.nbytes},
            }
        ]
    }
    response = post_binary(server, header, values.tobytes())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in response.headers
    assert response.json()["outputs"][0]["data"] == [0]


def test_string_outputs_come_as_length_prefixed_bytes(models_dir: Path, tmp_path: Path):
    """content_type str: the labels as strings (BYTES), in binary each with its length."""
    rows = iris_rows(150)[[0, 60, 120]]
    header = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [3, 4],
                "datatype": "FP64",
                "parameters": {"binary_data_size": rows.nbytes},
            }
        ],
        "outputs": [
            {"name": "predict", "parameters": {"binary_data": True, "content_type": "str"}}
        ],
    }
    with start(models_dir, tmp_path, "sklearn-pipeline.skops") as iris:
        response = post_binary(
            iris, header, rows.tobytes(), path="/v2/models/sklearn-pipeline/infer"
        )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    # 4-byte little-endian length, then the UTF-8 text of each label.
    labels = (b"0", b"1", b"2")
    assert response.content[length:] == b"".join(struct.pack("<I", 1) + label for label in labels)
    result = triton.InferResult.from_response_body(response.content, header_length=length)
    output = result.get_output("predict")
    assert output["datatype"] == "BYTES"
    assert output["parameters"] == {"content_type": "str", "binary_data_size": 15}
    assert result.as_numpy("predict").tolist() == [b"0", b"1", b"2"]


def test_a_large_binary_body_decoded_in_another_process_gets_the_same_answer(
    models_dir: Path, tmp_path: Path, client: triton.InferenceServerClient
):
    values = breast_cancer_rows(200).astype(np.float32)  # 24 kB, over the limit below
    expected = client.infer(MODEL, [tensor(values, "FP32")]).as_numpy("predict_proba")
    with start(models_dir, tmp_path, "xgb-classifier.ubj", "--large-body-bytes", "4096") as other:
        large = triton.InferenceServerClient(other.url.removeprefix("http://"))
        result = large.infer(MODEL, [tensor(values, "FP32")])
        large.close()
    np.testing.assert_array_equal(result.as_numpy("predict_proba"), expected)


def test_tritonclient_reports_a_refusal_with_its_status_and_message(
    client: triton.InferenceServerClient,
):
    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, [tensor(ROWS[:, :29].astype(np.float32), "FP32")])
    assert refused.value.status() == "422"
    assert "the model expects 30 features per row, got shape [4, 29]" in refused.value.message()


def test_a_compressed_request_is_refused_with_advice(client: triton.InferenceServerClient):
    with pytest.raises(InferenceServerException) as refused:
        client.infer(
            MODEL, [tensor(ROWS.astype(np.float32), "FP32")], request_compression_algorithm="gzip"
        )
    assert refused.value.status() == "415"
    assert "Content-Encoding 'gzip' is not supported" in refused.value.message()


# Bad binary requests, written by hand as a broken client would send them.

ONE_ROW = ROWS[:1].astype(np.float32)


def post_binary(
    server: ServerProcess,
    header: Any,
    payload: bytes,
    header_length: str | None = None,
    path: str = INFER,
) -> httpx.Response:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = str(len(text)) if header_length is None else header_length
    return httpx.post(
        f"{server.url}{path}",
        content=text + payload,
        headers={"Inference-Header-Content-Length": length},
        timeout=10,
    )


def binary_input(**changes: Any) -> dict[str, Any]:
    given = {
        "name": "input-0",
        "shape": [1, 30],
        "datatype": "FP32",
        "parameters": {"binary_data_size": ONE_ROW.nbytes},
    }
    return {"inputs": [{**given, **changes}]}


def bool_row(byte: int) -> bytes:
    return bytes([0, 1] * 14 + [1, byte])


BYTES_ROW = b"".join(struct.pack("<I", 1) + b"a" for _ in range(30))

BAD_BINARY: dict[str, tuple[Any, bytes, str | None, int, str]] = {
    "header length larger than the body": (
        binary_input(),
        ONE_ROW.tobytes(),
        "99999",
        400,
        "Inference-Header-Content-Length is 99999, but the body has only",
    ),
    "header length not a number": (
        binary_input(),
        ONE_ROW.tobytes(),
        "12a",
        400,
        "Inference-Header-Content-Length must be the JSON header's length in bytes, got '12a'",
    ),
    "header not JSON": (
        b"{inputs: nope}",
        ONE_ROW.tobytes(),
        None,
        400,
        "the JSON header (the first 14 bytes of the body, as Inference-Header-Content-Length"
        " says): malformed JSON",
    ),
    "header length cutting the JSON short": (
        binary_input(),
        ONE_ROW.tobytes(),
        "20",
        400,
        "the JSON header (the first 20 bytes of the body",
    ),
    "truncated binary payload": (
        binary_input(),
        ONE_ROW.tobytes()[:100],
        None,
        400,
        "input 'input-0': binary data cut short: its 120 bytes start at byte 0 of the 100"
        " bytes after the JSON header",
    ),
    "bytes left over after the inputs": (
        binary_input(),
        ONE_ROW.tobytes() + b"\0" * 8,
        None,
        400,
        "the body has 128 bytes after the JSON header, but the inputs' binary_data_size add"
        " up to 120",
    ),
    "binary_data_size not shape times datatype": (
        binary_input(parameters={"binary_data_size": 116}),
        ONE_ROW.tobytes()[:116],
        None,
        400,
        "input 'input-0': binary data of 116 bytes does not fit shape [1, 30] of FP32, which"
        " takes 120 bytes (30 x 4)",
    ),
    "binary_data_size of another datatype": (
        binary_input(datatype="FP64"),
        ONE_ROW.tobytes(),
        None,
        400,
        "binary data of 120 bytes does not fit shape [1, 30] of FP64, which takes 240 bytes",
    ),
    "binary_data_size negative": (
        binary_input(parameters={"binary_data_size": -4}),
        b"",
        None,
        400,
        "parameters.binary_data_size must be a byte count (an integer >= 0), got -4",
    ),
    "binary_data_size not a number": (
        binary_input(parameters={"binary_data_size": "120"}),
        ONE_ROW.tobytes(),
        None,
        400,
        "parameters.binary_data_size must be a byte count (an integer >= 0), got '120'",
    ),
    "both data and binary_data_size": (
        binary_input(data=ONE_ROW.tolist()),
        ONE_ROW.tobytes(),
        None,
        400,
        "input 'input-0' has both data and parameters.binary_data_size; send one",
    ),
    "neither data nor binary_data_size": (
        binary_input(parameters=None),
        b"",
        None,
        400,
        "input 'input-0' has no data: give data, or parameters.binary_data_size",
    ),
    "a BOOL byte other than 0 or 1": (
        binary_input(datatype="BOOL", parameters={"binary_data_size": 30}),
        bool_row(2),
        None,
        400,
        "a BOOL element is one byte, 0 or 1; byte 29 is 2",
    ),
    "unknown datatype": (
        binary_input(datatype="FP8"),
        ONE_ROW.tobytes(),
        None,
        400,
        "input 'input-0': unknown datatype 'FP8'; supported: BOOL, INT8,",
    ),
    "BYTES element cut short": (
        binary_input(datatype="BYTES", parameters={"binary_data_size": 7}),
        struct.pack("<I", 5) + b"abc",
        None,
        400,
        "BYTES element 0 says 5 bytes, but only 3 remain of the tensor's binary data",
    ),
    "binary_data_output not a boolean": (
        {**binary_input(), "parameters": {"binary_data_output": "yes"}},
        ONE_ROW.tobytes(),
        None,
        400,
        "request: parameters.binary_data_output must be true or false, got 'yes'",
    ),
    "classification extension": (
        {
            **binary_input(),
            "outputs": [{"name": "predict_proba", "parameters": {"classification": 2}}],
        },
        ONE_ROW.tobytes(),
        None,
        400,
        "the classification extension (parameters.classification) is not supported",
    ),
    "V1 with binary data": (
        binary_input(),
        ONE_ROW.tobytes(),
        None,
        400,
        "the binary tensor data extension is part of the V2 protocol only",
    ),
    # 422: well-formed binary requests that this model cannot take.
    "wrong feature count": (
        binary_input(shape=[1, 29], parameters={"binary_data_size": 116}),
        ONE_ROW.tobytes()[:116],
        None,
        422,
        "input 'input-0': the model expects 30 features per row, got shape [1, 29]",
    ),
    "BYTES input": (
        binary_input(datatype="BYTES", parameters={"binary_data_size": len(BYTES_ROW)}),
        BYTES_ROW,
        None,
        422,
        "input 'input-0': datatype BYTES is not supported",
    ),
    "unknown output": (
        {**binary_input(), "outputs": [{"name": "margin", "parameters": {"binary_data": True}}]},
        ONE_ROW.tobytes(),
        None,
        422,
        "unknown output 'margin'; this model has: predict, predict_proba",
    ),
    "content_type the model cannot take": (
        {**binary_input(), "parameters": {"content_type": "pd"}},
        ONE_ROW.tobytes(),
        None,
        422,
        "request: content_type 'pd' is not supported",
    ),
    "infinity in binary data": (
        binary_input(),
        np.full((1, 30), np.inf, np.float32).tobytes(),
        None,
        422,
        "input 'input-0': row 0, column 0 is inf",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BINARY))
def test_a_bad_binary_request_gets_a_4xx_saying_what_is_wrong(server: ServerProcess, case: str):
    header, payload, header_length, status, message = BAD_BINARY[case]
    path = f"/v1/models/{MODEL}:predict" if case.startswith("V1") else INFER
    response = post_binary(server, header, payload, header_length, path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]


def test_bad_binary_requests_are_counted_as_client_errors_and_the_server_serves_on(
    server: ServerProcess, client: triton.InferenceServerClient
):
    post_binary(server, binary_input(), ONE_ROW.tobytes()[:10])
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert 'code="400"' in metrics
    assert 'outcome="server_error"' not in metrics
    assert client.infer(MODEL, [tensor(ONE_ROW, "FP32")]).as_numpy("predict").shape == (1,)
