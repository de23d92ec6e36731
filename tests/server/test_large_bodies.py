"""Large bodies are decoded away from the event loop, with the same answers as small ones."""

import http.client
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from tests.server.data import breast_cancer_rows
from tests.server.helpers import make_settings, serving_app, v2_body
from tests.server.server_process import ServerProcess, running_server

INFER = "/v2/models/xgb-classifier/infer"
PREDICT = "/v1/models/xgb-classifier:predict"
ROWS = breast_cancer_rows(20).tolist()

# The bound that the issue states for health probes while 4 x 16 MB requests are in flight
# (kubelet's probe timeout is 2 s by default).
PROBE_P99_SECONDS = 0.25
BODY_BYTES = 16_000_000


def tensor(**changes: Any) -> dict[str, Any]:
    body = v2_body(ROWS, id="big-1")
    body["inputs"][0].update(changes)
    return body


BODIES = {
    "v2": (INFER, tensor()),
    "v2 outputs": (INFER, {**tensor(), "outputs": [{"name": "predict_proba"}]}),
    "v2 nan": (INFER, orjson.dumps(tensor()).replace(b"17.99", b"NaN", 1)),
    "v1": (PREDICT, {"instances": ROWS}),
    "feature count": (INFER, tensor(shape=[20, 29], data=[row[:29] for row in ROWS])),
    "ragged": (INFER, tensor(data=[*ROWS[:19], ROWS[19][:29]])),
    "int32 range": (INFER, tensor(datatype="INT32", data=[[2**31] * 30] * 20)),
    "unknown output": (INFER, {**tensor(), "outputs": [{"name": "margin"}]}),
    "not v2": (INFER, {"input": ROWS}),
    "malformed": (INFER, orjson.dumps(tensor())[:-3]),
    "v1 strings": (PREDICT, {"instances": [["x"] * 30] * 20}),
}


@pytest.fixture(scope="module")
def inline_and_offloaded(models_dir: Path) -> Iterator[tuple[TestClient, TestClient]]:
    model = models_dir / "xgb-classifier.ubj"
    inline = make_settings(model, decode_processes=0)
    offloaded = make_settings(model, large_body_bytes=0, decode_processes=1)
    with serving_app(inline) as (here, _), serving_app(offloaded) as (elsewhere, _):
        yield here, elsewhere


@pytest.mark.parametrize("name", sorted(BODIES))
def test_bodies_decoded_in_a_process_get_the_same_answer(inline_and_offloaded, name: str):
    path, body = BODIES[name]
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    answers = [client.post(path, content=content) for client in inline_and_offloaded]
    assert [(a.status_code, a.json()) for a in answers[1:]] == [
        (answers[0].status_code, answers[0].json())
    ]


def big_body(target_bytes: int) -> tuple[bytes, int]:
    """A V2 body of about `target_bytes` (breast cancer rows over and over) and its rows."""
    data = breast_cancer_rows(569)
    per_row = len(orjson.dumps(data.tolist())) / len(data)
    count = math.floor(target_bytes / per_row * 0.99)
    rows = np.resize(data, (count, data.shape[1])).tolist()
    body = orjson.dumps(v2_body(rows, "FP64"))
    assert len(body) <= target_bytes
    return body, count


def request(server: ServerProcess, method: str, path: str, body: bytes | None = None) -> Any:
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        connection.close()


def decoding_processes(server: ServerProcess) -> list[int]:
    """Process ids of the server's pool of decoding processes."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == server.process.pid and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_health_probes_answer_quickly_while_large_bodies_are_decoded(
    models_dir: Path, tmp_path: Path
):
    body, count = big_body(BODY_BYTES)
    args = ["--model-uri", str(models_dir / "xgb-classifier.ubj")]
    with running_server(args, tmp_path) as server:
        probes: list[tuple[float, float, int]] = []  # (sent at, seconds, status)
        answers: list[tuple[int, Any, float, float]] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                for path in ("/v2/health/ready", "/v2/health/live"):
                    started = time.monotonic()
                    status, _ = request(server, "GET", path)  # a new connection, as kubelet
                    probes.append((started, time.monotonic() - started, status))
                time.sleep(0.02)

        def infer() -> None:
            started = time.monotonic()
            status, answer = request(server, "POST", INFER, body)
            answers.append((status, answer, started, time.monotonic()))

        prober = threading.Thread(target=probe)
        prober.start()
        senders = [threading.Thread(target=infer) for _ in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout=240)
        done.set()
        prober.join(timeout=30)

        # A decoding process that dies (say, out of memory) is replaced.
        for pid in decoding_processes(server):
            os.kill(pid, signal.SIGKILL)
        status_after_kill, answer_after_kill = request(server, "POST", INFER, body)

    for status, answer, _, _ in answers:
        assert status == 200, answer
        assert answer["outputs"][0]["shape"] == [count]
    assert status_after_kill == 200, answer_after_kill
    first_sent = min(started for _, _, started, _ in answers)
    last_done = max(finished for _, _, _, finished in answers)
    during = sorted(seconds for at, seconds, _ in probes if first_sent <= at <= last_done)
    assert len(during) >= 20, f"only {len(during)} probes while the large bodies were in flight"
    assert {status for at, _, status in probes if first_sent <= at <= last_done} == {200}
    p99 = during[math.ceil(0.99 * len(during)) - 1]
    assert p99 <= PROBE_P99_SECONDS, f"probe p99 {p99:.3f}s over {len(during)} probes"
