"""What the gRPC server serves, as its HTTP/2 layer (grpc_connection.py) sees it: unary
methods by path, each a coroutine from the serialized request to the serialized response,
and the gRPC statuses they refuse with."""

import enum
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from modelserver.http2 import response_headers

CONTENT_TYPE = b"application/grpc"
DECOMPRESSED = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
"""The grpc-encodings of request messages that are read, and their zlib window bits
(gRPC's deflate is zlib's format)."""
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


class Status(enum.IntEnum):
    """gRPC status codes."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


class GrpcError(Exception):
    """A call's refusal: its status and the message the client reads."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Handler = Callable[[bytes], Awaitable[bytes]]
"""A unary method: the serialized request to the serialized response (or GrpcError)."""


@dataclass(frozen=True)
class Method:
    handler: Handler
    initial_metadata: tuple[tuple[bytes, bytes], ...] = ()
    """Headers of every answer, the client's initial metadata."""
    headers_block: bytes = field(init=False)

    def __post_init__(self) -> None:
        block = response_headers(CONTENT_TYPE, self.initial_metadata)
        object.__setattr__(self, "headers_block", block)


@dataclass(frozen=True)
class Service:
    methods: Mapping[bytes, Method]
    """By path: b"/package.Service/Method"."""
    max_message_bytes: int
    """Larger request messages are refused (RESOURCE_EXHAUSTED) before they are read."""

    def names(self) -> str:
        """The services' names, for messages."""
        return ", ".join(sorted({path.decode().split("/")[1] for path in self.methods}))


def timeout_seconds(value: bytes | None) -> float | None:
    """grpc-timeout (up to 8 digits and a unit) in seconds; None for none or a bad one."""
    if value is None or not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _TIMEOUT_UNITS.get(value[-1:])
    return None if unit is None else int(value[:-1]) * unit


def decompress(encoding: bytes, message: bytes, limit: int) -> bytes:
    """A compressed request message as it was sent, if it is at most `limit` bytes."""
    name = encoding.decode()
    inflater = zlib.decompressobj(DECOMPRESSED[encoding])
    try:
        plain = inflater.decompress(message, limit + 1)
    except zlib.error as error:
        raise GrpcError(
            Status.INVALID_ARGUMENT, f"the request message is not valid {name} data: {error}"
        ) from error
    if len(plain) > limit:
        raise GrpcError(
            Status.RESOURCE_EXHAUSTED,
            f"the request message, decompressed, is larger than the {limit} bytes that this"
            " server reads",
        )
    if not inflater.eof:
        raise GrpcError(Status.INVALID_ARGUMENT, f"the request message's {name} data is cut short")
    return plain


def unknown_compression(encoding: bytes | None) -> str:
    how = (
        "no grpc-encoding" if encoding in (None, b"identity") else encoding.decode(errors="replace")
    )
    return (
        f"the request message is compressed ({how}); send it uncompressed, or compressed with"
        " gzip or deflate"
    )
