"""The wire format: length-prefixed binary frames and the signed message envelope.

Frame on a byte stream::

    u32 length            bytes that follow (header + payload); checked against
                          max_frame BEFORE anything is allocated
    u8  version           WIRE_VERSION
    u8  kind              FrameKind (append-only)
    u8  flags             FLAG_* bits, per kind
    u8  priority          copy of the message priority, for per-peer send queues
    u8  hops              hops travelled; changes per hop, so it is outside the signature
    ... payload           kind-specific

MESSAGE payload: ``signature (64 bytes, iff FLAG_SIGNED) || envelope``. The envelope is
the exact byte string that is signed (after the domain tag ``MESSAGE_DOMAIN``) and hashed
into the message id; receivers verify and forward those bytes as received and never
re-serialise them.

A batch-signed MESSAGE (FLAG_SIGNED | FLAG_BATCH) carries, instead of a signature over
its own envelope, the origin's signature over the Merkle root of a batch of its
messages, and the proof that this message is a leaf of that tree::

    64s signature         Ed25519 over BATCH_DOMAIN || u8 depth || 16s root
    u8  depth             levels of the tree, 1-16 (a batch of up to 2**depth messages)
    u16 index             this message's leaf, < 2**depth; bit k: left (0) or right (1)
                          child at level k, counted from the leaves
    depth x 16s           the sibling hash at each level, leaves first
    envelope

Leaves are message ids; a parent is BLAKE2b-128 of ``0x01 || left || right``; a batch
whose size is not a power of two is filled with all-zero leaves (no envelope hashes to
them, and with one leaf per index no proof has a second valid form). A message keeps
the id a single signature gives it, and its proof travels with it when it is
forwarded, stored or repaired. Envelope layout::

    u8  envelope version   u8 payload kind      u8  source length
    32s origin public key  (zeros when unsigned)
    u64 sequence           per-origin, +1 per message (anti-entropy finds holes)
    i64 timestamp_ms       origin's wall clock, for TTL and age
    u32 ttl_s              u8 priority           u16 correlation id length
    u16 headers length     u32 payload length
    source | correlation id | headers (orjson object, sorted keys) | payload

Every decoder here raises only :class:`~somasync.errors.DecodeError`.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from somasync.errors import DecodeError

__all__ = [
    "BATCH_DOMAIN",
    "FLAG_BATCH",
    "FLAG_DEFERRED",
    "FLAG_PADDED",
    "FLAG_PARTIAL",
    "FLAG_REPAIR",
    "FLAG_REPLY",
    "FLAG_SIGNED",
    "FLAG_WITHHELD",
    "FRAME_HEADER",
    "MESSAGE_DOMAIN",
    "WIRE_VERSION",
    "Digest",
    "Envelope",
    "Frame",
    "FrameBuffer",
    "FrameKind",
    "StreamKey",
    "TreeEntry",
    "authenticator_size",
    "batch_authenticator_size",
    "batch_root",
    "batch_signed_bytes",
    "build_batch",
    "decode_digest",
    "decode_envelope",
    "decode_frame",
    "decode_tree_entries",
    "encode_digest",
    "encode_envelope",
    "encode_frame",
    "encode_tree_entry",
    "encode_tree_frame",
    "message_id",
    "pad_digest",
    "peek_message_id",
    "signature_flags",
    "split_signed",
    "stream_tag",
]

WIRE_VERSION = 1
ENVELOPE_VERSION = 1

#: Domain tags keep a signature made for one purpose from being valid for another.
MESSAGE_DOMAIN = b"somasync/message/v1\x00"
BATCH_DOMAIN = b"somasync/batch/v1\x00"

FLAG_SIGNED = 0x01  # MESSAGE: a 64-byte signature precedes the envelope
FLAG_REPLY = 0x02  # DIGEST: do not answer with a digest (an answer, or one of a pair)
FLAG_PARTIAL = 0x04  # DIGEST: lists only some of the sender's streams
FLAG_REPAIR = 0x08  # MESSAGE: a repair (anti-entropy or GRAFT answer), not a tree push
FLAG_PADDED = 0x10  # DIGEST: zero padding follows the streams (see encode_digest)
FLAG_WITHHELD = 0x20  # DIGEST: a u32 follows the streams: bytes of answers held back
FLAG_BATCH = 0x40  # MESSAGE: the signature signs a batch's Merkle root; the proof follows
FLAG_DEFERRED = 0x80  # DIGEST: the sender defers repairs for this peer (a shaped queue)

LENGTH_PREFIX = struct.Struct("!I")
FRAME_HEADER = struct.Struct("!IBBBBB")  # length, version, kind, flags, priority, hops
HEADER_AFTER_LENGTH = FRAME_HEADER.size - LENGTH_PREFIX.size
ENVELOPE_HEAD = struct.Struct("!BBB32sQqIBHHI")
_ENVELOPE_HEAD_SIZE, _unpack_envelope_head = ENVELOPE_HEAD.size, ENVELOPE_HEAD.unpack_from
SIGNATURE_SIZE = 64
BATCH_HEAD = struct.Struct("!BH")  # depth, leaf index
MAX_BATCH_DEPTH = 16
KEY_SIZE = 32
ID_SIZE = 16
EMPTY_LEAF = bytes(ID_SIZE)  # fills a batch tree up to a power of two
ZERO_KEY = bytes(KEY_SIZE)

MAX_TTL = 0xFFFFFFFF
MAX_TIMESTAMP_MS = 2**53  # milliseconds since the epoch; exact in a float, ~285,000 years
MAX_SEQUENCE = 0xFFFFFFFFFFFFFFFF


class FrameKind(enum.IntEnum):
    """What a frame carries. WARNING: append only; never renumber or reuse a value."""

    HELLO = 1  # retired with wire v1's unsealed introduction: the handshake replaced it
    MESSAGE = 2
    DIGEST = 3
    IHAVE = 4  # broadcast tree: "I have these messages" (lazy push), batched
    GRAFT = 5  # broadcast tree: "send me these, and push to me eagerly from now on"
    PRUNE = 6  # broadcast tree: "a duplicate came from you: announce, do not push"
    DIRECT = 7  # one signed message (or its acknowledgement) for one node: core/direct.py


_MESSAGE_KIND = int(FrameKind.MESSAGE)  # a plain int: an enum member costs a lookup per use


class Frame(NamedTuple):
    """A decoded frame header with its (still undecoded) payload.

    A named tuple, like :class:`Envelope`: one is made per frame received, and a frozen
    dataclass costs three times as much to build."""

    kind: int
    flags: int
    priority: int
    hops: int
    payload: bytes


def encode_frame(kind: int, payload: bytes, *, flags: int = 0, priority: int = 0,
                 hops: int = 0) -> bytes:
    """Frame ``payload`` for the stream: length prefix, fixed header, payload."""
    header = FRAME_HEADER.pack(
        HEADER_AFTER_LENGTH + len(payload), WIRE_VERSION, kind, flags, priority, hops
    )
    return header + payload


def decode_frame(data: bytes) -> Frame:
    """Decode one frame without its length prefix (as :class:`FrameBuffer` yields them).

    Unknown kinds decode fine (the caller decides to skip them); a wrong version or a
    short header is an error.
    """
    if len(data) < HEADER_AFTER_LENGTH:
        raise DecodeError("truncated", "frame shorter than its header")
    if data[0] != WIRE_VERSION:
        raise DecodeError("bad_version", f"wire version {data[0]}")
    return _new_tuple(Frame, (data[1], data[2], data[3], data[4], data[HEADER_AFTER_LENGTH:]))


class FrameBuffer:
    """Cuts a byte stream into frames, checking each length before buffering it.

    ``feed()`` returns the complete frames (without length prefix) and keeps a partial
    tail. A length above ``max_frame`` or below the header size is a DecodeError: the
    stream cannot be resynchronised, so the caller must close the connection. Frames
    that arrived complete before the bad length are still returned; the error is kept
    in :attr:`error` and raised by the next ``feed()``.
    """

    __slots__ = ("_buffer", "_max_frame", "_need", "error")

    def __init__(self, max_frame: int) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame
        self._need = 0
        self.error: DecodeError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self.error is not None:
            raise self.error
        buffer = self._buffer
        buffer += data
        # A peer that announced a large frame makes us wait for the whole of it, but never
        # more than max_frame bytes: checked in _check_length before we keep buffering.
        if len(buffer) < self._need:
            return []
        frames: list[bytes] = []
        offset = 0
        end = len(buffer)
        while end - offset >= 4:
            (length,) = LENGTH_PREFIX.unpack_from(buffer, offset)
            try:
                self._check_length(length)
            except DecodeError as exc:
                self.error = exc
                buffer.clear()
                if not frames:
                    raise
                return frames
            stop = offset + 4 + length
            if stop > end:
                self._need = stop - offset
                break
            frames.append(bytes(buffer[offset + 4 : stop]))
            offset = stop
        else:
            self._need = 0
        if offset:
            del buffer[:offset]
        return frames

    def _check_length(self, length: int) -> None:
        if length > self._max_frame:
            raise DecodeError("oversize", f"frame of {length} bytes > max_frame {self._max_frame}")
        if length < HEADER_AFTER_LENGTH:
            raise DecodeError("truncated", f"frame length {length} < header size")


def message_id(envelope: bytes) -> bytes:
    """The 16-byte message id: BLAKE2b of the exact signed envelope bytes."""
    return hashlib.blake2b(envelope, digest_size=ID_SIZE).digest()


def peek_message_id(frame: bytes) -> bytes | None:
    """The id of the message a MESSAGE frame (length prefix removed) carries, read without
    decoding the frame, as its receiver computes it when it handles the frame; None for a
    frame whose authenticator is malformed or that is shorter than an envelope's head
    (the receiver refuses it then)."""
    offset = HEADER_AFTER_LENGTH
    if len(frame) < offset:
        return None
    flags = frame[2]
    if flags & FLAG_SIGNED:
        try:
            offset += authenticator_size(frame, flags, offset)
        except DecodeError:
            return None
    elif flags & FLAG_BATCH:
        return None
    if len(frame) < offset + ENVELOPE_HEAD.size:
        return None  # no envelope: refused when handled, and no id to keep meanwhile
    return hashlib.blake2b(memoryview(frame)[offset:], digest_size=ID_SIZE).digest()


_hash = message_id  # decode_envelope's parameter shadows the name
# A named tuple's own constructor is a Python function around this; decoders call it
# directly, once per frame and per message.
_new_tuple = tuple.__new__


StreamKey = tuple[bytes, str]
"""An origin's message stream: (origin public key, source name). Sequence numbers count
up by one within a stream, which is what anti-entropy compares."""


class Envelope(NamedTuple):
    """A decoded message envelope: every signed field, plus the signature and raw bytes.

    ``body`` is the exact signed byte string; ``id`` is its BLAKE2b hash. Only
    :func:`decode_envelope` makes one, so its fields always hold what the decoder
    checked. A named tuple (immutable, as a frozen dataclass, at a fifth of the cost to
    build: one is made per message received).
    """

    origin: bytes
    sequence: int
    timestamp_ms: int
    ttl: int
    priority: int
    payload_kind: int
    source: str
    correlation_id: str | None
    headers: dict[str, str]
    payload: bytes
    body: bytes
    signature: bytes | None
    id: bytes
    # Fields, not properties: the receive path reads each several times per message.
    stream: StreamKey
    """``(origin, source)``."""
    expires_at: float
    """Wall-clock second after which the message is expired (timestamp + TTL)."""


def encode_envelope(*, origin: bytes, sequence: int, timestamp_ms: int, ttl: int,
                    priority: int, payload_kind: int, source: str,
                    correlation_id: str | None, headers: dict[str, str],
                    payload: bytes) -> bytes:
    """Build the signed byte string of a message (deterministic for equal inputs)."""
    source_bytes = source.encode()
    correlation = b"" if correlation_id is None else correlation_id.encode()
    header_bytes = orjson.dumps(headers, option=orjson.OPT_SORT_KEYS) if headers else b""
    if not 0 < len(source_bytes) <= 255:
        raise ValueError("source must be 1-255 bytes of UTF-8")
    if correlation_id == "":
        raise ValueError("correlation id must be non-empty or None (length 0 means None)")
    if len(correlation) > 0xFFFF or len(header_bytes) > 0xFFFF:
        raise ValueError("correlation id and headers must each encode to < 64 KiB")
    head = ENVELOPE_HEAD.pack(
        ENVELOPE_VERSION, payload_kind, len(source_bytes), origin, sequence, timestamp_ms,
        ttl, priority, len(correlation), len(header_bytes), len(payload),
    )
    return b"".join((head, source_bytes, correlation, header_bytes, payload))


def decode_envelope(body: bytes, signature: bytes | None,
                    message_id: bytes | None = None) -> Envelope:
    """Decode the signed envelope bytes (the signature is carried, not checked here);
    ``message_id``: :func:`message_id` of ``body`` when the caller already hashed it."""
    if len(body) < _ENVELOPE_HEAD_SIZE:
        raise DecodeError("truncated", "envelope shorter than its header")
    (version, payload_kind, source_len, origin, sequence, timestamp_ms, ttl, priority,
     correlation_len, headers_len, payload_len) = _unpack_envelope_head(body)
    if version != ENVELOPE_VERSION:
        raise DecodeError("bad_version", f"envelope version {version}")
    offset = _ENVELOPE_HEAD_SIZE
    if offset + source_len + correlation_len + headers_len + payload_len != len(body):
        raise DecodeError("bad_length", "envelope field lengths do not add up")
    if source_len == 0:
        raise DecodeError("bad_envelope", "empty source")
    if not 0 <= timestamp_ms < MAX_TIMESTAMP_MS:
        raise DecodeError("bad_envelope", f"timestamp {timestamp_ms} ms out of range")
    try:
        source = body[offset : offset + source_len].decode()
        offset += source_len
        correlation_id = (body[offset : offset + correlation_len].decode()
                          if correlation_len else None)
        offset += correlation_len
    except UnicodeDecodeError:
        raise DecodeError("bad_envelope", "source or correlation id is not UTF-8") from None
    headers: dict[str, str] = {}
    if headers_len:
        headers = _decode_str_map(body[offset : offset + headers_len])
        offset += headers_len
    return _new_tuple(Envelope, (origin, sequence, timestamp_ms, ttl, priority, payload_kind,
                                 source, correlation_id, headers, body[offset:], body,
                                 signature, _hash(body) if message_id is None else message_id,
                                 (origin, source), timestamp_ms / 1000.0 + ttl))


def _decode_str_map(data: bytes) -> dict[str, str]:
    try:
        value: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise DecodeError("bad_envelope", "headers are not valid JSON") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise DecodeError("bad_envelope", "headers must be an object of strings")
    return value


def split_message_payload(frame: Frame) -> tuple[bytes | None, bytes]:
    """Split a MESSAGE frame's payload into (signature or None, envelope bytes).

    The signature of a batch-signed message is its whole authenticator: signature,
    depth, index and proof, as :func:`split_signed` cuts it.
    """
    return split_signed(frame.payload, frame.flags)


def split_signed(payload: bytes, flags: int) -> tuple[bytes | None, bytes]:
    """Cut a MESSAGE payload sent with ``flags`` into (authenticator or None, envelope),
    checking every length first. Raises only :class:`DecodeError`."""
    if not flags & FLAG_SIGNED:
        if flags & FLAG_BATCH:
            raise DecodeError("bad_batch", "batch flag on an unsigned message")
        return None, payload
    # One call fewer for the common single signature: this runs for every message.
    size = SIGNATURE_SIZE if not flags & FLAG_BATCH else authenticator_size(payload, flags)
    if len(payload) < size + ENVELOPE_HEAD.size:
        raise DecodeError("truncated", "signed message shorter than signature + header")
    return payload[:size], payload[size:]


def authenticator_size(data: bytes, flags: int, offset: int = 0) -> int:
    """Bytes of the authenticator at ``data[offset:]`` (a signed MESSAGE payload, or an
    authenticator alone): 64, or for FLAG_BATCH the signature, head and proof."""
    if not flags & FLAG_BATCH:
        return SIGNATURE_SIZE
    if len(data) < offset + SIGNATURE_SIZE + BATCH_HEAD.size:
        raise DecodeError("truncated", "batch-signed message shorter than its proof")
    depth: int
    index: int
    depth, index = BATCH_HEAD.unpack_from(data, offset + SIGNATURE_SIZE)
    if not 0 < depth <= MAX_BATCH_DEPTH or index >> depth:
        raise DecodeError("bad_batch", f"batch proof of depth {depth}, leaf {index}")
    return SIGNATURE_SIZE + BATCH_HEAD.size + depth * ID_SIZE


def signature_flags(signature: bytes | None) -> int:
    """The MESSAGE flags that say how ``signature`` (an authenticator) is laid out."""
    if signature is None:
        return 0
    return FLAG_SIGNED | FLAG_BATCH if len(signature) > SIGNATURE_SIZE else FLAG_SIGNED


# --- batch signatures: one Ed25519 signature over a Merkle tree of message ids ---------

def parent_hash(left: bytes, right: bytes) -> bytes:
    """A batch tree's node over its two children. Its 33 hashed bytes are shorter than
    any envelope, so a node never passes for a message id."""
    return hashlib.blake2b(b"\x01" + left + right, digest_size=ID_SIZE).digest()


def build_batch(ids: list[bytes]) -> tuple[int, bytes, list[bytes]]:
    """The tree over ``ids`` (2 to 2**16 message ids): (depth, root, per id its
    ``BATCH_HEAD || proof`` to append to the root's signature)."""
    count = len(ids)
    if not 1 < count <= 1 << MAX_BATCH_DEPTH:
        raise ValueError(f"a batch holds 2 to {1 << MAX_BATCH_DEPTH} messages, not {count}")
    depth = (count - 1).bit_length()
    level = ids + [EMPTY_LEAF] * ((1 << depth) - count)
    proofs: list[list[bytes]] = [[] for _ in range(count)]
    for height in range(depth):
        for leaf in range(count):
            proofs[leaf].append(level[(leaf >> height) ^ 1])
        level = [parent_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return depth, level[0], [BATCH_HEAD.pack(depth, leaf) + b"".join(proof)
                             for leaf, proof in enumerate(proofs)]


def batch_authenticator_size(batch_size: int) -> int:
    """Bytes of the authenticator of each message of a batch of ``batch_size``."""
    if batch_size < 2:
        return SIGNATURE_SIZE
    return SIGNATURE_SIZE + BATCH_HEAD.size + (batch_size - 1).bit_length() * ID_SIZE


def batch_signed_bytes(depth: int, root: bytes) -> bytes:
    """What the origin signs (after ``BATCH_DOMAIN``) for a batch's root."""
    return bytes((depth,)) + root


def batch_root(message_id: bytes, authenticator: bytes) -> tuple[bytes, bytes]:
    """The (signature, signed bytes) a batch authenticator (as :func:`split_signed` cut
    it) claims for ``message_id``: the root is recomputed from the id and the proof, so a
    proof for another message or another tree yields a root nobody signed."""
    depth, index = BATCH_HEAD.unpack_from(authenticator, SIGNATURE_SIZE)
    node = message_id
    offset = SIGNATURE_SIZE + BATCH_HEAD.size
    for _ in range(depth):
        sibling = authenticator[offset : offset + ID_SIZE]
        node = parent_hash(sibling, node) if index & 1 else parent_hash(node, sibling)
        index >>= 1
        offset += ID_SIZE
    return authenticator[:SIGNATURE_SIZE], batch_signed_bytes(depth, node)


def envelope_stream_bytes(body: bytes) -> tuple[bytes, bytes]:
    """The (origin key, source as UTF-8) of envelope bytes, without decoding the rest."""
    if len(body) < ENVELOPE_HEAD.size:
        raise DecodeError("truncated", "envelope shorter than its header")
    source_len = body[2]
    origin = body[3 : 3 + KEY_SIZE]
    source = body[ENVELOPE_HEAD.size : ENVELOPE_HEAD.size + source_len]
    if len(source) != source_len or source_len == 0:
        raise DecodeError("bad_envelope", "source missing")
    return origin, source


def encode_message_frame(envelope: Envelope, *, hops: int, repair: bool = False) -> bytes:
    """Frame an envelope for sending, signature and body exactly as received."""
    flags = FLAG_REPAIR if repair else 0
    signature, body = envelope.signature, envelope.body
    if signature is None:
        return FRAME_HEADER.pack(HEADER_AFTER_LENGTH + len(body), WIRE_VERSION,
                                 _MESSAGE_KIND, flags, envelope.priority, hops) + body
    # One join, no intermediate signature + body copy: this runs for every message
    # stored and every message forwarded.
    return b"".join((FRAME_HEADER.pack(HEADER_AFTER_LENGTH + len(signature) + len(body),
                                       WIRE_VERSION, _MESSAGE_KIND,
                                       flags | signature_flags(signature),
                                       envelope.priority, hops),
                     signature, body))


# --- IHAVE / GRAFT / PRUNE: the broadcast tree's control frames -----------------------
#
# Payload: u16 count, then count entries of (16-byte message id, 8-byte stream tag,
# u8 hops). The stream tag (BLAKE2b of origin and source, see ``stream_tag``) lets a
# sharded node hand each entry to the worker owning the stream without the envelope.

TREE_COUNT = struct.Struct("!H")
TREE_ENTRY = struct.Struct("!16s8sB")
TAG_SIZE = 8
MAX_TREE_ENTRIES = 0xFFFF
TREE_KINDS = frozenset({4, 5, 6})


class TreeEntry(NamedTuple):
    """One message named in an IHAVE, GRAFT or PRUNE frame."""

    message_id: bytes
    tag: bytes
    """The message's stream tag (:func:`stream_tag`)."""
    hops: int
    """IHAVE: hops the announcer's copy travelled; 0 in GRAFT and PRUNE."""


def stream_tag(origin: bytes, source: bytes) -> bytes:
    """8-byte BLAKE2b of a stream's (origin key, source as UTF-8): names the stream in
    tree frames, and (as a little-endian integer modulo the worker count) its owner."""
    return hashlib.blake2b(origin + b"\x00" + source, digest_size=TAG_SIZE).digest()


def encode_tree_entry(message_id: bytes, tag: bytes, hops: int = 0) -> bytes:
    """One pre-encoded entry, so a batch of announcements is a join of bytes."""
    return TREE_ENTRY.pack(message_id, tag, min(hops, 255))


def encode_tree_frame(kind: int, entries: list[bytes]) -> bytes:
    """Frame pre-encoded entries (at most ``MAX_TREE_ENTRIES``) as IHAVE, GRAFT or PRUNE."""
    if kind not in TREE_KINDS:
        raise ValueError(f"frame kind {kind} is not a tree control kind")
    if len(entries) > MAX_TREE_ENTRIES:
        raise ValueError(f"{len(entries)} entries exceed {MAX_TREE_ENTRIES}")
    return encode_frame(kind, TREE_COUNT.pack(len(entries)) + b"".join(entries),
                        priority=255)


def decode_tree_entries(frame: Frame) -> list[TreeEntry]:
    """Decode the entries of an IHAVE, GRAFT or PRUNE frame."""
    data = frame.payload
    if len(data) < TREE_COUNT.size:
        raise DecodeError("truncated", "tree frame shorter than its count")
    (count,) = TREE_COUNT.unpack_from(data)
    if len(data) != TREE_COUNT.size + count * TREE_ENTRY.size:
        raise DecodeError("bad_length", f"tree frame of {len(data)} bytes for {count} entries")
    return [TreeEntry(*fields) for fields in TREE_ENTRY.iter_unpack(data[TREE_COUNT.size:])]


# --- DIGEST: anti-entropy summary of which sequence numbers a node holds ---------------

DIGEST_COUNT = struct.Struct("!H")
INTERVAL = struct.Struct("!QQ")
WITHHELD = struct.Struct("!I")
MAX_INTERVALS_PER_STREAM = 255


@dataclass(frozen=True, slots=True)
class Digest:
    """Per stream, the closed intervals of sequence numbers a node has delivered."""

    streams: dict[StreamKey, tuple[tuple[int, int], ...]]
    reply: bool
    withheld: int = 0
    """Bytes of answers the sender holds back until this node pays for them (a larger
    padding of its next digest): a FLAG_WITHHELD digest."""
    padding: int = 0
    """Bytes of zero padding after the streams (FLAG_PADDED)."""
    deferred: bool = False
    """The sender holds messages this node lacks and sends them once its rate-limited
    queue for this node has drained (FLAG_DEFERRED): holes it lists as held are worth
    keeping past ``gap_timeout``."""


def encode_digest(streams: dict[StreamKey, list[tuple[int, int]]], *, reply: bool,
                  partial: bool = False, padding: int = 0, withheld: int = 0,
                  deferred: bool = False) -> bytes:
    """Frame a digest. Each stream keeps at most 255 intervals (the newest).

    ``padding`` zero bytes follow the streams (``FLAG_PADDED``): a node answers a peer
    with at most ``AMPLIFICATION_LIMIT`` bytes per byte the peer sent it (see
    :mod:`somasync.core.endpoint`), so a node that expects a large answer to its digest
    pays for it with a larger digest. ``withheld`` (FLAG_WITHHELD, a u32 after the
    streams) tells the peer how many bytes of answers wait for that. ``deferred``
    (FLAG_DEFERRED) tells it that answers wait for a rate-limited queue to drain."""
    parts = [DIGEST_COUNT.pack(len(streams))]
    for (origin, source), intervals in streams.items():
        source_bytes = source.encode()
        kept = intervals[-MAX_INTERVALS_PER_STREAM:]
        parts.append(origin + bytes((len(source_bytes),)) + source_bytes + bytes((len(kept),)))
        parts.extend(INTERVAL.pack(lo, hi) for lo, hi in kept)
    flags = (FLAG_REPLY if reply else 0) | (FLAG_PARTIAL if partial else 0) \
        | (FLAG_DEFERRED if deferred else 0)
    if withheld > 0:
        parts.append(WITHHELD.pack(min(withheld, 0xFFFFFFFF)))
        flags |= FLAG_WITHHELD
    return pad_digest(encode_frame(FrameKind.DIGEST, b"".join(parts), flags=flags,
                                   priority=255), padding)


def pad_digest(frame: bytes, padding: int, *, padded: int = 0) -> bytes:
    """``frame``, an encoded DIGEST ending in ``padded`` bytes of padding, with
    ``padding`` bytes of it instead (none when ``padding`` <= 0): the header's length and
    FLAG_PADDED follow."""
    _, version, kind, flags, priority, hops = FRAME_HEADER.unpack_from(frame)
    body = frame[FRAME_HEADER.size : len(frame) - padded]
    padding = max(0, padding)
    if padding == padded:
        return frame
    flags = flags | FLAG_PADDED if padding else flags & ~FLAG_PADDED
    return FRAME_HEADER.pack(HEADER_AFTER_LENGTH + len(body) + padding, version, kind, flags,
                             priority, hops) + body + bytes(padding)


def decode_digest(frame: Frame) -> Digest:
    """Decode a DIGEST frame's payload."""
    data = frame.payload
    if len(data) < DIGEST_COUNT.size:
        raise DecodeError("truncated", "digest too short")
    (count,) = DIGEST_COUNT.unpack_from(data)
    offset = DIGEST_COUNT.size
    streams: dict[StreamKey, tuple[tuple[int, int], ...]] = {}
    for _ in range(count):
        if offset + KEY_SIZE + 1 > len(data):
            raise DecodeError("truncated", "digest stream entry cut short")
        origin = data[offset : offset + KEY_SIZE]
        source_len = data[offset + KEY_SIZE]
        offset += KEY_SIZE + 1
        if offset + source_len + 1 > len(data):
            raise DecodeError("truncated", "digest source cut short")
        try:
            source = data[offset : offset + source_len].decode()
        except UnicodeDecodeError:
            raise DecodeError("bad_digest", "source is not UTF-8") from None
        offset += source_len
        n_intervals = data[offset]
        offset += 1
        end = offset + n_intervals * INTERVAL.size
        if end > len(data):
            raise DecodeError("truncated", "digest intervals cut short")
        intervals = tuple(INTERVAL.iter_unpack(data[offset:end]))
        previous_hi = -1
        for lo, hi in intervals:
            if lo > hi:
                raise DecodeError("bad_digest", "interval with lo > hi")
            if lo <= previous_hi:
                # Answering walks the gaps between sorted intervals: overlap or disorder
                # would make it re-send or skip messages.
                raise DecodeError("bad_digest", "intervals not sorted and disjoint")
            previous_hi = hi
        offset = end
        streams[(origin, source)] = intervals
    withheld = 0
    if frame.flags & FLAG_WITHHELD:
        if offset + WITHHELD.size > len(data):
            raise DecodeError("truncated", "digest withheld count cut short")
        (withheld,) = WITHHELD.unpack_from(data, offset)
        offset += WITHHELD.size
    if offset != len(data) and not frame.flags & FLAG_PADDED:
        raise DecodeError("bad_length", "trailing bytes after digest")
    return Digest(streams, bool(frame.flags & FLAG_REPLY), withheld, len(data) - offset,
                  bool(frame.flags & FLAG_DEFERRED))
