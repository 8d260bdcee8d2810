"""Events the core reports to its driver, and through it to the application.

Each is a small frozen dataclass named as a past-tense fact.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "DirectAcked",
    "DirectFailed",
    "Event",
    "FrameRejected",
    "MembershipEvent",
    "PeerConnected",
    "PeerDisconnected",
    "PeerFailed",
    "PeerJoined",
    "PeerLeft",
    "PeerRecovered",
    "PeerRevoked",
    "PeerSuspected",
    "PeerUnreachable",
    "RejectReason",
    "RouteDiscovered",
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
    BAD_BATCH = "bad_batch"  # a batch-signed message's proof head is malformed
    BAD_PRIORITY = "bad_priority"  # a frame header's priority differs from the signed one
    UNKNOWN_KIND = "unknown_kind"
    UNKNOWN_PAYLOAD_KIND = "unknown_payload_kind"
    BAD_SIGNATURE = "bad_signature"
    UNSIGNED = "unsigned"
    UNTRUSTED = "untrusted"
    EXPIRED = "expired"
    FUTURE_TIMESTAMP = "future_timestamp"
    NO_HELLO = "no_hello"
    DUPLICATE_HELLO = "duplicate_hello"
    BAD_CLAIM = "bad_claim"
    BAD_DATAGRAM = "bad_datagram"
    SELF_ACCUSATION = "self_accusation"
    UNKNOWN_AUTHOR = "unknown_author"
    MEMBERS_FULL = "members_full"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    """A connection did not finish its handshake in time (it stalled, or trickled)."""
    FRAME_TIMEOUT = "frame_timeout"
    """A link held an incomplete frame or record too long (a trickle)."""
    LOW_SCORE = "low_score"
    """The peer's score fell below the disconnect threshold (see
    :mod:`somasync.core.scoring`): its link is closed, and new ones refused until the
    score recovers."""
    TOO_OLD = "too_old"
    """Older than ``GossipConfig.max_message_age``, whatever its TTL (the replay bound)."""
    SOURCE_MISMATCH = "source_mismatch"
    """Its ``source`` is not the name bound to its signing key."""
    NAME_TAKEN = "name_taken"
    """Open policy: a peer claimed a name bound to another key."""
    NOT_ALLOWED = "not_allowed"
    """Allowlist policy: the name and key are not on the list."""
    REVOKED = "revoked"
    """An operator revoked the key."""


@dataclass(frozen=True, slots=True)
class PeerConnected:
    """A connection to a peer completed its handshake (its identity proven)."""

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
    public_key: bytes = b""
    """The peer's Ed25519 public key (empty only where the peer never identified itself)."""


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


@dataclass(frozen=True, slots=True)
class PeerJoined:
    """A member joined the mesh (or came back after leaving): membership learned of it."""

    peer_id: str
    address: str
    public_key: bytes
    incarnation: int


@dataclass(frozen=True, slots=True)
class PeerSuspected:
    """A member stopped answering probes; it is suspected, not yet declared failed.

    It has a suspicion timeout (shorter the more members confirm) to refute."""

    peer_id: str
    address: str
    public_key: bytes
    incarnation: int
    suspected_by: str
    """Node id of the member that first suspected it."""


@dataclass(frozen=True, slots=True)
class PeerFailed:
    """A member was declared failed: it did not refute its suspicion in time."""

    peer_id: str
    address: str
    public_key: bytes
    incarnation: int


@dataclass(frozen=True, slots=True)
class PeerRecovered:
    """A suspected or failed member proved it is alive (it refuted with a higher
    incarnation, or a healed partition brought it back)."""

    peer_id: str
    address: str
    public_key: bytes
    incarnation: int


@dataclass(frozen=True, slots=True)
class PeerLeft:
    """A member announced a graceful leave (signed by itself); it is dropped at once."""

    peer_id: str
    address: str
    public_key: bytes
    incarnation: int


@dataclass(frozen=True, slots=True)
class PartitionDetected:
    """Many members failed at once (``MembershipConfig.partition_fraction`` of the live
    ones within about two probe rounds): the network is most likely cut between this
    node and them, rather than they all crashed. They are retried as failed members."""

    lost: tuple[str, ...]
    """Node ids of the members lost, in the order they failed."""
    members: int
    """Live members (this node included) before they were lost."""


@dataclass(frozen=True, slots=True)
class PartitionHealed:
    """At least half of the members a ``PartitionDetected`` reported lost are alive
    again (the partition merged back)."""

    returned: tuple[str, ...]
    """Node ids of the lost members that are back."""


@dataclass(frozen=True, slots=True)
class PeerUnreachable:
    """A peer or seed this node wants a link to could not be reached (reported once
    until it is reached; the node keeps retrying it with back-off)."""

    address: str


@dataclass(frozen=True, slots=True)
class PeerRevoked:
    """An operator's revocation of a key reached this node: the key gets no link, no
    membership and no delivery from now on."""

    public_key: bytes
    peer_id: str | None
    """The name bound to the key when it was revoked, if this node knew one."""
    notice: bytes = b""
    """The revocation message as a frame (kept and handed to new neighbours)."""


MembershipEvent = (PeerJoined | PeerSuspected | PeerFailed | PeerRecovered | PeerLeft
                   | PartitionDetected | PartitionHealed)
@dataclass(frozen=True, slots=True)
class DirectAcked:
    """The target acknowledged a direct message (its signature checked)."""

    message_id: bytes
    node_id: str
    """The target, as the sender named it."""
    public_key: bytes


@dataclass(frozen=True, slots=True)
class DirectFailed:
    """A direct message was not acknowledged in time (or could not be sent at all)."""

    message_id: bytes
    node_id: str
    public_key: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class RouteDiscovered:
    """A node that is not a neighbour was reached (an acknowledgement came back) through
    the neighbour ``via``: later direct messages to it take that link first."""

    node_id: str
    via: str
    """The neighbour (node id) the route leaves through."""


Event = (PeerConnected | PeerDisconnected | FrameRejected | PeerRevoked | DirectAcked
         | DirectFailed | RouteDiscovered)
