"""Two nodes on 127.0.0.1 exchange one signed alert, then exit (the README's quick start).

    python examples/quick_start.py
"""

import asyncio

from somasync import MessageType, SynapseEvent, SynapseNodeBuilder


async def main() -> None:
    node1, _, events1 = (SynapseNodeBuilder().with_node_id("node-1")
                   .with_bind_address("127.0.0.1:0").build())      # port 0: any free port
    async with node1:                                   # start() returns once listening
        node2, messages, _events = (SynapseNodeBuilder().with_node_id("node-2")
                                    .with_bind_address("127.0.0.1:0")
                                    .add_bootstrap_peer(node1.listen_address)
                                    .build())
        async with node2:
            while not isinstance(await events1.recv(), SynapseEvent.PeerConnected):
                pass                                    # wait until node-2 is linked
            await node1.broadcast_message(
                MessageType.Alert(level="critical", message="APT detected", details=None))
            message = await messages.recv()
            print(message.source, message.message_type, message.verify_signature())


if __name__ == "__main__":
    asyncio.run(main())
