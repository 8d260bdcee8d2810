"""Fair reading: a link's bytes reach the endpoint one slice per event-loop turn.

A neighbour that sends as fast as TCP allows hands ``data_received`` chunks of up to
hundreds of kilobytes; handled at once, each would hold the loop for the verification of
a thousand messages while every other link waits. Here a chunk is fed a slice at a time
(``NodeConfig.read_slice`` bytes, 16 KiB by default; records are at most that size, see
:data:`somasync.core.handshake.MAX_RECORD`), the transport stops reading while a backlog
remains, and the next slice waits for the next loop turn, after the other links' reads.
So a flood shapes the flooder (TCP pushes back on it) instead of delaying everyone, and
nothing is dropped.

With read-ahead (``GossipConfig.read_ahead_bytes``, the default) slices are larger
(:data:`READ_AHEAD_SLICE`): the endpoint takes turns between links itself, frame by
frame and highest priority first (:mod:`somasync.core.inbox`), so a critical frame is
not left behind the bulk read with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from somasync.config import NodeConfig

__all__ = ["DEFAULT_READ_SLICE", "READ_AHEAD_SLICE", "SlicedReader", "reader_slice"]

DEFAULT_READ_SLICE = 16 * 1024

READ_AHEAD_SLICE = 64 * 1024
"""Bytes of a link read per loop turn when the endpoint reads ahead. The endpoint takes
turns itself, frame by frame, highest priority first, so reading can run ahead of
handling: 64 KiB a turn sees a critical frame behind a few hundred bulk ones at once,
while TCP still paces a peer that sends far faster than the node handles. Measured on a
2-core host: whole reads let a flooding peer's process run unchecked (another
publisher's p99 110 ms instead of 34), 16 KiB left a critical alert behind seconds of
its neighbour's bulk in the kernel's buffers (p99 144 ms instead of 23)."""


def reader_slice(config: NodeConfig) -> int:
    """The slice a node's links are read by: :data:`READ_AHEAD_SLICE` when the endpoint
    reads ahead (``gossip.read_ahead_bytes``), ``read_slice`` otherwise."""
    return READ_AHEAD_SLICE if config.gossip.read_ahead_bytes else config.read_slice


class SlicedReader:
    """Feeds one connection's bytes to ``feed`` a slice per loop turn.

    Args:
        loop: the event loop.
        feed: hands bytes to the endpoint (and pumps its outputs).
        slice_size: bytes fed per turn; 0 feeds every read whole.
    """

    __slots__ = ("_backlog", "_feed", "_loop", "_scheduled", "_slice", "transport")

    def __init__(self, loop: asyncio.AbstractEventLoop, feed: Callable[[bytes], None], *,
                 slice_size: int = DEFAULT_READ_SLICE) -> None:
        self._slice = slice_size
        self._loop = loop
        self._feed = feed
        self._backlog = bytearray()
        self._scheduled = False
        self.transport: asyncio.Transport | None = None

    @property
    def backlog(self) -> int:
        """Bytes received and not yet fed."""
        return len(self._backlog)

    def data_received(self, data: bytes) -> None:
        if self._backlog or self._scheduled:
            self._backlog += data  # a read that was already under way when we paused
            return
        size = self._slice
        if not size or len(data) <= size:
            self._feed(data)
            return
        self._backlog += memoryview(data)[size:]
        self._pause()
        self._feed(data[:size])

    def _pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._next)

    def _next(self) -> None:
        self._scheduled = False
        backlog = self._backlog
        if not backlog:
            return
        chunk = bytes(backlog[:self._slice])
        del backlog[:self._slice]
        if backlog:
            self._pause()
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self._feed(chunk)

    def discard(self) -> None:
        """The connection is gone: drop the backlog."""
        self._backlog.clear()
