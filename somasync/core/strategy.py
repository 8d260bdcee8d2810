"""The forwarding seam: which neighbours a message is pushed to.

The endpoint owns links, dedup, verification and the store; a strategy only chooses
targets, per message stream (named by its tag, :func:`somasync.core.wire.stream_tag`).
:class:`PushGossip` is plain push gossip with a fixed fanout and ignores the stream;
:class:`somasync.core.broadcast.BroadcastTree` pushes along that stream's tree.
"""

from __future__ import annotations

import random
from typing import Protocol

__all__ = ["ForwardingStrategy", "PushGossip"]


class ForwardingStrategy(Protocol):
    """Chooses forward targets among established neighbour links."""

    def link_up(self, link: int) -> None:
        """A neighbour link completed its handshake."""

    def link_down(self, link: int) -> None:
        """A neighbour link is gone."""

    def targets(self, tag: bytes, *, received_from: int | None,
                rng: random.Random) -> list[int]:
        """Links to push a new message of stream ``tag`` to; ``received_from`` is None
        for own messages."""
        ...


class PushGossip:
    """Push to ``fanout`` random neighbours (never back to the sender); own messages to all.

    Flooding one's own messages to every neighbour is what gossipsub calls flood publish:
    it costs one frame per neighbour once, and it makes the first hop certain.
    """

    __slots__ = ("_index", "_links", "fanout")

    def __init__(self, fanout: int) -> None:
        self.fanout = fanout
        self._links: list[int] = []
        self._index: dict[int, int] = {}

    def link_up(self, link: int) -> None:
        if link not in self._index:
            self._index[link] = len(self._links)
            self._links.append(link)

    def link_down(self, link: int) -> None:
        position = self._index.pop(link, None)
        if position is None:
            return
        last = self._links.pop()
        if position < len(self._links):
            self._links[position] = last
            self._index[last] = position

    def targets(self, tag: bytes, *, received_from: int | None,
                rng: random.Random) -> list[int]:
        links = self._links
        if received_from is None:
            return list(links)
        candidates = [link for link in links if link != received_from]
        if len(candidates) <= self.fanout:
            return candidates
        return rng.sample(candidates, self.fanout)
