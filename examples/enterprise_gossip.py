"""The original README's "Enterprise Gossip for Scale": an enterprise configuration and
``GossipProtocol.new_enterprise``, the sans-IO protocol object. Two of them are joined
here by an in-memory link and a stepped clock (no sockets): a critical alert crosses.

    python examples/enterprise_gossip.py
"""

from __future__ import annotations

from somasync import (
    EnterpriseGossipConfig,
    GossipProtocol,
    Message,
    MessageType,
    priority,
)


def pump(a: GossipProtocol, b: GossipProtocol, now: float) -> None:
    """Carry what each side sends to the other until both are quiet (the driver's job:
    a socket, a worker's ring, the simulator's network)."""
    moved = True
    while moved:
        moved = False
        for sender, receiver in ((a, b), (b, a)):
            for link, data in sender.frames_to_send():
                receiver.receive_bytes(link, data, now=now)
                moved = True


def main() -> None:
    # Configure enterprise gossip for 10K+ node networks
    enterprise_config = (EnterpriseGossipConfig.for_threat_intel()
                         .with_adaptive_fanout(20, 100)    # degree 20-100 from the size
                         .with_priority_routing()          # always on: says where
                         .with_smart_routing()             # always on: peer scores
                         .with_bandwidth_limit(50_000_000)  # 50 MB/s, bulk only
                         .with_expected_nodes(10_000))

    # Create enterprise gossip protocols (time is an argument: here a stepped clock)
    now = 0.0
    alpha = GossipProtocol.new_enterprise("enterprise-node-001", enterprise_config, now=now)
    beta = GossipProtocol.new_enterprise("enterprise-node-002", enterprise_config, now=now)
    alpha.open_link(1, outbound=True, address="enterprise-node-002:7946", now=now)
    beta.open_link(1, outbound=False, address="enterprise-node-001:7946", now=now)
    pump(alpha, beta, now)

    now += 0.01
    alpha.gossip_message(
        Message(MessageType.Alert(level="critical", message="APT detected", details=None),
                "enterprise-node-001").with_priority(priority.CRITICAL), now=now)
    pump(alpha, beta, now)
    for message in beta.take_messages():
        print(message.source, message.priority, message.message_type,
              message.verify_signature())
    config = alpha.config
    print(f"fanout {config.fanout}, max_send_rate {config.max_send_rate}, "
          f"enterprise {alpha.has_enterprise_features()}")
    print(beta.get_stats())


if __name__ == "__main__":
    main()
