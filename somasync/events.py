"""Events the application receives from a node's ``events`` stream.

``SynapseEvent`` is the namespace the original crate used; each event is a frozen
dataclass, so ``match event: case SynapseEvent.PeerConnected(peer_id=p, address=a): ...``
works as expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from somasync.core.events import (
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
)
from somasync.message import Message

__all__ = [
    "DeliveryDropped",
    "FrameRejected",
    "MessageReceived",
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
    "RejectReason",
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
