"""One HTTP/2 connection of the gRPC server: unary calls in, answers out, on the event loop
that serves REST.

Why not grpc.aio: its C core runs the socket in threads of its own and hands every call
over to the event loop through a poller thread; in this server that cost ~3x REST's CPU
per request, most of it the hand-over and the threads' contention for the GIL. Here the
event loop reads the socket itself, as it does REST's, and a call costs about what a REST
request does. Only what unary gRPC calls need is implemented: no server push, no
streaming methods, no compression of answers (requests compressed with gzip or deflate
are read).

Writes are gathered: what answers become ready in one turn of the event loop (a
micro-batch answers many calls at once) leave in one write.

A client that abuses the protocol loses its connection (GOAWAY, then close) before it
costs more than a bounded amount of memory and CPU; other connections are served on:

- frames that do no work (no call begun, no request bytes, no answer sent between them):
  more than IDLE_FRAMES_ALLOWED in a row (floods of SETTINGS, WINDOW_UPDATE, empty DATA,
  PRIORITY, resets of ended calls, unknown frame types), ENHANCE_YOUR_CALM;
- PINGs, grpc-core's rule: more than PING_STRIKES_ALLOWED within PING_INTERVAL_SECONDS
  of the one before with no answer sent between them, ENHANCE_YOUR_CALM `too_many_pings`
  (gRPC clients read it and ping less often);
- calls the client resets (RST_STREAM) beyond those answered: more than
  CANCELLED_CALLS_ALLOWED, ENHANCE_YOUR_CALM (the "Rapid Reset" attack, CVE-2023-44487);
- a header block in more than CONTINUATIONS_ALLOWED CONTINUATION frames or larger than
  twice MAX_HEADER_LIST_BYTES, or a header list larger than MAX_HEADER_LIST_BYTES,
  ENHANCE_YOUR_CALM;
- a call begun beyond MAX_CONCURRENT_STREAMS once the client has acknowledged this
  server's SETTINGS, PROTOCOL_ERROR (before, it may not know the limit: REFUSED_STREAM,
  which clients retry).

And a client that sends without reading what it is sent is read no more until it does
(pause_writing), so that its answers do not pile up in the server.
"""

import asyncio
import enum
import logging
import math
import struct
from typing import cast

from hpack import Decoder, HPACKError, OversizedHeaderListError

from modelserver.grpc_calls import (
    CONTENT_TYPE,
    DECOMPRESSED,
    GrpcError,
    Method,
    Service,
    Status,
    decompress,
    timeout_seconds,
    unknown_compression,
)
from modelserver.http2 import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_WINDOW,
    FRAME_HEADER,
    FRAME_HEADER_BYTES,
    MAX_STREAM_ID,
    MAX_WINDOW,
    PREFACE,
    ErrorCode,
    Flag,
    FrameType,
    Setting,
    changes_table,
    data_frames,
    frame,
    goaway,
    parse_settings,
    read_uint31,
    response_headers,
    rst_stream,
    settings_frame,
    status_block,
    window_update,
)

log = logging.getLogger(__name__)

MAX_CONCURRENT_STREAMS = 256
"""Calls in flight on one connection; a client queues more until one ends."""
STREAM_WINDOW = 1 << 20
"""Bytes a client may send on a call before the server asks for more."""
CONNECTION_WINDOW = 1 << 24
"""Bytes a client may send on all its calls before the server asks for more."""
MAX_HEADER_LIST_BYTES = 16_384
"""Advertised (SETTINGS_MAX_HEADER_LIST_SIZE) and enforced: a request's headers, decoded."""
CONTINUATIONS_ALLOWED = 8
"""CONTINUATION frames of one header block; a client splits a block at its frame size
(16 KiB), so a few at most are needed."""
IDLE_FRAMES_ALLOWED = 1000
"""Frames in a row that do no work before the connection is ended: more than any client
needs (one cancelling all its calls sends MAX_CONCURRENT_STREAMS resets), and few enough
that their answers (SETTINGS acknowledgements, REFUSED_STREAM) stay small."""
CANCELLED_CALLS_ALLOWED = 2 * MAX_CONCURRENT_STREAMS
"""Calls a client may reset beyond those the server answered: the work of calls begun
and reset at once stays within that of the calls answered."""
PING_INTERVAL_SECONDS = 300.0
PING_STRIKES_ALLOWED = 2
"""grpc-core's defaults (min_recv_ping_interval_without_data, max_ping_strikes), which
gRPC clients are made for: a PING within 5 minutes of the one before, with no answer
sent between them, is a strike; the third strike ends the connection."""
_MESSAGE_PREFIX = struct.Struct(">?L")
"""Of each gRPC message: compressed or not, length."""
_MESSAGE_PREFIX_BYTES = _MESSAGE_PREFIX.size
_DRAIN_PING = b"draining"
_SERVER_PREFACE = settings_frame(
    {
        Setting.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
        Setting.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        Setting.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_BYTES,
    }
) + window_update(0, CONNECTION_WINDOW - DEFAULT_WINDOW)
_OK_TRAILERS = status_block(0, "")
_DECODED_BLOCKS = 16
"""Decoded header blocks kept per connection: blocks that differ call after call (a
literal deadline, say) must not grow it without end."""
_DECODED_BLOCK_BYTES = 2048
"""Larger header blocks are not kept (a client's usual block is a few hundred bytes)."""
_ABORT_SECONDS = 10.0
"""After a connection error's GOAWAY: how long the client has to close the connection."""


class _Cancelled(enum.Enum):
    """Why a call's handler was cancelled, which decides what the client is sent."""

    CLIENT = "the client reset the call or went away"
    DEADLINE = "the call's deadline passed"
    DRAIN = "the drain's time ran out"


class _ConnectionError(Exception):
    def __init__(self, code: ErrorCode, reason: str, debug: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.debug = reason if debug is None else debug
        """The GOAWAY's debug data, which some clients act upon (`too_many_pings`)."""


class _HeaderBlock:
    """A header block that CONTINUATION frames end."""

    __slots__ = ("continuations", "flags", "fragments", "size", "stream_id")

    def __init__(self, stream_id: int, flags: int, fragment: bytes) -> None:
        self.stream_id = stream_id
        self.flags = flags
        """Of its HEADERS frame."""
        self.fragments = [fragment]
        self.size = len(fragment)
        self.continuations = 0


class _Stream:
    """One call."""

    __slots__ = (
        "cancelled",
        "chunks",
        "declared",
        "encoding",
        "id",
        "method",
        "pending",
        "receive_window",
        "received",
        "receiving",
        "send_window",
        "task",
        "timer",
        "unacknowledged",
    )

    def __init__(self, stream_id: int, method: Method, send_window: int) -> None:
        self.id = stream_id
        self.method = method
        self.receiving = True
        self.chunks: list[bytes] = []
        self.received = 0
        self.declared: int | None = None
        """The request message's length, once its prefix arrived."""
        self.encoding: bytes | None = None
        """How the request message is compressed (grpc-encoding), when its prefix says so."""
        self.receive_window = STREAM_WINDOW
        self.unacknowledged = 0
        self.send_window = send_window
        self.pending = b""
        """Frames of the answer that wait for the client's flow control window."""
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.cancelled: _Cancelled | None = None


class GrpcConnection(asyncio.Protocol):
    def __init__(self, service: Service, connections: set["GrpcConnection"]) -> None:
        self._service = service
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._preface_received = False
        self._decoder = Decoder(max_header_list_size=MAX_HEADER_LIST_BYTES)
        self._decoded: dict[bytes, list[tuple[bytes, bytes]]] = {}
        """Header blocks that leave the decoder's table as it is, decoded (see _decode)."""
        self._continuation: _HeaderBlock | None = None
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0
        self._receive_window = CONNECTION_WINDOW
        self._unacknowledged = 0
        self._send_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self._blocked: dict[int, _Stream] = {}
        """Streams whose answer waits for the connection's flow control window (their own
        is open), in the order they were blocked. Those that wait for their own window are
        found by its WINDOW_UPDATE: one for the connection costs no pass over them."""
        self._settings_acknowledged = False
        """Whether the client has read this server's SETTINGS (its limits)."""
        self._idle_frames = 0
        """Frames in a row that did no work (see _frame)."""
        self._ping_strikes = 0
        self._last_ping_at = -math.inf
        self._cancelled_unanswered = 0
        """Calls the client reset, less those answered since (not below 0)."""
        self._output: list[bytes] = []
        self._flush_scheduled = False
        self._draining = False
        self._refusing_above: int | None = None
        """Once the drain's last GOAWAY went out: the last stream id served."""
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # --- the connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's is no subclass of asyncio.Transport, but is one).
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)
        self._transport.write(_SERVER_PREFACE)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._connections.discard(self)
        for stream in list(self._streams.values()):
            self._end_unanswered(stream)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        # The client reads less than it is sent: read no more of it until it catches up.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return  # closed after a connection error: the rest is not read
        if self._buffer:  # the rest of a frame that began in an earlier read
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        position = 0
        try:
            if not self._preface_received:
                if len(data) < len(PREFACE):
                    if not PREFACE.startswith(data):
                        raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "not HTTP/2")
                    self._buffer += data
                    return
                if not data.startswith(PREFACE):
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "not HTTP/2")
                self._preface_received = True
                position = len(PREFACE)
            available = len(data)
            while available - position >= FRAME_HEADER_BYTES:
                high, low, kind, flags, stream_id = FRAME_HEADER.unpack_from(data, position)
                length = high << 8 | low
                if length > DEFAULT_MAX_FRAME_SIZE:  # what this server advertises
                    raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "frame too large")
                start = position + FRAME_HEADER_BYTES
                end = start + length
                if end > available:
                    break
                position = end
                self._frame(kind, flags, stream_id & MAX_STREAM_ID, data[start:end])
        except _ConnectionError as error:
            self._fail(error)
            return
        if position < len(data):
            self._buffer += data[position:]
        self._flush()

    def begin_drain(self) -> None:
        """Tell the client to start no more calls here. The calls it already sent are
        served: a PING's round trip shows when all of them have arrived, and only then
        does the last GOAWAY name the last one; the connection closes when they end."""
        if self._draining or self._transport is None:
            return
        self._draining = True
        self._write(goaway(MAX_STREAM_ID, ErrorCode.NO_ERROR))
        self._write(frame(FrameType.PING, 0, 0, _DRAIN_PING))
        self._flush()

    def cancel_calls(self) -> None:
        """The drain's time ran out: the calls still running end as cancelled."""
        for stream in list(self._streams.values()):
            self._cancel(stream, _Cancelled.DRAIN)
        self._flush()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- frames ---------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuation is not None and kind != FrameType.CONTINUATION:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "header block not continued")
        # Every frame counts as idle until work is done (a call begun, request bytes, an
        # answer sent), which starts the count afresh; PINGs asking for an answer have a
        # rule of their own (_ping).
        if kind != FrameType.PING or flags & Flag.ACK:
            self._idle_frames += 1
            if self._idle_frames > IDLE_FRAMES_ALLOWED:
                raise _ConnectionError(
                    ErrorCode.ENHANCE_YOUR_CALM,
                    f"more than {IDLE_FRAMES_ALLOWED} frames in a row that did no work (no"
                    " call begun, no request bytes, no answer sent between them)",
                )
        if kind == FrameType.DATA:
            self._data(flags, stream_id, payload)
        elif kind == FrameType.HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == FrameType.WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == FrameType.SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == FrameType.PING:
            self._ping(flags, stream_id, payload)
        elif kind == FrameType.RST_STREAM:
            self._rst_stream(stream_id, payload)
        elif kind == FrameType.CONTINUATION:
            self._continuation_frame(flags, stream_id, payload)
        elif kind == FrameType.PRIORITY:
            if len(payload) != 5:
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY of wrong size")
        elif kind == FrameType.PUSH_PROMISE:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "a client cannot push")
        # GOAWAY: the client starts no more calls and closes when it is done; frames of
        # unknown types are ignored, as HTTP/2 has it.

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise _ConnectionError(
                ErrorCode.PROTOCOL_ERROR, "HEADERS on a stream id not a client's"
            )
        block = _unpadded(flags, payload)
        if flags & Flag.PRIORITY:
            if len(block) < 5:
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short")
            block = block[5:]
        if flags & Flag.END_HEADERS:
            self._header_block(stream_id, flags, block)
        else:
            self._continuation = _HeaderBlock(stream_id, flags, block)

    def _continuation_frame(self, flags: int, stream_id: int, payload: bytes) -> None:
        block = self._continuation
        if block is None or block.stream_id != stream_id:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION of no header block")
        block.fragments.append(payload)
        block.size += len(payload)
        block.continuations += 1
        if block.continuations > CONTINUATIONS_ALLOWED:
            raise _ConnectionError(
                ErrorCode.ENHANCE_YOUR_CALM,
                f"a header block in more than {CONTINUATIONS_ALLOWED} CONTINUATION frames",
            )
        if block.size > 2 * MAX_HEADER_LIST_BYTES:
            raise _ConnectionError(
                ErrorCode.ENHANCE_YOUR_CALM,
                f"a header block of more than {2 * MAX_HEADER_LIST_BYTES} bytes",
            )
        if flags & Flag.END_HEADERS:
            self._continuation = None
            self._header_block(stream_id, block.flags, b"".join(block.fragments))

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decoded.get(block)
        if headers is None:
            headers = self._decode(block)
        end_stream = bool(flags & Flag.END_STREAM)
        stream = self._streams.get(stream_id)
        if stream is not None:  # the request's trailers
            if stream.receiving and end_stream:
                self._end_of_request(stream)
            else:
                self._reset(stream, ErrorCode.PROTOCOL_ERROR)
            return
        if stream_id <= self._last_stream_id:
            return  # a stream this server ended already
        crowded = len(self._streams) >= MAX_CONCURRENT_STREAMS
        if crowded and self._settings_acknowledged:
            raise _ConnectionError(
                ErrorCode.PROTOCOL_ERROR,
                f"a call begun beyond the {MAX_CONCURRENT_STREAMS} at once that this"
                " server's SETTINGS_MAX_CONCURRENT_STREAMS allows",
            )
        self._last_stream_id = stream_id
        if self._refusing_above is not None or crowded:
            self._write(rst_stream(stream_id, ErrorCode.REFUSED_STREAM))  # clients retry
            return
        self._begin(stream_id, headers, end_stream)

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """Every block is decoded, whatever becomes of its stream: the decoder's table
        must follow the client's. Clients send the same block call after call; one that
        leaves the table as it is is kept, decoded, until a block changes the table."""
        try:
            headers = cast(list[tuple[bytes, bytes]], self._decoder.decode(block, raw=True))
        except OversizedHeaderListError as error:
            raise _ConnectionError(
                ErrorCode.ENHANCE_YOUR_CALM,
                f"a header list larger than the {MAX_HEADER_LIST_BYTES} bytes of this"
                " server's SETTINGS_MAX_HEADER_LIST_SIZE",
            ) from error
        except HPACKError as error:
            raise _ConnectionError(ErrorCode.COMPRESSION_ERROR, str(error)) from error
        if changes_table(block):
            self._decoded.clear()
        elif len(block) <= _DECODED_BLOCK_BYTES:
            if len(self._decoded) >= _DECODED_BLOCKS:
                self._decoded.clear()
            self._decoded[block] = headers
        return headers

    def _begin(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        """A new call: the method its path names, and its deadline."""
        method_verb = path = content_type = timeout = encoding = None
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b":method":
                method_verb = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b"grpc-encoding":
                encoding = value
        if method_verb != b"POST":
            self._answer_http(stream_id, b"405", end_stream)
            return
        if content_type is None or not content_type.startswith(CONTENT_TYPE):
            self._answer_http(stream_id, b"415", end_stream)
            return
        method = self._service.methods.get(path or b"")
        if method is None:
            asked = (path or b"").decode("ascii", "replace")
            message = f"unknown method {asked!r}; this server serves {self._service.names()}"
            self._write(_trailers_only(stream_id, Status.UNIMPLEMENTED, message))
            self._served(ended_a_call=True)
            if not end_stream:
                self._write(rst_stream(stream_id, ErrorCode.NO_ERROR))
            return
        stream = _Stream(stream_id, method, self._peer_initial_window)
        stream.encoding = encoding
        self._streams[stream_id] = stream
        self._idle_frames = 0  # a call begun
        seconds = timeout_seconds(timeout)
        if seconds is not None:
            stream.timer = self._loop.call_later(seconds, self._deadline_passed, stream)
        if end_stream:
            self._end_of_request(stream)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        length = len(payload)  # padding included: all of it counts against the windows
        self._receive_window -= length
        if self._receive_window < 0:
            raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window exceeded")
        self._unacknowledged += length
        if self._unacknowledged >= CONNECTION_WINDOW // 2:
            self._write(window_update(0, self._unacknowledged))
            self._receive_window += self._unacknowledged
            self._unacknowledged = 0
        stream = self._streams.get(stream_id)
        if stream is None or not stream.receiving:
            if self._is_idle(stream_id):
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # the rest of a request answered early, or reset
        stream.receive_window -= length
        if stream.receive_window < 0:
            self._reset(stream, ErrorCode.FLOW_CONTROL_ERROR)
            return
        data = _unpadded(flags, payload)
        if data:  # request bytes: work (an empty frame is, if it ends the request)
            self._idle_frames = 0
        stream.chunks.append(data)
        stream.received += len(data)
        prefix_arrived = stream.declared is None and stream.received >= _MESSAGE_PREFIX_BYTES
        if prefix_arrived and not self._check_prefix(stream):
            return
        if flags & Flag.END_STREAM:
            self._end_of_request(stream)
            return
        stream.unacknowledged += length
        if stream.unacknowledged >= STREAM_WINDOW // 2:
            self._write(window_update(stream_id, stream.unacknowledged))
            stream.receive_window += stream.unacknowledged
            stream.unacknowledged = 0

    def _check_prefix(self, stream: _Stream) -> bool:
        """Refuse a compressed or too large message as soon as its prefix says so."""
        first = stream.chunks[0]
        if len(first) < _MESSAGE_PREFIX_BYTES:  # the prefix came in pieces
            first = b"".join(stream.chunks)
        compressed, length = _MESSAGE_PREFIX.unpack_from(first)
        stream.declared = length
        if not compressed:
            stream.encoding = None  # whatever grpc-encoding says, this message is not
        elif stream.encoding not in DECOMPRESSED:
            self._refuse_early(stream, Status.UNIMPLEMENTED, unknown_compression(stream.encoding))
            return False
        limit = self._service.max_message_bytes
        if length > limit:
            self._refuse_early(
                stream,
                Status.RESOURCE_EXHAUSTED,
                f"request message of {length} bytes is larger than the {limit} bytes that"
                " this server reads",
            )
            return False
        return True

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE of wrong size")
        increment = read_uint31(payload)
        if stream_id == 0:
            if increment == 0:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "window above 2^31-1")
            self._send_blocked()
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            if self._is_idle(stream_id):
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return
        stream.send_window += increment
        if increment == 0:
            self._reset(stream, ErrorCode.PROTOCOL_ERROR)
        elif stream.send_window > MAX_WINDOW:
            self._reset(stream, ErrorCode.FLOW_CONTROL_ERROR)
        elif stream.pending:
            self._send_pending(stream)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & Flag.ACK:
            if payload:
                raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            self._settings_acknowledged = True
            return
        if len(payload) % 6:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS of wrong size")
        # The last value of each setting, so that a frame costs one pass over the calls.
        for key, value in dict(parse_settings(payload)).items():
            if key == Setting.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "window above 2^31-1")
                change = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in list(self._streams.values()):
                    stream.send_window += change
                    if stream.send_window > MAX_WINDOW:
                        raise _ConnectionError(
                            ErrorCode.FLOW_CONTROL_ERROR, "a call's window above 2^31-1"
                        )
                    if change > 0 and stream.pending:
                        self._send_pending(stream)
            elif key == Setting.MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME_SIZE <= value < 1 << 24:
                    raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self._peer_max_frame_size = value
            elif key == Setting.ENABLE_PUSH and value > 1:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1")
        self._write(frame(FrameType.SETTINGS, Flag.ACK, 0))
        self._send_blocked()

    def _ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING of wrong size")
        if not flags & Flag.ACK:
            now = self._loop.time()
            if now - self._last_ping_at < PING_INTERVAL_SECONDS:
                self._ping_strikes += 1
                if self._ping_strikes > PING_STRIKES_ALLOWED:
                    raise _ConnectionError(
                        ErrorCode.ENHANCE_YOUR_CALM,
                        f"more than {PING_STRIKES_ALLOWED} PINGs each within"
                        f" {PING_INTERVAL_SECONDS:.0f} seconds of the one before, with no"
                        " answer sent between them",
                        debug="too_many_pings",
                    )
            self._last_ping_at = now
            self._write(frame(FrameType.PING, Flag.ACK, 0, payload))
        elif payload == _DRAIN_PING and self._draining and self._refusing_above is None:
            # Every call the client sent before it read the first GOAWAY has arrived.
            self._refusing_above = self._last_stream_id
            self._write(goaway(self._last_stream_id, ErrorCode.NO_ERROR))
            self._close_when_done()

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise _ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM of wrong size")
        stream = self._streams.get(stream_id)
        if stream is None:
            if self._is_idle(stream_id):
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            return
        self._cancelled_unanswered += 1
        if self._cancelled_unanswered > CANCELLED_CALLS_ALLOWED:
            raise _ConnectionError(
                ErrorCode.ENHANCE_YOUR_CALM,
                f"more than {CANCELLED_CALLS_ALLOWED} calls reset by the client beyond those"
                " answered (as the HTTP/2 Rapid Reset attack does)",
            )
        self._end_unanswered(stream)

    def _is_idle(self, stream_id: int) -> bool:
        """Whether a stream was never opened: beyond the client's last, or a server's
        (this server opens none)."""
        return stream_id > self._last_stream_id or stream_id % 2 == 0

    # --- calls ----------------------------------------------------------------------------

    def _end_of_request(self, stream: _Stream) -> None:
        self._idle_frames = 0
        stream.receiving = False
        chunks = stream.chunks
        stream.chunks = []
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if stream.declared is None or len(body) != _MESSAGE_PREFIX_BYTES + stream.declared:
            self._refuse_early(
                stream, Status.INVALID_ARGUMENT, "a unary call carries exactly one message"
            )
            return
        message = body[_MESSAGE_PREFIX_BYTES:]
        stream.task = self._loop.create_task(self._call(stream, message))

    async def _call(self, stream: _Stream, message: bytes) -> None:
        try:
            if stream.encoding is not None:
                message = decompress(stream.encoding, message, self._service.max_message_bytes)
            response = await stream.method.handler(message)
        except GrpcError as refusal:
            self._answer(stream, None, refusal.status, refusal.message)
        except asyncio.CancelledError:
            stream.task = None
            self._answer_cancelled(stream)
            raise
        except Exception:
            log.exception("a gRPC call failed")
            self._answer(stream, None, Status.INTERNAL, "the server failed; see its log")
        else:
            self._answer(stream, response, Status.OK, "")

    def _answer(
        self, stream: _Stream, response: bytes | None, status: Status, message: str
    ) -> None:
        """The answer's headers, its message if any, and its status in the trailers."""
        stream.task = None
        stream_id = stream.id
        if self._transport is None or self._streams.get(stream_id) is not stream:
            return  # the connection or the call ended meanwhile
        answer = frame(FrameType.HEADERS, Flag.END_HEADERS, stream_id, stream.method.headers_block)
        if response is None:
            trailers_block = status_block(status, message)
        else:
            trailers_block = _OK_TRAILERS
            data = _MESSAGE_PREFIX.pack(False, len(response)) + response
            if len(data) > self._send_window or len(data) > stream.send_window:
                self._write_soon(answer)
                self._served(ended_a_call=False)
                stream.pending = data
                self._send_pending(stream)
                return
            self._send_window -= len(data)
            stream.send_window -= len(data)
            answer += data_frames(stream_id, data, self._peer_max_frame_size, end_stream=False)
        answer += frame(
            FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, stream_id, trailers_block
        )
        self._write_soon(answer)
        self._served(ended_a_call=True)
        self._close_stream(stream)

    def _send_pending(self, stream: _Stream) -> None:
        """What the flow control windows let through of an answer's message; then, once
        all of it went, its trailers."""
        allowed = min(self._send_window, stream.send_window, len(stream.pending))
        if allowed > 0:
            chunk, stream.pending = stream.pending[:allowed], stream.pending[allowed:]
            self._send_window -= allowed
            stream.send_window -= allowed
            self._write_soon(data_frames(stream.id, chunk, self._peer_max_frame_size, False))
            self._served(ended_a_call=False)
        if stream.pending:
            if stream.send_window > 0:  # it waits for the connection's window
                self._blocked[stream.id] = stream
            else:  # for its own
                self._blocked.pop(stream.id, None)
            return
        self._blocked.pop(stream.id, None)
        trailers = frame(
            FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, stream.id, _OK_TRAILERS
        )
        self._write_soon(trailers)
        self._served(ended_a_call=True)
        self._close_stream(stream)

    def _send_blocked(self) -> None:
        """Streams waiting for the connection's window, while it is open: each one it
        reaches sends some of its answer."""
        for stream in list(self._blocked.values()):
            if self._send_window <= 0:
                return
            self._send_pending(stream)

    def _served(self, ended_a_call: bool) -> None:
        """Answer frames go out. The client's frames that do no work and its PINGs are
        counted afresh (clients answer answers: WINDOW_UPDATEs, PINGs that measure the
        bandwidth), and an answered call offsets a reset one."""
        self._idle_frames = 0
        self._ping_strikes = 0
        self._last_ping_at = -math.inf
        if ended_a_call and self._cancelled_unanswered:
            self._cancelled_unanswered -= 1

    def _answer_cancelled(self, stream: _Stream) -> None:
        if stream.cancelled is _Cancelled.DEADLINE:
            self._answer(stream, None, Status.DEADLINE_EXCEEDED, "deadline exceeded")
        elif stream.cancelled is _Cancelled.DRAIN:
            self._reset(stream, ErrorCode.CANCEL)  # the client reads CANCELLED
        else:
            self._close_stream(stream)

    def _cancel(self, stream: _Stream, reason: _Cancelled) -> None:
        """End a call early because its deadline passed or the drain's time ran out: its
        handler is cancelled (and sends what the reason calls for)."""
        if stream.cancelled is not None:
            return
        stream.cancelled = reason
        if stream.task is not None:
            stream.task.cancel()
        elif reason is _Cancelled.DEADLINE and not stream.pending:
            self._refuse_early(stream, Status.DEADLINE_EXCEEDED, "deadline exceeded")
        else:  # an answer already begun can only be cut short
            self._reset(stream, ErrorCode.CANCEL)

    def _deadline_passed(self, stream: _Stream) -> None:
        stream.timer = None
        self._cancel(stream, _Cancelled.DEADLINE)
        self._flush()

    def _refuse_early(self, stream: _Stream, status: Status, message: str) -> None:
        """Answer before the request has all arrived (or without calling the method)."""
        self._write_soon(_trailers_only(stream.id, status, message))
        self._served(ended_a_call=True)
        if stream.receiving:
            # The request's remaining frames are not wanted (RFC 9113 8.1).
            self._write_soon(rst_stream(stream.id, ErrorCode.NO_ERROR))
            stream.receiving = False
        self._close_stream(stream)

    def _reset(self, stream: _Stream, code: ErrorCode) -> None:
        self._write_soon(rst_stream(stream.id, code))
        self._end_unanswered(stream)

    def _end_unanswered(self, stream: _Stream) -> None:
        """The call ends now, for the client too (it reset the call, went away, or is
        sent RST_STREAM): no longer among the calls at once, and its handler, if it
        runs, is cancelled and its answer not sent."""
        stream.cancelled = _Cancelled.CLIENT
        if stream.task is not None:
            stream.task.cancel()
        self._close_stream(stream)

    def _answer_http(self, stream_id: int, status: bytes, end_stream: bool) -> None:
        """A request that is not gRPC's gets a plain HTTP status."""
        self._write(
            frame(
                FrameType.HEADERS,
                Flag.END_HEADERS | Flag.END_STREAM,
                stream_id,
                _http_status(status),
            )
        )
        self._served(ended_a_call=True)
        if not end_stream:
            self._write(rst_stream(stream_id, ErrorCode.NO_ERROR))

    def _close_stream(self, stream: _Stream) -> None:
        stream.receiving = False
        if self._streams.pop(stream.id, None) is None:
            return
        self._blocked.pop(stream.id, None)
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        stream.task = None
        if self._refusing_above is not None:
            self._close_when_done()

    def _close_when_done(self) -> None:
        if not self._streams and self._transport is not None:
            self._flush()
            self._transport.close()
            self._transport = None  # nothing more is written

    # --- output ---------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Queue bytes; data_received's end sends them."""
        self._output.append(data)

    def _write_soon(self, data: bytes) -> None:
        """Queue bytes, sent at the end of this turn of the event loop with the others."""
        self._output.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._output:
            return
        data = b"".join(self._output)
        self._output.clear()
        if self._transport is not None:
            self._transport.write(data)

    def _fail(self, error: _ConnectionError) -> None:
        """A connection error: GOAWAY with its code, then close."""
        log.info("closing a gRPC connection (%s): %s", error.code.name, error)
        self._output.clear()
        transport = self._transport
        if transport is None:
            return
        self._transport = None
        for stream in list(self._streams.values()):
            self._end_unanswered(stream)
        transport.write(goaway(self._last_stream_id, error.code, error.debug.encode()))
        transport.resume_reading()  # if paused (pause_writing): to read what is dropped
        # Half-closed, not closed: what the client still sends is read and dropped until
        # it closes, for a close with bytes unread would reset the connection, and the
        # GOAWAY might be lost with it.
        transport.write_eof()
        self._loop.call_later(_ABORT_SECONDS, transport.abort)


def _unpadded(flags: int, payload: bytes) -> bytes:
    if not flags & Flag.PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


def _trailers_only(stream_id: int, status: Status, message: str) -> bytes:
    block = response_headers(CONTENT_TYPE, ()) + status_block(status, message)
    return frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, stream_id, block)


def _http_status(status: bytes) -> bytes:
    """`:status` with a value (a literal of static table entry 8's name)."""
    return b"\x08" + bytes((len(status),)) + status
