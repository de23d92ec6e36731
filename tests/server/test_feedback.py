"""Ids, prediction tokens and feedback between real `modelserver` processes: a stable and
a canary of one ModelDeployment share its key, so either takes the labels of the other's
predictions and counts them for the version and track that made them."""

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_breast_cancer

from modelserver.model import Prediction, Task
from modelserver.prediction_token import TokenSigner
from tests.server.data import diabetes_rows
from tests.server.helpers import make_settings, serving_app, v2_body
from tests.server.server_process import ServerProcess, run_to_exit, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

KEY = "a-key-of-the-fraud-deployment-32b"
INFER = "/v2/models/fraud/infer"
FEEDBACK = "/v2/models/fraud/feedback"
CANCER = load_breast_cancer()


def base_args(model: Path, version: str, track: str, cache: Path) -> list[str]:
    return [
        "--model-uri", str(model), "--model-name", "fraud", "--deployment", "fraud",
        "--model-version", version, "--track", track, "--cache-dir", str(cache),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def pods(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServerProcess]]:
    """The stable (key from a file) and a less accurate canary (key from the environment)."""
    tmp_path = tmp_path_factory.mktemp("feedback")
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")  # a Secret written with a newline
    stable = base_args(models_dir / "xgb-classifier.ubj", "1", "stable", tmp_path / "s")
    canary = base_args(models_dir / "xgb-classifier-weak.ubj", "2", "canary", tmp_path / "c")
    with (
        running_server([*stable, "--feedback-key-file", str(key_file)], tmp_path) as stable_pod,
        running_server(canary, tmp_path, {**os.environ, "MODELSERVER_FEEDBACK_KEY": KEY}) as pod,
    ):
        yield {"stable": stable_pod, "canary": pod}


def predict(pod: ServerProcess, rows: np.ndarray, **fields: Any) -> httpx.Response:
    response = httpx.post(f"{pod.url}{INFER}", json=v2_body(rows.tolist(), **fields), timeout=10)
    assert response.status_code == 200, response.text
    return response


def token_of(response: httpx.Response) -> str:
    token: str = response.json()["parameters"]["prediction_token"]
    return token


def send_feedback(pod: ServerProcess, body: Any) -> httpx.Response:
    return httpx.post(f"{pod.url}{FEEDBACK}", content=json.dumps(body), timeout=10)


def quality(pod: ServerProcess, version: str, track: str) -> dict[str, float]:
    """Feedback series of one version and track: rows by result, score counts by class."""
    text = httpx.get(f"{pod.url}/metrics", timeout=5).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model_version") != version or labels.get("track") != track:
                continue
            if sample.name == "modelserver_feedback_rows_total":
                found[labels["result"]] = sample.value
            elif sample.name == "modelserver_feedback_score_count":
                found[f"score {labels['true_class']}"] = sample.value
    return found


def test_every_response_has_an_id_and_one_token_for_all_its_rows(pods: dict[str, ServerProcess]):
    rows = CANCER.data[:100]
    named = predict(pods["stable"], rows, id="order-17")
    assert named.json()["id"] == named.headers["inference-id"] == "order-17"
    unnamed = [predict(pods["stable"], rows[:1]) for _ in range(2)]
    ids = [response.json()["id"] for response in unnamed]
    assert ids[0] != ids[1]
    assert [response.headers["inference-id"] for response in unnamed] == ids
    assert len(token_of(named)) < 800, "one compact token for 100 rows"
    v1 = httpx.post(
        f"{pods['canary'].url}/v1/models/fraud:predict",
        json={"instances": rows[:3].tolist()},
        timeout=10,
    ).json()
    assert v1["id"]
    assert v1["prediction_token"].startswith("v1.")


def test_feedback_counts_on_any_pod_for_the_version_and_track_that_predicted(
    pods: dict[str, ServerProcess],
):
    rows, labels = CANCER.data[200:260], CANCER.target[200:260].tolist()
    canary_answer = predict(pods["canary"], rows)
    predicted = canary_answer.json()["outputs"][0]["data"]
    correct = sum(p == t for p, t in zip(predicted, labels, strict=True))
    before = quality(pods["stable"], "2", "canary")
    answer = send_feedback(pods["stable"], {"token": token_of(canary_answer), "labels": labels})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"tokens": 1, "rows": 60, "replayed": 0}
    after = quality(pods["stable"], "2", "canary")
    assert after["correct"] - before.get("correct", 0) == correct
    assert after["incorrect"] - before.get("incorrect", 0) == 60 - correct
    assert after["score positive"] - before.get("score positive", 0) == sum(labels)
    assert after["score negative"] - before.get("score negative", 0) == 60 - sum(labels)
    assert correct < 60, "the weak canary gets some wrong"
    stable_answer = predict(pods["stable"], rows)
    counted = send_feedback(pods["canary"], [{"token": token_of(stable_answer), "labels": labels}])
    assert counted.json()["rows"] == 60
    assert quality(pods["canary"], "1", "stable")["correct"] >= 60, "the stable knows them all"


def test_a_replayed_token_counts_once_per_pod(pods: dict[str, ServerProcess]):
    response = predict(pods["stable"], CANCER.data[:4])
    item = {"token": token_of(response), "labels": CANCER.target[:4].tolist()}
    assert send_feedback(pods["canary"], item).json()["replayed"] == 0
    before = quality(pods["canary"], "1", "stable")
    twice = send_feedback(pods["canary"], [item, item])
    assert twice.json() == {"tokens": 0, "rows": 0, "replayed": 2}
    assert quality(pods["canary"], "1", "stable") == before


def other_deployments_token() -> str:
    signer = TokenSigner(b"another-deployments-key-32-bytes", "1", "stable", Task.BINARY, [0, 1])
    score = np.asarray([0.9], dtype=np.float32)
    return signer.sign(
        "x", Prediction(np.asarray([1]), np.column_stack((1 - score, score))), time.time()
    )


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ("{", 400, "malformed JSON"),
        ([], 400, "the list is empty"),
        ({"labels": [0]}, 400, 'expected an object {"token"'),
        ({"token": "TAMPERED", "labels": [0, 1]}, 403, "signature does not match"),
        ({"token": "OTHER", "labels": [1]}, 403, "signed by another ModelDeployment"),
        ({"token": "nonsense", "labels": [1]}, 403, "not a prediction token"),
        ({"token": "TOKEN", "labels": [0]}, 422, "1 labels for a response of 2 rows"),
        ({"token": "TOKEN", "labels": {"0": 1}}, 422, "labels must be a list"),
        ({"token": "TOKEN", "labels": ["malignant", 1]}, 422, 'label 0 is "malignant"'),
    ],
)
def test_every_bad_feedback_gets_its_status_and_a_message(
    pods: dict[str, ServerProcess], body: Any, status: int, message: str
):
    token = token_of(predict(pods["stable"], CANCER.data[:2]))
    version, payload, signature = token.split(".")
    replacements = {
        "TOKEN": token,
        "TAMPERED": f"{version}.{payload[:-2]}{'AB' if payload[-2:] != 'AB' else 'CD'}.{signature}",
        "OTHER": other_deployments_token(),
    }
    if isinstance(body, dict) and body.get("token") in replacements:
        body = {**body, "token": replacements[body["token"]]}
    before = quality(pods["canary"], "1", "stable")
    answer = (
        httpx.post(f"{pods['canary'].url}{FEEDBACK}", content=body, timeout=10)
        if isinstance(body, str)
        else send_feedback(pods["canary"], body)
    )
    assert answer.status_code == status
    assert message in answer.json()["error"]
    assert quality(pods["canary"], "1", "stable") == before


def test_a_list_with_one_bad_item_counts_nothing_and_names_it(pods: dict[str, ServerProcess]):
    good = token_of(predict(pods["stable"], CANCER.data[:1]))
    before = quality(pods["canary"], "1", "stable")
    answer = send_feedback(
        pods["canary"],
        [{"token": good, "labels": [0]}, {"token": good, "labels": [0, 1]}],
    )
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("item 1: 2 labels for a response of 1 rows")
    assert quality(pods["canary"], "1", "stable") == before


def test_feedback_for_another_model_name_is_not_found(pods: dict[str, ServerProcess]):
    answer = httpx.post(f"{pods['stable'].url}/v2/models/other/feedback", json={}, timeout=5)
    assert answer.status_code == 404
    assert "model 'other' not found" in answer.json()["error"]


def test_an_expired_token_is_gone(models_dir: Path, tmp_path: Path):
    args = base_args(models_dir / "xgb-classifier.ubj", "1", "stable", tmp_path / "cache")
    args += ["--feedback-max-age-seconds", "1"]
    with running_server(args, tmp_path, {**os.environ, "MODELSERVER_FEEDBACK_KEY": KEY}) as pod:
        token = token_of(predict(pod, CANCER.data[:1]))
        time.sleep(2.5)
        answer = send_feedback(pod, {"token": token, "labels": [0]})
    assert answer.status_code == 410
    assert "the token expired" in answer.json()["error"]
    assert "feedback is taken for 1 s" in answer.json()["error"]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("short", "the feedback key (MODELSERVER_FEEDBACK_KEY) has 5 bytes; use at least 16"),
        (None, "cannot read the feedback key file"),
    ],
)
def test_a_bad_key_stops_the_start(models_dir: Path, tmp_path: Path, key: str | None, reason: str):
    args = ["--model-uri", str(models_dir / "xgb-classifier.ubj")]
    if key is None:
        args += ["--feedback-key-file", str(tmp_path / "absent")]
    else:
        args += ["--feedback-key", key]
    code, stderr = run_to_exit(args, tmp_path)
    assert code == 1
    assert reason in stderr.strip().splitlines()[-1]


# --- in process: without a key, regressors, random bodies --------------------------------------


def test_without_a_key_there_is_no_token_and_feedback_says_why(models_dir: Path):
    with serving_app(make_settings(models_dir / "xgb-classifier.ubj")) as (client, _):
        response = client.post(
            "/v2/models/xgb-classifier/infer", json=v2_body(CANCER.data[:1].tolist())
        )
        assert "parameters" not in response.json()
        assert "id" not in response.json(), "no id made up without a key"
        assert "inference-id" not in response.headers
        answer = client.post(
            "/v2/models/xgb-classifier/feedback", json={"token": "x", "labels": [0]}
        )
    assert answer.status_code == 404
    assert answer.json()["error"].startswith("feedback is not enabled on this server")
    assert "MODELSERVER_FEEDBACK_KEY_FILE" in answer.json()["error"]


def test_a_regressors_feedback_is_its_absolute_error(models_dir: Path):
    settings = make_settings(models_dir / "xgb-regressor.ubj", feedback_key=KEY)
    with serving_app(settings) as (client, _):
        rows = diabetes_rows(5)
        response = client.post(
            "/v2/models/xgb-regressor/infer", json=v2_body(rows.tolist(), "FP64")
        )
        predicted = np.asarray(response.json()["outputs"][0]["data"])
        truth = [150.0, 75.0, 141.0, 206.0, 135.0]
        token = response.json()["parameters"]["prediction_token"]
        answer = client.post(
            "/v2/models/xgb-regressor/feedback", json={"token": token, "labels": truth}
        )
        assert answer.json() == {"tokens": 1, "rows": 5, "replayed": 0}
        refused = client.post(
            "/v2/models/xgb-regressor/feedback", json={"token": token, "labels": ["150"] * 5}
        )
        assert refused.status_code == 422
        text = client.get("/metrics").text
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("modelserver_feedback_absolute_error_")
        and "le" not in sample.labels
    }
    assert samples["modelserver_feedback_absolute_error_count"] == 5
    expected = float(np.abs(predicted.astype(np.float32) - truth).sum())
    assert samples["modelserver_feedback_absolute_error_sum"] == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def keyed_client(models_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(models_dir / "xgb-classifier.ubj", feedback_key=KEY)
    with serving_app(settings) as (client, _):
        yield client


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["token", "labels", "x"]), children, max_size=3)
    ),
    max_leaves=20,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=json_values | st.binary(max_size=60))
def test_random_feedback_bodies_never_get_a_5xx(keyed_client: TestClient, body: Any):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = keyed_client.post("/v2/models/xgb-classifier/feedback", content=content)
    assert answer.status_code in (200, 400, 403, 410, 422), answer.text
    assert answer.status_code == 200 or answer.json()["error"]
