"""A lean HTTP/1.1 client connection for mirrored copies: keep-alive and pipelined.

The copies are preformatted requests; several queued ones go out in one write, and the
shadow (uvicorn) answers them in order on the same connection. Responses are parsed by
httptools, the parser uvicorn itself uses, and only counted: nobody reads the shadow's
answers. A general-purpose client (httpx) costs more per request than the stable's own
answer to a small request, which is why this one exists.
"""

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools


class PipelinedConnection(asyncio.Protocol):
    """One connection to the shadow; tells `on_answered` how many requests each read
    completed, and `on_lost` how many were still unanswered when it closed."""

    def __init__(
        self,
        address: tuple[str, int],
        on_answered: Callable[[int], None],
        on_lost: Callable[["PipelinedConnection", int], None],
    ) -> None:
        self.address = address
        self._on_answered = on_answered
        self._on_lost = on_lost
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._sent_at: deque[float] = deque()
        """When each unanswered request was written, oldest first."""
        self._answered = 0
        self.opened_at = time.monotonic()
        self.last_active = self.opened_at
        self.reusable = True
        """False once the shadow said it closes the connection, or answered garbage."""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's is not an asyncio.Transport subclass, hence the cast).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        before = self._answered
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.reusable = False
            self.abort()
        answered = self._answered - before
        if answered:
            self.last_active = time.monotonic()
            self._on_answered(answered)

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost counts what is left

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._transport = None
        unanswered = len(self._sent_at)
        self._sent_at.clear()
        self._on_lost(self, unanswered)

    # httptools callbacks

    def on_message_complete(self) -> None:
        if not self._sent_at:
            self.reusable = False  # an answer to nothing we asked: not a server to trust
            return
        self._answered += 1
        self._sent_at.popleft()
        if not self._parser.should_keep_alive():
            self.reusable = False  # the shadow closes after this answer

    # For the mirror

    @property
    def open(self) -> bool:
        return self._transport is not None and self.reusable

    @property
    def unanswered(self) -> int:
        return len(self._sent_at)

    def oldest_unanswered(self) -> float | None:
        """When the oldest request still waiting for its answer was written."""
        return self._sent_at[0] if self._sent_at else None

    def send(self, buffers: list[bytes], count: int) -> None:
        """Write `count` whole requests, back to back, in one vectored write (uvloop's
        writelines hands the buffers to writev as they are: a large body is not copied)."""
        assert self._transport is not None
        now = time.monotonic()
        self._transport.writelines(buffers)
        self._sent_at.extend(itertools.repeat(now, count))
        self.last_active = now

    def abort(self) -> None:
        """Close now; connection_lost follows and counts the unanswered."""
        if self._transport is not None:
            self._transport.abort()
