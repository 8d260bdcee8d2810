"""Items carried between the processes of a sharded node, packed in batches.

One ring record holds a batch of items (Python pays per record, so items travel in
batches, never one record each). Item layout::

    u8 kind | u64 link | u8 priority | u32 length | data

Kinds below 16 are :class:`somasync.core.shard.RoutedKind` (worker to worker); the kinds below
run between a worker and the supervisor.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator

from somasync.core import wire
from somasync.core.shard import Routed
from somasync.errors import DecodeError

from .ring import RingWriter

__all__ = ["BatchWriter", "SupervisorKind", "decode_batch", "decode_deliveries", "decode_delivery",
           "decode_envelope_item", "encode_delivery", "encode_envelope_item", "encode_item"]

ITEM = struct.Struct("<BQBI")
BATCH_TARGET = 256 * 1024  # bytes per ring record: large enough to amortise, small to stream


class SupervisorKind(enum.IntEnum):
    """Items between the supervisor and a worker. WARNING: append only."""

    DELIVER = 16  # worker -> supervisor: a message for the application
    BROADCAST = 17  # supervisor -> worker: the application's own message to send
    DELIVER_DIRECT = 18  # worker -> supervisor: as DELIVER, a message sent to this node alone


def encode_item(kind: int, link: int, priority: int, data: bytes) -> bytes:
    return ITEM.pack(kind, link, priority, len(data)) + data


def decode_batch(record: bytes) -> Iterator[Routed]:
    """Items of one ring record (written by our own processes; checked all the same)."""
    offset = 0
    end = len(record)
    view = memoryview(record)
    while offset < end:
        if offset + ITEM.size > end:
            raise DecodeError("truncated", "ring item header cut short")
        kind, link, priority, length = ITEM.unpack_from(record, offset)
        offset += ITEM.size
        if offset + length > end:
            raise DecodeError("truncated", "ring item data cut short")
        yield Routed(kind, link, priority, bytes(view[offset : offset + length]))
        offset += length


def encode_envelope_item(signature: bytes | None, body: bytes) -> bytes:
    """Authenticator (a signature, a batch signature with its proof, or none) and
    envelope bytes, as a BROADCAST/DELIVER body: u8 MESSAGE flags, then as in a frame."""
    if signature is None:
        return b"\x00" + body
    return bytes((wire.signature_flags(signature),)) + signature + body


def decode_envelope_item(data: bytes, message_id: bytes | None = None) -> wire.Envelope:
    """The envelope of a BROADCAST/DELIVER body; ``message_id``: its id when the record
    carries it (a DELIVER: the worker hashed the envelope already)."""
    if not data:
        raise DecodeError("truncated", "empty envelope item")
    signature, body = wire.split_signed(data[1:], data[0])
    return wire.decode_envelope(body, signature, message_id)


def encode_delivery(from_peer: str, envelope: wire.Envelope) -> bytes:
    """A DELIVER body: u8 name length | peer name | 16-byte message id | envelope item.
    The id rides along so the supervisor decodes the envelope without hashing it again."""
    name = from_peer.encode()
    if envelope.signature is None:
        return b"".join((bytes((len(name),)), name, envelope.id, b"\x00", envelope.body))
    return b"".join((bytes((len(name),)), name, envelope.id,
                     bytes((wire.signature_flags(envelope.signature),)), envelope.signature,
                     envelope.body))


def decode_delivery(data: bytes) -> tuple[str, wire.Envelope]:
    """Raises only :class:`~somasync.errors.DecodeError` (a torn or corrupted record)."""
    return _delivery_at(data, 0, len(data))


def _delivery_at(record: bytes, offset: int, stop: int) -> tuple[str, wire.Envelope]:
    """The DELIVER body at ``record[offset:stop]``, read in place."""
    if offset >= stop or stop - offset < 1 + record[offset] + wire.ID_SIZE:
        raise DecodeError("truncated", "delivery record cut short")
    start = offset + 1 + record[offset]
    try:
        name = record[offset + 1 : start].decode()
    except UnicodeDecodeError:
        raise DecodeError("bad_record", "peer name is not UTF-8") from None
    item = start + wire.ID_SIZE
    message_id = record[start:item]
    flags = record[item] if item < stop else 0
    if flags:
        size = wire.authenticator_size(record, flags, item + 1)
        signature = record[item + 1 : min(item + 1 + size, stop)]
        body = record[item + 1 + size : stop]
        return name, wire.decode_envelope(body, signature, message_id)
    return name, wire.decode_envelope(record[item + 1 : stop], None, message_id)


def decode_deliveries(record: bytes, direct: list[tuple[str, wire.Envelope]] | None = None,
                      ) -> Iterator[tuple[str, wire.Envelope]]:
    """The DELIVER items of one ring record, decoded (other kinds are skipped, but
    DELIVER_DIRECT ones go to ``direct`` when given): what :func:`decode_batch` and
    :func:`decode_delivery` give, without an item object and a copy of each item in
    between. Raises only :class:`~somasync.errors.DecodeError`, at the first torn item."""
    offset = 0
    end = len(record)
    unpack = ITEM.unpack_from
    head = ITEM.size
    deliver = SupervisorKind.DELIVER
    while offset < end:
        if offset + head > end:
            raise DecodeError("truncated", "ring item header cut short")
        kind, _, _, length = unpack(record, offset)
        offset += head
        stop = offset + length
        if stop > end:
            raise DecodeError("truncated", "ring item data cut short")
        if kind == deliver:
            yield _delivery_at(record, offset, stop)
        elif kind == SupervisorKind.DELIVER_DIRECT and direct is not None:
            direct.append(_delivery_at(record, offset, stop))
        offset = stop


class BatchWriter:
    """Collects items for one ring and publishes them in batches.

    Items that do not fit (the consumer is behind) stay pending, in order, and are
    retried by :meth:`flush`; beyond ``max_pending`` bytes new items are dropped and
    counted, so a stuck consumer cannot grow the producer's memory without bound.
    """

    __slots__ = ("_items", "_pending_bytes", "dropped", "max_pending", "ring")

    def __init__(self, ring: RingWriter, max_pending: int = 64 * 1024 * 1024) -> None:
        self.ring = ring
        self._items: list[bytes] = []
        self._pending_bytes = 0
        self.max_pending = max_pending
        self.dropped = 0

    @property
    def pending(self) -> int:
        return self._pending_bytes

    def add(self, item: bytes) -> None:
        if self._pending_bytes + len(item) > self.max_pending:
            self.dropped += 1
            return
        self._items.append(item)
        self._pending_bytes += len(item)

    def take_pending(self) -> list[bytes]:
        """Remove and return the items not yet written (their ring is being replaced)."""
        items, self._items = self._items, []
        self._pending_bytes = 0
        return items

    def flush(self) -> bool:
        """Write what fits and publish. Returns True when the consumer must be woken.

        Items that do not fit stay pending, and the ring is asked to have the consumer
        ring this process's doorbell once it frees room: flush again then."""
        wake = self._write()
        if self._items:
            self.ring.want_room()
            wake = self._write() or wake  # room freed before the request was seen
            if not self._items:
                self.ring.want_room(False)
        return wake

    def _write(self) -> bool:
        items = self._items
        if not items:
            return False
        ring = self.ring
        limit = min(BATCH_TARGET, ring.max_record)
        written = 0
        start = 0
        while start < len(items):
            stop = start
            size = 0
            while stop < len(items) and (stop == start or size + len(items[stop]) <= limit):
                size += len(items[stop])
                stop += 1
            if size > ring.max_record:
                raise ValueError(f"ring item of {size} bytes exceeds the ring's max record")
            if not ring.write(b"".join(items[start:stop])):
                break
            written += size
            start = stop
        del items[:start]
        self._pending_bytes -= written
        return ring.publish() if written else False
