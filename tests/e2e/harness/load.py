"""Requests spread evenly over the serving pods, as the client Service spreads them."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.e2e.harness.pods import PodMirror


@dataclass(frozen=True)
class Sent:
    at: float
    track: str
    status: int
    seconds: float


@dataclass
class Load:
    mirror: PodMirror
    model: str
    body: bytes
    rate: float = 40.0  # requests per second
    max_seconds: float = 300.0  # stops by itself even if the test forgets
    sent: list[Sent] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        started = time.monotonic()
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
                servers = self.mirror.serving()
                if servers:
                    server = random.choice(servers)
                    begin = time.monotonic()
                    try:
                        reply = client.post(
                            f"http://{server.address}/v2/models/{self.model}/infer",
                            content=self.body,
                            headers={"Content-Type": "application/json"},
                        )
                        status = reply.status_code
                    except httpx.HTTPError:
                        status = 0
                    self.sent.append(Sent(begin, server.track, status, time.monotonic() - begin))
                self._stop.wait(1 / self.rate)

    def first_failure(self, track: str, since: float = 0.0) -> Sent | None:
        for sent in list(self.sent):
            if sent.track == track and sent.at >= since and sent.status != 200:
                return sent
        return None
