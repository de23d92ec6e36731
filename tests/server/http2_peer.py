"""A plain-socket HTTP/2 peer of the gRPC server, for what real gRPC clients never send:
frames written by hand, split or abusive, and the server's frames read back as they are."""

import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import hpack

from modelserver.http2 import PREFACE, Flag, FrameType, frame, settings_frame
from tests.server.grpc_client import SERVICE

FRAME_HEADER_BYTES = 9


@dataclass(frozen=True)
class Frame:
    kind: int
    flags: int
    stream_id: int
    payload: bytes


@dataclass(frozen=True)
class GoAway:
    last_stream_id: int
    code: int
    debug: bytes


def parse_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """The whole frames at the start of `data`, and the bytes after them."""
    frames, position = [], 0
    while position + FRAME_HEADER_BYTES <= len(data):
        length = int.from_bytes(data[position : position + 3], "big")
        end = position + FRAME_HEADER_BYTES + length
        if end > len(data):
            break
        kind, flags = data[position + 3], data[position + 4]
        stream_id = int.from_bytes(data[position + 5 : position + 9], "big") & 0x7FFFFFFF
        frames.append(Frame(kind, flags, stream_id, data[position + FRAME_HEADER_BYTES : end]))
        position = end
    return frames, data[position:]


def goaway_of(frames: list[Frame]) -> GoAway | None:
    """The first GOAWAY among `frames`."""
    for received in frames:
        if received.kind == FrameType.GOAWAY:
            last, code = struct.unpack(">LL", received.payload[:8])
            return GoAway(last & 0x7FFFFFFF, code, received.payload[8:])
    return None


def read_until_closed(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def read_stream(connection: socket.socket, stream_id: int) -> list[Frame]:
    """The frames on `stream_id` until one ends the stream (the others are dropped)."""
    return read_streams(connection, stream_id)[stream_id]


def read_streams(connection: socket.socket, *stream_ids: int) -> dict[int, list[Frame]]:
    """The frames on each of `stream_ids` until one ends each stream (the others are
    dropped); read together, as the server may answer them in one segment."""
    received = b""
    frames: dict[int, list[Frame]] = {stream_id: [] for stream_id in stream_ids}
    open_streams = set(stream_ids)
    while open_streams:
        chunk = connection.recv(65536)
        assert chunk, "the server closed the connection"
        parsed, received = parse_frames(received + chunk)
        for each in parsed:
            if each.stream_id in frames:
                frames[each.stream_id].append(each)
                if each.flags & Flag.END_STREAM or each.kind == FrameType.RST_STREAM:
                    open_streams.discard(each.stream_id)
    return frames


def request_headers(target: str, method: str = "ModelInfer") -> list[tuple[str, str]]:
    """Those of a call, as a gRPC client sends them."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", SERVICE + method),
        (":authority", target),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


def grpc_message(message: bytes) -> bytes:
    """`message` with gRPC's 5-byte prefix: not compressed, its length."""
    return struct.pack(">?L", False, len(message)) + message


def call_frames(
    encoder: hpack.Encoder, target: str, stream_id: int, method: str, message: bytes
) -> bytes:
    """A whole unary call: its headers, then its message ending the stream."""
    block = encoder.encode(request_headers(target, method))
    headers = frame(FrameType.HEADERS, Flag.END_HEADERS, stream_id, block)
    return headers + frame(FrameType.DATA, Flag.END_STREAM, stream_id, grpc_message(message))


@contextmanager
def http2_connection(target: str) -> Iterator[socket.socket]:
    """A socket to the server that has sent the preface and empty SETTINGS."""
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(PREFACE + settings_frame({}))
        yield connection
