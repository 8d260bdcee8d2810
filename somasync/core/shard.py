"""Ownership rules of a sharded node, shared by the supervisor and every worker.

A node split over ``count`` worker processes gives every peer and every message stream
exactly one owner:

* a peer (and every connection to it) belongs to ``peer_owner(public_key)``, so
  duplicate connections and per-peer budgets meet in one process;
* a stream (one origin's run of messages) belongs to ``stream_owner(origin, source)``,
  which de-duplicates, verifies, stores, delivers and forwards each of its messages.
  Keeping a whole stream in one worker keeps its sequence numbers gap-free there, which
  anti-entropy relies on. Verification spreads over workers as streams do.

Link ids are unique across the node: worker ``i`` numbers its links ``i, i + count,
i + 2 * count, ...``, so ``link % count`` names the worker that owns the connection.

Both functions hash with BLAKE2b, never Python's ``hash()``, so every process agrees.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import NamedTuple

from somasync.core.wire import stream_tag

__all__ = ["Routed", "RoutedKind", "Shard", "direct_owner", "peer_owner", "stream_owner",
           "tag_owner"]


def _bucket(data: bytes, count: int) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") % count


def stream_owner(origin: bytes, source: bytes, count: int) -> int:
    """Worker owning the stream ``(origin key, source)`` (source as UTF-8 bytes)."""
    return tag_owner(stream_tag(origin, source), count)


def tag_owner(tag: bytes, count: int) -> int:
    """Worker owning the stream whose tag (:func:`somasync.core.wire.stream_tag`) is
    ``tag``: tree frames name streams by tag, so any worker can route their entries."""
    return int.from_bytes(tag, "little") % count


def peer_owner(public_key: bytes, count: int) -> int:
    """Worker owning every connection to the peer with ``public_key``."""
    return _bucket(public_key, count)


def direct_owner(a: bytes, b: bytes, count: int) -> int:
    """Worker handling the direct frames between the nodes with keys ``a`` and ``b``
    (either way round): a sender's open sends, a target's delivered ids and a relay's
    routes for the pair meet in that one worker (see :mod:`somasync.core.direct`)."""
    low, high = sorted((a, b))
    return _bucket(b"direct\x00" + low + high, count)


@dataclass(frozen=True, slots=True)
class Shard:
    """This endpoint's place in a sharded node."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} outside 0..{self.count - 1}")

    def link_owner(self, link: int) -> int:
        return link % self.count


class RoutedKind(enum.IntEnum):
    """What one worker asks of another. WARNING: append only."""

    MESSAGE = 1  # a MESSAGE frame from a peer, for the stream's owner to process
    SEND = 2  # a frame to write to a peer whose connection the receiver owns
    DIGEST = 3  # a peer's DIGEST frame; every worker answers for its own streams
    PEER_UP = 4  # a peer completed its handshake (data = its PeerHello)
    PEER_DOWN = 5  # a peer's connection is gone
    CLOSE = 6  # close a connection the receiver owns (data = reason, UTF-8)
    TREE = 7  # a peer's IHAVE/GRAFT/PRUNE entries for the receiver's streams (a frame)
    ANSWER = 8  # as SEND, for a frame that answers the peer: charged to the link's credit
    DIRECT = 9  # a peer's DIRECT frame, for the worker owning its pair of nodes


class Routed(NamedTuple):
    """One item for another worker of the same node."""

    kind: int
    link: int
    priority: int
    data: bytes
