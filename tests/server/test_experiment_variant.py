"""Experiment arms: a server given MODELSERVER_VARIANT names its arm in every inference
answer (REST header, gRPC metadata) and in every metric series; bad names stop the start."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelserver.protos import open_inference_pb2 as pb
from modelserver.settings import Settings
from tests.server.conftest import Serve
from tests.server.data import breast_cancer_rows
from tests.server.grpc_client import SERVICE, raw_request
from tests.server.helpers import v2_body
from tests.server.server_process import ServerProcess, run_to_exit, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MODEL = "xgb-classifier"
INFER = f"/v2/models/{MODEL}/infer"
PREDICT = f"/v1/models/{MODEL}:predict"
ROWS = breast_cancer_rows(2).astype(np.float32)
FEEDBACK_KEY = "an-experiment-key-of-32-bytes-xx"


def digest(path: Path) -> str:
    return path.with_name(path.name + ".sha256").read_text().strip()


def model_args(models_dir: Path, cache: Path) -> list[str]:
    model, profile = models_dir / f"{MODEL}.ubj", models_dir / f"{MODEL}.profile.json"
    return [
        *("--model-uri", str(model), "--model-sha256", digest(model)),
        *("--profile-uri", str(profile), "--profile-sha256", digest(profile)),
        *("--cache-dir", str(cache)),
    ]


@pytest.fixture(scope="module")
def variant_server(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A variant's pod as the operator configures it: track and variant from the env."""
    tmp_path = tmp_path_factory.mktemp("variant-server")
    env = {
        **os.environ,
        "MODELSERVER_TRACK": "v-b",
        "MODELSERVER_VARIANT": "b",
        "MODELSERVER_FEEDBACK_KEY": FEEDBACK_KEY,
    }
    with running_server(model_args(models_dir, tmp_path), tmp_path, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def plain_server(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("plain-server")
    with running_server(model_args(models_dir, tmp_path), tmp_path) as server:
        yield server


def binary_request(rows: np.ndarray[Any, Any]) -> tuple[bytes, dict[str, str]]:
    """A V2 body with its tensor as binary data (the binary tensor data extension)."""
    data = rows.astype("<f4").tobytes()
    tensor = {
        "name": "input-0",
        "shape": list(rows.shape),
        "datatype": "FP32",
        "parameters": {"binary_data_size": len(data)},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header))}


def inference_answers(server: ServerProcess) -> dict[str, httpx.Response]:
    """One answer of each kind a client can get from the inference paths."""
    body, headers = binary_request(ROWS)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        return {
            "v2 json": client.post(INFER, json=v2_body(ROWS.tolist())),
            "v2 binary": client.post(INFER, content=body, headers=headers),
            "v1": client.post(PREDICT, json={"instances": ROWS.tolist()}),
            "422 wrong feature count": client.post(INFER, json=v2_body(ROWS[:, :29].tolist())),
            "400 malformed": client.post(INFER, content=b"{"),
            "404 unknown model": client.post("/v2/models/other/infer", json=v2_body([[1.0]])),
            "405 wrong method": client.get(INFER),
        }


def metric_samples(server: ServerProcess) -> list[tuple[str, dict[str, str]]]:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return [
        (sample.name, sample.labels)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def grpc_infer(server: ServerProcess, request: pb.ModelInferRequest) -> tuple[Any, Any]:
    """(the response or the error, the initial metadata) of one ModelInfer call."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        rpc = channel.unary_unary(
            SERVICE + "ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        try:
            response, call = rpc.with_call(request, timeout=30)
        except grpc.RpcError as error:
            failed: Any = error
            return error, dict(failed.initial_metadata())
        return response, dict(call.initial_metadata())


def test_every_inference_answer_names_the_variant(variant_server: ServerProcess):
    answers = inference_answers(variant_server)

    assert {kind: answer.status_code for kind, answer in answers.items()} == {
        "v2 json": 200,
        "v2 binary": 200,
        "v1": 200,
        "422 wrong feature count": 422,
        "400 malformed": 400,
        "404 unknown model": 404,
        "405 wrong method": 405,
    }
    variants = {kind: answer.headers.get("x-model-variant") for kind, answer in answers.items()}
    assert variants == dict.fromkeys(answers, "b")


def test_without_a_variant_answers_have_no_variant_header(plain_server: ServerProcess):
    answers = inference_answers(plain_server)

    assert answers["v2 json"].status_code == 200
    variants = {kind: answer.headers.get("x-model-variant") for kind, answer in answers.items()}
    assert variants == dict.fromkeys(answers)


def test_grpc_answers_carry_the_variant_as_initial_metadata(variant_server: ServerProcess):
    response, metadata = grpc_infer(variant_server, raw_request(MODEL, ROWS, "FP32"))
    error, error_metadata = grpc_infer(variant_server, raw_request(MODEL, ROWS[:, :29], "FP32"))

    assert [output.name for output in response.outputs] == ["predict", "predict_proba"]
    assert metadata["x-model-variant"] == "b"
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expects 30 features" in error.details()
    assert error_metadata["x-model-variant"] == "b"


def test_grpc_answers_without_a_variant_have_no_such_metadata(plain_server: ServerProcess):
    _, metadata = grpc_infer(plain_server, raw_request(MODEL, ROWS, "FP32"))

    assert "x-model-variant" not in metadata


def test_every_series_carries_the_variant_and_its_track(variant_server: ServerProcess):
    answer = httpx.post(f"{variant_server.url}{INFER}", json=v2_body(ROWS.tolist()), timeout=10)
    token = answer.json()["parameters"]["prediction_token"]
    feedback = httpx.post(
        f"{variant_server.url}/v2/models/{MODEL}/feedback",
        json={"token": token, "labels": [0, 0]},
        timeout=10,
    )
    assert feedback.status_code == 200, feedback.text
    grpc_infer(variant_server, raw_request(MODEL, ROWS, "FP32"))

    samples = metric_samples(variant_server)

    names = {name for name, _ in samples}
    # Request, model, profile and feedback series are all there, and all carry the arm.
    for name in (
        "modelserver_requests_total",
        "modelserver_model_info",
        "modelserver_feature_bin_total",
        "modelserver_profile_feature_share",
        "modelserver_feedback_rows_total",
    ):
        assert name in names
    labelled = [(name, labels) for name, labels in samples if "modeldeployment" in labels]
    assert len(labelled) > 300
    wrong = [
        (name, labels)
        for name, labels in labelled
        if (labels["track"], labels["variant"]) != ("v-b", "b")
    ]
    assert wrong == []


def test_without_a_variant_the_label_is_empty(plain_server: ServerProcess):
    httpx.post(f"{plain_server.url}{INFER}", json=v2_body(ROWS.tolist()), timeout=10)

    labelled = [labels for _, labels in metric_samples(plain_server) if "track" in labels]

    assert labelled
    assert {(labels["track"], labels["variant"]) for labels in labelled} == {("stable", "")}


def test_feedback_counts_for_the_arm_that_predicted_on_any_pod(serve: Serve):
    key = {"feedback_key": FEEDBACK_KEY}
    with serve(f"{MODEL}.ubj", track="v-b", **key) as variant_pod:
        answer = variant_pod.post(INFER, json=v2_body(ROWS.tolist()))
    token = answer.json()["parameters"]["prediction_token"]

    with serve(f"{MODEL}.ubj", variant="control", **key) as control_pod:
        taken = control_pod.post(
            f"/v2/models/{MODEL}/feedback", json={"token": token, "labels": [0, 0]}
        )
        samples = [
            (sample.labels["track"], sample.labels["variant"], sample.value)
            for family in text_string_to_metric_families(control_pod.get("/metrics").text)
            for sample in family.samples
            if sample.name == "modelserver_feedback_rows_total"
        ]

    assert taken.status_code == 200, taken.text
    assert ("v-b", "b", 2.0) in samples
    assert all(variant == "b" for _, variant, _ in samples)


def test_model_metadata_names_the_variant(variant_server: ServerProcess):
    metadata = httpx.get(f"{variant_server.url}/v2/models/{MODEL}", timeout=5).json()

    assert metadata["parameters"]["variant"] == "b"


def test_a_variant_track_alone_sets_the_variant(models_dir: Path):
    settings = Settings(model_uri=str(models_dir / f"{MODEL}.ubj"), track="v-green")

    assert settings.variant == "green"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--track", "blue"], "'blue' is not a track; expected stable, canary or v-<variant>"),
        (["--track", "v-B"], "'v-B' is not a track"),
        (["--track", "v-"], "'v-' is not a track"),
        (["--track", "v-b-"], "'v-b-' is not a track"),
        (["--track", "v-" + "a" * 21], "is not a track"),
        (["--variant", "9lives"], "'9lives' is not a variant name; expected control or a"),
        (["--variant", "b_2"], "1 to 20 lowercase letters, digits and '-'"),
        (["--track", "v-b", "--variant", "c"], "variant 'c' does not match track 'v-b'"),
    ],
)
def test_bad_track_or_variant_names_stop_the_start(
    args: list[str], message: str, models_dir: Path, tmp_path: Path
):
    code, stderr = run_to_exit(["--model-uri", str(models_dir / f"{MODEL}.ubj"), *args], tmp_path)

    assert code == 1
    assert stderr.startswith("modelserver: invalid configuration: ")
    assert message in stderr
