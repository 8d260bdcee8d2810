"""The control protocol between the supervisor and its workers: typed messages, one codec.

Every message is a frozen dataclass below (or one of the core's connection events), and
:func:`encode` / :func:`decode` are the only way it crosses the control socket. Layout::

    u8 kind | u32 JSON length | JSON object of the non-bytes fields | (u32 length | bytes)*

Bytes fields travel as raw bytes after the JSON, in field order (never hex or base64).
A kind this codec does not know, a body that does not decode, or fields that do not
match the kind's dataclass raise :class:`ControlError`: nothing is dropped silently, and
the side that received it treats its peer as broken (see the supervisor and the worker).
File descriptors (an adopted connection) travel beside a message with ``SCM_RIGHTS``.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from dataclasses import dataclass
from typing import Any

import orjson

from somasync.core.broadcast import TreeStatistics
from somasync.core.endpoint import EndpointStatistics
from somasync.core.events import (
    DirectAcked,
    DirectFailed,
    FrameRejected,
    PeerConnected,
    PeerDisconnected,
    PeerRevoked,
    RouteDiscovered,
)
from somasync.errors import DecodeError

__all__ = ["Adopt", "Bind", "ControlError", "ControlMessage", "CorruptRing", "Disconnect",
           "Ready", "Retune", "Revoke", "Rewire", "SendDirect", "StatsReport", "StatsRequest",
           "Stop", "decode", "encode"]

_HEAD = struct.Struct("!BI")
_LENGTH = struct.Struct("!I")


class ControlError(DecodeError):
    """A control message that cannot be encoded or decoded."""

    def __init__(self, detail: str) -> None:
        super().__init__("bad_control", detail)


@dataclass(frozen=True, slots=True)
class Ready:
    """Worker -> supervisor: attached to its rings and serving."""

    pid: int


@dataclass(frozen=True, slots=True)
class Adopt:
    """Supervisor -> worker: take over the connection whose descriptor travels with this.

    The supervisor finished its handshake: ``session`` is the exported
    :class:`~somasync.core.handshake.Session` (keys, counters, the proven peer) and
    ``initial`` the record bytes it read after the handshake, to be opened first."""

    address: str
    outbound: bool
    initial: bytes
    session: bytes


@dataclass(frozen=True, slots=True)
class Rewire:
    """Supervisor -> worker: worker ``peer`` was restarted; use these fresh rings."""

    peer: int
    ring_in: str
    ring_out: str


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Supervisor -> worker: close the link to this peer (membership declared it gone)."""

    public_key: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class StatsRequest:
    """Supervisor -> worker: answer with a :class:`StatsReport`."""


@dataclass(frozen=True, slots=True)
class StatsReport:
    """Worker -> supervisor: the worker's counters."""

    pid: int
    core: EndpointStatistics
    ring_in_used: dict[int, int]
    """Bytes waiting in each ring this worker reads, by the writer's index."""
    ring_out_pending: dict[int, int]
    """Bytes this worker could not yet write to each ring, by the reader's index."""
    ring_dropped: int
    """Items this worker dropped because a ring's pending bound was reached."""
    cpu_seconds: float
    ring_corrupted: int = 0
    """Rings in which this worker found a corrupt record (each reported in a
    :class:`CorruptRing`). A default: a report without it reads as none found."""
    send_backlog: int = 0
    """Bytes queued for the fullest of this worker's links that still take bytes (the
    core's queue plus the transport's buffer): what a large sender paces itself by. A
    peer that stopped reading (its transport paused) is left out, or it would slow every
    bundle the node sends."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Supervisor -> worker: close every link and exit."""


@dataclass(frozen=True, slots=True)
class Bind:
    """Supervisor -> worker: the node's trust policy admitted this name, key and
    certificate (membership learned it); judge messages by it. An empty name releases
    the key's name (membership declared it failed or gone)."""

    name: str
    public_key: bytes
    credential: bytes


@dataclass(frozen=True, slots=True)
class Revoke:
    """Supervisor -> worker: an operator revoked this key; ``notice`` is the revocation
    message, kept for new neighbours."""

    public_key: bytes
    notice: bytes


@dataclass(frozen=True, slots=True)
class Retune:
    """Supervisor -> worker: adaptive fanout changed the values the data part runs on
    (a :class:`~somasync.core.sizing.Sizing`; the control part already runs on them)."""

    estimate: int
    degree: int
    fanout: int
    ihave_fanout: int
    anti_entropy_interval: float


@dataclass(frozen=True, slots=True)
class CorruptRing:
    """Worker -> supervisor: the ring named ``ring`` (a segment this worker reads) holds a
    corrupt record (``detail``); this worker reads it no more. Its producer can no longer
    be trusted: the supervisor restarts it, which replaces the ring (see the supervisor)."""

    ring: str
    detail: str


@dataclass(frozen=True, slots=True)
class SendDirect:
    """Supervisor -> worker: send the application's direct message (``signed``: its
    signature, then its envelope) to the node ``target``, through the relays ``via``
    (their keys, concatenated); sent to the worker that owns the pair of nodes
    (:func:`somasync.core.shard.direct_owner`), which reports the verdict as a
    ``DirectAcked`` or ``DirectFailed`` event."""

    signed: bytes
    target: bytes
    via: bytes
    node_id: str
    timeout: float


ControlMessage = (Ready | Adopt | Rewire | Disconnect | StatsRequest | StatsReport | Stop
                  | PeerConnected | PeerDisconnected | FrameRejected | PeerRevoked | Bind
                  | Revoke | CorruptRing | SendDirect | DirectAcked | DirectFailed
                  | RouteDiscovered | Retune)
"""Every message of the protocol; the four events go worker -> supervisor."""


class Kind(enum.IntEnum):
    """Wire values of the message types. WARNING: append only."""

    READY = 1
    ADOPT = 2
    REWIRE = 3
    DISCONNECT = 4
    STATS_REQUEST = 5
    STATS_REPORT = 6
    STOP = 7
    PEER_CONNECTED = 8
    PEER_DISCONNECTED = 9
    FRAME_REJECTED = 10
    PEER_REVOKED = 11
    BIND = 12
    REVOKE = 13
    CORRUPT_RING = 14
    SEND_DIRECT = 15
    DIRECT_ACKED = 16
    DIRECT_FAILED = 17
    ROUTE_DISCOVERED = 18
    RETUNE = 19


_TYPES: dict[Kind, type[Any]] = {
    Kind.READY: Ready, Kind.ADOPT: Adopt, Kind.REWIRE: Rewire, Kind.DISCONNECT: Disconnect,
    Kind.STATS_REQUEST: StatsRequest, Kind.STATS_REPORT: StatsReport, Kind.STOP: Stop,
    Kind.PEER_CONNECTED: PeerConnected, Kind.PEER_DISCONNECTED: PeerDisconnected,
    Kind.FRAME_REJECTED: FrameRejected, Kind.PEER_REVOKED: PeerRevoked, Kind.BIND: Bind,
    Kind.REVOKE: Revoke, Kind.CORRUPT_RING: CorruptRing, Kind.SEND_DIRECT: SendDirect,
    Kind.DIRECT_ACKED: DirectAcked, Kind.DIRECT_FAILED: DirectFailed,
    Kind.ROUTE_DISCOVERED: RouteDiscovered, Kind.RETUNE: Retune,
}
_KINDS = {cls: kind for kind, cls in _TYPES.items()}
# The fields declared ``bytes`` (annotations are strings here and in core.events).
_BYTES_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls) if f.type in ("bytes", bytes))
    for cls in _TYPES.values()
}


def encode(message: ControlMessage) -> bytes:
    """One message as bytes for the control socket.

    Raises:
        ControlError: ``message`` is not a type of this protocol.
    """
    kind = _KINDS.get(type(message))
    if kind is None:
        raise ControlError(f"{type(message).__name__} is not a control message")
    binary_names = _BYTES_FIELDS.get(type(message), ())
    fields: dict[str, Any] = {}
    binary: list[bytes] = []
    for field in dataclasses.fields(message):
        value = getattr(message, field.name)
        if field.name in binary_names:
            binary.append(value)
        elif isinstance(value, EndpointStatistics):
            fields[field.name] = dataclasses.asdict(value)
        elif isinstance(value, dict):
            fields[field.name] = {str(k): v for k, v in value.items()}
        else:
            fields[field.name] = value
    body = orjson.dumps(fields)
    return b"".join([_HEAD.pack(kind, len(body)), body,
                     *(_LENGTH.pack(len(part)) + part for part in binary)])


def decode(data: bytes) -> ControlMessage:
    """The message ``data`` holds.

    Raises:
        ControlError: an unknown kind, a truncated or malformed body, or fields that do
            not match the kind.
    """
    if len(data) < _HEAD.size:
        raise ControlError("shorter than its header")
    raw_kind, length = _HEAD.unpack_from(data)
    try:
        kind = Kind(raw_kind)
    except ValueError:
        raise ControlError(f"unknown kind {raw_kind}") from None
    cls = _TYPES[kind]
    offset = _HEAD.size + length
    if offset > len(data):
        raise ControlError(f"{kind.name}: body cut short")
    try:
        fields = orjson.loads(data[_HEAD.size : offset])
    except orjson.JSONDecodeError:
        raise ControlError(f"{kind.name}: body is not JSON") from None
    if not isinstance(fields, dict):
        raise ControlError(f"{kind.name}: body is not an object")
    for name in _BYTES_FIELDS.get(cls, ()):
        if offset + _LENGTH.size > len(data):
            raise ControlError(f"{kind.name}: {name} cut short")
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + size > len(data):
            raise ControlError(f"{kind.name}: {name} cut short")
        fields[name] = data[offset : offset + size]
        offset += size
    if offset != len(data):
        raise ControlError(f"{kind.name}: trailing bytes")
    try:
        if cls is StatsReport:
            fields["core"] = _endpoint_statistics(fields["core"])
            for name in ("ring_in_used", "ring_out_pending"):
                fields[name] = {int(k): int(v) for k, v in fields[name].items()}
        message: ControlMessage = cls(**fields)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise ControlError(f"{kind.name}: fields do not match ({exc})") from None
    return message


def _endpoint_statistics(data: dict[str, Any]) -> EndpointStatistics:
    tree = data.get("tree")
    return EndpointStatistics(**{**data, "tree": None if tree is None
                                 else TreeStatistics(**tree),
                                 "verify_seconds": tuple(data["verify_seconds"])})
