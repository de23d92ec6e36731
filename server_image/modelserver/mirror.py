"""Shadow traffic, the stable's side: copies of answered requests go to a shadow server.

The mirror config file (mirror_config.py) names the shadow and the share of requests to
copy. Of the V2 infer and V1 predict requests answered 200, that share is selected
exactly (an accumulator: 25% is every 4th request), and each selected request is copied
after its response went out: the same body bytes, content type and binary-data header,
to the same path (without /versions/V: the shadow serves another version), with the
stable's prediction in a header so that the shadow can compare (shadow_compare.py).

Copies wait in a bounded queue; a full queue drops them. A few keep-alive connections
(mirror_client.py) send them, several at a time, after the live request is done; nothing
on the live path waits for the shadow. A copy not answered within the timeout, or whose
connection failed, counts as failed; what is queued at shutdown is dropped.
"""

import asyncio
import logging
import re
import time
from collections import deque
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy.typing as npt
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import Scope

from modelserver.metrics import (
    BASE_LABELS,
    MIRROR_DROPPED,
    MIRROR_FAILED,
    MIRROR_QUEUE_DEPTH,
    MIRROR_REQUESTS_TOTAL,
    MIRROR_SENT,
)
from modelserver.mirror_client import PipelinedConnection
from modelserver.mirror_config import POLL_SECONDS, MirrorConfigFile, MirrorTarget
from modelserver.settings import Settings
from modelserver.shadow_compare import MIRROR_HEADER, REFERENCE_HEADER, REFERENCE_MAX_BYTES
from modelserver.tensors import json_array

log = logging.getLogger(__name__)

MOST_IN_FLIGHT = 32
"""Copies written to one connection and not yet answered, at most."""
GATHER_SECONDS = 0.002
"""Copies queued within this time go out together, in one write: a write and the read of
its answers cost the stable a few microseconds each, so fewer are cheaper per copy."""
IDLE_SECONDS = 2.0
"""A connection idle this long is replaced before it is used again: uvicorn closes idle
connections after 5 s, and a copy written as the shadow closes would be lost."""
MAX_AGE_SECONDS = 10.0
"""A connection this old is replaced once it is idle, so that copies spread over the
shadow's pods as they come and go (the Service balances connections, not requests)."""
MOST_FIXED_HEADS = 64
"""Distinct paths and content types whose fixed heads are kept."""
RETRY_SECONDS = 0.5
"""After a failed connection attempt, the wait before the next one of the same slot."""
_VERSIONED_V2 = re.compile(rb"(/v2/models/[^/]+)/versions/[^/]+(/infer)")
_MODEL_IN_PATH = re.compile(rb"^(/v[12]/models/)[^/:]+")


def _renamed(path: bytes, model: str) -> bytes:
    """The path with the shadow's model name in place of the stable's."""
    name = quote(model, safe="").encode()
    return _MODEL_IN_PATH.sub(lambda found: found[1] + name, path, count=1)


class Copy(NamedTuple):
    """A request to send to the shadow, as the stable received it."""

    path: bytes
    content_type: bytes | None
    header_length: bytes | None
    """Inference-Header-Content-Length (binary tensor data), as received."""
    body: bytes
    predicted: npt.NDArray[Any]
    """The stable's predicted values, one per row."""


class _Slot:
    """One of the mirror_connections: a connection, or one being opened."""

    def __init__(self) -> None:
        self.connection: PipelinedConnection | None = None
        self.opening: asyncio.Task[None] | None = None
        self.retry_at = 0.0


class Mirror:
    """Selects, queues and sends the copies of one server process."""

    def __init__(
        self, settings: Settings, registry: CollectorRegistry, base: tuple[str, ...]
    ) -> None:
        assert settings.mirror_config_file is not None
        self._config = MirrorConfigFile(settings.mirror_config_file)
        self._capacity = settings.mirror_queue_size
        self._timeout = settings.mirror_timeout_seconds
        self._slots = [_Slot() for _ in range(settings.mirror_connections)]
        self._queue: deque[Copy] = deque()
        self._target: MirrorTarget | None = None
        self._credit = 0
        """The sampling accumulator, in units of 1 / the share's denominator."""
        self._numerator = self._denominator = 1
        """The target's share as plain integers (a Fraction's are slower to read)."""
        self._fixed_heads: dict[tuple[bytes, bytes | None, bytes | None], bytes] = {}
        """The part of a copy's head that all copies of one path and content type share."""
        self._rotation = 0
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._troubled = False
        """Copies failed since the shadow last answered (logged once)."""
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        requests = Counter(
            MIRROR_REQUESTS_TOTAL,
            "Copies of live requests for the shadow: sent (the shadow answered), dropped"
            " (queue full, or mirroring turned off or moved) or failed (no answer in time,"
            " or the connection failed).",
            (*BASE_LABELS, "result"),
            registry=registry,
        )
        self._sent = requests.labels(*base, MIRROR_SENT)
        self._dropped = requests.labels(*base, MIRROR_DROPPED)
        self._failed = requests.labels(*base, MIRROR_FAILED)
        self._depth = Gauge(
            MIRROR_QUEUE_DEPTH,
            "Copies waiting to be sent to the shadow (read about once a second).",
            BASE_LABELS,
            registry=registry,
            multiprocess_mode="livesum",
        ).labels(*base)

    # Life cycle (the app's lifespan)

    def start(self) -> None:
        """Read the config file, and keep reading it; must run on the serving loop."""
        changed, target = self._config.poll()
        if changed:
            self._apply(target)
        loop = self._loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._watch_config()),
            loop.create_task(self._watch_timeouts()),
        ]

    async def stop(self) -> None:
        """Drop what is queued and close the connections, without waiting for answers."""
        self._stopping = True
        self._target = None
        self._queue.clear()
        tasks = self._tasks + [slot.opening for slot in self._slots if slot.opening]
        for task in tasks:
            task.cancel()
        for slot in self._slots:
            if slot.connection is not None:
                slot.connection.abort()
        await asyncio.gather(*tasks, return_exceptions=True)

    # The live path: cheap, and never waits

    def select(
        self, scope: Scope, headers: dict[bytes, bytes], body: bytes, predicted: npt.NDArray[Any]
    ) -> Copy | None:
        """A copy of this request answered 200, if it is one to mirror."""
        target = self._target
        if target is None or MIRROR_HEADER in headers:
            return None  # off, or a copy itself: never mirrored again
        self._credit += self._numerator
        if self._credit < self._denominator:
            return None
        self._credit -= self._denominator
        path: bytes = scope.get("raw_path") or scope["path"].encode()
        if b"/versions/" in path:
            path = _VERSIONED_V2.sub(rb"\1\2", path)
        if target.model is not None:
            path = _renamed(path, target.model)
        if scope["query_string"]:
            path += b"?" + scope["query_string"]
        return Copy(
            path,
            headers.get(b"content-type"),
            headers.get(b"inference-header-content-length"),
            body,
            predicted,
        )

    def offer(self, copy: Copy) -> None:
        """Queue a copy (call it after the live response went out)."""
        if len(self._queue) >= self._capacity:
            self._dropped.inc()
            return
        self._queue.append(copy)
        self._schedule_flush()

    # Sending

    def _schedule_flush(self) -> None:
        # One flush for all that is queued in the next GATHER_SECONDS.
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_later(GATHER_SECONDS, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        target = self._target
        if target is None or not self._queue:
            return
        now = time.monotonic()
        ready: list[tuple[PipelinedConnection, int]] = []
        for slot in self._slots:
            connection = slot.connection
            if connection is not None and connection.unanswered == 0 and _worn(connection, now):
                slot.connection = None
                connection.abort()
                connection = None
            if connection is None:
                self._open(slot, target, now)
            elif connection.open and now - connection.opened_at <= MAX_AGE_SECONDS:
                room = MOST_IN_FLIGHT - connection.unanswered
                if room > 0:
                    ready.append((connection, room))
            # else: it finishes its answers first, then is replaced
        if not ready:
            return
        # The connections take turns, a whole batch each (the next one only for what does
        # not fit): one write for the stable, several concurrent pipelines for the shadow.
        self._rotation = (self._rotation + 1) % len(ready)
        ready = ready[self._rotation :] + ready[: self._rotation]
        queue = self._queue
        fixed_heads = self._fixed_heads
        for connection, room in ready:
            if not queue:
                break
            count = min(room, len(queue))
            buffers: list[bytes] = []
            for _ in range(count):
                copy = queue.popleft()
                kind = (copy.path, copy.content_type, copy.header_length)
                fixed = fixed_heads.get(kind)
                if fixed is None:
                    fixed = self._fixed_head(kind, target)
                buffers += (fixed, _variable_head(copy), copy.body)
            connection.send(buffers, count)

    def _fixed_head(
        self, kind: tuple[bytes, bytes | None, bytes | None], target: MirrorTarget
    ) -> bytes:
        if len(self._fixed_heads) >= MOST_FIXED_HEADS:
            self._fixed_heads.clear()  # clients sending many query strings: start again
        path, content_type, header_length = kind
        parts = [b"POST ", path, b" HTTP/1.1\r\n", _target_headers(target)]
        if content_type is not None:
            parts += (b"content-type: ", content_type, b"\r\n")
        if header_length is not None:
            parts += (b"inference-header-content-length: ", header_length, b"\r\n")
        fixed = self._fixed_heads[kind] = b"".join(parts)
        return fixed

    def _open(self, slot: _Slot, target: MirrorTarget, now: float) -> None:
        if slot.opening is None and now >= slot.retry_at:
            slot.opening = asyncio.get_running_loop().create_task(self._connect(slot, target))

    async def _connect(self, slot: _Slot, target: MirrorTarget) -> None:
        connection = PipelinedConnection(target.address, self._on_answered, self._on_lost)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                await loop.create_connection(lambda: connection, target.host, target.port)
        except (OSError, TimeoutError) as error:
            slot.retry_at = time.monotonic() + RETRY_SECONDS
            self._unreachable(target, error)
            return
        finally:
            slot.opening = None
        if self._target is None or self._target.address != target.address:
            connection.abort()  # the target moved meanwhile
            return
        if not connection.open:
            slot.retry_at = time.monotonic() + RETRY_SECONDS  # closed at once: not a hot loop
            self._unreachable(target, ConnectionResetError("closed as soon as it opened"))
            return
        slot.connection = connection
        self._schedule_flush()

    def _unreachable(self, target: MirrorTarget, error: BaseException) -> None:
        """A connection attempt failed: while no connection is open, what waits fails."""
        self._trouble(f"cannot connect to http://{target.host}:{target.port}: {error!r}")
        if not any(slot.connection is not None for slot in self._slots) and self._queue:
            self._failed.inc(len(self._queue))
            self._queue.clear()

    def _on_answered(self, count: int) -> None:
        self._sent.inc(count)
        if self._troubled:
            self._troubled = False
            log.info("mirroring: the shadow answers again")
        if self._queue:
            self._schedule_flush()

    def _on_lost(self, connection: PipelinedConnection, unanswered: int) -> None:
        owned = False
        for slot in self._slots:
            if slot.connection is connection:
                slot.connection, owned = None, True
        if self._stopping:
            return
        if unanswered:
            # Lost under us: failed. Closed by us because mirroring moved: dropped.
            if owned:
                self._failed.inc(unanswered)
                self._trouble(f"the connection to the shadow failed with {unanswered} unanswered")
            else:
                self._dropped.inc(unanswered)
        if self._queue:
            self._schedule_flush()

    def _trouble(self, what: str) -> None:
        if not self._troubled:
            self._troubled = True
            log.warning("mirroring: %s; copies fail until it answers again", what)

    # Housekeeping

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            changed, target = self._config.poll()
            if changed:
                self._apply(target)

    def _apply(self, target: MirrorTarget | None) -> None:
        previous, self._target = self._target, target
        self._credit = 0
        if target is not None:
            self._numerator, self._denominator = target.share.as_integer_ratio()
        self._fixed_heads.clear()
        if target is not None and previous is not None and target.address == previous.address:
            return  # only the share changed: the queue and the connections stay
        self._dropped.inc(len(self._queue))
        self._queue.clear()
        for slot in self._slots:
            connection, slot.connection = slot.connection, None
            if connection is not None:
                connection.abort()

    async def _watch_timeouts(self) -> None:
        period = min(self._timeout / 4, 1.0)
        while True:
            await asyncio.sleep(period)
            deadline = time.monotonic() - self._timeout
            for slot in self._slots:
                connection = slot.connection
                oldest = None if connection is None else connection.oldest_unanswered()
                if connection is not None and oldest is not None and oldest < deadline:
                    self._trouble(f"the shadow did not answer within {self._timeout:g} s")
                    connection.abort()  # its unanswered copies count as failed
            self._depth.set(len(self._queue))
            if self._queue:
                self._schedule_flush()  # e.g. a slot may try to connect again


def _worn(connection: PipelinedConnection, now: float) -> bool:
    """Whether an idle connection is to be replaced before the next write."""
    return (
        not connection.open
        or now - connection.last_active > IDLE_SECONDS
        or now - connection.opened_at > MAX_AGE_SECONDS
    )


def _target_headers(target: MirrorTarget) -> bytes:
    """The header lines that every copy to `target` has."""
    host = f"[{target.host}]" if ":" in target.host else target.host  # IPv6
    return f"host: {host}:{target.port}\r\n".encode() + MIRROR_HEADER + b": 1\r\n"


def _variable_head(copy: Copy) -> bytes:
    """The rest of the copy's head: the stable's prediction for reference, and the body's
    length; the body follows as it is (written from the same bytes, not copied)."""
    try:
        reference = orjson.dumps(copy.predicted, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:  # string labels, or an array orjson does not take as is
        reference = orjson.dumps(json_array(copy.predicted), option=orjson.OPT_SERIALIZE_NUMPY)
    if len(reference) > REFERENCE_MAX_BYTES:
        return b"content-length: %d\r\n\r\n" % len(copy.body)
    return b"%s: %s\r\ncontent-length: %d\r\n\r\n" % (REFERENCE_HEADER, reference, len(copy.body))
