"""Large payloads as bundles: signed chunks that travel as ordinary messages and are
reassembled, whole or not at all, with bounded memory.

A payload whose message would not fit one frame (``GossipConfig.max_frame``) is cut into
chunks of :data:`CHUNK_BYTES` bytes of its encoding. Each chunk is an ordinary message of
its origin (its own sequence number and signature, a ``Binary`` payload), so the tree
forwards it and anti-entropy repairs it like any other. Its headers describe the bundle
and, being signed, bind each chunk to it::

    bundle   32 hex digits, the bundle's id (random, chosen by the origin)
    chunk    this chunk's index, 0 .. chunks - 1
    chunks   how many chunks
    size     bytes of the whole encoded payload
    kind     the payload kind (a PayloadKind value)
    hash     BLAKE2b-256 of the whole encoded payload, hex

A receiver holds the chunks of each bundle until it has them all, checks the whole
against ``hash``, and delivers one :class:`~somasync.message.Message` carrying the
original payload, with the origin's ``signer_public_key`` (every chunk was verified; the
whole has no signature of its own: ``verify_signature()`` is False) and the headers
``bundle`` and ``chunks``. Chunks that disagree about their bundle, a hash that does not
match, a bundle larger than allowed, and bundles that do not complete before their TTL
or that the memory bound pushes out are dropped and counted (:class:`BundleStatistics`).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from somasync.core.payload import MessageType, PayloadKind, decode_payload, encode_payload
from somasync.errors import DecodeError
from somasync.message import Message

__all__ = ["CHUNK_BYTES", "BundleStatistics", "Reassembler", "split"]

CHUNK_BYTES = 256 * 1024
"""Bytes of payload per chunk: a bounded amount of work per frame (one verification,
sixteen 16 KiB records) and a fine grain for repairs."""

_HEADERS = ("bundle", "chunk", "chunks", "size", "kind", "hash")
CHUNK_COST = 1024
"""Bytes a held chunk counts for at least (its message object, headers, key): tiny
chunks cannot hold much memory for free."""
PER_ORIGIN = 2
"""Bundles of one origin in progress at once; a third makes room by dropping that
origin's oldest: one origin cannot crowd out the others."""
IN_PROGRESS = 64
"""Bundles in progress at once over all origins."""
REMEMBERED_DROPS = 4096
"""Dropped bundles remembered, so their later chunks start nothing that cannot
complete."""


def split(payload: MessageType, source: str, *, priority: int, ttl: int,
          bundle_id: str | None = None,
          encoded: tuple[PayloadKind, bytes] | None = None) -> Iterator[Message]:
    """The unsigned chunk messages of ``payload``, in order (the caller signs and
    broadcasts each); ``encoded``: its encoding, when the caller has it already."""
    kind, data = encoded or encode_payload(payload)
    bundle = bundle_id or os.urandom(16).hex()
    count = max(1, -(-len(data) // CHUNK_BYTES))
    described = {"bundle": bundle, "chunks": str(count), "size": str(len(data)),
                 "kind": str(int(kind)), "hash": hashlib.blake2b(data, digest_size=32).hexdigest()}
    for index in range(count):
        piece = data[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]
        yield Message(MessageType.Binary(piece), source, ttl=ttl, priority=priority,
                      headers={**described, "chunk": str(index)})


def is_chunk(message: Message) -> bool:
    """Whether ``message`` is a chunk of a bundle (it carries a ``bundle`` header)."""
    return "bundle" in message.headers


@dataclass(frozen=True, slots=True)
class BundleStatistics:
    """What a :class:`Reassembler` did since it was created."""

    delivered: int
    """Bundles delivered whole."""
    in_progress: int
    """Bundles with some chunks held now."""
    held_bytes: int
    """Chunk bytes held now."""
    dropped: dict[str, int]
    """Bundles (or lone chunks) dropped, by reason: ``bad_chunk`` (headers missing or
    inconsistent), ``too_large``, ``hash_mismatch``, ``expired``, ``memory`` (the bound
    on held bytes, taken from the origin holding most), ``crowded`` (past
    :data:`PER_ORIGIN` or :data:`IN_PROGRESS`), ``already_dropped`` (a later chunk of a
    dropped bundle)."""


@dataclass(slots=True, eq=False)
class _Partial:
    described: tuple[str, str, str, str]  # chunks, size, kind, hash: every chunk agrees
    count: int
    size: int
    expires: float
    first: Message
    """Chunk 0 once it came (any chunk until then): the whole message's fields."""
    pieces: dict[int, Message] = field(default_factory=dict)
    held: int = 0


class Reassembler:
    """Collects chunks into whole payloads.

    Args:
        max_bytes: the largest bundle accepted (bytes of its encoded payload).
        max_held: chunk bytes held at once over all bundles; past it the bundle that
            has waited longest is dropped (``memory``).
    """

    def __init__(self, *, max_bytes: int, max_held: int) -> None:
        self.max_bytes = max_bytes
        self.max_held = max_held
        self._partial: OrderedDict[tuple[bytes, str, str], _Partial] = OrderedDict()
        self._dropped_keys: OrderedDict[tuple[bytes, str, str], None] = OrderedDict()
        self._next_sweep = 0.0
        self._held = 0
        self._delivered = 0
        self._dropped: dict[str, int] = {}

    def add(self, chunk: Message, *, now: float) -> tuple[Message, list[Message]] | None:
        """Take one chunk (``now``: wall-clock seconds). When it completes its bundle:
        the whole message, and the chunks it was made of (for the caller's records)."""
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0  # a sweep visits every bundle: once a second
            self.expire(now=now)
        headers = chunk.headers
        try:
            described = tuple(headers[name] for name in ("chunks", "size", "kind", "hash"))
            index, count, size = int(headers["chunk"]), int(described[0]), int(described[1])
            piece = chunk.message_type
            if not isinstance(piece, MessageType.Binary) or not 0 <= index < count \
                    or size < 0 or count != max(1, -(-size // CHUNK_BYTES)):
                raise ValueError
        except (KeyError, ValueError):
            self._drop("bad_chunk")
            return None
        if size > self.max_bytes:
            self._drop("too_large")
            return None
        key = (chunk.signer_public_key or b"", chunk.source, headers["bundle"])
        if key in self._dropped_keys:
            self._drop("already_dropped")
            return None
        partial = self._partial.get(key)
        if partial is None:
            mine = [k for k in self._partial if k[0] == key[0]]
            if len(mine) >= PER_ORIGIN:
                self._discard(mine[0], "crowded")
            elif len(self._partial) >= IN_PROGRESS:
                self._discard(next(iter(self._partial)), "crowded")
            partial = self._partial[key] = _Partial(
                described, count, size,  # type: ignore[arg-type]
                expires=chunk.timestamp + chunk.ttl, first=chunk)
        elif partial.described != described:
            self._discard(key, "bad_chunk")
            return None
        if index in partial.pieces:
            return None  # a copy (the node drops those before they get here)
        expected = min(CHUNK_BYTES, size - index * CHUNK_BYTES)
        if len(piece.data) != expected:
            self._drop("bad_chunk")
            return None
        partial.pieces[index] = chunk
        if index == 0:
            partial.first = chunk
        cost = max(expected, CHUNK_COST)
        partial.held += cost
        self._held += cost
        while self._held > self.max_held and self._partial:
            # From the origin holding most, its oldest bundle: a greedy origin pays.
            by_origin: dict[bytes, int] = {}
            for (origin, _, _), held in ((k, p.held) for k, p in self._partial.items()):
                by_origin[origin] = by_origin.get(origin, 0) + held
            greediest = max(by_origin, key=by_origin.__getitem__)
            self._discard(next(k for k in self._partial if k[0] == greediest), "memory")
        if key not in self._partial or len(partial.pieces) < partial.count:
            return None
        del self._partial[key]
        self._held -= partial.held
        chunks = [partial.pieces[i] for i in range(partial.count)]
        data = b"".join(c.message_type.data for c in chunks)  # type: ignore[attr-defined]
        if hashlib.blake2b(data, digest_size=32).hexdigest() != partial.described[3]:
            self._drop("hash_mismatch")
            return None
        try:
            payload = decode_payload(int(partial.described[2]), data)
        except DecodeError:
            self._drop("bad_chunk")
            return None
        first = partial.first
        headers = {k: v for k, v in first.headers.items() if k not in _HEADERS}
        whole = Message(payload, first.source, timestamp=first.timestamp, ttl=first.ttl,
                        priority=first.priority, correlation_id=first.correlation_id,
                        headers={**headers, "bundle": first.headers["bundle"],
                                 "chunks": str(partial.count)},
                        sequence=first.sequence, signer_public_key=first.signer_public_key)
        self._delivered += 1
        return whole, chunks

    def expire(self, *, now: float) -> None:
        """Drop the bundles whose TTL ran out before they completed."""
        for key in [k for k, p in self._partial.items() if p.expires < now]:
            self._discard(key, "expired")

    def statistics(self) -> BundleStatistics:
        return BundleStatistics(self._delivered, len(self._partial), self._held,
                                dict(self._dropped))

    def _discard(self, key: tuple[bytes, str, str], reason: str) -> None:
        partial = self._partial.pop(key)
        self._held -= partial.held
        self._dropped_keys[key] = None
        if len(self._dropped_keys) > REMEMBERED_DROPS:
            self._dropped_keys.popitem(last=False)
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1


