"""The bounded queue between the serving loop and the mirror process: a ring of records in
memory both processes map, and the small messages that go with it over a socket.

The serving loop writes each copy into the ring (a few memory copies, no system call)
and, after each batch it writes, tells the mirror process how far it got;
the mirror process tells it back how far it has read. Positions travel over the socket,
not through the shared memory, so that the kernel orders them after the bytes they
publish on any processor (x86 would keep the order by itself, ARM need not).

A record is a fixed header, then the path, content type, binary-header length, the
stable's prediction as JSON, and the body, padded to 8 bytes. A record that does not
fit before the ring's end starts again at its beginning, after a zero length that says
so.
"""

import struct
from typing import NamedTuple

HEADER = struct.Struct("=IIHHHHI")
"""total length, target generation, lengths of path, content type, header length,
reference, body; an absent content type or header length has NONE as its length."""
HEADER_SIZE = 24
NONE = 0xFFFF
WRAP = 0
"""A record length of 0: the rest of the ring is unused, the next record is at its start."""
LONGEST_PART = 0xFFFE

COUNTERS = struct.Struct("=QQQQQQ")
"""The mirror process's counts, in the shared memory's first bytes: copies taken from the
ring, sent, failed and dropped; and the ring position and record count it has read to
(what a successor starts from after it dies)."""
COUNTERS_SIZE = 64
"""Where the ring's bytes start in the shared memory."""

WRITTEN = b"W"
"""Serving loop -> mirror process: position and record count written to (=QQ)."""
TARGET = b"T"
"""Serving loop -> mirror process: generation (=I), then the target as a JSON array
[host, port, model name or null], or nothing when mirroring is off."""
READ = b"R"
"""Mirror process -> serving loop: position and record count read to (=QQ)."""
POSITIONS = struct.Struct("=QQ")
GENERATION = struct.Struct("=I")


class Record(NamedTuple):
    """A copy as the mirror process takes it from the ring."""

    generation: int
    path: bytes
    """As the client sent it, with its query string."""
    content_type: bytes | None
    header_length: bytes | None
    reference: bytes
    """The stable's prediction as JSON; empty when too long to send."""
    body: bytes


def _padded(length: int) -> int:
    return (length + 7) & ~7


class RingWriter:
    """The serving loop's end: puts records while there is room for them."""

    def __init__(self, ring: memoryview, most_records: int) -> None:
        assert len(ring) % 8 == 0, "records are 8-byte aligned"
        self._ring = ring
        self._size = len(ring)
        self._most_records = most_records
        self.position = 0
        self.records = 0
        self.read_position = 0
        self.read_records = 0

    def put(
        self,
        generation: int,
        path: bytes,
        content_type: bytes | None,
        header_length: bytes | None,
        reference: bytes,
        body: bytes,
    ) -> bool:
        """Write one record; False when the ring has no room for it (nothing written)."""
        if self.records - self.read_records >= self._most_records:
            return False
        if max(len(path), len(content_type or b""), len(header_length or b"")) > LONGEST_PART:
            return False
        small = b"".join((path, content_type or b"", header_length or b"", reference))
        total = _padded(HEADER_SIZE + len(small) + len(body))
        offset = self.position % self._size
        skipped = self._size - offset if total > self._size - offset else 0
        if self.position + skipped + total - self.read_position > self._size:
            return False
        ring = self._ring
        if skipped >= HEADER_SIZE:
            HEADER.pack_into(ring, offset, WRAP, 0, 0, 0, 0, 0, 0)
        if skipped:
            offset = 0
        HEADER.pack_into(
            ring,
            offset,
            total,
            generation,
            len(path),
            NONE if content_type is None else len(content_type),
            NONE if header_length is None else len(header_length),
            len(reference),
            len(body),
        )
        start = offset + HEADER_SIZE
        ring[start : start + len(small)] = small
        start += len(small)
        ring[start : start + len(body)] = body
        self.position += skipped + total
        self.records += 1
        return True

    def never_fits(self, body: bytes) -> bool:
        """Whether a record with this body is too large for even the empty ring."""
        return _padded(HEADER_SIZE + len(body)) > self._size

    def read_to(self, position: int, records: int) -> None:
        """The mirror process has read this far: the space before is free again."""
        self.read_position = max(self.read_position, position)
        self.read_records = max(self.read_records, records)

    @property
    def waiting(self) -> int:
        """Records written and not yet read."""
        return self.records - self.read_records


class RingReader:
    """The mirror process's end: takes the records published to it, in order."""

    def __init__(self, ring: memoryview, position: int, records: int) -> None:
        self._ring = ring
        self._size = len(ring)
        self.position = position
        self.records = records
        self._published = position

    def publish(self, position: int) -> None:
        """The serving loop has written up to `position`."""
        self._published = max(self._published, position)

    def __bool__(self) -> bool:
        return self.position < self._published

    def take(self) -> Record | None:
        """The next published record, copied out of the ring; None when there is none."""
        if self.position >= self._published:
            return None
        ring = self._ring
        offset = self.position % self._size
        if self._size - offset < HEADER_SIZE or HEADER.unpack_from(ring, offset)[0] == WRAP:
            self.position += self._size - offset
            offset = 0
        (
            total,
            generation,
            path_length,
            type_length,
            length_length,
            reference_length,
            body_length,
        ) = HEADER.unpack_from(ring, offset)
        start = offset + HEADER_SIZE
        path = bytes(ring[start : start + path_length])
        start += path_length
        content_type = None
        if type_length != NONE:
            content_type = bytes(ring[start : start + type_length])
            start += type_length
        header_length = None
        if length_length != NONE:
            header_length = bytes(ring[start : start + length_length])
            start += length_length
        reference = bytes(ring[start : start + reference_length])
        start += reference_length
        body = bytes(ring[start : start + body_length])
        self.position += total
        self.records += 1
        return Record(generation, path, content_type, header_length, reference, body)
