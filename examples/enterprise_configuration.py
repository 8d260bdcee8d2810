"""The original README's "Enterprise Configuration": two presets refined by the
original's builder methods, applied to nodes; prints the settings each one runs on.

Its ``with_epidemic_tuning(0.1, 0.9)`` never compiled against the crate (which took one
number, the target delivery probability): here it is ``with_epidemic_tuning(0.9)``.

    python examples/enterprise_configuration.py
"""

from __future__ import annotations

from somasync import EnterpriseGossipConfig, NodeConfig, SynapseNodeBuilder


def describe(name: str, config: NodeConfig) -> None:
    gossip = config.gossip
    print(f"{name}: forwarding={gossip.forwarding} degree={config.overlay.active_size} "
          f"fanout={gossip.fanout} max_send_rate={gossip.max_send_rate} "
          f"max_link_send_rate={gossip.max_link_send_rate} "
          f"anti_entropy_batch={gossip.anti_entropy_batch} "
          f"anti_entropy_interval={gossip.anti_entropy_interval} "
          f"require_signatures={gossip.require_signatures}")


def main() -> None:
    # Threat intelligence network configuration
    enterprise_config = (EnterpriseGossipConfig.for_threat_intel()
                         .with_adaptive_fanout(10, 50)       # degree bounds
                         .with_priority_routing()            # always on
                         .with_smart_routing()               # always on
                         .with_bandwidth_limit(100_000_000)  # 100 MB/s
                         .with_batch_size(100)               # catch-up batches
                         .with_epidemic_tuning(0.9))         # target delivery probability

    # Large-scale SOC network configuration
    large_scale_config = (EnterpriseGossipConfig.for_large_networks()
                          .with_adaptive_fanout(50, 200)          # higher degree
                          .with_bandwidth_limit(1_000_000_000))   # 1 GB/s

    for name, enterprise in (("threat-intel", enterprise_config),
                             ("large-scale", large_scale_config)):
        node, _, _ = (SynapseNodeBuilder().with_node_id(name)
                      .with_enterprise_config(enterprise).build())
        describe(name, node.config)


if __name__ == "__main__":
    main()
