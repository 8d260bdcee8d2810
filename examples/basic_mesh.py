"""The original README's "Basic Mesh Network": two nodes, one seeded with the other,
linked as peers (on 127.0.0.1, ports the OS picks).

    python examples/basic_mesh.py
"""

from __future__ import annotations

import asyncio

from somasync import Peer, SynapseEvent, SynapseNodeBuilder


async def main() -> None:
    # Create two nodes
    node1, _, events1 = (SynapseNodeBuilder().with_node_id("alpha")
                         .with_bind_address("127.0.0.1:0").build())
    async with node1:
        node2, _, _ = (SynapseNodeBuilder().with_node_id("beta")
                       .with_bind_address("127.0.0.1:0")
                       .add_bootstrap_peer(node1.listen_address)
                       .build())
        async with node2:
            # Connect them as peers (beta dialled alpha already; the link is kept both ways)
            await node1.add_peer(Peer("beta", node2.listen_address))
            async with asyncio.timeout(30):
                while not isinstance(await events1.recv(), SynapseEvent.PeerConnected):
                    pass
            for peer in await node1.get_healthy_peers():
                print(f"alpha -> {peer.id}: connected={peer.connected}")


if __name__ == "__main__":
    asyncio.run(main())
