"""SIGTERM under load: every request sent is answered, and clients are told to go elsewhere.

Keep-alive clients (httpx, one connection each) send requests back to back to a real
server process while it receives SIGTERM. A client may fail to connect once the server
has stopped listening; a request that was sent must never end in a reset or EOF.
"""

import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from tests.server.data import breast_cancer_rows
from tests.server.helpers import v2_body
from tests.server.server_process import running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CLIENTS = 6


@dataclass(frozen=True)
class Exchange:
    status: int | None
    """None: no response."""
    closes: bool
    """The response said Connection: close."""
    sent_at: float
    done_at: float
    error: str = ""


class Client(threading.Thread):
    """Sends `request` on one keep-alive connection until the server refuses to connect."""

    def __init__(self, url: str, method: str, body: bytes | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.method, self.body = url, method, body
        self.exchanges: list[Exchange] = []
        self.refused = False

    def run(self) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(timeout=60, limits=limits) as client:
            while True:
                sent_at = time.monotonic()
                try:
                    response = client.request(
                        self.method,
                        self.url,
                        content=self.body,
                        headers={"content-type": "application/json"},
                    )
                except httpx.ConnectError:
                    self.refused = True  # the server no longer listens: fine
                    return
                except httpx.TransportError as error:
                    failed = Exchange(None, False, sent_at, time.monotonic(), repr(error))
                    self.exchanges.append(failed)
                    return
                closes = response.headers.get("connection", "").lower() == "close"
                answered = Exchange(response.status_code, closes, sent_at, time.monotonic())
                self.exchanges.append(answered)

    def responses(self) -> list[Exchange]:
        return [exchange for exchange in self.exchanges if exchange.status is not None]


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_drops_no_request(models_dir: Path, tmp_path: Path, workers: int):
    model = models_dir / "xgb-classifier.ubj"
    args = [
        "--model-uri",
        str(model),
        "--workers",
        str(workers),
        "--graceful-timeout-seconds",
        "20",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    body = orjson.dumps(v2_body(breast_cancer_rows(50).tolist()))
    with running_server(args, tmp_path) as server:
        clients = [
            Client(f"{server.url}/v2/models/xgb-classifier/infer", "POST", body)
            for _ in range(CLIENTS)
        ]
        probe = Client(f"{server.url}/v2/health/ready", "GET")
        for client in [*clients, probe]:
            client.start()
        deadline = time.monotonic() + 60
        while min(len(client.exchanges) for client in clients) < 5:
            assert time.monotonic() < deadline, "the clients never got going"
            time.sleep(0.05)
        signalled_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for client in [*clients, probe]:
            client.join(timeout=60)
        exit_code = server.process.wait(timeout=60)

    broken = [e.error for c in [*clients, probe] for e in c.exchanges if e.status is None]
    assert broken == [], "requests failed after they were sent"
    for client in clients:
        responses = client.responses()
        assert {e.status for e in responses} == {200}
        # Told to close before its connection went away, then refused: nothing was cut.
        assert responses[-1].closes, "a keep-alive connection was closed without warning"
        assert client.refused
    in_flight = [e for c in clients for e in c.responses() if e.sent_at < signalled_at < e.done_at]
    assert in_flight, "no request was in flight at SIGTERM"
    readiness = [(e.status, e.closes) for e in probe.responses()]
    assert readiness[-1] == (503, True), "readiness never failed before the server went away"
    assert {status for status, _ in readiness[:-1]} <= {200, 503}
    assert probe.refused
    assert exit_code == 0
