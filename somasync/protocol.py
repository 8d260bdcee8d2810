"""``GossipProtocol``: the sans-IO protocol core under the original crate's name.

A :class:`GossipProtocol` *is* the :class:`~somasync.core.endpoint.Endpoint` every node,
worker and simulated node runs (links, handshakes, verification, the broadcast tree,
anti-entropy), with the original's constructors and a few methods that speak
:class:`~somasync.message.Message`. It does no I/O: its driver moves bytes and time::

    a = GossipProtocol.new("alpha", GossipConfig(), now=0.0)
    b = GossipProtocol.new_enterprise("beta", EnterpriseGossipConfig.for_threat_intel(),
                                      now=0.0)
    a.open_link(1, outbound=True, address="beta:1", now=0.0)
    b.open_link(1, outbound=False, address="alpha:1", now=0.0)
    # move a.frames_to_send() into b.receive_bytes(...) and back until quiet, then
    a.gossip_message(Message(MessageType.Data("hi"), "alpha"), now=0.1)
    # ...move bytes again, and b.take_messages() holds the signed message.

Differences from the original: the constructors return the protocol alone (its
outbound queue is :meth:`frames_to_send`, its inbound one :meth:`take_messages`, not
channels), time and randomness are arguments, and :meth:`get_network_stats` reports
real counters for every protocol object (the original returned None for a basic one and
zeros for an enterprise one). The original's ``add_peer``/``remove_peer`` are
:meth:`open_link`/:meth:`close_link` (a peer is a connection the driver made, proved
by its handshake), ``handle_message`` is :meth:`receive_bytes`, and ``start`` is the
driver calling :meth:`handle_timer` at :meth:`get_timer`. Membership and the overlay, the
original's
``PeerManager`` and ``MeshNetwork``, are :class:`~somasync.core.node.NodeControl`.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

from somasync.config import GossipConfig
from somasync.core.crypto import Identity
from somasync.core.endpoint import Endpoint, EndpointStatistics
from somasync.enterprise import EnterpriseGossipConfig
from somasync.message import Message

__all__ = ["GossipProtocol", "GossipStats", "NetworkStats"]


@dataclass(frozen=True, slots=True)
class GossipStats:
    """Peers and messages a protocol object holds now (the original's ``GossipStats``)."""

    healthy_peers: int
    """Peers with an established link (their handshake finished)."""
    total_peers: int
    """Links open now, handshakes under way included."""
    cached_messages: int
    """Messages kept for anti-entropy (the catch-up store)."""
    known_messages: int
    """Message ids remembered for de-duplication (the seen cache)."""

    @classmethod
    def from_statistics(cls, core: EndpointStatistics) -> GossipStats:
        """The figures of an endpoint's (or a node's summed) statistics."""
        return cls(healthy_peers=core.peers, total_peers=core.links,
                   cached_messages=core.stored_messages, known_messages=core.seen_ids)


@dataclass(frozen=True, slots=True)
class NetworkStats:
    """Traffic since the protocol object (or node) was created (the original's
    ``NetworkStats``, which nothing ever updated). Its ``delivery_rate`` is gone (the
    original never defined it), and so is ``avg_latency_ms``: a node measures delivery
    latency as a histogram, ``NodeStats.delivery_latency``."""

    messages_sent: int
    """Message frames queued to neighbours: own broadcasts, forwards and repairs."""
    messages_received: int
    """New messages accepted (verified, not duplicates) and delivered."""
    duplicates: int
    """Copies of messages already received."""
    bytes_sent: int
    """Bytes of frames sent, length prefixes included (before link encryption)."""
    bytes_received: int
    """Bytes of frames received, likewise."""
    active_peers: int
    """Peers with an established link."""

    @classmethod
    def from_statistics(cls, core: EndpointStatistics) -> NetworkStats:
        """The figures of an endpoint's (or a node's summed) statistics."""
        return cls(messages_sent=core.messages_forwarded,
                   messages_received=core.messages_delivered, duplicates=core.duplicates,
                   bytes_sent=core.bytes_out, bytes_received=core.bytes_in,
                   active_peers=core.peers)


class GossipProtocol(Endpoint):
    """The sans-IO protocol object of one node: an :class:`Endpoint` built from the
    original's constructors (see the module docstring). Every ``Endpoint`` method works
    on it; the ones below add the original's names."""

    enterprise_config: EnterpriseGossipConfig | None = None
    """The enterprise settings it was built from (:meth:`new_enterprise`), else None."""

    @classmethod
    def new(cls, node_id: str, config: GossipConfig | None = None, *,
            identity: Identity | None = None, rng: random.Random | None = None,
            now: float = 0.0, wall_offset: float | None = None,
            listen_address: str | None = None) -> GossipProtocol:
        """A protocol object for ``node_id`` with ``config`` (the defaults when None).

        Args:
            identity: the node's key pair (a fresh one when None).
            rng: its randomness (seeded from the OS when None; tests pass their own).
            now: the driver's clock at creation (monotonic seconds).
            wall_offset: wall-clock seconds minus ``now``, to judge origin timestamps
                (read from the system clock once, here, when None).
            listen_address: ``host:port`` peers can dial back, told in the handshake.
        """
        return cls(config if config is not None else GossipConfig(),
                   identity if identity is not None else Identity.generate(), node_id,
                   rng=rng if rng is not None else random.Random(os.urandom(16)), now=now,
                   wall_offset=time.time() - now if wall_offset is None else wall_offset,
                   listen_address=listen_address)

    @classmethod
    def new_enterprise(cls, node_id: str, config: EnterpriseGossipConfig, *,
                       identity: Identity | None = None, rng: random.Random | None = None,
                       now: float = 0.0, wall_offset: float | None = None,
                       listen_address: str | None = None) -> GossipProtocol:
        """A protocol object running ``config.to_gossip_config()``: bandwidth limits,
        batch size and the derived fanout included. The derived overlay degree belongs
        to whoever opens the links (the node's overlay); see :meth:`new` for the rest."""
        if not isinstance(config, EnterpriseGossipConfig):
            raise TypeError("new_enterprise takes an EnterpriseGossipConfig")
        protocol = cls.new(node_id, config.to_gossip_config(), identity=identity, rng=rng,
                           now=now, wall_offset=wall_offset, listen_address=listen_address)
        protocol.enterprise_config = config
        return protocol

    def has_enterprise_features(self) -> bool:
        """True when built by :meth:`new_enterprise`."""
        return self.enterprise_config is not None

    def gossip_message(self, message: Message, *, now: float) -> str:
        """Send ``message`` to the whole mesh (signed with this node's key first when
        unsigned) and return its id (hex). A message already seen is not sent again."""
        if not isinstance(message, Message):
            raise TypeError("gossip_message takes a Message")
        if message.signature is None:
            message = message.sign_with_ed25519(self.identity)
        self.broadcast(message.to_envelope(), now=now)
        return message.id

    def take_messages(self) -> list[Message]:
        """Messages delivered since the last call, verified, as the application sees
        them (drains what :meth:`take_deliveries` would return)."""
        return [Message.from_envelope(d.envelope, d.payload) for d in self.take_deliveries()]

    def get_stats(self) -> GossipStats:
        """Peers and messages held now."""
        return GossipStats.from_statistics(self.statistics())

    def get_network_stats(self) -> NetworkStats:
        """Traffic since creation."""
        return NetworkStats.from_statistics(self.statistics())
