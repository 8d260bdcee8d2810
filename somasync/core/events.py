"""Events the core reports to its driver, and through it to the application.

Each is a small frozen dataclass named as a past-tense fact.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Event",
    "FrameRejected",
    "PeerConnected",
    "PeerDisconnected",
    "RejectReason",
]


class RejectReason(enum.StrEnum):
    """Why a frame was refused. Decode failures use :attr:`DecodeError.reason` values."""

    OVERSIZE = "oversize"
    TRUNCATED = "truncated"
    BAD_VERSION = "bad_version"
    BAD_LENGTH = "bad_length"
    BAD_ENVELOPE = "bad_envelope"
    BAD_PAYLOAD = "bad_payload"
    BAD_HELLO = "bad_hello"
    BAD_DIGEST = "bad_digest"
    UNKNOWN_KIND = "unknown_kind"
    UNKNOWN_PAYLOAD_KIND = "unknown_payload_kind"
    BAD_SIGNATURE = "bad_signature"
    UNSIGNED = "unsigned"
    UNTRUSTED = "untrusted"
    EXPIRED = "expired"
    FUTURE_TIMESTAMP = "future_timestamp"
    NO_HELLO = "no_hello"
    DUPLICATE_HELLO = "duplicate_hello"


@dataclass(frozen=True, slots=True)
class PeerConnected:
    """A connection to a peer completed its handshake (HELLO verified)."""

    peer_id: str
    """The peer's node id, as it announced itself."""
    address: str
    """The peer's listening address (``host:port``), or the connection's remote address."""
    public_key: bytes
    """The peer's Ed25519 public key (32 bytes): its identity."""


@dataclass(frozen=True, slots=True)
class PeerDisconnected:
    """The connection to a peer is gone."""

    peer_id: str
    address: str
    reason: str
    """Why: ``"closed"`` by the remote or the transport, ``"protocol_error"``, ``"stopped"``..."""


@dataclass(frozen=True, slots=True)
class FrameRejected:
    """A frame from a connection was refused: counted, never delivered or forwarded."""

    peer_id: str | None
    """The sending peer's node id, or None before it identified itself."""
    address: str
    """The connection's remote address."""
    reason: str
    """A :class:`RejectReason` value."""
    detail: str
    """Human-readable detail."""
    closed: bool
    """True when the connection was closed because of it (a protocol violation)."""


Event = PeerConnected | PeerDisconnected | FrameRejected
