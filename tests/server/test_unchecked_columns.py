"""Columns whose kind the server cannot read from a scikit-learn pipeline (passed through,
or given to a FunctionTransformer) reach the model as sent: a value the model refuses
there is the client's to fix, a 422 with scikit-learn's message (outcome rejected) over
REST and INVALID_ARGUMENT over gRPC; a failure of the model's own stays a 500."""

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import joblib
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import skops.io
from prometheus_client.parser import text_string_to_metric_families
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from modelserver.protos import open_inference_pb2 as pb
from tests.server.conftest import Serve
from tests.server.data import iris_rows
from tests.server.grpc_client import status_of, v2_client
from tests.server.server_process import ServerProcess, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MODEL = "unchecked"
NAMES = ["scaled", "logged", "passed"]
"""A number column (scaled), and two the server cannot check: log1p'd, passed through."""
ROWS = iris_rows(150)[:, :3]
UNKNOWN_KIND = (
    "(the server cannot tell what such a column holds, passed through or given to a"
    " FunctionTransformer, so its values reach the model as sent)"
)


def fitted(scaler: Any) -> Pipeline:
    columns = ColumnTransformer(
        [
            ("scaled", scaler, ["scaled"]),
            ("logged", FunctionTransformer(np.log1p), ["logged"]),
            ("passed", "passthrough", ["passed"]),
        ]
    )
    pipeline = make_pipeline(columns, LogisticRegression(max_iter=500))
    return pipeline.fit(pd.DataFrame(ROWS, columns=NAMES), np.arange(150) // 50)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return fitted(StandardScaler())


@pytest.fixture(scope="module")
def server(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("unchecked")
    artifact = tmp_path / f"{MODEL}.skops"
    skops.io.dump(pipeline, artifact)
    args = ["--model-uri", str(artifact), "--model-format", "sklearn"]
    with running_server([*args, "--cache-dir", str(tmp_path)], tmp_path) as started:
        yield started


def column(name: str, values: list[Any]) -> dict[str, Any]:
    datatype = "BYTES" if isinstance(values[0], str) else "FP64"
    return {"name": name, "shape": [len(values)], "datatype": datatype, "data": values}


def table_body(rows: npt.NDArray[Any], **replaced: list[Any]) -> dict[str, Any]:
    """One input per column of `rows`, some columns' values replaced."""
    return {
        "inputs": [
            column(name, replaced.get(name, rows[:, index].tolist()))
            for index, name in enumerate(NAMES)
        ]
    }


def infer(server: ServerProcess, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{MODEL}/infer", content=json.dumps(body), timeout=30)


REFUSED: dict[str, tuple[dict[str, list[Any]], str]] = {
    "text passed through to the estimator": (
        {"passed": ["x", "y", "z"]},
        "input 'passed': the model refused its values: ValueError: could not convert string"
        " to float: 'x'",
    ),
    "text given to log1p": (
        {"logged": ["x", "y", "z"]},
        "input 'logged': the model refused its values: TypeError: loop of ufunc does not"
        " support argument 0 of type str which has no callable log1p method",
    ),
    "a number whose log1p is NaN": (
        {"logged": [1.0, 2.0, -5.0]},
        "input 'logged': the model refused its values: ValueError: Input X contains NaN.",
    ),
    "bad values in both": (
        {"logged": ["x", "y", "z"], "passed": ["x", "y", "z"]},
        "inputs 'logged', 'passed': the model refused their values: TypeError:",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_value_the_model_refuses_in_an_unchecked_column_is_422_with_its_message(
    server: ServerProcess, case: str
):
    replaced, message = REFUSED[case]

    answer = infer(server, table_body(ROWS[:3], **replaced))

    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith(message)
    assert answer.json()["error"].endswith(UNKNOWN_KIND)


def test_over_grpc_the_refusal_is_invalid_argument_with_the_message(server: ServerProcess):
    request = pb.ModelInferRequest(model_name=MODEL)
    for index, name in enumerate(NAMES):
        tensor = request.inputs.add(name=name, datatype="FP64", shape=[2])
        values = [1.0, -5.0] if name == "logged" else ROWS[:2, index].tolist()
        tensor.contents.fp64_contents.extend(values)

    with v2_client(server.grpc_target) as plain, pytest.raises(grpc.RpcError) as failed:
        plain.infer(request)

    code, details = status_of(failed.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("input 'logged': the model refused its values: ValueError:")


def test_requests_predicted_together_with_a_refused_one_get_their_own_answers(
    server: ServerProcess, pipeline: Pipeline
):
    starts = list(range(0, 120, 2))

    def answer(start: int) -> tuple[int, httpx.Response]:
        rows = ROWS[start : start + 2]
        if start % 6 == 0:
            return start, infer(server, table_body(rows, passed=["x", "y"]))
        return start, infer(server, table_body(rows))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(answer, starts))

    for start, response in answers:
        if start % 6 == 0:
            assert response.status_code == 422, response.text
            continue
        assert response.status_code == 200, response.text
        proba = {output["name"]: output for output in response.json()["outputs"]}["predict_proba"]
        expected = pipeline.predict_proba(pd.DataFrame(ROWS[start : start + 2], columns=NAMES))
        np.testing.assert_allclose(np.reshape(proba["data"], (2, 3)), expected, rtol=1e-12)


def test_refusals_count_as_rejected_not_as_the_models_errors(server: ServerProcess):
    infer(server, table_body(ROWS[:1], passed=["x"]))

    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    outcomes = {
        (sample.labels["code"], sample.labels["outcome"])
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelserver_requests_total" and sample.value > 0
    }
    assert ("422", "rejected") in outcomes
    assert not any(code.startswith("5") for code, _ in outcomes)


class FaultyScaler(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A scaler that fails, as a model's bug would, when a value is 13."""

    def fit(self, rows: Any, labels: Any = None) -> "FaultyScaler":
        self.n_features_in_ = np.shape(rows)[1]
        return self

    def transform(self, rows: Any) -> npt.NDArray[np.float64]:
        values = np.asarray(rows, dtype=np.float64)
        if (values == 13).any():
            raise ValueError("the scaler broke")
        return values


def test_a_failure_of_the_model_itself_stays_a_500(serve: Serve, tmp_path: Path):
    """The model fails on a value of a column the server checked: even when an unchecked
    column holds a bad value too, no other value there would help, so it is not the
    client's refusal."""
    artifact = tmp_path / "faulty.joblib"
    joblib.dump(fitted(FaultyScaler()), artifact)

    with serve(str(artifact), allow_unsafe_formats=True) as client:
        good = client.post("/v2/models/faulty/infer", json=table_body(ROWS[:2]))
        broken = client.post(
            "/v2/models/faulty/infer", json=table_body(ROWS[:2], scaled=[13.0, 1.0])
        )
        both = client.post(
            "/v2/models/faulty/infer",
            json=table_body(ROWS[:2], scaled=[13.0, 1.0], passed=["x", "y"]),
        )

    assert good.status_code == 200, good.text
    for answer in (broken, both):
        assert answer.status_code == 500, answer.text
        assert answer.json()["error"].startswith("inference failed: ValueError:")
