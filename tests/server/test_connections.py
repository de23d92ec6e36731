"""Connections that send too slowly are closed (raw sockets against a real process)."""

import json
import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.server_process import ServerProcess, running_server
from tests.server.test_process import metric_samples

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
# Far beyond the deadlines: a connection still open by then was never going to be closed.
GIVE_UP_SECONDS = 15.0
INFER = "/v2/models/xgb-classifier/infer"


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("slow-clients")
    env = {
        **os.environ,
        "MODELSERVER_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "MODELSERVER_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    }
    args = ["--model-uri", str(models_dir / "xgb-classifier.ubj")]
    with running_server(args, tmp_path, env=env) as process:
        yield process


def connect(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def trickle_until_closed(connection: socket.socket, data: bytes) -> bytes:
    """Send `data` a byte every 0.1 s; return what the server sent before it closed."""
    received = b""
    deadline = time.monotonic() + GIVE_UP_SECONDS
    for byte in data:
        readable, _, _ = select.select([connection], [], [], 0.1)
        if readable:
            chunk = connection.recv(65536)
            if not chunk:
                return received
            received += chunk
            continue
        try:
            connection.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return received
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"still open after {GIVE_UP_SECONDS}s; received {received!r}")


def read_until_closed(connection: socket.socket) -> bytes:
    received = b""
    connection.settimeout(GIVE_UP_SECONDS)
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_connections_that_send_nothing_are_closed(server: ServerProcess):
    connections = [connect(server) for _ in range(50)]
    try:
        for connection in connections:
            assert read_until_closed(connection) == b""
    finally:
        for connection in connections:
            connection.close()


def test_headers_sent_too_slowly_close_the_connection(server: ServerProcess):
    with connect(server) as connection:
        connection.sendall(f"POST {INFER} HTTP/1.1\r\nHost: test\r\n".encode())
        assert trickle_until_closed(connection, b"X-Slow: " + b"a" * 1000) == b""


def test_body_sent_too_slowly_gets_408_and_closes(server: ServerProcess):
    def timeouts() -> float:
        samples = metric_samples(server, "modelserver_requests_total")
        return sum(v for labels, v in samples if labels["code"] == "408")

    before = timeouts()
    with connect(server) as connection:
        body = b'{"inputs": [' + b" " * 5000 + b"]}"
        connection.sendall(
            f"POST {INFER} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/json\r\n\r\n".encode()
        )
        response = trickle_until_closed(connection, body)
    head, _, content = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head.lower()
    assert content == (
        b'{"error":"request body not received within %g s of its headers"}' % BODY_TIMEOUT
    )
    samples = metric_samples(server, "modelserver_requests_total")
    assert [labels["outcome"] for labels, _ in samples if labels["code"] == "408"] == [
        "client_error"
    ]
    assert timeouts() == before + 1


def test_body_that_nobody_reads_is_cut_off(server: ServerProcess):
    """A body after an early answer (here a health check) cannot hold the connection."""
    with connect(server) as connection:
        connection.sendall(
            b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\nContent-Length: 5000\r\n\r\n"
        )
        response = trickle_until_closed(connection, b"x" * 5000)
    assert response.startswith(b"HTTP/1.1 200 ")


def test_requests_that_arrive_in_pieces_in_time_are_answered(server: ServerProcess):
    body = b'{"instances": [[' + b", ".join([b"1.0"] * 30) + b"]]}"
    request = (
        f"POST /v1/models/xgb-classifier:predict HTTP/1.1\r\nHost: test\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    with connect(server) as connection:
        for start in range(0, len(request), 40):
            connection.sendall(request[start : start + 40])
            time.sleep(0.01)
        response = read_until_closed(connection)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert b'"predictions":[' in response


def infer_request(rows: int, *headers: str) -> bytes:
    body = b'{"inputs": [{"name": "x", "shape": [%d, 30], "datatype": "FP64", "data": [%s]}]}' % (
        rows,
        b", ".join([b"0.5"] * 30 * rows),
    )
    head = [f"POST {INFER} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def responses(received: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Status lines, headers and bodies of the HTTP/1.1 responses in `received`, in order."""
    parsed = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = dict(line.split(b": ", 1) for line in lines)
        length = int(headers[b"content-length"])
        parsed.append((status, headers, rest[:length]))
        received = rest[length:]
    return parsed


def test_pipelined_requests_are_answered_whole_and_in_order(server: ServerProcess):
    """Requests sent at once on one connection, the next one arriving before the answer
    to the one before: each answer is whole (its head, then its body), in their order."""
    sent = [
        infer_request(1),
        infer_request(3),
        b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n",
        infer_request(2, "Connection: close"),
    ]
    with connect(server) as connection:
        connection.sendall(b"".join(sent))
        answers = responses(read_until_closed(connection))

    assert [status for status, _, _ in answers] == [b"HTTP/1.1 200 OK"] * 4
    predicted_rows = [json.loads(answers[i][2])["outputs"][0]["shape"] for i in (0, 1, 3)]
    assert predicted_rows == [[1], [3], [2]]
    assert answers[2][2] == b'{"live":true}'
    assert answers[3][1][b"connection"] == b"close"


def test_an_http_1_0_request_is_answered_and_its_connection_closed(server: ServerProcess):
    request = infer_request(1).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    with connect(server) as connection:
        connection.sendall(request)
        ((status, headers, body),) = responses(read_until_closed(connection))

    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"connection"] == b"close"
    assert headers[b"content-type"] == b"application/json"
    assert b'"model_name":"xgb-classifier"' in body
