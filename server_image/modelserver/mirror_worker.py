"""Shadow traffic, the sending side: a process of its own next to each serving process.

The serving loop puts copies into a shared ring (mirror_ring.py) and goes on; this
process takes them out and sends them to the shadow over a few keep-alive connections
(mirror_client.py), several at a time, and counts what the shadow answered. Writing the
requests, reading and parsing the answers and keeping the connections cost about as much
CPU as a small request's own answer; here they run on another core, not between the live
requests. Copies wait in the ring until a connection has room for them; a copy not
answered within the timeout, or whose connection failed, counts as failed; copies for a
target that was since changed or turned off are dropped.

It ends when told to (SIGTERM) or when the serving process is gone (its socket closes).
"""

import argparse
import asyncio
import logging
import mmap
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass
from urllib.parse import quote

import orjson
import uvloop

from modelserver.mirror_client import PipelinedConnection
from modelserver.mirror_ring import (
    COUNTERS,
    COUNTERS_SIZE,
    GENERATION,
    POSITIONS,
    READ,
    TARGET,
    WRITTEN,
    Record,
    RingReader,
)
from modelserver.shadow_compare import MIRROR_HEADER, REFERENCE_HEADER

log = logging.getLogger(__name__)

MOST_IN_FLIGHT = 32
"""Copies written to one connection and not yet answered, at most."""
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


@dataclass(frozen=True)
class Destination:
    """Where the copies of one target generation go."""

    generation: int
    host: str
    port: int
    model: str | None
    """The shadow's model name, when copies must go to another name's path."""

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


def shadow_path(path: bytes, model: str | None) -> bytes:
    """Where the shadow serves a request sent to `path` (with its query string): without
    /versions/V (the shadow serves another version), under the shadow's model name."""
    path, question, query = path.partition(b"?")
    if b"/versions/" in path:
        path = _VERSIONED_V2.sub(rb"\1\2", path)
    if model is not None:
        name = quote(model, safe="").encode()
        path = _MODEL_IN_PATH.sub(lambda found: found[1] + name, path, count=1)
    return path + question + query


class Counts:
    """What happened to the copies, kept in the shared memory for the serving process."""

    def __init__(self, memory: memoryview) -> None:
        self._memory = memory
        self.taken, self.sent, self.failed, self.dropped, _, _ = COUNTERS.unpack_from(memory)

    def store(self, reader: RingReader) -> None:
        COUNTERS.pack_into(
            self._memory,
            0,
            self.taken,
            self.sent,
            self.failed,
            self.dropped,
            reader.position,
            reader.records,
        )


class _Slot:
    """One of the connections: a connection, or one being opened."""

    def __init__(self) -> None:
        self.connection: PipelinedConnection | None = None
        self.opening: asyncio.Task[None] | None = None
        self.retry_at = 0.0


class Sender:
    """Takes copies out of the ring and sends them to the current destination."""

    def __init__(
        self,
        reader: RingReader,
        counts: Counts,
        channel: socket.socket,
        connections: int,
        timeout: float,
    ) -> None:
        self._reader = reader
        self._counts = counts
        self._channel = channel
        self._timeout = timeout
        self._slots = [_Slot() for _ in range(connections)]
        self._destination: Destination | None = None
        self._fixed_heads: dict[tuple[bytes, bytes | None, bytes | None], bytes] = {}
        """The part of a copy's head that all copies of one path and content type share."""
        self._rotation = 0
        self._unreported = False
        """Records were taken since the serving process was last told how far."""
        self._troubled = False
        """Copies failed since the shadow last answered (logged once)."""
        self.stopping = False

    # Messages from the serving process

    def received(self, message: bytes) -> None:
        kind = message[:1]
        if kind == WRITTEN:
            self._reader.publish(POSITIONS.unpack_from(message, 1)[0])
        elif kind == TARGET:
            (generation,) = GENERATION.unpack_from(message, 1)
            self._retarget(generation, message[1 + GENERATION.size :])
        else:
            log.error("mirroring: ignoring an unknown message %r", message[:16])

    def _retarget(self, generation: int, described: bytes) -> None:
        destination = None
        if described:
            host, port, model = orjson.loads(described)
            destination = Destination(generation, host, port, model)
        previous, self._destination = self._destination, destination
        self._fixed_heads.clear()
        if destination is None or previous is None or destination.address != previous.address:
            for slot in self._slots:
                connection, slot.connection = slot.connection, None
                if connection is not None:
                    connection.abort()  # its unanswered copies count as dropped

    # Sending

    def flush(self) -> None:
        """Send what the ring holds, as far as the connections have room."""
        destination = self._destination
        reader = self._reader
        if destination is None:
            self._drop_all()
            return
        if not reader:
            self.report()
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
                self._open(slot, destination, now)
            elif connection.open and now - connection.opened_at <= MAX_AGE_SECONDS:
                room = MOST_IN_FLIGHT - connection.unanswered
                if room > 0:
                    ready.append((connection, room))
            # else: it finishes its answers first, then is replaced
        if not ready:
            self.report()
            return
        # The connections take turns, a whole batch each (the next one only for what does
        # not fit): one write per batch, several concurrent pipelines for the shadow.
        self._rotation = (self._rotation + 1) % len(ready)
        ready = ready[self._rotation :] + ready[: self._rotation]
        counts = self._counts
        for connection, room in ready:
            buffers: list[bytes] = []
            count = 0
            while count < room:
                record = reader.take()
                if record is None:
                    break
                counts.taken += 1
                self._unreported = True
                if record.generation != destination.generation:
                    counts.dropped += 1  # queued for a target since changed
                    continue
                buffers += (self._fixed_head(record, destination), _variable_head(record))
                buffers.append(record.body)
                count += 1
            if count:
                connection.send(buffers, count)
            if not reader:
                break
        self.report()

    def _drop_all(self) -> None:
        self._counts.dropped += self._take_all()
        self.report()

    def _take_all(self) -> int:
        """Take every published record without sending it; returns how many there were."""
        taken = 0
        while self._reader.take() is not None:
            taken += 1
        if taken:
            self._counts.taken += taken
            self._unreported = True
        return taken

    def _fixed_head(self, record: Record, destination: Destination) -> bytes:
        kind = (record.path, record.content_type, record.header_length)
        fixed = self._fixed_heads.get(kind)
        if fixed is not None:
            return fixed
        if len(self._fixed_heads) >= MOST_FIXED_HEADS:
            self._fixed_heads.clear()  # clients sending many query strings: start again
        path = shadow_path(record.path, destination.model)
        parts = [b"POST ", path, b" HTTP/1.1\r\n", _destination_headers(destination)]
        if record.content_type is not None:
            parts += (b"content-type: ", record.content_type, b"\r\n")
        if record.header_length is not None:
            parts += (b"inference-header-content-length: ", record.header_length, b"\r\n")
        fixed = self._fixed_heads[kind] = b"".join(parts)
        return fixed

    def _open(self, slot: _Slot, destination: Destination, now: float) -> None:
        if slot.opening is None and now >= slot.retry_at:
            slot.opening = asyncio.get_running_loop().create_task(self._connect(slot, destination))

    async def _connect(self, slot: _Slot, destination: Destination) -> None:
        connection = PipelinedConnection(destination.address, self._on_answered, self._on_lost)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                await loop.create_connection(lambda: connection, destination.host, destination.port)
        except (OSError, TimeoutError) as error:
            slot.retry_at = time.monotonic() + RETRY_SECONDS
            self._unreachable(destination, error)
            return
        finally:
            slot.opening = None
        current = self._destination
        if current is None or current.address != destination.address:
            connection.abort()  # the target moved meanwhile
            return
        if not connection.open:
            slot.retry_at = time.monotonic() + RETRY_SECONDS  # closed at once: not a hot loop
            self._unreachable(destination, ConnectionResetError("closed as soon as it opened"))
            return
        slot.connection = connection
        self.flush()

    def _unreachable(self, destination: Destination, error: BaseException) -> None:
        """A connection attempt failed: while no connection is open, what waits fails."""
        self._trouble(f"cannot connect to http://{destination.host}:{destination.port}: {error!r}")
        if any(slot.connection is not None for slot in self._slots):
            return
        self._counts.failed += self._take_all()
        self.report()

    def _on_answered(self, count: int) -> None:
        self._counts.sent += count
        if self._troubled:
            self._troubled = False
            log.info("mirroring: the shadow answers again")
        self.flush()

    def _on_lost(self, connection: PipelinedConnection, unanswered: int) -> None:
        owned = False
        for slot in self._slots:
            if slot.connection is connection:
                slot.connection, owned = None, True
        if self.stopping:
            return
        if unanswered:
            # Lost under us: failed. Closed by us because mirroring moved: dropped.
            if owned:
                self._counts.failed += unanswered
                self._trouble(f"the connection to the shadow failed with {unanswered} unanswered")
            else:
                self._counts.dropped += unanswered
        self.flush()

    def _trouble(self, what: str) -> None:
        if not self._troubled:
            self._troubled = True
            log.warning("mirroring: %s; copies fail until it answers again", what)

    # Telling the serving process

    def report(self) -> None:
        """Store the counts, and say how far the ring is read if that changed."""
        self._counts.store(self._reader)
        if not self._unreported:
            return
        message = READ + POSITIONS.pack(self._reader.position, self._reader.records)
        try:
            self._channel.send(message)
        except BlockingIOError:
            return  # the serving loop has not read the earlier ones: told again later
        self._unreported = False

    # Housekeeping

    async def watch_timeouts(self) -> None:
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
            self.flush()  # e.g. a slot may try to connect again; reports in any case

    def close(self) -> None:
        """Close the connections, without waiting for answers."""
        self.stopping = True
        for slot in self._slots:
            if slot.opening is not None:
                slot.opening.cancel()
            if slot.connection is not None:
                slot.connection.abort()


def _worn(connection: PipelinedConnection, now: float) -> bool:
    """Whether an idle connection is to be replaced before the next write."""
    return (
        not connection.open
        or now - connection.last_active > IDLE_SECONDS
        or now - connection.opened_at > MAX_AGE_SECONDS
    )


def _destination_headers(destination: Destination) -> bytes:
    """The header lines that every copy to `destination` has."""
    host = f"[{destination.host}]" if ":" in destination.host else destination.host  # IPv6
    return f"host: {host}:{destination.port}\r\n".encode() + MIRROR_HEADER + b": 1\r\n"


def _variable_head(record: Record) -> bytes:
    """The rest of the copy's head: the stable's prediction for reference, and the body's
    length; the body follows as it is."""
    if not record.reference:
        return b"content-length: %d\r\n\r\n" % len(record.body)
    return b"%s: %s\r\ncontent-length: %d\r\n\r\n" % (
        REFERENCE_HEADER,
        record.reference,
        len(record.body),
    )


# The process


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m modelserver.mirror_worker",
        description="Sends a serving process's mirrored copies (started by that process).",
    )
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--memory-fd", type=int, required=True)
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--position", type=int, required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--timeout-seconds", type=float, required=True)
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


async def _run(arguments: argparse.Namespace) -> None:
    memory = mmap.mmap(arguments.memory_fd, arguments.memory_bytes)
    view = memoryview(memory)
    channel = socket.socket(fileno=arguments.channel_fd)
    channel.setblocking(False)
    reader = RingReader(view[COUNTERS_SIZE:], arguments.position, arguments.records)
    sender = Sender(
        reader,
        Counts(view[:COUNTERS_SIZE]),
        channel,
        arguments.connections,
        arguments.timeout_seconds,
    )
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def end() -> None:
        if not done.done():
            done.set_result(None)

    def on_readable() -> None:
        while True:
            try:
                message = channel.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                message = b""
            if not message:
                end()  # the serving process is gone
                return
            sender.received(message)
        sender.flush()

    loop.add_signal_handler(signal.SIGTERM, end)
    loop.add_reader(channel, on_readable)
    watcher = loop.create_task(sender.watch_timeouts())
    try:
        await done
    finally:
        loop.remove_reader(channel)
        watcher.cancel()
        sender.close()
        sender.report()
        await asyncio.sleep(0)  # let the aborted connections report


def main(argv: list[str] | None = None) -> None:
    arguments = _arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=arguments.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the serving process ends us
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_run(arguments))


if __name__ == "__main__":
    main()
