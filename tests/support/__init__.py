"""Real local HTTP servers for tests (127.0.0.1, ephemeral port, background thread).

`LocalServer(app)` serves a function `app(Request) -> Reply`; use it as a context manager,
it stops by itself on exit::

    with LocalServer(lambda request: Reply(200, "hi", "text/plain")) as server:
        httpx.get(server.url)

`Reply(delay=...)` answers late (woken early when the server stops) and
`Reply(close=True)` drops the connection without an answer. Pass an `ssl.SSLContext`
to serve https.

`RecordingWebhook` is a Slack-style incoming webhook that records what it receives::

    with RecordingWebhook() as hook:          # hook.url
        hook.respond(status=500)              # or respond(delay=2.0) to answer too late
        ...
        assert hook.received[0]["text"]       # the JSON bodies posted, in order

`processes.free_port()` gives a port on 127.0.0.1 that nothing listens on, for "unreachable".

The scripted Prometheus lives in `tests.support.scripted_prometheus`.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, list[str]]
    """Query string and, for form posts, form fields."""
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int
    body: str = ""
    content_type: str = "application/json"
    delay: float = 0.0
    close: bool = False
    """Drop the connection without answering."""


App = Callable[[Request], Reply]


class LocalServer:
    def __init__(self, app: App, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(app, self._stopping))
        # Handlers still sleeping in a delay must not hold up the end of a test.
        self._httpd.daemon_threads = True
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"
        # A short poll interval makes stop() quick.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _handler_class(app: App, stopping: threading.Event) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PATCH(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def _serve(self) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            params = parse_qs(url.query)
            if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                for key, values in parse_qs(body.decode()).items():
                    params.setdefault(key, []).extend(values)
            headers = {key.lower(): value for key, value in self.headers.items()}
            reply = app(Request(self.command, url.path, params, headers, body))
            if reply.delay:
                stopping.wait(reply.delay)
            if reply.close:
                self.close_connection = True
                return
            payload = reply.body.encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: test output is for assertions."""

    return Handler


class RecordingWebhook:
    """A Slack-style incoming webhook that records the JSON it is sent."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self._reply = Reply(200, "ok", "text/plain")
        self._server = LocalServer(self._answer)
        # Shaped like a real incoming-webhook URL, whose path is the secret.
        self.url = f"{self._server.url}/services/T000/B000/secret-token"

    def respond(self, status: int = 200, *, body: str = "ok", delay: float = 0.0) -> None:
        self._reply = Reply(status, body, "text/plain", delay=delay)

    def _answer(self, request: Request) -> Reply:
        self.received.append(json.loads(request.body))
        return self._reply

    def __enter__(self) -> RecordingWebhook:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop()
