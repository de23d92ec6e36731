"""The V2 protocol over gRPC, against the real server process: Triton's gRPC client as a
user runs it (raw contents), and a plain grpcio client with typed contents and requests
that are wrong in every way, each answered with the gRPC status of its HTTP status and
REST's message, never INTERNAL; counted with protocol="grpc" and the HTTP status."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as triton
import xgboost
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from modelserver.protos import open_inference_pb2 as pb
from tests.server.data import breast_cancer_rows, iris_rows
from tests.server.grpc_client import V2Client, raw_request, status_of, typed_request, v2_client
from tests.server.helpers import v2_body
from tests.server.server_process import ServerProcess, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MODEL = "xgb-classifier"
ROWS = breast_cancer_rows(4)
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT


def start(models_dir: Path, tmp_path: Path, model: str, *extra: str):
    args = ["--model-uri", str(models_dir / model), "--cache-dir", str(tmp_path / "cache")]
    if model.endswith(".skops"):
        args += ["--model-format", "sklearn"]
    return running_server([*args, *extra], tmp_path)


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start(models_dir, tmp_path_factory.mktemp("grpc-server"), "xgb-classifier.ubj") as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(server.grpc_target)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def plain(server: ServerProcess) -> Iterator[V2Client]:
    with v2_client(server.grpc_target) as connection:
        yield connection


@pytest.fixture(scope="module")
def booster(models_dir: Path) -> xgboost.Booster:
    return xgboost.Booster(model_file=models_dir / "xgb-classifier.ubj")


def positive_probability(booster: xgboost.Booster, rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return np.asarray(booster.inplace_predict(rows.astype(np.float32)))


def tensor(values: npt.NDArray[Any], datatype: str) -> triton.InferInput:
    given = triton.InferInput("input-0", list(values.shape), datatype)
    given.set_data_from_numpy(values)
    return given


def counted(server: ServerProcess, name: str, **labels: str) -> float:
    """The sum of a metric's samples that have these labels."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def grpc_requests(server: ServerProcess, code: str) -> float:
    return counted(server, "modelserver_requests_total", protocol="grpc", code=code)


# --- health and metadata ------------------------------------------------------------------


def test_health_and_readiness_through_tritonclient(client: triton.InferenceServerClient):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version="1")


def test_readiness_of_another_model_or_version_is_not_found(client: triton.InferenceServerClient):
    with pytest.raises(InferenceServerException) as unknown:
        client.is_model_ready("fraud")
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    assert unknown.value.message() == "model 'fraud' not found; this server serves 'xgb-classifier'"
    with pytest.raises(InferenceServerException) as version:
        client.is_model_ready(MODEL, model_version="7")
    assert version.value.status() == "StatusCode.NOT_FOUND"
    assert "has no version '7'" in version.value.message()


def test_metadata_over_grpc_is_rests_without_its_parameters(
    server: ServerProcess, client: triton.InferenceServerClient
):
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "modelserver"
    assert metadata["extensions"] == ["binary_tensor_data"]
    over_grpc = client.get_model_metadata(MODEL, as_json=True)
    assert client.get_model_metadata(MODEL, model_version="1", as_json=True) == over_grpc
    over_rest = httpx.get(f"{server.url}/v2/models/{MODEL}", timeout=5).json()
    del over_rest["parameters"]  # the gRPC message has no field for them
    for tensors in ("inputs", "outputs"):
        for described in over_grpc[tensors]:
            described["shape"] = [int(size) for size in described["shape"]]  # int64 as text
    assert over_grpc == over_rest


# --- inference: raw contents (tritonclient) -----------------------------------------------


def test_tritonclient_gets_xgboosts_predictions_as_raw_contents(
    client: triton.InferenceServerClient, booster: xgboost.Booster
):
    values = ROWS.astype(np.float32)
    result = client.infer(MODEL, [tensor(values, "FP32")], request_id="r-1")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (MODEL, "1", "r-1")
    assert len(response.raw_output_contents) == 2
    positive = positive_probability(booster, values)
    probabilities = result.as_numpy("predict_proba")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (4, 2)
    np.testing.assert_allclose(probabilities[:, 1], positive, rtol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("predict"), (positive > 0.5).astype(np.int64))
    parameters = {o.name: o.parameters["content_type"].string_param for o in response.outputs}
    assert parameters == {"predict": "np", "predict_proba": "np"}


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


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_as_raw_contents_predicts_what_xgboost_does_on_its_values(
    client: triton.InferenceServerClient, booster: xgboost.Booster, datatype: str
):
    values = DATATYPES[datatype](ROWS)
    result = client.infer(MODEL, [tensor(values, datatype)])
    expected = positive_probability(booster, values.astype(np.float32))
    np.testing.assert_allclose(result.as_numpy("predict_proba")[:, 1], expected, rtol=1e-6)


def test_outputs_are_selected_as_asked(client: triton.InferenceServerClient):
    values = ROWS.astype(np.float32)
    only = [triton.InferRequestedOutput("predict_proba")]
    result = client.infer(MODEL, [tensor(values, "FP32")], outputs=only)
    assert [output.name for output in result.get_response().outputs] == ["predict_proba"]
    assert result.as_numpy("predict") is None


# --- inference: typed contents (a plain grpcio client) -------------------------------------

TYPED_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


@pytest.mark.parametrize("datatype", TYPED_FIELDS)
def test_every_datatype_as_typed_contents_gets_the_answer_of_its_raw_contents(
    plain: V2Client, datatype: str
):
    values = DATATYPES[datatype](ROWS)
    typed = plain.infer(typed_request(MODEL, values, datatype, TYPED_FIELDS[datatype]))
    raw = plain.infer(raw_request(MODEL, values, datatype))

    assert typed.raw_output_contents == [], "typed contents in, typed contents out"
    probabilities = np.frombuffer(raw.raw_output_contents[1], dtype="<f4")
    np.testing.assert_array_equal(
        np.asarray(typed.outputs[1].contents.fp32_contents, dtype=np.float32), probabilities
    )
    assert (
        list(typed.outputs[0].contents.int64_contents)
        == np.frombuffer(raw.raw_output_contents[0], dtype="<i8").tolist()
    )
    assert [(o.name, o.datatype, list(o.shape)) for o in typed.outputs] == [
        ("predict", "INT64", [4]),
        ("predict_proba", "FP32", [4, 2]),
    ]


def test_the_same_rows_get_the_same_answer_over_grpc_and_rest(
    plain: V2Client, server: ServerProcess
):
    rows = breast_cancer_rows(20).astype(np.float32)
    over_grpc = plain.infer(raw_request(MODEL, rows, "FP32"))
    over_rest = httpx.post(
        f"{server.url}/v2/models/{MODEL}/infer", json=v2_body(rows.tolist()), timeout=10
    ).json()
    rest_probabilities = np.asarray(over_rest["outputs"][1]["data"], dtype=np.float32)
    grpc_probabilities = np.frombuffer(over_grpc.raw_output_contents[1], dtype="<f4")
    np.testing.assert_array_equal(grpc_probabilities, rest_probabilities)


def test_outputs_as_strings_come_as_bytes_contents(plain: V2Client):
    request = typed_request(MODEL, ROWS, "FP64", "fp64_contents")
    output = request.outputs.add(name="predict")
    output.parameters["content_type"].string_param = "str"
    (answer,) = plain.infer(request).outputs
    assert (answer.name, answer.datatype) == ("predict", "BYTES")
    assert answer.parameters["content_type"].string_param == "str"
    assert set(answer.contents.bytes_contents) <= {b"0", b"1"}
    assert len(answer.contents.bytes_contents) == 4


def test_string_outputs_come_as_length_prefixed_raw_bytes_and_as_bytes_contents(
    models_dir: Path, tmp_path: Path
):
    rows = iris_rows(150)[[0, 60, 120]]
    raw = raw_request("sklearn-pipeline", rows, "FP64")
    typed = typed_request("sklearn-pipeline", rows, "FP64", "fp64_contents")
    for request in (raw, typed):
        request.outputs.add(name="predict").parameters["content_type"].string_param = "str"
    with (
        start(models_dir, tmp_path, "sklearn-pipeline.skops") as iris,
        v2_client(iris.grpc_target) as connection,
    ):
        raw_answer, typed_answer = connection.infer(raw), connection.infer(typed)
    labels = [b"0", b"1", b"2"]
    for answer in (raw_answer, typed_answer):
        (output,) = answer.outputs
        assert (output.datatype, list(output.shape)) == ("BYTES", [3])
        assert output.parameters["content_type"].string_param == "str"
    # Raw: a 4-byte little-endian length, then the UTF-8 text of each label.
    assert raw_answer.raw_output_contents == [
        b"".join(len(label).to_bytes(4, "little") + label for label in labels)
    ]
    assert list(typed_answer.outputs[0].contents.bytes_contents) == labels


def test_the_request_id_is_echoed_and_the_version_checked(plain: V2Client):
    request = typed_request(MODEL, ROWS, "FP64", "fp64_contents", id="abc", model_version="1")
    assert plain.infer(request).id == "abc"


# --- refusals --------------------------------------------------------------------------


def bad_requests() -> dict[str, tuple[bytes, grpc.StatusCode, str, str]]:
    """Each bad request: its serialized message, its status, a part of the answer's
    message and the HTTP status that the metrics record."""
    good = raw_request(MODEL, ROWS.astype(np.float32), "FP32")
    cases: dict[str, tuple[bytes, grpc.StatusCode, str, str]] = {}

    def case(
        name: str,
        request: pb.ModelInferRequest | bytes,
        status: grpc.StatusCode,
        says: str,
        code: str,
    ) -> None:
        body = request if isinstance(request, bytes) else request.SerializeToString()
        cases[name] = (body, status, says, code)

    case(
        "not a protobuf message",
        b"\xff\xff\xff",
        INVALID_ARGUMENT,
        "the request is not a serialized inference.ModelInferRequest",
        "400",
    )
    case(
        "a message cut short",
        good.SerializeToString()[:-10],
        INVALID_ARGUMENT,
        "the request is not a serialized inference.ModelInferRequest",
        "400",
    )
    truncated = raw_request(MODEL, ROWS[:1].astype(np.float32), "FP32")
    truncated.raw_input_contents[0] = truncated.raw_input_contents[0][:-4]
    case(
        "raw contents shorter than the shape",
        truncated,
        INVALID_ARGUMENT,
        "input 'input-0': binary data of 116 bytes does not fit shape [1, 30] of FP32,"
        " which takes 120 bytes (30 x 4)",
        "400",
    )
    extra = raw_request(MODEL, ROWS.astype(np.float32), "FP32")
    extra.raw_input_contents.append(b"\x00" * 8)
    case(
        "more raw contents than inputs",
        extra,
        INVALID_ARGUMENT,
        "raw_input_contents has 2 entries for 1 inputs; send one per input",
        "400",
    )
    both = raw_request(MODEL, ROWS.astype(np.float32), "FP32")
    both.inputs[0].contents.fp32_contents.extend([1.0])
    case(
        "contents and raw contents",
        both,
        INVALID_ARGUMENT,
        "input 'input-0' has both contents and raw_input_contents; send one",
        "400",
    )
    case(
        "typed values in another datatype's field",
        typed_request(MODEL, np.rint(ROWS).astype(np.int32), "FP32", "int_contents"),
        INVALID_ARGUMENT,
        "input 'input-0': datatype FP32 takes its values in contents.fp32_contents,"
        " got contents.int_contents",
        "400",
    )
    short = typed_request(MODEL, ROWS[:1], "FP64", "fp64_contents")
    del short.inputs[0].contents.fp64_contents[-1]
    case(
        "fewer typed values than the shape",
        short,
        INVALID_ARGUMENT,
        "input 'input-0': shape [1, 30] needs 30 values, data has 29",
        "400",
    )
    case(
        "an unknown datatype",
        typed_request(MODEL, ROWS, "FLOAT64", "fp64_contents"),
        INVALID_ARGUMENT,
        "input 'input-0': unknown datatype 'FLOAT64'; supported: BOOL, INT8",
        "400",
    )
    case(
        "FP16 as typed contents",
        typed_request(MODEL, ROWS, "FP16", "fp32_contents"),
        INVALID_ARGUMENT,
        "input 'input-0': datatype FP16 has no field in contents; send its values in"
        " raw_input_contents",
        "400",
    )
    strings = pb.ModelInferRequest(model_name=MODEL)
    strings.inputs.add(name="input-0", datatype="BYTES", shape=[1, 30]).contents.bytes_contents[
        :
    ] = [b"a"] * 30
    case(
        "strings",
        strings,
        INVALID_ARGUMENT,
        "input 'input-0': datatype BYTES is not supported",
        "422",
    )
    out_of_range = typed_request(MODEL, np.full((1, 30), 300, np.int32), "INT8", "int_contents")
    case(
        "an INT8 value out of its range",
        out_of_range,
        INVALID_ARGUMENT,
        "input 'input-0': datatype INT8 takes integers from -128 to 127, got 300 at row 0,"
        " column 0",
        "400",
    )
    negative = raw_request(MODEL, ROWS.astype(np.float32), "FP32")
    negative.inputs[0].shape[0] = -4
    case(
        "a negative dimension",
        negative,
        INVALID_ARGUMENT,
        "input 'input-0': shape [-4, 30] has a negative dimension",
        "400",
    )
    case(
        "another feature count",
        raw_request(MODEL, ROWS[:, :29].astype(np.float32), "FP32"),
        INVALID_ARGUMENT,
        "input 'input-0': the model expects 30 features per row, got shape [4, 29]",
        "422",
    )
    two = raw_request(MODEL, ROWS.astype(np.float32), "FP32")
    two.inputs.add(name="age", datatype="FP32", shape=[4, 1])
    two.raw_input_contents.append(b"\x00" * 16)
    case(
        "an input the model does not have",
        two,
        INVALID_ARGUMENT,
        "expected exactly 1 input tensor of shape [rows, 30], got 2 inputs",
        "422",
    )
    unknown_output = raw_request(MODEL, ROWS.astype(np.float32), "FP32")
    unknown_output.outputs.add(name="margin")
    case(
        "an unknown output",
        unknown_output,
        INVALID_ARGUMENT,
        "unknown output 'margin'; this model has: predict, predict_proba",
        "422",
    )
    infinite = ROWS[:1].astype(np.float32)
    infinite[0, 2] = np.inf
    case(
        "an infinite value",
        raw_request(MODEL, infinite, "FP32"),
        INVALID_ARGUMENT,
        "input 'input-0': row 0, column 2 is inf, out of range for float32 or infinite",
        "422",
    )
    pandas = raw_request(MODEL, ROWS.astype(np.float32), "FP32")
    pandas.parameters["content_type"].string_param = "pd"
    case(
        "a content type this model cannot take",
        pandas,
        INVALID_ARGUMENT,
        "request: content_type 'pd' is not supported",
        "422",
    )
    case(
        "another model",
        raw_request("fraud", ROWS.astype(np.float32), "FP32"),
        grpc.StatusCode.NOT_FOUND,
        "model 'fraud' not found; this server serves 'xgb-classifier'",
        "404",
    )
    case(
        "another version",
        raw_request(MODEL, ROWS.astype(np.float32), "FP32", model_version="7"),
        grpc.StatusCode.NOT_FOUND,
        "model 'xgb-classifier' has no version '7'; served version: '1'",
        "404",
    )
    return cases


BAD_REQUESTS = bad_requests()


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_a_bad_request_gets_the_status_of_its_http_code_and_says_what_is_wrong(
    plain: V2Client, server: ServerProcess, case: str
):
    body, status, says, code = BAD_REQUESTS[case]
    before = grpc_requests(server, code)
    with pytest.raises(grpc.RpcError) as refused:
        plain.infer_bytes(body)
    got_status, message = status_of(refused.value)
    assert got_status == status
    assert says in message
    assert grpc_requests(server, code) == before + 1


def test_refusals_are_counted_by_outcome_and_the_server_serves_on(
    plain: V2Client, server: ServerProcess
):
    def outcomes() -> dict[str, float]:
        return {
            outcome: counted(server, "modelserver_requests_total", protocol="grpc", outcome=outcome)
            for outcome in ("ok", "client_error", "rejected", "server_error")
        }

    before = outcomes()
    for body, *_ in BAD_REQUESTS.values():
        with pytest.raises(grpc.RpcError):
            plain.infer_bytes(body)
    plain.infer(raw_request(MODEL, ROWS.astype(np.float32), "FP32"))
    after = outcomes()

    codes = [code for *_, code in BAD_REQUESTS.values()]
    assert after["rejected"] - before["rejected"] == codes.count("422")
    assert after["client_error"] - before["client_error"] == len(codes) - codes.count("422")
    assert after["ok"] - before["ok"] == 1
    assert after["server_error"] == before["server_error"] == 0
    timed = counted(
        server, "modelserver_request_duration_seconds_count", protocol="grpc", endpoint="v2_infer"
    )
    assert timed == counted(
        server, "modelserver_requests_total", protocol="grpc", outcome="ok"
    ) + counted(server, "modelserver_requests_total", protocol="grpc", outcome="rejected")


def test_tritonclient_reports_a_refusal_with_its_status_and_message(
    client: triton.InferenceServerClient,
):
    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, [tensor(ROWS[:, :29].astype(np.float32), "FP32")])
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert refused.value.message() == (
        "input 'input-0': the model expects 30 features per row, got shape [4, 29]"
    )


def test_an_input_name_the_metadata_does_not_list_is_taken_as_over_rest(plain: V2Client):
    """The model takes one tensor whatever its name, over REST and gRPC alike."""
    request = raw_request(MODEL, ROWS.astype(np.float32), "FP32")
    request.inputs[0].name = "features"
    assert len(plain.infer(request).outputs) == 2
