"""The real `modelserver` process over real HTTP on 127.0.0.1."""

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import xgboost
from prometheus_client.parser import text_string_to_metric_families

from tests.server.artifact_server import ArtifactServer
from tests.server.data import breast_cancer_rows
from tests.server.helpers import v2_body
from tests.server.server_process import ServerProcess, run_to_exit, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

INFER = "/v2/models/xgb-classifier/infer"


def sha256_of(models_dir: Path, name: str) -> str:
    return (models_dir / f"{name}.sha256").read_text().strip()


def metric_samples(server: ServerProcess, name: str) -> list[tuple[dict[str, str], float]]:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def wait_for_inflight(server: ServerProcess, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(v for _, v in metric_samples(server, "modelserver_inflight_requests")) >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"never {count} requests in flight")


def requests_total(server: ServerProcess, code: str = "200") -> float:
    samples = metric_samples(server, "modelserver_requests_total")
    return sum(value for labels, value in samples if labels["code"] == code)


@pytest.fixture(scope="module")
def classifier_server(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("classifier-server")
    model = models_dir / "xgb-classifier.ubj"
    args = ["--model-uri", model.as_uri(), "--model-sha256", sha256_of(models_dir, model.name)]
    with running_server([*args, "--cache-dir", str(tmp_path)], tmp_path) as server:
        yield server


def test_concurrent_requests_get_the_predictions_of_xgboost(
    classifier_server: ServerProcess, models_dir: Path
):
    data = breast_cancer_rows(569)
    booster = xgboost.Booster(model_file=models_dir / "xgb-classifier.ubj")
    expected = booster.inplace_predict(data.astype(np.float32))
    slices = [(start, start + 1 + start % 7) for start in range(0, 560, 2)]

    def infer(bounds: tuple[int, int]) -> tuple[tuple[int, int], list[float]]:
        rows = data[bounds[0] : bounds[1]].tolist()
        body = v2_body(rows, outputs=[{"name": "predict_proba"}])
        response = client.post(f"{classifier_server.url}{INFER}", json=body)
        assert response.status_code == 200, response.text
        return bounds, response.json()["outputs"][0]["data"][1::2]

    with (
        httpx.Client(timeout=30, limits=httpx.Limits(max_connections=16)) as client,
        ThreadPoolExecutor(max_workers=16) as pool,
    ):
        before = requests_total(classifier_server)
        results = list(pool.map(infer, slices))
    for (start, stop), positive in results:
        np.testing.assert_allclose(positive, expected[start:stop], rtol=1e-6)
    assert requests_total(classifier_server) - before == len(slices)


def test_bad_requests_over_http_are_4xx_and_counted_as_such(classifier_server: ServerProcess):
    before = requests_total(classifier_server, "422")
    response = httpx.post(f"{classifier_server.url}{INFER}", json=v2_body([[1.0, 2.0]]))
    assert response.status_code == 422
    assert "expects 30 features per row" in response.json()["error"]
    assert requests_total(classifier_server, "422") == before + 1


def test_sigterm_lets_in_flight_requests_finish(models_dir: Path, tmp_path: Path):
    model = models_dir / "xgb-classifier-slow.ubj"
    args = [
        "--model-uri",
        str(model),
        "--graceful-timeout-seconds",
        "20",
        "--max-batch-rows",
        "100",
    ]
    rows = breast_cancer_rows(100).tolist()
    finished_at: list[float] = []
    statuses: list[int] = []

    with running_server(args, tmp_path) as server:

        def infer() -> None:
            try:
                response = httpx.post(
                    f"{server.url}/v2/models/xgb-classifier-slow/infer",
                    json=v2_body(rows),
                    timeout=60,
                )
            except httpx.ConnectError:
                statuses.append(0)  # started after SIGTERM: refused, never sent
                return
            statuses.append(response.status_code)
            finished_at.append(time.monotonic())

        clients = [threading.Thread(target=infer) for _ in range(8)]
        for client in clients:
            client.start()
        wait_for_inflight(server, 4)
        signalled_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(timeout=60)
        exit_code = server.process.wait(timeout=30)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/v2/health/live", timeout=2)

    assert statuses.count(200) >= 4
    assert set(statuses) <= {200, 0}
    assert max(finished_at) > signalled_at, "no request was in flight at SIGTERM"
    assert exit_code == 0


def test_only_upper_case_variables_configure_the_server(models_dir: Path, tmp_path: Path):
    pinned, unpinned = models_dir / "xgb-classifier.ubj", models_dir / "xgb-regressor.ubj"
    pinned_sha256 = sha256_of(models_dir, pinned.name)
    env = {
        **os.environ,
        "MODELSERVER_MODEL_URI": str(pinned),
        "MODELSERVER_MODEL_SHA256": pinned_sha256,
        "MODELSERVER_MODEL_NAME": "fraud",
        "MODELSERVER_CACHE_DIR": str(tmp_path / "cache"),
        # A pod's own entries after the operator's: the last spelling used to win.
        "modelserver_model_uri": str(unpinned),
        "modelserver_model_sha256": sha256_of(models_dir, unpinned.name),
        "Modelserver_Model_Name": "fraud",
    }
    with running_server([], tmp_path, env=env) as server:
        metadata = httpx.get(f"{server.url}/v2/models/fraud", timeout=5).json()
        info = metric_samples(server, "modelserver_model_info")
    assert metadata["parameters"]["sha256"] == pinned_sha256
    assert metadata["parameters"]["task"] == "binary"
    assert [labels["sha256"] for labels, _ in info] == [pinned_sha256]
    for name in ("Modelserver_Model_Name", "modelserver_model_sha256", "modelserver_model_uri"):
        assert f"ignoring environment variable {name}" in server.output()


def test_missing_model_exits_non_zero_with_the_reason(tmp_path: Path):
    termination_log = tmp_path / "termination-log"
    termination_log.touch()
    missing = tmp_path / "missing.ubj"
    code, stderr = run_to_exit(
        ["--model-uri", str(missing), "--termination-log", str(termination_log)], tmp_path
    )
    reason = f"modelserver: model file not found: {missing}"
    assert code == 1
    assert stderr.strip().splitlines()[-1] == reason
    assert termination_log.read_text() == reason.removeprefix("modelserver: ") + "\n"


def test_checksum_mismatch_exits_non_zero(models_dir: Path, tmp_path: Path):
    model = models_dir / "xgb-classifier.ubj"
    code, stderr = run_to_exit(["--model-uri", str(model), "--model-sha256", "0" * 64], tmp_path)
    assert code == 1
    assert f"sha256 mismatch for {model}: expected {'0' * 64}" in stderr.splitlines()[-1]


def test_invalid_configuration_exits_non_zero_with_the_reason(tmp_path: Path):
    code, stderr = run_to_exit(["--model-uri", "https://models.example/m.ubj"], tmp_path)
    assert code == 1
    assert "needs MODELSERVER_MODEL_SHA256" in stderr.splitlines()[-1]


def test_model_is_fetched_over_http_and_served(models_dir: Path, tmp_path: Path):
    name = "xgb-regressor.ubj"
    with ArtifactServer(models_dir) as artifacts:
        args = [
            "--model-uri",
            f"{artifacts.url}/{name}",
            "--model-sha256",
            sha256_of(models_dir, name),
            "--model-name",
            "diabetes",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
        with running_server(args, tmp_path) as server:
            metadata = httpx.get(f"{server.url}/v2/models/diabetes", timeout=5).json()
    assert metadata["parameters"]["task"] == "regression"
    assert (tmp_path / "cache" / f"{sha256_of(models_dir, name)}-{name}").is_file()


def test_workers_share_one_set_of_counters(models_dir: Path, tmp_path: Path):
    model = models_dir / "xgb-classifier.ubj"
    args = ["--model-uri", str(model), "--workers", "2", "--cache-dir", str(tmp_path / "cache")]
    body = v2_body(breast_cancer_rows(1).tolist())
    with running_server(args, tmp_path) as server:
        with httpx.Client(timeout=10) as client:
            for _ in range(40):
                # A new connection each time, so that both workers take some requests.
                assert (
                    client.post(
                        f"{server.url}{INFER}", json=body, headers={"Connection": "close"}
                    ).status_code
                    == 200
                )
        # Whichever worker answers the scrape reports the total of both.
        assert [requests_total(server) for _ in range(4)] == [40.0] * 4
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0


def test_workers_exit_code_on_bad_model_is_non_zero(tmp_path: Path):
    code, _ = run_to_exit(["--model-uri", str(tmp_path / "x.ubj"), "--workers", "2"], tmp_path)
    assert code == 1
