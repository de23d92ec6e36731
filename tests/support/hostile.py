"""A hostile HTTP server for tests: it answers with a body that never ends.

`EndlessServer()` listens on 127.0.0.1 and answers every request with `200 OK` and a
chunked body that goes on until the client hangs up (or `cap` bytes, so a broken client
cannot make a test run forever). `sent` is how many body bytes went out to the last
client, `hung_up` is set once that client closed the connection::

    with EndlessServer() as server:
        ...  # point a client at server.url
        assert server.hung_up.wait(5) and server.sent < 16 * 2**20
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

_CHUNK = b"x" * 65536


class EndlessServer:
    def __init__(self, *, content_length: int | None = None, cap: int = 1 << 30) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._content_length = content_length
        self._cap = cap
        self.sent = 0
        self.hung_up = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self._listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            with connection:
                self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        connection.recv(65536)  # the request; its content does not matter
        self.sent = 0
        self.hung_up.clear()
        framing = (
            f"Content-Length: {self._content_length}"
            if self._content_length is not None
            else "Transfer-Encoding: chunked"
        )
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
        chunk = _CHUNK if self._content_length is not None else b"10000\r\n" + _CHUNK + b"\r\n"
        # MSG_NOSIGNAL: a client hanging up is an error to note, never a SIGPIPE.
        try:
            connection.sendall(head.encode(), socket.MSG_NOSIGNAL)
            while self.sent < self._cap and not self._stop.is_set():
                connection.sendall(chunk, socket.MSG_NOSIGNAL)
                self.sent += len(_CHUNK)
        except OSError:
            pass
        self.hung_up.set()

    def __enter__(self) -> EndlessServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()
