"""Events the application receives from a node's ``events`` stream.

``SynapseEvent`` is the namespace the original crate used; each event is a frozen
dataclass, so ``match event: case SynapseEvent.PeerConnected(peer_id=p, address=a): ...``
works as expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from somasync.core.events import (
    DirectAcked,
    DirectFailed,
    FrameRejected,
    PartitionDetected,
    PartitionHealed,
    PeerConnected,
    PeerDisconnected,
    PeerFailed,
    PeerJoined,
    PeerLeft,
    PeerRecovered,
    PeerRevoked,
    PeerSuspected,
    PeerUnreachable,
    RejectReason,
    RouteDiscovered,
)
from somasync.message import Message
from somasync.query import QueryFinished, QueryReceived

__all__ = [
    "DeliveryDropped",
    "DirectAcked",
    "DirectFailed",
    "Error",
    "FrameRejected",
    "MessageReceived",
    "MessageSent",
    "NodeStarted",
    "NodeStopping",
    "PartitionDetected",
    "PartitionHealed",
    "PeerConnected",
    "PeerDisconnected",
    "PeerFailed",
    "PeerJoined",
    "PeerLeft",
    "PeerRecovered",
    "PeerRevoked",
    "PeerSuspected",
    "PeerUnreachable",
    "QueryFinished",
    "QueryReceived",
    "RejectReason",
    "RouteDiscovered",
    "SynapseEvent",
]


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A new message was delivered to this node (also put on the ``messages`` stream)."""

    from_peer: str
    """Node id of the neighbour whose copy arrived first."""
    message: Message


@dataclass(frozen=True, slots=True)
class DeliveryDropped:
    """The application fell behind: ``count`` messages did not fit the delivery queue."""

    count: int


@dataclass(frozen=True, slots=True)
class NodeStarted:
    """The node started: it listens and is joining the mesh (reported by each start,
    once listening; links may come up, and be reported, meanwhile)."""

    node_id: str
    address: str
    """``host:port`` it listens on (the real port when configured as 0)."""


@dataclass(frozen=True, slots=True)
class NodeStopping:
    """The node was asked to stop: it tells the members it leaves, then closes its links
    (their ``PeerDisconnected`` follow) and ends the streams."""

    node_id: str


@dataclass(frozen=True, slots=True)
class MessageSent:
    """This node sent a message of its own (handed to its links, signed)."""

    to: str | None
    """The node it was addressed to, or None for a broadcast to the whole mesh."""
    message_id: str
    """Its id (hex): a bundle's id for a payload sent as a bundle."""


@dataclass(frozen=True, slots=True)
class Error:
    """Something went wrong that the node survives but the operator should know about:
    its data directory could not record a delivered message or a revocation (a full or
    failing disk; delivery goes on, what was not recorded may be delivered again after
    a restart). Refused frames are :class:`FrameRejected`, not errors."""

    error: str


class SynapseEvent:
    """Namespace of every event type a node reports."""

    PeerConnected: ClassVar[type[PeerConnected]] = PeerConnected
    PartitionDetected: ClassVar[type[PartitionDetected]] = PartitionDetected
    PartitionHealed: ClassVar[type[PartitionHealed]] = PartitionHealed
    PeerDisconnected: ClassVar[type[PeerDisconnected]] = PeerDisconnected
    MessageReceived: ClassVar[type[MessageReceived]] = MessageReceived
    FrameRejected: ClassVar[type[FrameRejected]] = FrameRejected
    DeliveryDropped: ClassVar[type[DeliveryDropped]] = DeliveryDropped
    PeerJoined: ClassVar[type[PeerJoined]] = PeerJoined
    PeerSuspected: ClassVar[type[PeerSuspected]] = PeerSuspected
    PeerFailed: ClassVar[type[PeerFailed]] = PeerFailed
    PeerRecovered: ClassVar[type[PeerRecovered]] = PeerRecovered
    PeerLeft: ClassVar[type[PeerLeft]] = PeerLeft
    PeerRevoked: ClassVar[type[PeerRevoked]] = PeerRevoked
    PeerUnreachable: ClassVar[type[PeerUnreachable]] = PeerUnreachable
    NodeStarted: ClassVar[type[NodeStarted]] = NodeStarted
    NodeStopping: ClassVar[type[NodeStopping]] = NodeStopping
    MessageSent: ClassVar[type[MessageSent]] = MessageSent
    Error: ClassVar[type[Error]] = Error
    DirectAcked: ClassVar[type[DirectAcked]] = DirectAcked
    DirectFailed: ClassVar[type[DirectFailed]] = DirectFailed
    RouteDiscovered: ClassVar[type[RouteDiscovered]] = RouteDiscovered
    QueryReceived: ClassVar[type[QueryReceived]] = QueryReceived
    QueryFinished: ClassVar[type[QueryFinished]] = QueryFinished
