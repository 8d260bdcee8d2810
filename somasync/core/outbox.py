"""A bounded per-peer send queue drained highest priority first."""

from __future__ import annotations

from collections import deque

__all__ = ["Outbox"]

_BANDS = 4  # priority 0-255 in four bands of 64: 192-255 first, 0-63 last
REFILL = 8
"""Once a frame was dropped for want of room, frames of its band and below are dropped
until the queue is down to ``1 - 1/REFILL`` of its capacity."""


class Outbox:
    """Frames waiting for one peer, at most ``capacity`` bytes.

    When full, the oldest frames of lower-priority bands make room for a new frame; if
    the lower bands cannot free enough, the new frame itself is dropped (and nothing is
    evicted for it), and so are later frames of its band and below until the queue has
    drained to its low mark (:data:`REFILL`), except those that lower bands have room
    for (fitting, or by eviction). A slow peer thus loses its least important traffic
    first, in runs rather than one frame in a few, and never makes the node hold more
    than ``capacity`` bytes for it.
    """

    __slots__ = ("_band_bytes", "_bands", "_refusing", "capacity", "frames", "size")

    def __init__(self, capacity: int) -> None:
        self._bands: list[deque[bytes]] = [deque() for _ in range(_BANDS)]
        self._band_bytes = [0] * _BANDS
        self.capacity = capacity
        self.size = 0
        self.frames = 0
        # The highest band dropped for want of room, until the queue drained to its low
        # mark (-1: none). A queue that takes a frame whenever a frame's room frees drops
        # every few frames under a steady overload: the peer sees a hole every few
        # messages, soon more than it tracks per stream (MAX_INTERVALS, what a digest
        # lists), and gives the oldest up. Dropped in runs, about as many frames leave it
        # a few long holes; the queue stays nearly full, so the link is no less busy.
        self._refusing = -1

    def __bool__(self) -> bool:
        return self.size > 0

    def push(self, frame: bytes, priority: int) -> int:
        """Queue ``frame``; returns how many frames were dropped (evicted, or this one)."""
        band = priority >> 6
        excess = self.size + len(frame) - self.capacity
        if band <= self._refusing:
            if self.size <= self.capacity - self.capacity // REFILL:
                self._refusing = -1
            else:
                below = sum(self._band_bytes[:band])
                if not below or below < excess:
                    return 1
                # Else lower bands hold what the frame needs (if anything): refusing it
                # would keep less important frames queued in its place.
        if excess <= 0:
            self._append(band, frame)
            return 0
        below = sum(self._band_bytes[:band])
        if below < excess:
            self._refusing = max(self._refusing, band)
            return 1
        dropped = 0
        for lower in range(band):
            queue = self._bands[lower]
            while queue and excess > 0:
                victim = queue.popleft()
                self._band_bytes[lower] -= len(victim)
                self.size -= len(victim)
                self.frames -= 1
                excess -= len(victim)
                dropped += 1
        self._append(band, frame)
        return dropped

    def _append(self, band: int, frame: bytes) -> None:
        self._bands[band].append(frame)
        self._band_bytes[band] += len(frame)
        self.size += len(frame)
        self.frames += 1

    def drain(self, limit: int | None = None) -> tuple[bytes, int]:
        """What is queued as one buffer (highest band first, FIFO within a band), and the
        number of frames in it: everything, or (``limit``) whole frames while fewer than
        ``limit`` bytes were taken, except that the top band (priority 192 and up) always
        goes whole."""
        if limit is None:
            parts: list[bytes] = []
            for band in reversed(self._bands):
                parts.extend(band)
                band.clear()
            frames = self.frames
            self._band_bytes = [0] * _BANDS
            self.size = self.frames = 0
            return b"".join(parts), frames
        taken: list[bytes] = []
        used = 0
        for index in reversed(range(_BANDS)):
            band = self._bands[index]
            while band and (used < limit or index == _BANDS - 1):
                frame = band.popleft()
                taken.append(frame)
                used += len(frame)
                self._band_bytes[index] -= len(frame)
        self.size -= used
        self.frames -= len(taken)
        return b"".join(taken), len(taken)
