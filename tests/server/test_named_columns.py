"""Named columns and strings: models fitted on a DataFrame (a scikit-learn pipeline with a
ColumnTransformer and a text column, XGBoost with a categorical feature) served to
tritonclient (HTTP with binary data, and gRPC), a plain grpcio client and JSON, one input
per column; every bad table answered with a 4xx or INVALID_ARGUMENT that says why."""

import json
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import skops.io
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import xgboost
from prometheus_client.parser import text_string_to_metric_families
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelserver.protos import open_inference_pb2 as pb
from tests.server.conftest import Serve
from tests.server.data import diabetes_table, iris_rows
from tests.server.grpc_client import status_of, v2_client
from tests.server.server_process import ServerProcess, run_to_exit, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PIPELINE = "sklearn-categorical"
XGB = "xgb-categorical"
TABLE = diabetes_table(8)
TEXT = "sex"
_LENGTH = struct.Struct("<I")


def digest(path: Path) -> str:
    return path.with_name(path.name + ".sha256").read_text().strip()


def start(models_dir: Path, tmp_path: Path, artifact: str, *extra: str):
    path = models_dir / artifact
    args = ["--model-uri", str(path), "--model-sha256", digest(path), "--cache-dir", str(tmp_path)]
    if artifact.endswith(".skops"):
        args += ["--model-format", "sklearn"]
    return running_server([*args, *extra], tmp_path)


@pytest.fixture(scope="module")
def pipeline_server(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("pipeline-server")
    with start(models_dir, tmp_path, f"{PIPELINE}.skops") as server:
        yield server


@pytest.fixture(scope="module")
def xgb_server(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("xgb-server")
    with start(models_dir, tmp_path, f"{XGB}.ubj") as server:
        yield server


@pytest.fixture(scope="module")
def pipeline_proba(models_dir: Path) -> Callable[[pd.DataFrame], npt.NDArray[Any]]:
    """The pipeline's own predict_proba on a DataFrame."""
    path = models_dir / f"{PIPELINE}.skops"
    pipeline = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    return lambda table: np.asarray(pipeline.predict_proba(table))


@pytest.fixture(scope="module")
def xgb_positive(models_dir: Path) -> Callable[[pd.DataFrame], npt.NDArray[Any]]:
    """XGBoost's own positive-class probability on a DataFrame with a category column."""
    booster = xgboost.Booster(model_file=models_dir / f"{XGB}.ubj")
    return lambda table: np.asarray(
        booster.inplace_predict(table.assign(**{TEXT: table[TEXT].astype("category")}))
    )


def json_body(table: pd.DataFrame, **request: Any) -> dict[str, Any]:
    """One JSON input per column, [rows, 1]: numbers FP64, the text column BYTES."""
    inputs = [
        {
            "name": name,
            "shape": [len(table), 1],
            "datatype": "BYTES" if name == TEXT else "FP64",
            "data": table[name].tolist(),
        }
        for name in table.columns
    ]
    return {"inputs": inputs, **request}


def column_array(table: pd.DataFrame, name: str) -> npt.NDArray[Any]:
    if name == TEXT:
        return np.asarray([[value.encode()] for value in table[name]], dtype=np.object_)
    return table[[name]].to_numpy(dtype=np.float64)


def http_inputs(table: pd.DataFrame) -> list[triton_http.InferInput]:
    inputs = []
    for name in table.columns:
        values = column_array(table, name)
        given = triton_http.InferInput(
            name, list(values.shape), "BYTES" if name == TEXT else "FP64"
        )
        given.set_data_from_numpy(values)  # binary data, as the client defaults
        inputs.append(given)
    return inputs


def grpc_inputs(table: pd.DataFrame) -> list[triton_grpc.InferInput]:
    inputs = []
    for name in table.columns:
        values = column_array(table, name)
        given = triton_grpc.InferInput(
            name, list(values.shape), "BYTES" if name == TEXT else "FP64"
        )
        given.set_data_from_numpy(values)  # raw_input_contents
        inputs.append(given)
    return inputs


def typed_request(model: str, table: pd.DataFrame) -> pb.ModelInferRequest:
    """One input per column in typed contents: fp64_contents, and bytes_contents for text."""
    request = pb.ModelInferRequest(model_name=model)
    request.parameters["content_type"].string_param = "pd"
    for name in table.columns:
        tensor = request.inputs.add(
            name=name, datatype="BYTES" if name == TEXT else "FP64", shape=[len(table)]
        )
        if name == TEXT:
            tensor.contents.bytes_contents.extend(value.encode() for value in table[name])
        else:
            tensor.contents.fp64_contents.extend(table[name].tolist())
    return request


def infer(server: ServerProcess, model: str, body: dict[str, Any]) -> httpx.Response:
    # json.dumps writes NaN as Python clients do (httpx's json= refuses it).
    return httpx.post(f"{server.url}/v2/models/{model}/infer", content=json.dumps(body), timeout=30)


def probabilities(response: httpx.Response) -> npt.NDArray[Any]:
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    proba = outputs["predict_proba"]
    return np.asarray(proba["data"]).reshape(proba["shape"])


def test_named_columns_as_json_get_the_pipelines_own_predictions(
    pipeline_server: ServerProcess, pipeline_proba: Callable[[pd.DataFrame], Any]
):
    expected = pipeline_proba(TABLE)
    as_pandas = infer(
        pipeline_server, PIPELINE, json_body(TABLE, parameters={"content_type": "pd"})
    )
    # Without content_type, in another order, flat [rows] columns: the same table.
    shuffled = json_body(TABLE[list(reversed(TABLE.columns))])
    for column in shuffled["inputs"]:
        column["shape"] = [len(TABLE)]

    np.testing.assert_allclose(probabilities(as_pandas), expected, rtol=1e-12)
    np.testing.assert_allclose(
        probabilities(infer(pipeline_server, PIPELINE, shuffled)), expected, rtol=1e-12
    )


def test_tritonclient_binary_columns_get_the_pipelines_own_predictions(
    pipeline_server: ServerProcess, pipeline_proba: Callable[[pd.DataFrame], Any]
):
    client = triton_http.InferenceServerClient(pipeline_server.url.removeprefix("http://"))
    try:
        result = client.infer(PIPELINE, http_inputs(TABLE), parameters={"content_type": "pd"})
    finally:
        client.close()

    np.testing.assert_allclose(result.as_numpy("predict_proba"), pipeline_proba(TABLE), rtol=1e-12)
    np.testing.assert_array_equal(result.as_numpy("predict"), pipeline_proba(TABLE).argmax(axis=1))


def test_tritonclient_grpc_columns_get_the_pipelines_own_predictions(
    pipeline_server: ServerProcess, pipeline_proba: Callable[[pd.DataFrame], Any]
):
    client = triton_grpc.InferenceServerClient(pipeline_server.grpc_target)
    try:
        result = client.infer(PIPELINE, grpc_inputs(TABLE))
    finally:
        client.close()

    np.testing.assert_allclose(result.as_numpy("predict_proba"), pipeline_proba(TABLE), rtol=1e-12)


def test_plain_grpcio_typed_contents_get_the_pipelines_own_predictions(
    pipeline_server: ServerProcess, pipeline_proba: Callable[[pd.DataFrame], Any]
):
    with v2_client(pipeline_server.grpc_target) as plain:
        response = plain.infer(typed_request(PIPELINE, TABLE))

    outputs = {output.name: output for output in response.outputs}
    proba = np.asarray(outputs["predict_proba"].contents.fp64_contents).reshape(len(TABLE), 2)
    np.testing.assert_allclose(proba, pipeline_proba(TABLE), rtol=1e-12)


def test_xgboost_categories_over_json_binary_and_grpc_get_xgboosts_predictions(
    xgb_server: ServerProcess, xgb_positive: Callable[[pd.DataFrame], Any]
):
    expected = xgb_positive(TABLE)
    http = triton_http.InferenceServerClient(xgb_server.url.removeprefix("http://"))
    rpc = triton_grpc.InferenceServerClient(xgb_server.grpc_target)
    try:
        binary = http.infer(XGB, http_inputs(TABLE)).as_numpy("predict_proba")
        raw = rpc.infer(XGB, grpc_inputs(TABLE)).as_numpy("predict_proba")
    finally:
        http.close()
        rpc.close()
    as_json = probabilities(infer(xgb_server, XGB, json_body(TABLE)))

    for answer in (binary, raw, as_json):
        np.testing.assert_allclose(answer[:, 1], expected, rtol=1e-6)


def test_metadata_lists_the_columns_with_their_datatypes(
    pipeline_server: ServerProcess, xgb_server: ServerProcess
):
    pipeline = httpx.get(f"{pipeline_server.url}/v2/models/{PIPELINE}", timeout=5).json()
    xgb = httpx.get(f"{xgb_server.url}/v2/models/{XGB}", timeout=5).json()
    with v2_client(pipeline_server.grpc_target) as plain:
        over_grpc = plain.call(
            "ModelMetadata", pb.ModelMetadataRequest(name=PIPELINE), pb.ModelMetadataResponse
        )

    expected_inputs = [
        {"name": name, "datatype": "BYTES" if name == TEXT else "FP64", "shape": [-1, 1]}
        for name in TABLE.columns
    ]
    assert pipeline["inputs"] == expected_inputs
    assert pipeline["parameters"]["content_type"] == "pd"
    assert pipeline["parameters"]["columns"][1] == {
        "name": TEXT,
        "datatype": "BYTES",
        "categories": ["female", "male"],
    }
    assert [(t.name, t.datatype, list(t.shape)) for t in over_grpc.inputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in expected_inputs
    ]
    assert [(t["name"], t["datatype"]) for t in xgb["inputs"]] == [
        (name, "BYTES" if name == TEXT else "FP32") for name in TABLE.columns
    ]
    assert xgb["parameters"]["columns"][1]["categories"] == ["female", "male"]


def with_column(body: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    changed = json.loads(json.dumps(body))
    for column in changed["inputs"]:
        if column["name"] == name:
            column.update(changes)
    return changed


BODY = json_body(TABLE.head(3))
BAD_TABLES: dict[str, tuple[dict[str, Any], int, str]] = {
    "unknown column": (
        {"inputs": [*BODY["inputs"], {**BODY["inputs"][0], "name": "height"}]},
        422,
        "input 'height' is not a column of this model; its columns: age, sex, bmi",
    ),
    "missing column": (
        {"inputs": [c for c in BODY["inputs"] if c["name"] != "bmi"]},
        422,
        "column 'bmi' missing; this model takes one input per column: age, sex, bmi",
    ),
    "numbers for the text column": (
        with_column(BODY, TEXT, datatype="FP64", data=[0.0, 1.0, 0.0]),
        422,
        "input 'sex': column 'sex' holds strings: send it as datatype BYTES, not FP64",
    ),
    "strings for a number column": (
        with_column(BODY, "age", datatype="BYTES", data=["a", "b", "c"]),
        422,
        "input 'age': column 'age' holds numbers: send it with a numeric datatype (FP64, ...)",
    ),
    "columns of different lengths": (
        with_column(BODY, "bmi", shape=[2, 1], data=[0.1, 0.2]),
        400,
        "columns of different lengths: input 'bmi' has 2 rows, input 'age' has 3",
    ),
    "a category the encoder does not know": (
        with_column(BODY, TEXT, data=["male", "other", "female"]),
        422,
        "input 'sex': 'other' at row 1 is not a category of column 'sex' that this model"
        " knows: 'female', 'male'",
    ),
    "numbers as BYTES data": (
        with_column(BODY, TEXT, data=["male", 7, "female"]),
        400,
        "input 'sex': datatype BYTES takes strings, got 7 at row 1",
    ),
    "a column given twice": (
        {"inputs": [*BODY["inputs"], BODY["inputs"][0]]},
        400,
        "input 'age' is given twice; send each column once",
    ),
    "a column of two values per row": (
        with_column(BODY, "age", shape=[3, 2], data=[1, 2, 3, 4, 5, 6]),
        422,
        "input 'age': a column's shape is [rows] or [rows, 1] with rows >= 1, got [3, 2]",
    ),
    "data that do not fit the column's shape": (
        with_column(BODY, "age", data=[0.1, 0.2]),
        400,
        "input 'age': shape needs 3 values, data has 2",
    ),
    "a missing value the pipeline does not take": (
        with_column(BODY, "bmi", data=[0.1, float("nan"), 0.2]),
        422,
        "input 'bmi': row 1, column 0 is NaN (missing value), which this model does not accept",
    ),
    "one tensor of numbers": (
        {"inputs": [{"name": "input-0", "shape": [1, 10], "datatype": "FP64", "data": [0] * 10}]},
        422,
        "input 'input-0': this model takes named columns, some of them strings, which one"
        " tensor of numbers cannot carry; send one input per column (content_type 'pd'): age,",
    ),
    "another content type for a column": (
        with_column(BODY, TEXT, parameters={"content_type": "base64"}),
        422,
        "input 'sex': content_type 'base64' is not supported for a column",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_a_bad_table_is_a_4xx_that_says_what_is_wrong(pipeline_server: ServerProcess, case: str):
    body, status, message = BAD_TABLES[case]

    answer = infer(pipeline_server, PIPELINE, body)

    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


def test_v1_instances_are_refused_for_a_model_of_named_columns(pipeline_server: ServerProcess):
    answer = httpx.post(
        f"{pipeline_server.url}/v1/models/{PIPELINE}:predict",
        json={"instances": [[0.0] * 10]},
        timeout=10,
    )

    assert answer.status_code == 422
    assert "send them to V2 infer, one input per column: age, sex" in answer.json()["error"]


def binary_body(sex_payload: bytes) -> tuple[bytes, dict[str, str]]:
    """Every column as binary data; the text column's bytes as given."""
    rows = TABLE.head(2)
    inputs, payloads = [], []
    for name in rows.columns:
        data = sex_payload if name == TEXT else rows[name].to_numpy("<f8").tobytes()
        datatype = "BYTES" if name == TEXT else "FP64"
        inputs.append(
            {
                "name": name,
                "shape": [2, 1],
                "datatype": datatype,
                "parameters": {"binary_data_size": len(data)},
            }
        )
        payloads.append(data)
    header = json.dumps({"inputs": inputs}).encode()
    return header + b"".join(payloads), {"Inference-Header-Content-Length": str(len(header))}


def length_prefixed(*elements: bytes) -> bytes:
    return b"".join(_LENGTH.pack(len(element)) + element for element in elements)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            length_prefixed(b"male") + b"\x06\x00",
            "input 'sex': BYTES element 1 is cut off: its 4-byte length starts at byte 8 of 10",
        ),
        (
            length_prefixed(b"male") + _LENGTH.pack(10) + b"male",
            "input 'sex': BYTES element 1 says 10 bytes, but only 4 remain",
        ),
        (length_prefixed(b"male", b"\xff\xfe"), "input 'sex': BYTES element 1 is not UTF-8 text"),
    ],
    ids=["length prefix cut short", "element longer than the data", "not UTF-8"],
)
def test_bad_binary_strings_are_400(pipeline_server: ServerProcess, payload: bytes, message: str):
    body, headers = binary_body(payload)

    answer = httpx.post(
        f"{pipeline_server.url}/v2/models/{PIPELINE}/infer",
        content=body,
        headers=headers,
        timeout=10,
    )

    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


def test_binary_strings_that_fit_are_answered(
    pipeline_server: ServerProcess, pipeline_proba: Callable[[pd.DataFrame], Any]
):
    body, headers = binary_body(length_prefixed(*(s.encode() for s in TABLE.head(2)[TEXT])))

    answer = httpx.post(
        f"{pipeline_server.url}/v2/models/{PIPELINE}/infer",
        content=body,
        headers=headers,
        timeout=10,
    )

    np.testing.assert_allclose(probabilities(answer), pipeline_proba(TABLE.head(2)), rtol=1e-12)


def grpc_bad_requests() -> dict[str, tuple[pb.ModelInferRequest, str]]:
    table = TABLE.head(3)
    unknown = typed_request(PIPELINE, table)
    unknown.inputs[0].name = "height"
    missing = typed_request(PIPELINE, table.drop(columns=["bmi"]))
    wrong_type = typed_request(PIPELINE, table)
    text = next(tensor for tensor in wrong_type.inputs if tensor.name == TEXT)
    text.datatype = "FP64"
    text.contents.Clear()
    text.contents.fp64_contents.extend([0.0, 1.0, 0.0])
    uneven = typed_request(PIPELINE, table)
    uneven.inputs[0].shape[:] = [2]
    del uneven.inputs[0].contents.fp64_contents[2:]
    cut = pb.ModelInferRequest(model_name=PIPELINE)
    for name in table.columns:
        cut.inputs.add(name=name, datatype="BYTES" if name == TEXT else "FP64", shape=[3, 1])
        if name == TEXT:
            cut.raw_input_contents.append(length_prefixed(b"male", b"female") + b"\x04\x00")
        else:
            cut.raw_input_contents.append(table[name].to_numpy("<f8").tobytes())
    return {
        "unknown column": (unknown, "input 'height' is not a column of this model"),
        "missing column": (missing, "column 'bmi' missing"),
        "wrong datatype for a column": (wrong_type, "column 'sex' holds strings"),
        "columns of different lengths": (uneven, "columns of different lengths"),
        "BYTES length prefix cut short": (cut, "input 'sex': BYTES element 2 is cut off"),
    }


@pytest.mark.parametrize("case", list(grpc_bad_requests()))
def test_a_bad_table_over_grpc_is_invalid_argument_with_the_message(
    pipeline_server: ServerProcess, case: str
):
    request, message = grpc_bad_requests()[case]

    with v2_client(pipeline_server.grpc_target) as plain, pytest.raises(grpc.RpcError) as failed:
        plain.infer(request)

    code, details = status_of(failed.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details


def test_concurrent_tables_are_each_answered_with_their_own_predictions(
    pipeline_server: ServerProcess, pipeline_proba: Callable[[pd.DataFrame], Any]
):
    table = diabetes_table(200)
    slices = [(start, start + 1 + start % 5) for start in range(0, 190, 3)]

    def answer(bounds: tuple[int, int]) -> tuple[tuple[int, int], npt.NDArray[Any]]:
        rows = table.iloc[bounds[0] : bounds[1]]
        return bounds, probabilities(infer(pipeline_server, PIPELINE, json_body(rows)))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(answer, slices))

    for (start, stop), got in answers:
        np.testing.assert_allclose(got, pipeline_proba(table.iloc[start:stop]), rtol=1e-12)


def test_no_bad_table_made_the_server_fail(pipeline_server: ServerProcess):
    text = httpx.get(f"{pipeline_server.url}/metrics", timeout=5).text
    codes = {
        sample.labels["code"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelserver_requests_total" and sample.value > 0
    }

    assert codes >= {"200", "400", "422"}
    assert not any(code.startswith("5") for code in codes)


def test_a_profile_is_refused_for_a_model_that_takes_a_dataframe(models_dir: Path, tmp_path: Path):
    profile = models_dir / "xgb-classifier.profile.json"
    args = ["--model-uri", str(models_dir / f"{XGB}.ubj"), "--profile-uri", str(profile)]

    code, stderr = run_to_exit([*args, "--cache-dir", str(tmp_path)], tmp_path)

    assert code == 1
    assert "a reference profile is not supported for a model that takes a DataFrame" in stderr


def test_numbers_in_named_columns_are_taken_in_the_models_column_order(
    serve: Serve, tmp_path: Path
):
    """A model fitted on a table of numbers keeps taking one tensor, and takes its named
    columns in any order too."""
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    rows = iris_rows(150)
    fitted = LogisticRegression(max_iter=500).fit(
        pd.DataFrame(rows, columns=names), np.arange(150) // 50
    )
    artifact = tmp_path / "named-iris.skops"
    skops.io.dump(fitted, artifact)
    body = {
        "inputs": [
            {"name": "input-0", "shape": [3, 4], "datatype": "FP64", "data": rows[:3].tolist()}
        ]
    }
    columns = {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {
                "name": name,
                "shape": [3],
                "datatype": "FP64",
                "data": rows[:3, names.index(name)].tolist(),
            }
            for name in reversed(names)
        ],
    }

    with serve(str(artifact)) as client:
        as_tensor = client.post("/v2/models/named-iris/infer", json=body)
        as_columns = client.post("/v2/models/named-iris/infer", json=columns)
        metadata = client.get("/v2/models/named-iris").json()

    assert as_columns.json()["outputs"] == as_tensor.json()["outputs"]
    np.testing.assert_allclose(
        probabilities(as_columns), fitted.predict_proba(pd.DataFrame(rows[:3], columns=names))
    )
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert [column["name"] for column in metadata["parameters"]["columns"]] == names


def test_a_dataframe_model_of_numbers_takes_one_tensor_by_position_too(
    serve: Serve, tmp_path: Path
):
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    rows = iris_rows(150)
    table = pd.DataFrame(rows, columns=names)
    scaled = ColumnTransformer([("scaled", StandardScaler(), names[::-1])])
    fitted = make_pipeline(scaled, LogisticRegression(max_iter=500))
    fitted.fit(table, np.arange(150) // 50)
    artifact = tmp_path / "iris-table.skops"
    skops.io.dump(fitted, artifact)
    tensor = {
        "inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": rows[:3].tolist()}]
    }

    with serve(str(artifact)) as client:
        answer = client.post("/v2/models/iris-table/infer", json=tensor)

    np.testing.assert_allclose(probabilities(answer), fitted.predict_proba(table.head(3)))


def test_several_inputs_to_a_model_without_column_names_are_422(serve: Serve):
    body = {
        "inputs": [
            {"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]},
            {"name": "b", "shape": [1], "datatype": "FP32", "data": [1.0]},
        ]
    }

    with serve("xgb-classifier.ubj") as client:
        answer = client.post("/v2/models/xgb-classifier/infer", json=body)

    assert answer.status_code == 422
    assert answer.json()["error"] == (
        "expected exactly 1 input tensor of shape [rows, 30], got 2 inputs; this model has no"
        " named columns (it was fitted without feature names) to take one input per column"
    )


def test_the_profile_command_refuses_a_model_that_takes_a_dataframe(
    models_dir: Path, tmp_path: Path
):
    data = tmp_path / "table.csv"
    diabetes_table(50).to_csv(data, index=False)
    args = ["profile", "--model", str(models_dir / f"{PIPELINE}.skops"), "--data", str(data)]

    code, stderr = run_to_exit([*args, "--out", str(tmp_path / "profile.json")], tmp_path)

    assert code == 1
    assert "the model takes a DataFrame" in stderr
    assert not (tmp_path / "profile.json").exists()


def test_a_large_table_decoded_in_another_process_gets_the_same_answer(
    serve: Serve, pipeline_proba: Callable[[pd.DataFrame], Any]
):
    table = diabetes_table(400)
    body = json.dumps(json_body(table))
    assert len(body) > 4096

    with serve(f"{PIPELINE}.skops", large_body_bytes=4096) as client:
        answer = client.post(f"/v2/models/{PIPELINE}/infer", content=body)

    np.testing.assert_allclose(probabilities(answer), pipeline_proba(table), rtol=1e-12)
