"""Connections that send too slowly are closed (raw sockets against a real process)."""

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
