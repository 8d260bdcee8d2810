"""A single-producer single-consumer ring of length-prefixed records over a buffer.

Pure logic over a ``memoryview`` (a ``bytearray`` in tests, a ``SharedMemory`` buffer in
production): nothing here knows about processes. Layout::

    offset   0  u64 head        bytes consumed so far (written by the consumer only)
    offset  64  u64 tail        bytes published so far (written by the producer only)
    offset 128  u32 sleeping    1 while the consumer waits for a wake-up
    offset 136  u32 room wanted 1 while the producer waits for the consumer to free room
    offset 192  data[capacity]  records, each 8-byte aligned:
                                u32 length | u32 sequence | payload | padding

``head`` and ``tail`` only grow (positions are taken modulo ``capacity``), sit on separate
cache lines, and each has one writer. The producer writes records first and publishes
``tail`` once per batch, so the consumer never sees a half-written record (x86 keeps
stores in order; this module assumes it). A record that would run past the end of the
buffer is preceded by a wrap marker (length ``WRAP``) and written at offset 0.

Both sides sleep instead of polling: a consumer with nothing to read sets ``sleeping``
and the producer rings its doorbell after the next publish; a producer that finds the
ring full sets ``room wanted`` and the consumer rings the producer's doorbell once it
has freed room (:meth:`RingReader.room_wanted`). Each side sets its flag, then looks
once more, so a change in between is never missed.

Every record carries the producer's running sequence number. A reader that finds a
different number, or an impossible length, raises :class:`RingCorrupted`: that is how a
record torn by a crashed or restarted producer (or scribbled over by a bug) is detected
instead of misread. The records before it are read first; from then on the reader is
:attr:`~RingReader.corrupted` and reads nothing more, since nothing after a bad record
can be located: its consumer stops waiting on it until a fresh ring replaces it.
"""

from __future__ import annotations

import struct

from somasync.errors import SomaSyncError

__all__ = ["HEADER_SIZE", "RECORD_OVERHEAD", "RingCorrupted", "RingReader", "RingWriter",
           "ring_size"]

HEADER_SIZE = 192
_HEAD = 0
_TAIL = 64
_SLEEPING = 128
_ROOM_WANTED = 136
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_RECORD = struct.Struct("<II")
RECORD_OVERHEAD = _RECORD.size
WRAP = 0xFFFFFFFF


class RingCorrupted(SomaSyncError):
    """A record's sequence number or length is not what the reader expects."""


def ring_size(capacity: int) -> int:
    """Bytes of buffer needed for a ring with ``capacity`` bytes of record space."""
    return HEADER_SIZE + capacity


def _aligned(n: int) -> int:
    return (n + 7) & ~7


class _Ring:
    __slots__ = ("_buffer", "capacity", "max_record")

    def __init__(self, buffer: memoryview) -> None:
        capacity = len(buffer) - HEADER_SIZE
        if capacity < 64 or capacity % 8:
            raise ValueError("ring capacity must be a multiple of 8 and at least 64 bytes")
        self._buffer = buffer
        self.capacity = capacity
        # A record must fit even when it starts right after a wrap marker.
        self.max_record = capacity // 2 - RECORD_OVERHEAD

    def _load(self, offset: int) -> int:
        value: int = _U64.unpack_from(self._buffer, offset)[0]
        return value

    @property
    def head(self) -> int:
        return self._load(_HEAD)

    @property
    def tail(self) -> int:
        return self._load(_TAIL)

    @property
    def used(self) -> int:
        """Bytes published and not yet consumed."""
        return self.tail - self.head

    @property
    def consumer_sleeping(self) -> bool:
        return bool(_U32.unpack_from(self._buffer, _SLEEPING)[0])


class RingWriter(_Ring):
    """The producing end. Stage records with :meth:`write`, then :meth:`publish` once."""

    __slots__ = ("_sequence", "_staged_tail")

    def __init__(self, buffer: memoryview) -> None:
        super().__init__(buffer)
        self._staged_tail = self.tail
        self._sequence = 0

    @property
    def staged(self) -> int:
        """Bytes written but not yet published."""
        return self._staged_tail - self.tail

    def write(self, payload: bytes | memoryview) -> bool:
        """Stage one record; False (nothing written) when the ring lacks room.

        Raises:
            ValueError: the record can never fit (longer than ``max_record``).
        """
        length = len(payload)
        if length > self.max_record:
            raise ValueError(f"record of {length} bytes > ring max_record {self.max_record}")
        need = _aligned(RECORD_OVERHEAD + length)
        tail = self._staged_tail
        position = tail % self.capacity
        room_to_end = self.capacity - position
        wrap = need > room_to_end
        if tail + need + (room_to_end if wrap else 0) - self.head > self.capacity:
            return False
        buffer = self._buffer
        if wrap:
            _RECORD.pack_into(buffer, HEADER_SIZE + position, WRAP, self._sequence)
            tail += room_to_end
            position = 0
        start = HEADER_SIZE + position
        _RECORD.pack_into(buffer, start, length, self._sequence)
        buffer[start + RECORD_OVERHEAD : start + RECORD_OVERHEAD + length] = payload
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        self._staged_tail = tail + need
        return True

    def publish(self) -> bool:
        """Make staged records visible. True when the consumer is asleep and must be woken."""
        _U64.pack_into(self._buffer, _TAIL, self._staged_tail)
        return self.consumer_sleeping

    def want_room(self, wanted: bool = True) -> None:
        """The ring was full (True): the consumer is to ring this producer's doorbell when
        it frees room. Try writing once more after setting it: room freed just before
        would not be announced. False withdraws the request."""
        _U32.pack_into(self._buffer, _ROOM_WANTED, 1 if wanted else 0)


class RingReader(_Ring):
    """The consuming end."""

    __slots__ = ("_corruption", "_sequence")

    def __init__(self, buffer: memoryview) -> None:
        super().__init__(buffer)
        self._sequence = 0
        self._corruption: str | None = None
        # A new reader is not reading yet: ask to be woken by the first publish.
        self.set_sleeping(True)

    @property
    def corrupted(self) -> bool:
        """True once :meth:`read` raised :class:`RingCorrupted`: this reader never reads
        again, and what the ring holds (:attr:`used`) is no longer anyone's to wait for."""
        return self._corruption is not None

    def read(self, max_records: int = 1 << 30) -> list[bytes]:
        """Copy out up to ``max_records`` published records and free their space. Records
        before a corrupt one are returned; the read after them raises.

        Raises:
            RingCorrupted: a record's sequence number or length is wrong, now or before.
        """
        if self._corruption is not None:
            raise RingCorrupted(self._corruption)
        buffer = self._buffer
        head = self.head
        tail = self.tail
        records: list[bytes] = []
        capacity = self.capacity
        while head < tail and len(records) < max_records:
            position = head % capacity
            length, sequence = _RECORD.unpack_from(buffer, HEADER_SIZE + position)
            if sequence != self._sequence:
                corruption = f"record sequence {sequence}, expected {self._sequence} " \
                             f"at byte {head}"
            elif length == WRAP:
                head += capacity - position
                continue
            elif length > self.max_record \
                    or head + _aligned(RECORD_OVERHEAD + length) > tail:
                corruption = f"record length {length} at byte {head} is impossible"
            else:
                corruption = None
            if corruption is not None:
                if records:
                    break  # intact: hand them over; the next read finds this one again
                self._corruption = corruption
                raise RingCorrupted(corruption)
            start = HEADER_SIZE + position + RECORD_OVERHEAD
            records.append(bytes(buffer[start : start + length]))
            head += _aligned(RECORD_OVERHEAD + length)
            self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        _U64.pack_into(buffer, _HEAD, head)
        return records

    def room_wanted(self) -> bool:
        """True, once, when the producer asked for room and this reader has freed some
        since (call it after :meth:`read`): the caller rings the producer's doorbell."""
        buffer = self._buffer
        if not _U32.unpack_from(buffer, _ROOM_WANTED)[0] or self.used >= self.capacity:
            return False
        _U32.pack_into(buffer, _ROOM_WANTED, 0)
        return True

    def set_sleeping(self, sleeping: bool) -> None:
        """Tell the producer whether a wake-up is needed after its next publish.

        Set it, then check :attr:`used` once more before really sleeping: a record
        published in between would otherwise wait for the next one.
        """
        _U32.pack_into(self._buffer, _SLEEPING, 1 if sleeping else 0)
