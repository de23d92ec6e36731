"""Shadow traffic end to end: a real stable modelserver mirrors to a real shadow modelserver
(or to a recording or silent target), configured by a file swapped the way the kubelet
swaps a mounted ConfigMap, and never restarted."""

import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import xgboost
from prometheus_client.parser import text_string_to_metric_families

from tests.server.data import breast_cancer_rows, diabetes_rows
from tests.server.helpers import v2_body
from tests.server.mirror_targets import blackhole, recorder
from tests.server.server_process import ServerProcess, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NAME = "xgb-classifier"
INFER = f"/v2/models/{NAME}/infer"
MIRRORED = "modelserver_mirror_requests_total"
SHADOW_ROWS = "modelserver_shadow_rows_total"
DIFFERENCE = "modelserver_shadow_absolute_difference"


class ConfigMapVolume:
    """A directory as the kubelet keeps a mounted ConfigMap: the file is a symlink through
    `..data`, and an update points `..data` at a new directory in one rename."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.root = root
        self.file = root / "mirror.json"
        self._versions = 0

    def write(self, content: str | None) -> None:
        """Publish `content` (None: the key is gone from the ConfigMap)."""
        self._versions += 1
        version = self.root / f"..{self._versions}"
        version.mkdir()
        if content is not None:
            (version / "mirror.json").write_text(content)
        link = self.root / "..data_tmp"
        link.symlink_to(version.name)
        os.replace(link, self.root / "..data")
        if not self.file.is_symlink():
            self.file.symlink_to("..data/mirror.json")

    def mirror(self, url: str, percent: float) -> None:
        self.write(orjson.dumps({"url": url, "percent": percent}).decode())


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never {what}")
        time.sleep(0.05)


def wait_for_log(server: ServerProcess, text: str, times: int = 1) -> None:
    wait_until(lambda: server.output().count(text) >= times, f"logged {text!r} {times}x")


def model_args(models_dir: Path, file: str) -> list[str]:
    # Every server of these tests serves its model under the stable's name, as the shadow
    # of a deployment does: a copy keeps the request's path.
    return ["--model-uri", str(models_dir / file), "--model-name", NAME]


def stable_args(
    models_dir: Path, volume: ConfigMapVolume, file: str = "xgb-classifier.ubj"
) -> list[str]:
    return [*model_args(models_dir, file), "--mirror-config-file", str(volume.file)]


def infer(client: httpx.Client, body: dict[str, Any], path: str = INFER) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def predicted(answer: dict[str, Any]) -> list[Any]:
    (output,) = [output for output in answer["outputs"] if output["name"] == "predict"]
    values: list[Any] = output["data"]
    return values


def test_a_copy_is_the_request_as_received_with_the_stable_prediction(
    models_dir: Path, tmp_path: Path
):
    volume = ConfigMapVolume(tmp_path / "mirror")
    rows = breast_cancer_rows(3).astype(np.float32)
    binary_header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [3, 30],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ]
        }
    )
    with recorder() as shadow:
        volume.mirror(shadow.url, 100)
        with (
            running_server(stable_args(models_dir, volume), tmp_path) as stable,
            httpx.Client(base_url=stable.url, timeout=30) as client,
        ):
            json_body = orjson.dumps(v2_body(rows.tolist(), id="json"))
            answers = {
                "json": client.post(
                    INFER, content=json_body, headers={"content-type": "application/json"}
                ),
                "versioned": client.post(
                    f"/v2/models/{NAME}/versions/1/infer", json=v2_body(rows.tolist())
                ),
                "v1": client.post(f"/v1/models/{NAME}:predict", json={"instances": rows.tolist()}),
                "binary": client.post(
                    INFER,
                    content=binary_header + rows.tobytes(),
                    headers={
                        "content-type": "application/octet-stream",
                        "inference-header-content-length": str(len(binary_header)),
                    },
                ),
            }
            assert all(answer.status_code == 200 for answer in answers.values())
            # Not answered 200, so not mirrored:
            assert client.post(INFER, content=b"{not json").status_code == 400
            assert client.post("/v2/models/other/infer", json={}).status_code == 404
            wait_until(lambda: metric(stable, MIRRORED, result="sent") == 4, "4 copies sent")
            assert shadow.count() == 4

    copies = {
        (copy.path, copy.headers.get("inference-header-content-length")): copy
        for copy in shadow.received
    }
    assert set(copies) == {
        (INFER, None),  # JSON, and versioned: the shadow serves another version
        (f"/v1/models/{NAME}:predict", None),
        (INFER, str(len(binary_header))),
    }
    assert len(shadow.received) == 4
    for copy in shadow.received:
        assert copy.headers["modeldeploy-mirror"] == "1"
    json_copy = next(c for c in shadow.received if c.body == json_body)
    assert json_copy.headers["content-type"] == "application/json"
    assert orjson.loads(json_copy.headers["modeldeploy-mirror-reference"]) == predicted(
        answers["json"].json()
    )
    v1_copy = copies[(f"/v1/models/{NAME}:predict", None)]
    assert orjson.loads(v1_copy.body) == {"instances": rows.tolist()}
    assert (
        orjson.loads(v1_copy.headers["modeldeploy-mirror-reference"])
        == answers["v1"].json()["predictions"]
    )
    binary_copy = copies[(INFER, str(len(binary_header)))]
    assert binary_copy.body == binary_header + rows.tobytes()
    assert binary_copy.headers["content-type"] == "application/octet-stream"
    assert orjson.loads(binary_copy.headers["modeldeploy-mirror-reference"]) == predicted(
        answers["binary"].json()
    )


def test_the_file_turns_mirroring_on_off_and_changes_its_share_at_run_time(
    models_dir: Path, tmp_path: Path
):
    volume = ConfigMapVolume(tmp_path / "mirror")
    rows = breast_cancer_rows(1).tolist()

    def send(client: httpx.Client, ids: range) -> None:
        for number in ids:
            infer(client, v2_body(rows, id=f"r{number}"))

    def mirrored_ids(shadow_received: list[Any]) -> list[int]:
        return sorted(int(orjson.loads(copy.body)["id"][1:]) for copy in shadow_received)

    with recorder() as shadow:
        volume.mirror(shadow.url, 25)
        with (
            running_server(stable_args(models_dir, volume), tmp_path) as stable,
            httpx.Client(base_url=stable.url, timeout=30) as client,
        ):
            # 25%: exactly every 4th request answered 200.
            send(client, range(1, 41))
            wait_until(lambda: metric(stable, MIRRORED, result="sent") == 10, "10 copies sent")
            assert mirrored_ids(shadow.received) == list(range(4, 41, 4))

            # 37.5%: 3 of every 8, counted from the change.
            volume.mirror(shadow.url, 37.5)
            wait_for_log(stable, "mirroring 37.5% of requests")
            send(client, range(101, 141))
            wait_until(lambda: metric(stable, MIRRORED, result="sent") == 25, "15 more copies")
            assert len(mirrored_ids(shadow.received)) == 25

            # Off in each of the ways the contract names, then on again.
            for off, log_line, times in (
                ('{"url": "' + shadow.url + '", "percent": 0}', "mirroring off, as", 1),
                ("{}", "mirroring off, as", 2),
                ('{"url": null, "percent": 100}', "mirroring off, as", 3),
                (None, "does not exist", 1),
            ):
                volume.write(off)
                wait_for_log(stable, log_line, times)
                send(client, range(200, 210))
            volume.mirror(shadow.url, 100)
            wait_for_log(stable, "mirroring 100% of requests")
            send(client, range(300, 305))
            wait_until(lambda: metric(stable, MIRRORED, result="sent") == 30, "5 more copies")

            assert stable.process.poll() is None
            assert stable.output().count("Started server process") == 1
        assert shadow.count() == 30
        assert not any(200 <= number < 210 for number in mirrored_ids(shadow.received))


def test_an_invalid_file_mirrors_nothing_and_warns_once_per_change(
    models_dir: Path, tmp_path: Path
):
    volume = ConfigMapVolume(tmp_path / "mirror")
    body = v2_body(breast_cancer_rows(1).tolist())
    with recorder() as shadow:
        volume.write("{not json")
        with (
            running_server(stable_args(models_dir, volume), tmp_path) as stable,
            httpx.Client(base_url=stable.url, timeout=30) as client,
        ):
            wait_for_log(stable, "is invalid: not JSON")
            for content, reason in (
                ('{"url": "https://shadow:443", "percent": 100}', "must start with http://"),
                ('{"url": "' + shadow.url + '", "percent": 150}', "from 0 to 100, got 150"),
                ('{"url": "' + shadow.url + '"}', "percent is missing"),
                ('{"url": "' + shadow.url + '/v2", "percent": 5}', "must be only http://"),
            ):
                volume.write(content)
                wait_for_log(stable, reason)
                infer(client, body)
            # Read again and again (every 2 s), an unchanged file warns no more.
            time.sleep(5)
            infer(client, body)
            volume.mirror(shadow.url, 100)
            wait_for_log(stable, "mirroring 100% of requests")
            infer(client, body)
            wait_until(lambda: shadow.count() == 1, "the copy after the fix")
            log = stable.output()
            assert log.count("is invalid") == 5
            assert log.count("percent is missing") == 1
            assert metric(stable, MIRRORED) == 1


def test_a_shadow_with_the_same_model_agrees_and_another_disagrees(
    models_dir: Path, tmp_path: Path
):
    volume = ConfigMapVolume(tmp_path / "mirror")
    shadow_args = ["--track", "canary"]
    bodies = [v2_body(breast_cancer_rows(100)[i : i + 5].tolist()) for i in range(0, 100, 5)]
    with (
        running_server(
            [*model_args(models_dir, "xgb-classifier.ubj"), *shadow_args], tmp_path
        ) as same,
        running_server(
            [*model_args(models_dir, "xgb-classifier-shifted.ubj"), *shadow_args], tmp_path
        ) as shifted,
    ):
        volume.mirror(same.url, 100)
        with (
            running_server(stable_args(models_dir, volume), tmp_path) as stable,
            httpx.Client(base_url=stable.url, timeout=30) as client,
        ):
            for body in bodies:
                infer(client, body)
            wait_until(lambda: metric(same, SHADOW_ROWS) == 100, "100 rows compared")
            assert metric(same, SHADOW_ROWS, result="agree") == 100
            assert metric(same, SHADOW_ROWS, result="disagree") == 0
            assert metric(same, SHADOW_ROWS, result="unmatched") == 0
            # The copies are the shadow's requests like any other, on its own track.
            assert metric(same, "modelserver_requests_total", code="200", track="canary") == 20

            volume.mirror(shifted.url, 100)
            wait_for_log(stable, f"mirroring 100% of requests to {shifted.url}")
            expected = [predicted(infer(client, body)) for body in bodies]
            wait_until(lambda: metric(shifted, SHADOW_ROWS) == 100, "100 rows compared")
            assert metric(stable, MIRRORED, result="sent") == 40
        shifted_labels = [
            label
            for body in bodies
            for label in predicted(httpx.post(f"{shifted.url}{INFER}", json=body).json())
        ]
        stable_labels = [label for labels in expected for label in labels]
        differing = sum(
            ours != theirs for ours, theirs in zip(stable_labels, shifted_labels, strict=True)
        )
        assert differing > 0
        assert metric(shifted, SHADOW_ROWS, result="disagree") == differing
        assert metric(shifted, SHADOW_ROWS, result="agree") == 100 - differing


def test_a_regressor_shadow_reports_absolute_differences(models_dir: Path, tmp_path: Path):
    volume = ConfigMapVolume(tmp_path / "mirror")
    # A second regressor that predicts otherwise: fewer, shallower trees.
    data = diabetes_rows(442)
    labels = np.linspace(25, 346, len(data))
    other = tmp_path / "other-regressor.ubj"
    xgboost.train(
        {"max_depth": 2, "eta": 0.3}, xgboost.DMatrix(data, label=labels), num_boost_round=5
    ).save_model(other)
    bodies = [v2_body(diabetes_rows(40)[i : i + 4].tolist()) for i in range(0, 40, 4)]
    # So long that its reference (one value per row) would pass 16 KiB: not compared.
    too_long = v2_body(np.resize(diabetes_rows(442), (3000, 10)).tolist())
    with (
        running_server(model_args(models_dir, "xgb-regressor.ubj"), tmp_path) as same,
        running_server(
            ["--model-uri", str(other), "--model-name", NAME, "--track", "canary"], tmp_path
        ) as different,
    ):
        volume.mirror(same.url, 100)
        with (
            running_server(
                stable_args(models_dir, volume, "xgb-regressor.ubj"), tmp_path
            ) as stable,
            httpx.Client(base_url=stable.url, timeout=30) as client,
        ):
            for body in bodies:
                infer(client, body)
            infer(client, too_long)
            wait_until(lambda: metric(stable, MIRRORED, result="sent") == 11, "11 copies sent")
            wait_until(
                lambda: metric(same, "modelserver_requests_total", code="200") == 11,
                "the shadow answered 11",
            )
            assert metric(same, f"{DIFFERENCE}_count") == 40
            assert metric(same, f"{DIFFERENCE}_sum") == 0
            assert metric(same, f"{DIFFERENCE}_bucket", le="0.0") == 40

            volume.mirror(different.url, 100)
            wait_for_log(stable, f"mirroring 100% of requests to {different.url}")
            stable_values = [value for body in bodies for value in predicted(infer(client, body))]
            wait_until(lambda: metric(different, f"{DIFFERENCE}_count") == 40, "40 rows compared")
        other_values = [
            value
            for body in bodies
            for value in predicted(httpx.post(f"{different.url}{INFER}", json=body).json())
        ]
        expected_sum = float(
            np.abs(
                np.asarray(stable_values, np.float32).astype(np.float64)
                - np.asarray(other_values, np.float32).astype(np.float64)
            ).sum()
        )
        assert metric(different, f"{DIFFERENCE}_sum") == pytest.approx(expected_sum, rel=1e-9)
        assert expected_sum > 0


def test_under_overload_copies_are_dropped_and_counted_while_live_requests_succeed(
    models_dir: Path, tmp_path: Path
):
    volume = ConfigMapVolume(tmp_path / "mirror")
    body = orjson.dumps(v2_body(breast_cancer_rows(2).tolist()))
    limits = ["--mirror-queue-size", "5", "--mirror-connections", "1"]
    total = 200
    with blackhole() as silent:
        volume.mirror(silent, 100)
        with running_server(
            [*stable_args(models_dir, volume), *limits, "--mirror-timeout-seconds", "1"],
            tmp_path,
        ) as stable:

            def post(_: int) -> int:
                return httpx.post(f"{stable.url}{INFER}", content=body, timeout=30).status_code

            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(post, range(total)))
            assert codes == [200] * total
            # Copies beyond the queue's 5 and those in flight on the one connection are
            # dropped; those written to the silent port fail after the timeout.
            wait_until(
                lambda: (
                    metric(stable, MIRRORED, result="dropped")
                    + metric(stable, MIRRORED, result="failed")
                    == total
                ),
                "every copy dropped or failed",
            )
            assert metric(stable, MIRRORED, result="sent") == 0
            assert metric(stable, MIRRORED, result="dropped") > 0
            assert metric(stable, MIRRORED, result="failed") > 0
            assert "the shadow did not answer within 1 s" in stable.output()


def test_shutdown_drops_queued_copies_without_waiting_for_them(models_dir: Path, tmp_path: Path):
    volume = ConfigMapVolume(tmp_path / "mirror")
    body = v2_body(breast_cancer_rows(1).tolist())
    with blackhole() as silent:
        volume.mirror(silent, 100)
        # Copies would wait 10 minutes for their answers; shutdown must not.
        args = [*stable_args(models_dir, volume), "--mirror-timeout-seconds", "600"]
        with (
            running_server(args, tmp_path) as stable,
            httpx.Client(base_url=stable.url, timeout=30) as client,
        ):
            for _ in range(300):
                infer(client, body)
            wait_until(
                lambda: metric(stable, "modelserver_mirror_queue_depth") > 0, "copies queued"
            )
            stable.process.send_signal(signal.SIGTERM)
            # Well within the graceful timeout (25 s): nothing waits for the copies.
            assert stable.process.wait(timeout=20) == 0
        assert "Traceback" not in stable.output()


def mirror_processes(server: ServerProcess) -> list[int]:
    """The pids of the server's mirror processes (its children sending the copies)."""
    found = []
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"modelserver.mirror_worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def test_a_mirror_process_that_dies_is_replaced_and_the_copies_go_on(
    models_dir: Path, tmp_path: Path
):
    volume = ConfigMapVolume(tmp_path / "mirror")
    body = v2_body(breast_cancer_rows(1).tolist())
    volume.write(None)
    with (
        recorder() as shadow,
        running_server(stable_args(models_dir, volume), tmp_path) as stable,
        httpx.Client(base_url=stable.url, timeout=30) as client,
    ):
        infer(client, body)
        assert mirror_processes(stable) == []  # none until a shadow is named
        volume.mirror(shadow.url, 100)
        wait_for_log(stable, "mirroring 100% of requests")
        (first,) = mirror_processes(stable)
        for _ in range(5):
            infer(client, body)
        wait_until(lambda: metric(stable, MIRRORED, result="sent") == 5, "5 copies sent")
        os.kill(first, signal.SIGKILL)
        for _ in range(5):
            infer(client, body)  # live requests do not notice; the copies wait in the ring
        wait_for_log(stable, "the mirror process ended (exit code -9)")
        (second,) = mirror_processes(stable)
        assert second != first
        wait_until(lambda: shadow.count() == 10, "the copies made meanwhile sent")
        wait_until(lambda: metric(stable, MIRRORED, result="sent") == 10, "10 copies sent")
        assert metric(stable, MIRRORED, result="failed") == 0
        assert metric(stable, MIRRORED, result="dropped") == 0
    assert ended(second)  # with the server


def ended(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"
