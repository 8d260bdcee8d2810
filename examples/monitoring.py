"""The original README's "Monitoring": a node's statistics after it received a message.

    python examples/monitoring.py
"""

from __future__ import annotations

import asyncio

from somasync import MessageType, SynapseEvent, SynapseNodeBuilder


async def main() -> None:
    sender, _, events = SynapseNodeBuilder().with_node_id("sender").build()
    async with sender:
        node, messages, _ = (SynapseNodeBuilder().with_node_id("monitored")
                             .add_bootstrap_peer(sender.listen_address).build())
        async with node, asyncio.timeout(30):
            while not isinstance(await events.recv(), SynapseEvent.PeerConnected):
                pass                            # wait until the node is linked
            await sender.broadcast_message(MessageType.Data("status: green"))
            await messages.recv()

            stats = await node.get_stats()
            print(f"Node: {stats.node_id}")
            print(f"Uptime: {stats.uptime:.3f}s")
            print(f"Messages processed: {stats.messages_processed}")
            print(f"Healthy peers: {stats.peer_stats.healthy_peers}")
            print(f"Cached messages: {stats.gossip_stats.cached_messages}")
            print(f"Bytes received: {stats.network_stats.bytes_received}")


if __name__ == "__main__":
    asyncio.run(main())
