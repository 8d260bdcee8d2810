"""The original README's "Basic Configuration": gossip settings given field by field.

Its ``gossip_interval`` (a heartbeat period) has no counterpart and is refused with an
error that says what replaced it: messages are forwarded the moment they arrive, and
liveness is membership probing (``MembershipConfig.probe_interval``).

    python examples/basic_configuration.py
"""

from __future__ import annotations

from datetime import timedelta

from somasync import ConfigError, GossipConfig, MembershipConfig, SynapseNodeBuilder


def main() -> None:
    try:
        GossipConfig(fanout=5, gossip_interval=timedelta(seconds=15))
    except ConfigError as exc:
        print(f"refused: {exc.field}")

    gossip_config = GossipConfig(
        fanout=5,
        sync_interval=timedelta(seconds=30),  # the original's name of anti_entropy_interval
        max_message_age=1800.0,
        max_stored_messages=10_000,
    )
    node, _, _ = (SynapseNodeBuilder()
                  .with_node_id("configured-node")
                  .with_gossip_config(gossip_config)
                  .with_membership_config(MembershipConfig(probe_interval=1.0))
                  .with_auto_discovery(True)
                  .build())
    config = node.config
    print(config.node_id, config.gossip.fanout, config.gossip.anti_entropy_interval,
          config.gossip.max_message_age, config.gossip.max_stored_messages,
          config.membership.probe_interval, ",".join(sorted(config.discovery)))


if __name__ == "__main__":
    main()
