"""Property-based fuzzing of the gRPC server's HTTP/2 layer (grpc_connection.py), in
process: hypothesis writes sessions of valid-ish frames (calls interleaved, header blocks
split over CONTINUATION frames, messages over DATA frames, padding, flow control windows
that open late, resets, PINGs, SETTINGS, frames to be ignored), and each session is fed to
a connection twice: whole in one read, and cut at random byte boundaries with turns of the
event loop between the pieces, so that answers become ready at other moments.

Whatever the session: no exception escapes, every frame the server writes is well formed,
every call gets exactly one complete answer or a reset (a call the client reset, at most
one), each answer is the one its request calls for, and both runs give every call that
was not reset the same answer, byte for byte.

Deterministic (derandomized, no example database), and quick enough for the suite."""

import asyncio
import gzip
import itertools
import logging
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

import hpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelserver.grpc_calls import GrpcError, Method, Service, Status
from modelserver.grpc_connection import GrpcConnection
from modelserver.http2 import (
    FRAME_HEADER,
    PREFACE,
    ErrorCode,
    Flag,
    FrameType,
    Setting,
    frame,
    rst_stream,
    settings_frame,
    window_update,
)
from tests.server.http2_peer import Frame, parse_frames

ANSWER = b"/fuzz.Service/Answer"
WITH_METADATA = b"/fuzz.Service/WithMetadata"
UNKNOWN = b"/fuzz.Service/Unknown"
METADATA = ((b"x-model-variant", b"fuzz"),)
MAX_MESSAGE_BYTES = 1000
RESPONSE_BYTES = (None, 0, 20_000, 70_000)
"""By the request message's length (mod 4): None answers the message itself; 70 kB is
beyond a client's default window of 64 KiB."""
FINAL_WINDOW = 1 << 30
"""Both windows are opened this far at the end of every session, so that every answer
can be sent whole: far from 2^31-1, so that no window overflows."""
REFUSED_MESSAGE = "refused: ü 100%"
MAX_FRAME_SIZE = 20_000
"""The largest SETTINGS_MAX_FRAME_SIZE that sessions set."""


async def handle(message: bytes) -> bytes:
    """The methods' handler: deterministic, and it takes a turn or two of the loop."""
    for _ in range(len(message) % 3):
        await asyncio.sleep(0)
    if message.startswith(b"!"):
        raise GrpcError(Status.INVALID_ARGUMENT, REFUSED_MESSAGE)
    if message.startswith(b"?"):
        raise RuntimeError("a handler that fails")
    return expected_response(message)


def expected_response(message: bytes) -> bytes:
    size = RESPONSE_BYTES[len(message) % 4]
    return message if size is None else (message or b"-") * (size // max(len(message), 1) + 1)


SERVICE = Service(
    {ANSWER: Method(handle), WITH_METADATA: Method(handle, METADATA)},
    max_message_bytes=MAX_MESSAGE_BYTES,
)


# --- sessions ------------------------------------------------------------------------------


@dataclass
class Call:
    stream_id: int
    path: bytes
    verb: bytes
    content_type: bytes
    message: bytes
    body: str
    """How the message is sent: one, gzip, deflate, compressed (not saying how), too large,
    cut (shorter than its prefix says), two (messages), none (no DATA at all)."""
    cuts: list[int]
    """Where the body is split into DATA frames."""
    end: str
    """How the request ends: data (its last DATA frame), empty (an empty DATA frame),
    trailers (a HEADERS frame)."""
    continuations: int
    padded: bool
    prioritized: bool
    """Whether its HEADERS frame carries a priority (which the server skips)."""
    reset_at: int | None
    """After how many of its frames the client resets it, if it does."""
    window_updates: list[int]

    def expected(self) -> tuple[bytes, bytes | None]:
        """The status the answer carries (grpc-status, or :status when the request is
        not gRPC's), and its message when the call succeeds."""
        if self.verb != b"POST":
            return b"405", None
        if not self.content_type.startswith(b"application/grpc"):
            return b"415", None
        if self.path == UNKNOWN:
            return b"%d" % Status.UNIMPLEMENTED, None
        if self.body == "compressed":
            return b"%d" % Status.UNIMPLEMENTED, None
        if self.body == "too large":
            return b"%d" % Status.RESOURCE_EXHAUSTED, None
        if self.body in ("cut", "two", "none"):
            return b"%d" % Status.INVALID_ARGUMENT, None
        if self.message.startswith(b"!"):
            return b"%d" % Status.INVALID_ARGUMENT, None
        if self.message.startswith(b"?"):
            return b"%d" % Status.INTERNAL, None
        return b"0", expected_response(self.message)

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [
            (b":method", self.verb),
            (b":scheme", b"http"),
            (b":path", self.path),
            (b":authority", b"fuzz:8081"),
            (b"content-type", self.content_type),
            (b"te", b"trailers"),
        ]
        if self.body in ("gzip", "deflate"):
            headers.append((b"grpc-encoding", self.body.encode()))
        return headers

    def body_bytes(self) -> bytes:
        message = self.message
        if self.body == "gzip":
            return struct.pack(">?L", True, len(gzip.compress(message))) + gzip.compress(message)
        if self.body == "deflate":
            return struct.pack(">?L", True, len(zlib.compress(message))) + zlib.compress(message)
        if self.body == "compressed":
            return struct.pack(">?L", True, len(message)) + message
        if self.body == "too large":
            return struct.pack(">?L", False, MAX_MESSAGE_BYTES + 1) + message
        if self.body == "cut":
            return struct.pack(">?L", False, len(message) + 1) + message
        if self.body == "two":
            return (struct.pack(">?L", False, len(message)) + message) * 2
        if self.body == "none":
            return b""
        return struct.pack(">?L", False, len(message)) + message


@dataclass
class Session:
    calls: list[Call]
    data: bytes
    """All the client sends, preface first."""


answered = st.binary(max_size=40).map(lambda message: message.lstrip(b"!?"))
refused = st.builds(
    lambda head, rest: head + rest, st.sampled_from([b"!", b"?"]), st.binary(max_size=8)
)
messages = st.one_of([answered] * 6 + [refused])
"""Of which one in seven the handler refuses or fails on."""
BODIES = ["one"] * 12 + ["gzip", "deflate", "compressed", "too large", "cut", "two", "none"]


@st.composite
def calls(draw: st.DrawFn, stream_id: int) -> Call:
    body = draw(st.sampled_from(BODIES))
    call = Call(
        stream_id=stream_id,
        path=draw(st.sampled_from([ANSWER] * 6 + [WITH_METADATA] * 3 + [UNKNOWN])),
        verb=draw(st.sampled_from([b"POST"] * 20 + [b"GET"])),
        content_type=draw(st.sampled_from([b"application/grpc"] * 20 + [b"text/plain"])),
        message=draw(messages),
        body=body,
        cuts=[],
        end=draw(st.sampled_from(["data", "data", "empty", "trailers"])),
        continuations=draw(st.integers(0, 3)),
        padded=draw(st.booleans()),
        prioritized=draw(st.booleans()),
        reset_at=draw(st.none() | st.none() | st.integers(1, 6)),
        window_updates=draw(st.lists(st.integers(1, 100_000), max_size=3)),
    )
    length = len(call.body_bytes())
    if length:
        call.cuts = sorted(draw(st.sets(st.integers(1, length), max_size=6)) - {length})
    return call


def call_frames(call: Call, encoder: hpack.Encoder) -> Iterator[bytes]:
    """The frames of a call, in order; its header block's frames (HEADERS, then any
    CONTINUATION) together, as nothing may come between them. A generator: each header
    block is encoded when it is sent, as the encoder's table follows the blocks' order."""
    block = encoder.encode(call.headers())
    ends_at_headers = call.body == "none" and call.end != "trailers"
    pieces = _split(block, call.continuations)
    flags = Flag.END_STREAM if ends_at_headers else 0
    first = pieces[0]
    if call.prioritized:
        first = bytes(4) + b"\x10" + first  # depends on no stream, weight 17
        flags |= Flag.PRIORITY
    if call.padded:
        first = b"\x03" + first + bytes(3)
        flags |= Flag.PADDED
    if len(pieces) == 1:
        flags |= Flag.END_HEADERS
    header_frames = [frame(FrameType.HEADERS, flags, call.stream_id, first)]
    for index, piece in enumerate(pieces[1:], start=2):
        last = Flag.END_HEADERS if index == len(pieces) else 0
        header_frames.append(frame(FrameType.CONTINUATION, last, call.stream_id, piece))
    yield b"".join(header_frames)
    if ends_at_headers:
        return
    body = call.body_bytes()
    bounds = [0, *call.cuts, len(body)]
    chunks = [body[start:end] for start, end in itertools.pairwise(bounds) if body]
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        flags = Flag.END_STREAM if last and call.end == "data" else 0
        if call.padded and index % 2:
            padded = b"\x02" + chunk + b"ab"  # 2 bytes of padding
            yield frame(FrameType.DATA, flags | Flag.PADDED, call.stream_id, padded)
        else:
            yield frame(FrameType.DATA, flags, call.stream_id, chunk)
    if call.end == "empty" or (call.end == "data" and not chunks):
        yield frame(FrameType.DATA, Flag.END_STREAM, call.stream_id)
    elif call.end == "trailers":
        trailers = encoder.encode([(b"x-request-trailer", b"1")])
        yield frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, call.stream_id, trailers)


def _split(block: bytes, continuations: int) -> list[bytes]:
    step = max(1, len(block) // (continuations + 1))
    pieces = [block[start : start + step] for start in range(0, step * continuations, step)]
    return [*pieces, block[step * continuations :]]


connection_frames = st.sampled_from(
    [
        window_update(0, 1),
        window_update(0, 40_000),
        settings_frame({Setting.INITIAL_WINDOW_SIZE: 0}),
        settings_frame({Setting.INITIAL_WINDOW_SIZE: 100}),
        settings_frame({Setting.INITIAL_WINDOW_SIZE: 70_000}),
        settings_frame({Setting.MAX_FRAME_SIZE: MAX_FRAME_SIZE}),
        settings_frame({Setting.HEADER_TABLE_SIZE: 4096, Setting.ENABLE_PUSH: 0}),
        frame(FrameType.SETTINGS, Flag.ACK, 0),
        frame(FrameType.PRIORITY, 0, 1, bytes(5)),
        frame(FrameType.GOAWAY, 0, 0, bytes(8)),  # the client starts no more calls: no matter
        FRAME_HEADER.pack(0, 1, 0x42, 0, 0) + b"?",  # a frame of an unknown type: ignored
    ]
)


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    count = draw(st.integers(1, 10))
    session_calls = [draw(calls(2 * index + 1)) for index in range(count)]
    encoder = hpack.Encoder()
    initial_window = draw(st.sampled_from([0, 10, 65_535, 1 << 20]))
    sent = [PREFACE + settings_frame({Setting.INITIAL_WINDOW_SIZE: initial_window})]
    pending: dict[int, Iterator[bytes]] = {}
    frames_sent: dict[int, int] = {}
    updates = {call.stream_id: list(call.window_updates) for call in session_calls}
    extra = draw(st.lists(connection_frames, max_size=6))
    pings = draw(st.lists(st.binary(min_size=8, max_size=8), max_size=2))  # fewer than strikes
    next_call = 0
    while next_call < count or pending or extra or pings:
        choices = ["call"] * (next_call < count) + ["frame"] * len(pending)
        choices += ["extra"] * bool(extra) + ["ping"] * bool(pings)
        choices += ["update"] * any(updates[stream_id] for stream_id in frames_sent)
        choice = draw(st.sampled_from(choices))
        if choice == "call":
            call = session_calls[next_call]
            pending[call.stream_id] = call_frames(call, encoder)
            frames_sent[call.stream_id] = 0
            next_call += 1
            choice, stream_id = "frame", call.stream_id
        elif choice == "frame":
            stream_id = draw(st.sampled_from(sorted(pending)))
        if choice == "frame":
            call = session_calls[stream_id // 2]
            following = next(pending[stream_id], None)
            if following is None:
                del pending[stream_id]
                continue
            sent.append(following)
            frames_sent[stream_id] += 1
            if call.reset_at is not None and frames_sent[stream_id] >= call.reset_at:
                sent.append(rst_stream(stream_id, ErrorCode.CANCEL))
                del pending[stream_id]
        elif choice == "extra":
            sent.append(extra.pop())
        elif choice == "ping":
            sent.append(frame(FrameType.PING, 0, 0, pings.pop()))
        elif choice == "update":
            stream_id = draw(st.sampled_from([s for s in frames_sent if updates[s]]))
            sent.append(window_update(stream_id, updates[stream_id].pop()))
    # Windows wide open at the end: every answer can be sent whole.
    sent.append(settings_frame({Setting.INITIAL_WINDOW_SIZE: FINAL_WINDOW}))
    sent.append(window_update(0, FINAL_WINDOW))
    for call in session_calls:
        if call.reset_at is not None and frames_sent[call.stream_id] < call.reset_at:
            call.reset_at = None  # its frames ran out before: it was not reset
    return Session(session_calls, b"".join(sent))


# --- running a session -----------------------------------------------------------------------


class RecordingTransport:
    """What a connection writes, and whether it closed."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written to after it closed"
        self.written.append(data)

    def write_eof(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def run(data: bytes, pieces: random.Random | None) -> bytes:
    """Feed `data` to a new connection (in pieces of random sizes, with turns of the loop
    between them, when `pieces` is given) and let every call finish: what it wrote."""
    failures: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: failures.append(str(context)))
    transport = RecordingTransport()
    connection = GrpcConnection(SERVICE, set())
    connection.connection_made(cast(asyncio.Transport, transport))
    position = 0
    while position < len(data):
        size = len(data) if pieces is None else pieces.randint(1, 300)
        connection.data_received(data[position : position + size])
        position += size
        for _ in range(0 if pieces is None else pieces.randint(0, 3)):
            await asyncio.sleep(0)
    for _ in range(20):  # the handlers take up to 2 turns, their answers one more
        await asyncio.sleep(0)
    connection.connection_lost(None)
    assert not failures, failures
    return b"".join(transport.written)


@dataclass
class Answer:
    """What the server sent on one stream."""

    blocks: list[bytes] = field(default_factory=list)
    data: bytes = b""
    reset: int | None = None
    ended: bool = False


def answers(written: bytes) -> dict[int, Answer]:
    """Each stream's answer, checked to be well formed on the way."""
    frames, rest = parse_frames(written)
    assert not rest, "a frame cut short"
    by_stream: dict[int, Answer] = {}
    for each in frames:
        assert len(each.payload) <= MAX_FRAME_SIZE
        if each.stream_id == 0:
            check_connection_frame(each)
            continue
        assert each.stream_id % 2 == 1, "a frame on a stream the client did not open"
        answer = by_stream.setdefault(each.stream_id, Answer())
        assert answer.reset is None, "a frame after RST_STREAM"
        if each.kind == FrameType.RST_STREAM:
            answer.reset = int.from_bytes(each.payload, "big")
            assert not answer.ended or answer.reset == ErrorCode.NO_ERROR
        elif each.kind == FrameType.HEADERS:
            assert not answer.ended, "HEADERS after the answer ended"
            assert each.flags & Flag.END_HEADERS
            headers = decoded(each.payload)
            answer.blocks.append(each.payload)
            answer.ended = bool(each.flags & Flag.END_STREAM)
            assert len(answer.blocks) == 1 or answer.ended, "a third HEADERS, or no trailers"
            if len(answer.blocks) == 1:
                assert b":status" in headers
            if answer.ended and headers.get(b":status", b"200") == b"200":
                assert b"grpc-status" in headers, "trailers without grpc-status"
        elif each.kind == FrameType.DATA:
            assert answer.blocks, "DATA before the answer's headers"
            assert not answer.ended, "DATA after the answer's trailers"
            assert not each.flags & Flag.END_STREAM, "DATA that ends the answer: trailers do"
            answer.data += each.payload
        else:
            raise AssertionError(f"a frame of type {each.kind} on a stream")
    return by_stream


def check_connection_frame(each: Frame) -> None:
    if each.kind == FrameType.GOAWAY:
        raise AssertionError(f"GOAWAY: {each.payload[8:]!r}")
    assert each.kind in (FrameType.SETTINGS, FrameType.WINDOW_UPDATE, FrameType.PING)
    assert each.kind != FrameType.PING or each.flags & Flag.ACK


def decoded(block: bytes) -> dict[bytes, bytes]:
    """The server's blocks use no dynamic table: each decodes alone."""
    return dict(hpack.Decoder().decode(block, raw=True))


def check_answer(call: Call, answer: Answer | None) -> None:
    if call.reset_at is not None:  # reset by the client: an answer sent before, or none
        return
    assert answer is not None, f"call {call.stream_id} not answered"
    assert answer.ended or answer.reset is not None, f"call {call.stream_id} answered in part"
    if answer.reset is not None and not answer.ended:
        raise AssertionError(f"call {call.stream_id} reset with {ErrorCode(answer.reset)!r}")
    status, response = call.expected()
    first, last = decoded(answer.blocks[0]), decoded(answer.blocks[-1])
    if status in (b"405", b"415"):
        assert first[b":status"] == status
        return
    assert first[b":status"] == b"200"
    assert last[b"grpc-status"] == status
    if call.path == WITH_METADATA and len(answer.blocks) == 2:
        assert first[b"x-model-variant"] == b"fuzz"
    if response is None:
        assert answer.data == b""
    else:
        assert answer.data == struct.pack(">?L", False, len(response)) + response


# --- the property ---------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _quiet_server_logs() -> Iterator[None]:
    """The failing handler's tracebacks and the server's notes, a few hundred times."""
    logger = logging.getLogger("modelserver.grpc_connection")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


@settings(
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(session=sessions(), seed=st.integers(0, 2**32 - 1))
def test_any_session_gets_well_formed_answers_whatever_its_reads(session: Session, seed: int):
    whole = answers(asyncio.run(run(session.data, None)))
    in_pieces = answers(asyncio.run(run(session.data, random.Random(seed))))
    for call in session.calls:
        check_answer(call, whole.get(call.stream_id))
        check_answer(call, in_pieces.get(call.stream_id))
        if call.reset_at is None:
            assert in_pieces[call.stream_id] == whole[call.stream_id]
    assert set(whole) <= {call.stream_id for call in session.calls}
    assert set(in_pieces) <= {call.stream_id for call in session.calls}
