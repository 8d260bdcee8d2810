"""A link's message frames read ahead of their handling, by priority band.

A node reads what its peers send as soon as it arrives, and handles the critical band
(priority 192-255, and every control frame) at once; other message frames wait here,
per link, and are handled highest band first, one link after another
(:meth:`somasync.core.endpoint.Endpoint.process_backlog`). So a critical alert read
behind megabytes of bulk is verified and forwarded first, instead of after all of it
(TCP delivers a link's bytes in order; only reading ahead can reorder them). When a link
has more waiting than its share of room, its oldest frames of the lowest band are shed,
counted: bulk is what an overloaded node delays or drops, never critical traffic.
Anti-entropy repairs what was shed once the load falls.
"""

from __future__ import annotations

from collections import deque

__all__ = ["BANDS", "CRITICAL", "ENTRY_COST", "Inbox"]

CRITICAL = 192
"""The first priority of the critical band (the send queues' top band): such a message
is handled as soon as it is read, never shed here, and never held for a signed batch
(:mod:`somasync.aio.signer`)."""

BANDS = 3
"""Bands that wait (priority 0-63, 64-127, 128-191); :data:`CRITICAL` and up never
waits."""

ENTRY_COST = 64
"""Bytes each waiting frame is charged beyond its length: what holding it costs in
Python (the deque slot, the bytes object's header). Without it, a peer
sending frames of a few bytes would hold ten times the room in memory."""


class Inbox:
    """One link's waiting frames, highest band first and FIFO within a band.

    Frames are held as bare ``bytes``, which the garbage collector does not track: a
    backlog of tens of thousands of frames adds nothing to its passes.
    """

    __slots__ = ("_bands", "routed", "size")

    def __init__(self, routed: bool = False) -> None:
        self._bands: list[deque[bytes]] = [deque() for _ in range(BANDS)]
        self.routed = routed
        """Sharded node: the link is another worker's, and its frames were routed here
        (a link's frames are either all read here or all routed)."""
        self.size = 0
        """Bytes waiting, each frame charged its length plus :data:`ENTRY_COST`."""

    def __bool__(self) -> bool:
        return self.size > 0

    def __len__(self) -> int:
        return sum(len(band) for band in self._bands)

    def put(self, frame: bytes, priority: int) -> None:
        self._bands[min(priority >> 6, BANDS - 1)].append(frame)
        self.size += len(frame) + ENTRY_COST

    def take(self) -> bytes:
        """The next frame to handle (the inbox must not be empty)."""
        for band in reversed(self._bands):
            if band:
                frame = band.popleft()
                self.size -= len(frame) + ENTRY_COST
                return frame
        raise IndexError("take from an empty inbox")

    def shed(self, excess: int) -> int:
        """Drop the oldest frames of the lowest bands until ``excess`` bytes are freed
        (or nothing is left); returns how many were dropped."""
        dropped = 0
        for band in self._bands:
            while band and excess > 0:
                frame = band.popleft()
                self.size -= len(frame) + ENTRY_COST
                excess -= len(frame) + ENTRY_COST
                dropped += 1
            if excess <= 0:
                break
        return dropped
