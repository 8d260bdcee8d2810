"""The original README's "Message Broadcasting": a critical alert (sent ahead of other
traffic) and a structured record, from one node to another.

    python examples/message_broadcasting.py
"""

from __future__ import annotations

import asyncio

from somasync import MessageType, SynapseEvent, SynapseNodeBuilder, priority


async def main() -> None:
    node, _, events = SynapseNodeBuilder().with_node_id("sensor").build()
    async with node:
        other, messages, _ = (SynapseNodeBuilder().with_node_id("soc")
                              .add_bootstrap_peer(node.listen_address).build())
        async with other, asyncio.timeout(30):
            while not isinstance(await events.recv(), SynapseEvent.PeerConnected):
                pass

            # Send high-priority message
            await node.broadcast_message(
                MessageType.Alert(level="critical", message="System overload detected",
                                  details=None),
                priority=priority.CRITICAL)

            # Send structured data
            data = {"temperature": "85.2", "unit": "celsius"}
            await node.broadcast_message(MessageType.Structured(data))

            for _ in range(2):
                message = await messages.recv()
                print(message.priority, message.message_type)


if __name__ == "__main__":
    asyncio.run(main())
