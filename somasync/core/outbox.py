"""A bounded per-peer send queue drained highest priority first."""

from __future__ import annotations

from collections import deque

__all__ = ["Outbox"]

_BANDS = 4  # priority 0-255 in four bands of 64: 192-255 first, 0-63 last


class Outbox:
    """Frames waiting for one peer, at most ``capacity`` bytes.

    When full, the oldest frame of the lowest non-empty band below the new frame's band is
    dropped to make room; if nothing lower is queued, the new frame itself is dropped.
    Both count in ``dropped``. A slow peer thus loses its least important traffic first,
    and never makes the node hold more than ``capacity`` bytes for it.
    """

    __slots__ = ("_bands", "capacity", "dropped", "size")

    def __init__(self, capacity: int) -> None:
        self._bands: list[deque[bytes]] = [deque() for _ in range(_BANDS)]
        self.capacity = capacity
        self.size = 0
        self.dropped = 0

    def __bool__(self) -> bool:
        return self.size > 0

    def push(self, frame: bytes, priority: int) -> bool:
        """Queue ``frame``; False when it was dropped because the queue is full."""
        band = priority >> 6
        while self.size + len(frame) > self.capacity:
            victim = next((b for b in range(band) if self._bands[b]), None)
            if victim is None:
                self.dropped += 1
                return False
            self.size -= len(self._bands[victim].popleft())
            self.dropped += 1
        self._bands[band].append(frame)
        self.size += len(frame)
        return True

    def drain(self) -> bytes:
        """Everything queued, as one buffer: highest band first, FIFO within a band."""
        parts: list[bytes] = []
        for band in reversed(self._bands):
            parts.extend(band)
            band.clear()
        self.size = 0
        return b"".join(parts)
