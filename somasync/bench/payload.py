"""The bench's message body: who published it, its number, and when it was due.

A publisher signs ``Binary`` payloads of the requested size that start with a fixed
header; every node reads the header of each delivery to account for loss, duplicates
and latency. The time is ``time.monotonic_ns()`` at which the message was *due* under
the open-loop schedule (not when it was actually sent), so a stalled publisher cannot
hide queueing delay (no coordinated omission). ``CLOCK_MONOTONIC`` is one clock for
every process of a Linux host, which is why the bench runs on one host only.
"""

from __future__ import annotations

import struct

__all__ = ["HEADER", "MAGIC", "decode", "encode"]

MAGIC = b"SSB1"
HEADER = struct.Struct("<4sIIQ")
"""magic, publisher index, message number (from 0), due time (monotonic ns)."""


def encode(publisher: int, number: int, due_ns: int, size: int) -> bytes:
    """A payload of ``max(size, HEADER.size)`` bytes."""
    head = HEADER.pack(MAGIC, publisher, number, due_ns)
    return head + bytes(max(0, size - len(head)))


def decode(payload: bytes) -> tuple[int, int, int] | None:
    """(publisher, number, due_ns), or None when the payload is not a bench message."""
    if len(payload) < HEADER.size:
        return None
    magic, publisher, number, due_ns = HEADER.unpack_from(payload)
    if magic != MAGIC:
        return None
    return publisher, number, due_ns
