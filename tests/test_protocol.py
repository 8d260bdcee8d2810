"""``GossipProtocol``: the sans-IO core under the original's names, driven in memory."""

from __future__ import annotations

import random

import pytest

from somasync import priority
from somasync.config import GossipConfig
from somasync.core.crypto import Identity
from somasync.core.payload import MessageType
from somasync.enterprise import EnterpriseGossipConfig
from somasync.message import Message
from somasync.protocol import GossipProtocol, GossipStats, NetworkStats

WALL = 1_800_000_000.0


def pump(a: GossipProtocol, b: GossipProtocol) -> None:
    """Move bytes between the two ends of link 1 until neither has anything to send."""
    for _ in range(100):
        moved = False
        for sender, receiver in ((a, b), (b, a)):
            for link, data in sender.frames_to_send():
                assert link == 1
                receiver.receive_bytes(1, data, now=NOW[0])
                moved = True
        if not moved:
            return
    raise AssertionError("did not settle")


NOW = [0.0]


def pair(config_b: EnterpriseGossipConfig | None = None
         ) -> tuple[GossipProtocol, GossipProtocol]:
    NOW[0] = 0.0
    a = GossipProtocol.new("alpha", GossipConfig.local(), identity=Identity(b"a" * 32),
                           rng=random.Random(1), now=0.0, wall_offset=WALL)
    b = (GossipProtocol.new("beta", identity=Identity(b"b" * 32), rng=random.Random(2),
                            now=0.0, wall_offset=WALL) if config_b is None else
         GossipProtocol.new_enterprise("beta", config_b, identity=Identity(b"b" * 32),
                                       rng=random.Random(2), now=0.0, wall_offset=WALL))
    a.open_link(1, outbound=True, address="beta:1", now=0.0)
    b.open_link(1, outbound=False, address="alpha:1", now=0.0)
    pump(a, b)
    return a, b


def test_a_message_crosses_between_two_protocol_objects() -> None:
    a, b = pair(EnterpriseGossipConfig.for_threat_intel())
    assert a.get_stats() == GossipStats(healthy_peers=1, total_peers=1, cached_messages=0,
                                        known_messages=0)
    NOW[0] = 0.5
    alert = Message(MessageType.Alert(level="critical", message="APT", details=None),
                    "alpha", timestamp=WALL + 0.5).with_priority(priority.CRITICAL)
    sent = a.gossip_message(alert, now=0.5)
    pump(a, b)
    [received] = b.take_messages()
    assert received.id == sent
    assert received.source == "alpha"
    assert received.priority == priority.CRITICAL
    assert received.verify_signature()
    assert received.signer_public_key == a.identity.public_key
    assert b.get_stats().cached_messages == 1
    network = b.get_network_stats()
    assert network.messages_received == 1
    assert network.active_peers == 1
    assert network.bytes_received > 0
    assert a.get_network_stats().messages_sent == 1


def test_a_message_lost_on_the_link_is_repaired_on_the_stepped_clock() -> None:
    a, b = pair()
    a.gossip_message(Message(MessageType.Data("lost once"), "alpha", timestamp=WALL),
                     now=0.0)
    for _link, _data in a.frames_to_send():
        pass  # dropped: and the records' counters now disagree, so drop the link too
    a.close_link(1, now=0.0)
    b.close_link(1, now=0.0)
    a.open_link(2, outbound=True, address="beta:1", now=0.0)
    b.open_link(2, outbound=False, address="alpha:1", now=0.0)
    for step in range(1, 40):
        NOW[0] = step * 0.25
        for p in (a, b):
            if p.get_timer() <= NOW[0]:
                p.handle_timer(now=NOW[0])
        for sender, receiver in ((a, b), (b, a)):
            for link, data in sender.frames_to_send():
                receiver.receive_bytes(link, data, now=NOW[0])
        if b.get_stats().cached_messages:
            break
    assert [m.message_type for m in b.take_messages()] == [MessageType.Data("lost once")]


def test_enterprise_protocol_runs_the_enterprise_settings() -> None:
    config = EnterpriseGossipConfig.for_large_networks().with_bandwidth_limit(1_000_000)
    protocol = GossipProtocol.new_enterprise("n", config, now=0.0)
    assert protocol.has_enterprise_features()
    assert protocol.config == config.to_gossip_config()
    assert protocol.config.max_send_rate == 1_000_000
    assert protocol.config.fanout == config.degree() == 10
    plain = GossipProtocol.new("m", now=0.0)
    assert not plain.has_enterprise_features()
    assert plain.config == GossipConfig()
    with pytest.raises(TypeError):
        GossipProtocol.new_enterprise("n", GossipConfig())  # type: ignore[arg-type]


def test_stats_are_frozen() -> None:
    stats = NetworkStats(1, 2, 3, 4, 5, 6)
    with pytest.raises(AttributeError):
        stats.messages_sent = 9  # type: ignore[misc]
