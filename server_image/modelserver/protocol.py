"""uvicorn's HTTP protocol with read deadlines and a shutdown that drops no request.

Read deadlines: a connection must deliver a request's headers within
`header_timeout_seconds` of opening or of the request's first byte, and its body within
`body_timeout_seconds` of the headers, or it is closed (a body that is too slow gets a
408 from the app first). uvicorn alone lets a client hold a connection open forever by
sending nothing, or one byte now and then.

Draining: uvicorn's graceful shutdown closes idle keep-alive connections at once, under
clients that may be sending on them that moment. Here, from the start of the shutdown,
every request on an open connection is still answered but with `Connection: close` (and
readiness says 503), an idle connection stays open until it carries one more request or
its keep-alive timeout closes it, and a connection is closed only after a response.

No timer is set for a request that arrives whole in one read, the common case.

Whole responses: the inference endpoints write a response's head and body to the socket
in one write (`respond_at_once`), where the ASGI way costs two, each a system call.
"""

import asyncio
import enum
from typing import Any

import uvicorn
from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

_DRAINING_KEY = "modelserver.draining"
_BODY_TIMEOUT_KEY = "modelserver.body_timeout_seconds"
_PROTOCOL_KEY = "modelserver.protocol"

Headers = list[tuple[bytes, bytes]]


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration plus the read deadlines (pickled to worker processes)."""

    def __init__(
        self,
        app: Any,
        *,
        header_timeout_seconds: float,
        body_timeout_seconds: float,
        **options: Any,
    ) -> None:
        super().__init__(app, http=ModelServerProtocol, **options)
        self.header_timeout_seconds = header_timeout_seconds
        self.body_timeout_seconds = body_timeout_seconds


def is_draining(scope: Scope) -> bool:
    """Whether the server was shutting down when this request arrived."""
    return _DRAINING_KEY in scope


def body_timed_out(scope: Scope) -> float | None:
    """The body deadline in seconds if this request's body missed it, else None."""
    seconds: float | None = scope.get(_BODY_TIMEOUT_KEY)
    return seconds


def respond_at_once(scope: Scope, status: int, headers: Headers, body: bytes) -> bool:
    """Write a whole response to the request of `scope` in one write to the socket, as
    uvicorn would write it in two (its default headers, `Connection: close` when the
    connection is to close). False when it cannot now (another server, the connection's
    writes paused, access logging on, ...): then the caller sends the ASGI messages.
    `headers` must be valid, lower-case and hold the content-length of `body`."""
    protocol: ModelServerProtocol | None = scope.get(_PROTOCOL_KEY)
    return protocol is not None and protocol.respond_at_once(scope, status, headers, body)


class _Phase(enum.Enum):
    IDLE = enum.auto()
    """Between requests (uvicorn's keep-alive timeout applies) or handling one."""
    HEADERS = enum.auto()
    BODY = enum.auto()


class ModelServerProtocol(HttpToolsProtocol):
    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        assert isinstance(config, ServerConfig), "serve with ServerConfig"
        self._timeouts = {
            _Phase.HEADERS: config.header_timeout_seconds,
            _Phase.BODY: config.body_timeout_seconds,
        }
        self._phase = _Phase.IDLE
        self._deadline: asyncio.TimerHandle | None = None
        self._draining = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._phase = _Phase.HEADERS
        self._set_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._phase is not _Phase.IDLE and self._deadline is None:
            self._set_deadline()  # the request did not arrive whole

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _Phase.HEADERS

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._clear_deadline()
        self._phase = _Phase.BODY
        if self.cycle is None:
            return  # an upgrade: no request for the app
        self.scope[_PROTOCOL_KEY] = self  # type: ignore[literal-required]
        if self._draining:
            self.scope[_DRAINING_KEY] = True  # type: ignore[literal-required]
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._clear_deadline()
        self._phase = _Phase.IDLE

    def respond_at_once(self, scope: Scope, status: int, headers: Headers, body: bytes) -> bool:
        """What uvicorn's RequestResponseCycle.send does for a start message and a whole
        body, but in one write."""
        cycle = self.cycle
        if (
            cycle is None
            or cycle.scope is not scope  # a pipelined request's cycle follows this one
            or cycle.response_started
            or cycle.disconnected
            or cycle.flow.write_paused
            or cycle.access_log
            or scope["method"] == "HEAD"
        ):
            return False
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        content = [STATUS_LINE[status]]
        for name, value in cycle.default_headers:
            content += (name, b": ", value, b"\r\n")
        for name, value in headers:
            content += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", body)
        cycle.transport.write(b"".join(content))
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        cycle.on_response()
        return True

    def shutdown(self) -> None:
        """Called by uvicorn when the server starts shutting down (SIGTERM)."""
        self._draining = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.keep_alive = False
        # An idle connection stays open: a client may be sending on it right now. Its next
        # request is answered with Connection: close; uvicorn's keep-alive timeout (or the
        # header deadline) closes it if none comes.

    def _set_deadline(self) -> None:
        if self.transport.is_closing():
            return
        self._deadline = self.loop.call_later(self._timeouts[self._phase], self._missed_deadline)

    def _clear_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _missed_deadline(self) -> None:
        self._deadline = None
        cycle = self.cycle
        busy = cycle is not None and not cycle.response_complete
        if self._phase is _Phase.HEADERS or not busy:
            # Headers too slow, or a body that nobody reads after the response went out.
            self.transport.close()
            return
        assert cycle is not None
        cycle.keep_alive = False
        if not cycle.response_started:
            # The app is waiting for the body: end it here, so that it answers 408.
            cycle.scope[_BODY_TIMEOUT_KEY] = self._timeouts[_Phase.BODY]  # type: ignore[literal-required]
            cycle.more_body = False
            cycle.message_event.set()
