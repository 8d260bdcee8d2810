"""Membership datagrams (UDP) and the signed claims they carry.

Datagram::

    u8  version            MEMBERSHIP_VERSION
    u8  kind               DatagramKind (append-only)
    32s sender             the sender's public key (a hint only: nothing trusts it)
    u64 nonce              random per probe; an ack answers the nonce of its ping
    ... kind body          PING: 32s target key; PING_REQ: 32s target key, u8 address
                           length, address; PUSH: u8 flags (bit 0: reply wanted,
                           bit 1: padded)
    u16 claim count, then the claims
    ... padding            PUSH with bit 1 only: zero bytes to the datagram's end (a
                           PUSH asking for a reply pays for the answer it may get: at
                           most ``AMPLIFICATION_LIMIT`` times its own size)

Claim (what a node says about a member; every claim is signed by its author)::

    u8  type               ClaimType
    32s subject            the member the claim is about
    u64 incarnation        the subject's incarnation the claim refers to
    32s author             SUSPECT and DEAD only (ALIVE and LEAVE: the subject itself)
    ALIVE only:            u8 node id length, node id, u8 address length, address,
                           u16 credential length, credential (an operator's
                           certificate of the subject, or empty)
    64s signature          by the author (subject for ALIVE/LEAVE) over
                           CLAIM_DOMAIN || everything above

Because ALIVE and LEAVE carry no author field, only the subject's own key can sign
them: nobody can announce, refute or leave for another node. Every decoder raises only
:class:`~somasync.errors.DecodeError`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from somasync.errors import DecodeError

__all__ = [
    "CLAIM_DOMAIN",
    "Claim",
    "ClaimType",
    "Datagram",
    "DatagramKind",
    "decode_claim",
    "decode_datagram",
    "encode_claim_body",
    "encode_datagram",
]

MEMBERSHIP_VERSION = 1
CLAIM_DOMAIN = b"somasync/member/v1\x00"
KEY_SIZE = 32
SIGNATURE_SIZE = 64
HEADER = struct.Struct("!BB32sQ")
CLAIM_HEAD = struct.Struct("!B32sQ")
COUNT = struct.Struct("!H")
FLAG_REPLY_WANTED = 0x01
FLAG_PADDED = 0x02
MAX_CREDENTIAL = 512


class DatagramKind(enum.IntEnum):
    """What a membership datagram asks or answers. WARNING: append only."""

    PING = 1
    ACK = 2
    PING_REQ = 3
    NACK = 4
    PUSH = 5
    """Full state (possibly one of several chunks); a reply is wanted when flagged."""
    PULL = 6
    """Full state sent in answer to a PUSH."""
    GOSSIP = 7
    """Claims only: a dedicated gossip round, or a leave."""


class ClaimType(enum.IntEnum):
    """What a claim says about its subject. WARNING: append only."""

    ALIVE = 1
    SUSPECT = 2
    DEAD = 3
    LEAVE = 4


@dataclass(frozen=True, slots=True)
class Claim:
    """A decoded claim; ``raw`` is its exact encoding, relayed as received."""

    type: ClaimType
    subject: bytes
    incarnation: int
    author: bytes
    """Who signed it: the subject for ALIVE and LEAVE, the accuser otherwise."""
    node_id: str
    """ALIVE: the subject's node id (empty for other types)."""
    address: str
    """ALIVE: the subject's ``host:port`` (empty for other types)."""
    credential: bytes
    """ALIVE: the subject's certificate (empty when it has none, and for other types)."""
    signed: bytes
    signature: bytes
    raw: bytes


def encode_claim_body(claim_type: ClaimType, subject: bytes, incarnation: int, *,
                      author: bytes | None = None, node_id: str = "",
                      address: str = "", credential: bytes = b"") -> bytes:
    """The bytes a claim's author signs (after ``CLAIM_DOMAIN``)."""
    head = CLAIM_HEAD.pack(claim_type, subject, incarnation)
    if claim_type in (ClaimType.SUSPECT, ClaimType.DEAD):
        if author is None or len(author) != KEY_SIZE:
            raise ValueError("a suspicion or death claim names its author")
        return head + author
    if claim_type == ClaimType.ALIVE:
        node_bytes, address_bytes = node_id.encode(), address.encode()
        if not 0 < len(node_bytes) <= 255 or not 0 < len(address_bytes) <= 255:
            raise ValueError("node id and address must each be 1-255 bytes")
        if len(credential) > MAX_CREDENTIAL:
            raise ValueError(f"a credential is at most {MAX_CREDENTIAL} bytes")
        return (head + bytes((len(node_bytes),)) + node_bytes
                + bytes((len(address_bytes),)) + address_bytes
                + COUNT.pack(len(credential)) + credential)
    return head


def decode_claim(data: bytes, offset: int = 0) -> tuple[Claim, int]:
    """Decode the claim at ``offset``; returns it and the offset just past it."""
    start = offset
    if len(data) - offset < CLAIM_HEAD.size:
        raise DecodeError("truncated", "claim shorter than its header")
    type_value, subject, incarnation = CLAIM_HEAD.unpack_from(data, offset)
    try:
        claim_type = ClaimType(type_value)
    except ValueError:
        raise DecodeError("bad_claim", f"claim type {type_value}") from None
    offset += CLAIM_HEAD.size
    author, node_id, address, credential = subject, "", "", b""
    if claim_type in (ClaimType.SUSPECT, ClaimType.DEAD):
        author, offset = _key(data, offset, "claim author")
    elif claim_type == ClaimType.ALIVE:
        node_id, offset = _short_text(data, offset, "node id")
        address, offset = _short_text(data, offset, "address")
        if not node_id or not address:
            raise DecodeError("bad_claim", "alive claim without node id or address")
        if len(data) - offset < COUNT.size:
            raise DecodeError("truncated", "claim credential length missing")
        (length,) = COUNT.unpack_from(data, offset)
        if length > MAX_CREDENTIAL:
            raise DecodeError("bad_claim", f"credential of {length} bytes")
        credential = data[offset + COUNT.size : offset + COUNT.size + length]
        if len(credential) != length:
            raise DecodeError("truncated", "claim credential cut short")
        offset += COUNT.size + length
    signed = data[start:offset]
    signature = data[offset : offset + SIGNATURE_SIZE]
    if len(signature) != SIGNATURE_SIZE:
        raise DecodeError("truncated", "claim signature cut short")
    offset += SIGNATURE_SIZE
    return Claim(claim_type, subject, incarnation, author, node_id, address,
                 bytes(credential), signed, signature, data[start:offset]), offset


def _key(data: bytes, offset: int, what: str) -> tuple[bytes, int]:
    """A 32-byte public key at ``offset``, and the offset after it."""
    key = data[offset : offset + KEY_SIZE]
    if len(key) != KEY_SIZE:
        raise DecodeError("truncated", f"{what} cut short")
    return key, offset + KEY_SIZE


def _short_text(data: bytes, offset: int, what: str) -> tuple[str, int]:
    if offset >= len(data):
        raise DecodeError("truncated", f"claim {what} length missing")
    length = data[offset]
    end = offset + 1 + length
    if end > len(data):
        raise DecodeError("truncated", f"claim {what} cut short")
    try:
        return data[offset + 1 : end].decode(), end
    except UnicodeDecodeError:
        raise DecodeError("bad_claim", f"claim {what} is not UTF-8") from None


@dataclass(frozen=True, slots=True)
class Datagram:
    """A decoded membership datagram (claims decoded, signatures not yet checked)."""

    kind: DatagramKind
    sender: bytes
    nonce: int
    target: bytes
    """PING / PING_REQ: the member to probe (empty otherwise)."""
    target_address: str
    """PING_REQ: where to probe it (empty otherwise)."""
    reply_wanted: bool
    """PUSH: the receiver should answer with its own state."""
    claims: tuple[Claim, ...]


def encode_datagram(kind: DatagramKind, sender: bytes, nonce: int, claims: list[bytes], *,
                    target: bytes = b"", target_address: str = "",
                    reply_wanted: bool = False, padding: int = 0) -> bytes:
    """Build a datagram from already encoded (signed) claims; a PUSH may end in
    ``padding`` zero bytes."""
    parts = [HEADER.pack(MEMBERSHIP_VERSION, kind, sender, nonce)]
    if kind in (DatagramKind.PING, DatagramKind.PING_REQ):
        if len(target) != KEY_SIZE:
            raise ValueError("a ping names its target's key")
        parts.append(target)
    if kind == DatagramKind.PING_REQ:
        address = target_address.encode()
        if not 0 < len(address) <= 255:
            raise ValueError("a ping request names the target's address")
        parts.append(bytes((len(address),)) + address)
    padded = kind == DatagramKind.PUSH and padding > 0
    if kind == DatagramKind.PUSH:
        parts.append(bytes(((FLAG_REPLY_WANTED if reply_wanted else 0)
                            | (FLAG_PADDED if padded else 0),)))
    parts.append(COUNT.pack(len(claims)))
    parts.extend(claims)
    if padded:
        parts.append(bytes(padding))
    return b"".join(parts)


def fixed_size(kind: DatagramKind, target_address: str = "") -> int:
    """Bytes of a datagram of ``kind`` before its claims (to budget piggybacking)."""
    size = HEADER.size + COUNT.size
    if kind in (DatagramKind.PING, DatagramKind.PING_REQ):
        size += KEY_SIZE
    if kind == DatagramKind.PING_REQ:
        size += 1 + len(target_address.encode())
    if kind == DatagramKind.PUSH:
        size += 1
    return size


def decode_datagram(data: bytes, *, max_claims: int = 4096) -> Datagram:
    """Decode a datagram; claims are parsed (and bounded in number), not verified."""
    if len(data) < HEADER.size:
        raise DecodeError("truncated", "datagram shorter than its header")
    version, kind_value, sender, nonce = HEADER.unpack_from(data)
    if version != MEMBERSHIP_VERSION:
        raise DecodeError("bad_version", f"membership version {version}")
    try:
        kind = DatagramKind(kind_value)
    except ValueError:
        raise DecodeError("unknown_kind", f"datagram kind {kind_value}") from None
    offset = HEADER.size
    target, target_address, reply_wanted, padded = b"", "", False, False
    if kind in (DatagramKind.PING, DatagramKind.PING_REQ):
        target, offset = _key(data, offset, "ping target")
    if kind == DatagramKind.PING_REQ:
        target_address, offset = _short_text(data, offset, "target address")
        if not target_address:
            raise DecodeError("bad_datagram", "ping request without an address")
    if kind == DatagramKind.PUSH:
        if offset >= len(data):
            raise DecodeError("truncated", "push flags missing")
        reply_wanted = bool(data[offset] & FLAG_REPLY_WANTED)
        padded = bool(data[offset] & FLAG_PADDED)
        offset += 1
    if len(data) - offset < COUNT.size:
        raise DecodeError("truncated", "claim count missing")
    (count,) = COUNT.unpack_from(data, offset)
    offset += COUNT.size
    if count > max_claims:
        raise DecodeError("bad_datagram", f"{count} claims > {max_claims}")
    claims = []
    for _ in range(count):
        claim, offset = decode_claim(data, offset)
        claims.append(claim)
    if offset != len(data) and not padded:
        raise DecodeError("bad_length", "trailing bytes after the claims")
    return Datagram(kind, sender, nonce, target, target_address, reply_wanted, tuple(claims))
