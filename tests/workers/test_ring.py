"""The SPSC ring on a plain bytearray: order, wrap-around, backpressure, torn records."""

from __future__ import annotations

import contextlib
import struct
from collections import deque

import pytest
from hypothesis import given, settings, strategies as st

from somasync.workers.ring import (
    HEADER_SIZE,
    RECORD_OVERHEAD,
    RingCorrupted,
    RingReader,
    RingWriter,
    ring_size,
)


def make_ring(capacity: int = 1024) -> tuple[RingWriter, RingReader, memoryview]:
    buffer = memoryview(bytearray(ring_size(capacity)))
    return RingWriter(buffer), RingReader(buffer), buffer


def test_records_come_out_in_order_across_many_wraps() -> None:
    writer, reader, _ = make_ring(256)
    expected = [bytes([i % 251]) * (i % 97) for i in range(2000)]
    received: list[bytes] = []
    for record in expected:
        while not writer.write(record):
            writer.publish()
            received += reader.read()
    writer.publish()
    received += reader.read()
    assert received == expected
    assert writer.head > 50 * writer.capacity  # really wrapped, many times


def test_full_ring_refuses_without_losing_anything() -> None:
    writer, reader, _ = make_ring(256)
    accepted = 0
    while writer.write(b"x" * 40):
        accepted += 1
    assert accepted == 256 // 48  # 8 header + 40 payload per record
    assert writer.capacity - accepted * 48 == 16
    assert not writer.write(b"y" * 9)  # needs 24 bytes: refused, and nothing staged
    writer.publish()
    assert reader.read() == [b"x" * 40] * accepted
    assert writer.write(b"y")  # room again once the consumer freed it
    writer.publish()
    assert reader.read() == [b"y"]


def test_unpublished_records_are_invisible() -> None:
    writer, reader, _ = make_ring()
    assert writer.write(b"staged")
    assert writer.staged > 0
    assert reader.read() == []
    writer.publish()
    assert reader.read() == [b"staged"]


def test_every_size_up_to_the_maximum_round_trips() -> None:
    writer, reader, _ = make_ring(512)
    for size in range(writer.max_record + 1):
        payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        assert writer.write(payload)
        writer.publish()
        assert reader.read() == [payload]
    with pytest.raises(ValueError, match="max_record"):
        writer.write(b"z" * (writer.max_record + 1))


def test_read_respects_max_records() -> None:
    writer, reader, _ = make_ring()
    for i in range(5):
        writer.write(bytes([i]))
    writer.publish()
    assert reader.read(2) == [b"\x00", b"\x01"]
    assert reader.read() == [b"\x02", b"\x03", b"\x04"]


def test_torn_record_sequence_is_detected_after_the_records_before_it() -> None:
    writer, reader, buffer = make_ring()
    writer.write(b"first")
    writer.write(b"second")
    writer.publish()
    # Overwrite the second record's sequence number, as a torn write would leave it.
    second = HEADER_SIZE + ((RECORD_OVERHEAD + 5 + 7) & ~7)
    struct.pack_into("<I", buffer, second + 4, 999)
    # Before: the read raised and "first", intact, was lost with the torn record.
    assert reader.read() == [b"first"]
    assert not reader.corrupted
    with pytest.raises(RingCorrupted, match="sequence"):
        reader.read()
    assert reader.corrupted


def test_a_corrupted_reader_never_reads_again() -> None:
    """Before: a corrupt record was parsed again at every read, and a consumer waiting
    for its rings to empty spun on it forever. Only a fresh ring (and reader) reads on."""
    writer, reader, buffer = make_ring()
    writer.write(b"abc")
    writer.publish()
    struct.pack_into("<I", buffer, HEADER_SIZE, 10_000)
    with pytest.raises(RingCorrupted, match="length"):
        reader.read()
    struct.pack_into("<I", buffer, HEADER_SIZE, 3)  # even were it whole again
    writer.write(b"later")
    writer.publish()
    with pytest.raises(RingCorrupted, match="length"):
        reader.read()
    assert reader.corrupted
    assert reader.used > 0  # what it holds stays there: the caller skips the reader


def test_restarted_producer_is_detected() -> None:
    """A producer that restarts numbering (crashed and re-attached) cannot be misread."""
    writer, reader, buffer = make_ring()
    writer.write(b"one")
    writer.publish()
    assert reader.read() == [b"one"]
    restarted = RingWriter(buffer)  # counts from sequence 0 again
    restarted.write(b"again")
    restarted.publish()
    with pytest.raises(RingCorrupted):
        reader.read()


def test_sleeping_flag_tells_the_producer_to_wake() -> None:
    writer, reader, _ = make_ring()
    writer.write(b"a")
    assert writer.publish() is True  # a new reader asks for the first wake-up
    reader.set_sleeping(False)
    reader.read()
    writer.write(b"a2")
    assert writer.publish() is False  # awake: no doorbell needed
    reader.read()
    reader.set_sleeping(True)
    writer.write(b"b")
    assert writer.publish() is True
    reader.set_sleeping(False)
    assert reader.read() == [b"b"]


def test_a_full_ring_asks_its_consumer_for_room_and_loses_nothing() -> None:
    from somasync.workers.records import BatchWriter

    writer, reader, _ = make_ring(256)
    batch = BatchWriter(writer)
    records = [bytes([i]) * 40 for i in range(12)]  # more than 256 bytes of ring
    for record in records:
        batch.add(record)
    assert batch.flush()  # the consumer is asleep (a new reader): wake it
    assert batch.pending > 0  # the rest waits for room...
    received = reader.read()
    assert received  # a batch of items is one record
    assert reader.room_wanted()  # ...and the consumer is told to wake the producer
    assert not reader.room_wanted()  # once
    while batch.pending:
        batch.flush()
        received += reader.read()
    assert not reader.room_wanted()  # nothing was left waiting: no request stays set
    items = b"".join(received)
    assert items == b"".join(records)


def test_no_room_request_when_everything_fits() -> None:
    from somasync.workers.records import BatchWriter

    writer, reader, _ = make_ring(1024)
    batch = BatchWriter(writer)
    batch.add(b"x" * 100)
    batch.flush()
    assert reader.read() == [b"x" * 100]
    assert not reader.room_wanted()


def test_capacity_is_validated() -> None:
    with pytest.raises(ValueError, match="capacity"):
        RingWriter(memoryview(bytearray(HEADER_SIZE + 60)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=120), st.integers(min_value=1, max_value=8)),
                max_size=300))
def test_matches_a_fifo_model(operations: list[bytes | int]) -> None:
    """Random interleavings of writes (bytes), publishes and reads (ints) keep FIFO order
    and never lose a record that the writer accepted."""
    writer, reader, _ = make_ring(384)
    model: deque[bytes] = deque()
    staged: list[bytes] = []
    for op in operations:
        if isinstance(op, bytes):
            if writer.write(op):
                staged.append(op)
        else:
            writer.publish()
            model.extend(staged)
            staged.clear()
            got = reader.read(op)
            assert got == [model.popleft() for _ in range(len(got))]
            assert len(got) == min(op, len(got) + len(model))
    writer.publish()
    model.extend(staged)
    assert reader.read() == list(model)


def test_segments_abandoned_by_a_killed_node_are_removed_at_the_next_start() -> None:
    """Before: a SIGKILL of a whole sharded node left its rings in /dev/shm until reboot."""
    import os
    import secrets
    import time
    from multiprocessing import shared_memory

    from somasync.workers import shm

    # A prefix of this test's own, outside shm.PREFIX: every sharded node that other
    # tests start meanwhile sweeps shm.PREFIX, and took the abandoned segment first.
    prefix = f"somasynctest{secrets.token_hex(4)}-"
    assert not prefix.startswith(shm.PREFIX)
    abandoned, fresh = f"{prefix}old", f"{prefix}new"
    for name in (abandoned, fresh):
        with open(os.path.join("/dev/shm", name), "wb") as handle:
            handle.write(bytes(4096))
    old = time.time() - 3600
    os.utime(os.path.join("/dev/shm", abandoned), (old, old))
    in_use = shared_memory.SharedMemory(name=f"{prefix}mapped", create=True, size=4096)
    os.utime(os.path.join("/dev/shm", in_use.name), (old, old))
    try:
        shm.remove_abandoned()  # another node starting meanwhile, as in a full run
        removed = shm.remove_abandoned(older_than=60.0, prefix=prefix)
        # fresh: maybe a node between creating and mapping it; in_use: this process maps it
        assert removed == [abandoned]
        assert not os.path.exists(os.path.join("/dev/shm", abandoned))
        assert shm.leaked_segments(prefix=prefix) == sorted([fresh, in_use.name])
    finally:
        for name in (fresh, abandoned):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join("/dev/shm", name))
        in_use.close()
        in_use.unlink()
