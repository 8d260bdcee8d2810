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
from itertools import islice

from somasync.core.wire import peek_message_id

__all__ = ["BANDS", "CRITICAL", "ENTRY_COST", "ID_COST", "Inbox"]

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

ID_COST = 112
"""Bytes charged beyond :data:`ENTRY_COST` for a frame once its message id is kept
(:meth:`Inbox.index`): the id's bytes object, its slot beside the frame, its entry in
:attr:`Inbox.ids` (measured: 80-107 bytes with distinct ids)."""


class Inbox:
    """One link's waiting frames, highest band first and FIFO within a band.

    Frames are held as bare ``bytes``, which the garbage collector does not track: a
    backlog of tens of thousands of frames adds nothing to its passes. So are the
    message ids of those indexed.
    """

    __slots__ = ("_bands", "_keys", "ids", "routed", "size")

    def __init__(self, routed: bool = False) -> None:
        self._bands: list[deque[bytes]] = [deque() for _ in range(BANDS)]
        # Per band, the message ids (None: a frame too malformed to have one) of its
        # oldest frames, as far as index() went: frames leave a band from the front
        # only, so the indexed ones stay its front, each id beside its frame.
        self._keys: list[deque[bytes | None]] = [deque() for _ in range(BANDS)]
        self.ids: dict[bytes, int] = {}
        """Message ids of the indexed frames, each with its count of copies waiting."""
        self.routed = routed
        """Sharded node: the link is another worker's, and its frames were routed here
        (a link's frames are either all read here or all routed)."""
        self.size = 0
        """Bytes waiting, each frame charged its length plus :data:`ENTRY_COST`, and
        :data:`ID_COST` once indexed with an id."""

    def __bool__(self) -> bool:
        return self.size > 0

    def __len__(self) -> int:
        return sum(len(band) for band in self._bands)

    def put(self, frame: bytes, priority: int) -> None:
        self._bands[min(priority >> 6, BANDS - 1)].append(frame)
        self.size += len(frame) + ENTRY_COST

    def take(self) -> bytes:
        """The next frame to handle (the inbox must not be empty)."""
        bands = self._bands
        for index in range(BANDS - 1, -1, -1):
            band = bands[index]
            if band:
                frame = band.popleft()
                keys = self._keys[index]
                self.size -= len(frame) + ENTRY_COST + (self._forget(keys.popleft())
                                                        if keys else 0)
                return frame
        raise IndexError("take from an empty inbox")

    def index(self) -> int:
        """Read the message ids of the frames not indexed yet into :attr:`ids`; returns
        the bytes this added to :attr:`size`. Lazy: only a node that needs to know which
        messages wait (the broadcast tree, when a GRAFT is due) pays for the hashing,
        and each frame is hashed here at most once."""
        added = 0
        ids = self.ids
        for band, keys in zip(self._bands, self._keys, strict=True):
            new = len(band) - len(keys)
            if not new:
                continue
            # The newest frames are the band's back: read from there, kept in order.
            found = [peek_message_id(frame) for frame in islice(reversed(band), new)]
            found.reverse()
            keys.extend(found)
            for message_id in found:
                if message_id is not None:
                    ids[message_id] = ids.get(message_id, 0) + 1
                    added += ID_COST
        self.size += added
        return added

    def _forget(self, message_id: bytes | None) -> int:
        """Drop one copy of an indexed ``message_id``; returns what it was charged."""
        if message_id is None:
            return 0
        ids = self.ids
        count = ids.pop(message_id)
        if count > 1:
            ids[message_id] = count - 1
        return ID_COST

    def shed(self, excess: int) -> int:
        """Drop the oldest frames of the lowest bands until ``excess`` bytes are freed
        (or nothing is left); returns how many were dropped."""
        dropped = 0
        for band, keys in zip(self._bands, self._keys, strict=True):
            while band and excess > 0:
                frame = band.popleft()
                charge = len(frame) + ENTRY_COST + (self._forget(keys.popleft())
                                                    if keys else 0)
                self.size -= charge
                excess -= charge
                dropped += 1
            if excess <= 0:
                break
        return dropped
