"""gRPC serves as REST does: one micro-batcher for both, the same size limit and decoding
processes, ids, prediction tokens and profile counts, a drain on SIGTERM that lets calls
in flight finish, several workers on one port, a clear start-up failure for a taken port;
and a model that fails is INTERNAL, counted as a 500."""

import asyncio
import json
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import xgboost
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from modelserver.app import create_app
from modelserver.protos import open_inference_pb2 as pb
from tests.server.data import breast_cancer_rows
from tests.server.grpc_client import SERVICE, raw_request, status_of, v2_client
from tests.server.helpers import FailingModel, loaded, make_settings, v2_body
from tests.server.server_process import free_port, run_to_exit, running_server
from tests.server.test_grpc import counted, grpc_requests
from tests.server.test_process import wait_for_inflight

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CLASSIFIER = "xgb-classifier"
SLOW = "xgb-classifier-slow"
KEY = "a-key-of-the-grpc-deployment-32bytes"


def args_for(models_dir: Path, tmp_path: Path, model: str, *extra: str) -> list[str]:
    return [
        "--model-uri",
        str(models_dir / f"{model}.ubj"),
        "--cache-dir",
        str(tmp_path / "cache"),
        *extra,
    ]


def positive(booster: xgboost.Booster, rows: np.ndarray) -> np.ndarray:
    return np.asarray(booster.inplace_predict(rows.astype(np.float32)))


def probabilities(response: pb.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(response.raw_output_contents[1], dtype="<f4").reshape(-1, 2)


def test_grpc_and_rest_requests_share_the_micro_batcher(models_dir: Path, tmp_path: Path):
    """Requests that wait for the (slow) model are merged into one call, whichever
    protocol brought them."""
    rows = breast_cancer_rows(90).astype(np.float32)
    with (
        running_server(args_for(models_dir, tmp_path, SLOW), tmp_path) as server,
        v2_client(server.grpc_target) as client,
        httpx.Client(timeout=60) as rest,
    ):
        calls_before = counted(server, "modelserver_batch_rows_count")
        rows_before = counted(server, "modelserver_batch_rows_sum")
        futures = [
            client.infer_future(raw_request(SLOW, rows[i : i + 10], "FP32"))
            for i in range(0, 60, 10)
        ]
        rest_answers: list[httpx.Response] = []

        def post(block: np.ndarray) -> None:
            body = v2_body(block.tolist())
            rest_answers.append(rest.post(f"{server.url}/v2/models/{SLOW}/infer", json=body))

        threads = [threading.Thread(target=post, args=(rows[i : i + 10],)) for i in (60, 70, 80)]
        for thread in threads:
            thread.start()
        answers = [future.result() for future in futures]
        for thread in threads:
            thread.join(timeout=60)
        calls = counted(server, "modelserver_batch_rows_count") - calls_before
        predicted_rows = counted(server, "modelserver_batch_rows_sum") - rows_before

    assert [len(probabilities(answer)) for answer in answers] == [10] * 6
    assert [answer.status_code for answer in rest_answers] == [200] * 3
    assert predicted_rows == 90
    assert calls < 9, "no request was merged with another"


def test_size_limit_and_decoding_processes_apply_to_grpc(models_dir: Path, tmp_path: Path):
    """16 KiB at most; above 2 KiB a message is decoded in another process."""
    booster = xgboost.Booster(model_file=models_dir / f"{CLASSIFIER}.ubj")
    limits = ["--max-body-bytes", "16384", "--large-body-bytes", "2048"]
    with (
        running_server(args_for(models_dir, tmp_path, CLASSIFIER, *limits), tmp_path) as server,
        v2_client(server.grpc_target) as client,
    ):
        rows = breast_cancer_rows(100).astype(np.float32)  # 12,000 bytes of raw contents
        typed = pb.ModelInferRequest(model_name=CLASSIFIER)
        typed.inputs.add(name="input-0", datatype="FP32", shape=rows.shape)
        typed.inputs[0].contents.fp32_contents.extend(rows.ravel().tolist())
        large = client.infer(raw_request(CLASSIFIER, rows, "FP32"))
        large_typed = client.infer(typed)
        too_large_before = grpc_requests(server, "413")
        with pytest.raises(grpc.RpcError) as refused:
            client.infer(
                raw_request(CLASSIFIER, breast_cancer_rows(150).astype(np.float32), "FP32")
            )
        counted_413 = grpc_requests(server, "413") - too_large_before
        with pytest.raises(grpc.RpcError) as far_too_large:
            client.infer(raw_request(CLASSIFIER, breast_cancer_rows(569), "FP64"))
        uncounted = grpc_requests(server, "413") - too_large_before - counted_413
        after = client.infer(raw_request(CLASSIFIER, rows[:1], "FP32"))

    np.testing.assert_allclose(probabilities(large)[:, 1], positive(booster, rows), rtol=1e-6)
    np.testing.assert_array_equal(
        np.asarray(large_typed.outputs[1].contents.fp32_contents), probabilities(large).ravel()
    )
    status, message = status_of(refused.value)
    assert status == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert message.startswith("request message of 18")
    assert message.endswith("bytes is larger than the limit of 16384 bytes")
    assert counted_413 == 1
    # Above twice the limit the gRPC library refuses the message before the server reads it.
    assert status_of(far_too_large.value)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert uncounted == 0
    assert len(after.outputs) == 2


def test_responses_carry_an_id_and_a_token_that_rest_feedback_takes(
    models_dir: Path, tmp_path: Path
):
    env = {**os.environ, "MODELSERVER_FEEDBACK_KEY": KEY}
    rows = breast_cancer_rows(30)
    with (
        running_server(args_for(models_dir, tmp_path, CLASSIFIER), tmp_path, env) as server,
        v2_client(server.grpc_target) as client,
    ):
        unnamed = [client.infer(raw_request(CLASSIFIER, rows, "FP64")) for _ in range(2)]
        named = client.infer(raw_request(CLASSIFIER, rows, "FP64", id="order-17"))
        token = unnamed[0].parameters["prediction_token"].string_param
        labels = np.frombuffer(unnamed[0].raw_output_contents[0], dtype="<i8").tolist()
        feedback = httpx.post(
            f"{server.url}/v2/models/{CLASSIFIER}/feedback",
            content=json.dumps({"token": token, "labels": labels}),
            timeout=10,
        )
        correct = counted(server, "modelserver_feedback_rows_total", result="correct")

    assert all(answer.id for answer in unnamed), "the server names unnamed requests"
    assert unnamed[0].id != unnamed[1].id
    assert named.id == "order-17"
    assert token.startswith("v1.")
    assert named.parameters["prediction_token"].string_param.startswith("v1.")
    assert feedback.status_code == 200, feedback.text
    assert feedback.json() == {"tokens": 1, "rows": 30, "replayed": 0}
    assert correct == 30


def test_rows_predicted_over_grpc_are_counted_in_the_profiles_bins(
    models_dir: Path, tmp_path: Path
):
    profile = models_dir / f"{CLASSIFIER}.profile.json"
    digest = profile.with_name(profile.name + ".sha256").read_text().strip()
    extra = ["--profile-uri", str(profile), "--profile-sha256", digest]
    rows = breast_cancer_rows(40)
    with (
        running_server(args_for(models_dir, tmp_path, CLASSIFIER, *extra), tmp_path) as server,
        v2_client(server.grpc_target) as client,
    ):
        before = counted(server, "modelserver_prediction_class_total")
        feature_before = counted(server, "modelserver_feature_bin_total", feature="mean radius")
        client.infer(raw_request(CLASSIFIER, rows, "FP64"))
        classes = counted(server, "modelserver_prediction_class_total") - before
        feature = counted(server, "modelserver_feature_bin_total", feature="mean radius")

    assert classes == 40
    assert feature - feature_before == 40


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_calls_in_flight_finish_then_refuses_new_ones(
    models_dir: Path, tmp_path: Path, workers: int
):
    extra = ["--graceful-timeout-seconds", "20", "--max-batch-rows", "100"]
    extra += ["--workers", str(workers)]
    rows = breast_cancer_rows(100).astype(np.float32)
    with running_server(args_for(models_dir, tmp_path, SLOW, *extra), tmp_path) as server:
        with v2_client(server.grpc_target) as client:
            futures = [client.infer_future(raw_request(SLOW, rows, "FP32")) for _ in range(8)]
            wait_for_inflight(server, 4)
            server.process.send_signal(signal.SIGTERM)
            answers = [future.result() for future in futures]
        exit_code = server.process.wait(timeout=60)
        with v2_client(server.grpc_target) as late, pytest.raises(grpc.RpcError) as refused:
            late.infer(raw_request(SLOW, rows[:1], "FP32"), timeout=5)

    assert [len(probabilities(answer)) for answer in answers] == [100] * 8
    assert exit_code == 0
    assert status_of(refused.value)[0] == grpc.StatusCode.UNAVAILABLE


def test_two_workers_answer_on_one_grpc_port_and_count_together(models_dir: Path, tmp_path: Path):
    with (
        running_server(
            args_for(models_dir, tmp_path, CLASSIFIER, "--workers", "2"), tmp_path
        ) as server,
    ):
        for _ in range(20):  # a new connection each: the kernel spreads them over both
            with v2_client(server.grpc_target) as client:
                client.infer(raw_request(CLASSIFIER, breast_cancer_rows(2), "FP64"))
        assert grpc_requests(server, "200") == 20


def test_a_taken_grpc_port_stops_the_start_with_the_fix(models_dir: Path, tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = args_for(models_dir, tmp_path, CLASSIFIER, "--host", "127.0.0.1")
        code, stderr = run_to_exit([*args, "--grpc-port", str(port)], tmp_path)
    assert code == 1
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in stderr
    assert "set MODELSERVER_GRPC_PORT to a free port, or to 0 to serve no gRPC" in stderr


def test_grpc_port_zero_serves_rest_only(models_dir: Path, tmp_path: Path):
    rows = breast_cancer_rows(2).tolist()
    with running_server(args_for(models_dir, tmp_path, CLASSIFIER), tmp_path) as both:
        assert f"serving the V2 protocol over gRPC on {both.grpc_target}" in both.output()
    args = args_for(models_dir, tmp_path, CLASSIFIER, "--grpc-port", "0")
    with running_server(args, tmp_path) as rest_only:
        answer = httpx.post(
            f"{rest_only.url}/v2/models/{CLASSIFIER}/infer", json=v2_body(rows), timeout=10
        )
        assert answer.status_code == 200
        assert "over gRPC" not in rest_only.output()


def test_a_model_that_fails_is_internal_and_counted_as_a_500(tmp_path: Path):
    """In process: the real app's lifespan serves gRPC; a model error is the model's."""
    settings = make_settings(tmp_path / "model", grpc_port=free_port(), host="127.0.0.1")
    registry = CollectorRegistry()
    app = create_app(settings, loaded(FailingModel(fail_on=13.0), tmp_path), registry, True)
    fastapi_app = app.app
    assert isinstance(fastapi_app, FastAPI)

    async def calls() -> tuple[tuple[grpc.StatusCode, str], pb.ModelInferResponse]:
        async with (
            fastapi_app.router.lifespan_context(fastapi_app),
            grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel,
        ):
            infer = channel.unary_unary(
                SERVICE + "ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            values = np.array([[13.0, 1.0]])
            try:
                await infer(raw_request("model", values, "FP64"))
            except grpc.aio.AioRpcError as error:
                failure = (error.code(), error.details() or "")
            good: Any = await infer(raw_request("model", np.array([[1.0, 2.0]]), "FP64"))
            return failure, good

    failure, good = asyncio.run(calls())

    assert failure == (grpc.StatusCode.INTERNAL, "inference failed: RuntimeError: the model broke")
    assert np.frombuffer(good.raw_output_contents[0], dtype="<f8").tolist() == [3.0]
    labels = {"protocol": "grpc", "endpoint": "v2_infer", "code": "500", "outcome": "server_error"}
    total = registry.get_sample_value(
        "modelserver_requests_total",
        {
            "model": "model",
            "model_version": "1",
            "track": "stable",
            "modeldeployment": "model",
            "variant": "",
            **labels,
        },
    )
    assert total == 1
