"""HTTP/2 frames as a gRPC server writes them (RFC 9113), and the HPACK header blocks of
its answers (RFC 7541).

The answers' header blocks use no dynamic table: every header is the static table's or
a literal that is not indexed, so a block encoded once is valid on every connection,
whatever the peer's table size, and costs nothing to send again.
"""

import struct
from enum import IntEnum
from urllib.parse import quote

FRAME_HEADER = struct.Struct(">HBBBL")
"""Length (24 bits, split 16 + 8), type, flags, stream id (31 bits) of a frame."""
FRAME_HEADER_BYTES = FRAME_HEADER.size
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""What a client sends first on a connection."""
DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
DEFAULT_MAX_FRAME_SIZE = 16_384
MAX_STREAM_ID = 2**31 - 1


class FrameType(IntEnum):
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


class Flag(IntEnum):
    END_STREAM = 0x1
    ACK = 0x1
    END_HEADERS = 0x4
    PADDED = 0x8
    PRIORITY = 0x20


class Setting(IntEnum):
    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


class ErrorCode(IntEnum):
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    ENHANCE_YOUR_CALM = 0xB


_SETTING = struct.Struct(">HL")
_UINT32 = struct.Struct(">L")
_GOAWAY = struct.Struct(">LL")
_STATUS_200 = b"\x88"
"""`:status: 200`, entry 8 of HPACK's static table."""
_CONTENT_TYPE_INDEX = 31
"""`content-type`, entry 31 of HPACK's static table."""
_GRPC_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
"""Characters that grpc-message carries as they are; others are percent-encoded."""
_GRPC_MESSAGE_MAX_CHARS = 4096
"""Longer status messages are cut, so that the trailers fit in one frame."""


def frame(kind: FrameType, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return FRAME_HEADER.pack(length >> 8, length & 0xFF, kind, flags, stream_id) + payload


def data_frames(stream_id: int, data: bytes, max_frame_size: int, end_stream: bool) -> bytes:
    """`data` as DATA frames of at most `max_frame_size` bytes each."""
    if len(data) <= max_frame_size:
        return frame(FrameType.DATA, Flag.END_STREAM if end_stream else 0, stream_id, data)
    frames = []
    for start in range(0, len(data), max_frame_size):
        last = start + max_frame_size >= len(data)
        flags = Flag.END_STREAM if last and end_stream else 0
        frames.append(frame(FrameType.DATA, flags, stream_id, data[start : start + max_frame_size]))
    return b"".join(frames)


def settings_frame(settings: dict[Setting, int]) -> bytes:
    payload = b"".join(_SETTING.pack(key, value) for key, value in settings.items())
    return frame(FrameType.SETTINGS, 0, 0, payload)


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """(identifier, value) of each setting; the payload's length is a multiple of 6."""
    return [_SETTING.unpack_from(payload, start) for start in range(0, len(payload), 6)]


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(FrameType.WINDOW_UPDATE, 0, stream_id, _UINT32.pack(increment))


def rst_stream(stream_id: int, code: ErrorCode) -> bytes:
    return frame(FrameType.RST_STREAM, 0, stream_id, _UINT32.pack(code))


def goaway(last_stream_id: int, code: ErrorCode, debug: bytes = b"") -> bytes:
    """`debug`: what went wrong, for the peer's logs."""
    return frame(FrameType.GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug)


def read_uint31(payload: bytes) -> int:
    """A window increment or stream id: 32 bits of which the first is reserved."""
    value: int = _UINT32.unpack_from(payload)[0]
    return value & MAX_STREAM_ID


def response_headers(content_type: bytes, metadata: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """The header block that begins a gRPC answer: status 200, content type, metadata."""
    block = _STATUS_200 + _integer(_CONTENT_TYPE_INDEX, 4, 0x00) + _string(content_type)
    return block + b"".join(_literal(name, value) for name, value in metadata)


def status_block(status: int, message: str) -> bytes:
    """grpc-status and, when there is one, grpc-message (percent-encoded as gRPC has it)."""
    block = _literal(b"grpc-status", str(status).encode())
    if message:
        encoded = quote(message[:_GRPC_MESSAGE_MAX_CHARS], safe=_GRPC_MESSAGE_SAFE)
        block += _literal(b"grpc-message", encoded.encode("ascii"))
    return block


def changes_table(block: bytes) -> bool:
    """Whether decoding a (valid) header block changes the decoder's dynamic table: only
    literals with incremental indexing and table size updates do (RFC 7541 6). A block
    that does not decodes to the same headers for as long as the table stays as it is."""
    position = 0
    while position < len(block):
        first = block[position]
        if first & 0x80:  # indexed field
            _, position = _read_integer(block, position, 7)
        elif first & 0x40 or first & 0x20:  # literal with indexing, size update
            return True
        else:  # literal without indexing or never indexed: name index, [name,] value
            name_index, position = _read_integer(block, position, 4)
            if name_index == 0:
                position = _skip_string(block, position)
            position = _skip_string(block, position)
    return False


def _read_integer(block: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
    """An integer with an N-bit prefix at `position`, and the position after it."""
    limit = (1 << prefix_bits) - 1
    value = block[position] & limit
    position += 1
    if value < limit:
        return value, position
    shift = 0
    while True:
        byte = block[position]
        position += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def _skip_string(block: bytes, position: int) -> int:
    length, position = _read_integer(block, position, 7)
    return position + length


def _literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, with a literal name (RFC 7541 6.2.2)."""
    return b"\x00" + _string(name) + _string(value)


def _string(value: bytes) -> bytes:
    """A string literal without Huffman coding."""
    return _integer(len(value), 7, 0x00) + value


def _integer(value: int, prefix_bits: int, flags: int) -> bytes:
    """An integer with an N-bit prefix (RFC 7541 5.1) after the first byte's `flags`."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    encoded = [flags | limit]
    value -= limit
    while value >= 0x80:
        encoded.append((value & 0x7F) | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)
