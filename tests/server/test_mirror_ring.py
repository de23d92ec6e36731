"""The ring between the serving loop and the mirror process: every copy put in comes out
whole and in order, across the ring's end, and a full ring refuses copies without
spoiling the ones it holds."""

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from modelserver.mirror_ring import Record, RingReader, RingWriter

RING_BYTES = 1024


def ring(size: int = RING_BYTES, most_records: int = 1000) -> tuple[RingWriter, RingReader]:
    memory = memoryview(bytearray(size))
    return RingWriter(memory, most_records), RingReader(memory, 0, 0)


def put(writer: RingWriter, reader: RingReader, record: Record) -> bool:
    accepted = writer.put(*record)
    reader.publish(writer.position)  # as the W message would
    return accepted


def take(writer: RingWriter, reader: RingReader) -> Record | None:
    record = reader.take()
    writer.read_to(reader.position, reader.records)  # as the R message would
    return record


records = st.builds(
    Record,
    generation=st.integers(0, 2**32 - 1),
    path=st.binary(min_size=1, max_size=40),
    content_type=st.none() | st.binary(max_size=30),
    header_length=st.none() | st.binary(max_size=6),
    reference=st.binary(max_size=50),
    body=st.binary(max_size=300),
)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.booleans(), records), max_size=120))
def test_what_is_taken_is_what_was_put_in_the_same_order(steps: list[tuple[bool, Record]]):
    writer, reader = ring()
    queued: deque[Record] = deque()
    for taking, record in steps:
        if taking:
            assert take(writer, reader) == (queued.popleft() if queued else None)
        elif put(writer, reader, record):
            queued.append(record)
        else:
            # Refused only for want of room: once emptied, the ring takes it.
            assert queued
            while queued:
                assert take(writer, reader) == queued.popleft()
            assert put(writer, reader, record)
            queued.append(record)
        assert writer.waiting == len(queued)
    while queued:
        assert take(writer, reader) == queued.popleft()
    assert take(writer, reader) is None


def test_records_go_round_the_ring_many_times():
    writer, reader = ring()
    for number in range(1000):
        record = Record(number, b"/v2/models/m/infer", b"application/json", None, b"[1]", b"x" * 97)
        assert put(writer, reader, record)
        assert take(writer, reader) == record
    assert writer.position > 50 * RING_BYTES


def test_a_full_ring_refuses_a_copy_and_keeps_the_others_whole():
    writer, reader = ring()
    record = Record(1, b"/p", None, None, b"", b"b" * 200)
    accepted = 0
    while put(writer, reader, record):
        accepted += 1
    assert accepted == RING_BYTES // 232  # 24-byte header, path, body, padded to 8
    assert [take(writer, reader) for _ in range(accepted)] == [record] * accepted
    assert take(writer, reader) is None
    assert put(writer, reader, record)


def test_no_more_records_than_the_queue_size_wait():
    writer, reader = ring(most_records=3)
    record = Record(1, b"/p", None, None, b"", b"")
    assert [put(writer, reader, record) for _ in range(4)] == [True, True, True, False]
    take(writer, reader)
    assert put(writer, reader, record)


def test_a_copy_larger_than_the_ring_is_refused_and_said_to_be_so():
    writer, reader = ring()
    too_large = b"z" * RING_BYTES
    assert writer.never_fits(too_large)
    assert not put(writer, reader, Record(1, b"/p", None, None, b"", too_large))
    assert not writer.never_fits(b"z" * 100)


def test_an_absent_content_type_differs_from_an_empty_one():
    writer, reader = ring()
    absent = Record(1, b"/p", None, None, b"", b"{}")
    empty = Record(1, b"/p", b"", b"", b"", b"{}")
    assert put(writer, reader, absent)
    assert put(writer, reader, empty)
    assert take(writer, reader) == absent
    assert take(writer, reader) == empty
