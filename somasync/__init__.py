"""SomaSync: a self-organizing mesh that broadcasts Ed25519-signed messages to every node.

Quick start::

    from somasync import SynapseNodeBuilder, MessageType, Peer

    node, messages, events = (SynapseNodeBuilder()
        .with_node_id("node-1")
        .with_bind_address("127.0.0.1:8080")
        .build())
    await node.add_peer(Peer("node-2", "127.0.0.1:8081"))
    async with node:
        await node.broadcast_message(
            MessageType.Alert(level="critical", message="APT detected", details=None))
        async for message in messages:
            ...
"""

import logging as _logging

from somasync import priority as priority, ttl as ttl
from somasync.aio.channel import Stream as Stream
from somasync.aio.node import (
    LatencyHistogram as LatencyHistogram,
    NodeStats as NodeStats,
    Peer as Peer,
    PeerStats as PeerStats,
    SynapseNode as SynapseNode,
    WorkerStats as WorkerStats,
)
from somasync.config import (
    AdaptiveConfig as AdaptiveConfig,
    DiscoveryConfig as DiscoveryConfig,
    DiscoveryMethod as DiscoveryMethod,
    GossipConfig as GossipConfig,
    MembershipConfig as MembershipConfig,
    NodeConfig as NodeConfig,
    OverlayConfig as OverlayConfig,
    SecurityConfig as SecurityConfig,
)
from somasync.core.crypto import Identity as Identity
from somasync.core.endpoint import EndpointStatistics as EndpointStatistics
from somasync.core.membership import (
    Member as Member,
    MembershipStatistics as MembershipStatistics,
    PeerState as PeerState,
)
from somasync.core.payload import MessageType as MessageType
from somasync.core.trust import Certificate as Certificate
from somasync.enterprise import EnterpriseGossipConfig as EnterpriseGossipConfig
from somasync.errors import (
    ConfigError as ConfigError,
    DataDirError as DataDirError,
    DecodeError as DecodeError,
    DeliveryFailedError as DeliveryFailedError,
    KeyFileError as KeyFileError,
    MessageTooLargeError as MessageTooLargeError,
    NodeStateError as NodeStateError,
    QueryLimitError as QueryLimitError,
    SignatureError as SignatureError,
    SomaSyncError as SomaSyncError,
    TransportError as TransportError,
)
from somasync.events import (
    DeliveryDropped as DeliveryDropped,
    DirectAcked as DirectAcked,
    DirectFailed as DirectFailed,
    FrameRejected as FrameRejected,
    MessageReceived as MessageReceived,
    MessageSent as MessageSent,
    NodeStarted as NodeStarted,
    NodeStopping as NodeStopping,
    PartitionDetected as PartitionDetected,
    PartitionHealed as PartitionHealed,
    PeerConnected as PeerConnected,
    PeerDisconnected as PeerDisconnected,
    PeerFailed as PeerFailed,
    PeerJoined as PeerJoined,
    PeerLeft as PeerLeft,
    PeerRecovered as PeerRecovered,
    PeerRevoked as PeerRevoked,
    PeerSuspected as PeerSuspected,
    PeerUnreachable as PeerUnreachable,
    QueryFinished as QueryFinished,
    QueryReceived as QueryReceived,
    RejectReason as RejectReason,
    RouteDiscovered as RouteDiscovered,
    SynapseEvent as SynapseEvent,
)
from somasync.message import Message as Message
from somasync.node import SynapseNodeBuilder as SynapseNodeBuilder
from somasync.protocol import (
    GossipProtocol as GossipProtocol,
    GossipStats as GossipStats,
    NetworkStats as NetworkStats,
)
from somasync.query import (
    Query as Query,
    QueryFilter as QueryFilter,
    QueryResponse as QueryResponse,
)

__version__ = "0.1.0"

# A library logs, the application decides where to: silent unless it configures logging.
_logging.getLogger("somasync").addHandler(_logging.NullHandler())

__all__ = [
    "AdaptiveConfig",
    "Certificate",
    "ConfigError",
    "DataDirError",
    "DecodeError",
    "DeliveryDropped",
    "DeliveryFailedError",
    "DirectAcked",
    "DirectFailed",
    "DiscoveryConfig",
    "DiscoveryMethod",
    "EndpointStatistics",
    "EnterpriseGossipConfig",
    "FrameRejected",
    "GossipConfig",
    "GossipProtocol",
    "GossipStats",
    "Identity",
    "KeyFileError",
    "LatencyHistogram",
    "Member",
    "MembershipConfig",
    "MembershipStatistics",
    "Message",
    "MessageReceived",
    "MessageSent",
    "MessageTooLargeError",
    "MessageType",
    "NetworkStats",
    "NodeConfig",
    "NodeStarted",
    "NodeStateError",
    "NodeStats",
    "NodeStopping",
    "OverlayConfig",
    "PartitionDetected",
    "PartitionHealed",
    "Peer",
    "PeerConnected",
    "PeerDisconnected",
    "PeerFailed",
    "PeerJoined",
    "PeerLeft",
    "PeerRecovered",
    "PeerRevoked",
    "PeerState",
    "PeerStats",
    "PeerSuspected",
    "PeerUnreachable",
    "Query",
    "QueryFilter",
    "QueryFinished",
    "QueryLimitError",
    "QueryReceived",
    "QueryResponse",
    "RejectReason",
    "RouteDiscovered",
    "SecurityConfig",
    "SignatureError",
    "SomaSyncError",
    "Stream",
    "SynapseEvent",
    "SynapseNode",
    "SynapseNodeBuilder",
    "TransportError",
    "WorkerStats",
    "__version__",
    "priority",
    "ttl",
]
