"""The original README's "Event Handling": one task prints incoming messages, another
matches on events.

    python examples/event_handling.py
"""

from __future__ import annotations

import asyncio
import contextlib

from somasync import Message, MessageType, Stream, SynapseEvent, SynapseNodeBuilder


async def print_messages(messages: Stream[Message]) -> None:
    with contextlib.suppress(EOFError):  # the stream ends when the node stops
        async for message in messages:
            print(f"Received: {message.message_type}")


async def print_events(events: Stream[object], done: asyncio.Event) -> None:
    with contextlib.suppress(EOFError):
        async for event in events:
            match event:
                case SynapseEvent.PeerConnected(peer_id=peer_id, address=address):
                    print(f"New peer connected: {peer_id} at {address}")
                case SynapseEvent.MessageReceived(from_peer=sender, message=message):
                    print(f"Message from {sender}: {message.message_type}")
                    done.set()
                case _:
                    pass


async def main() -> None:
    sender, _, sender_events = SynapseNodeBuilder().with_node_id("sender").build()
    async with sender:
        node, messages, events = (SynapseNodeBuilder().with_node_id("listener")
                                  .add_bootstrap_peer(sender.listen_address).build())
        done = asyncio.Event()
        tasks = [asyncio.create_task(print_messages(messages)),
                 asyncio.create_task(print_events(events, done))]
        async with node:
            async with asyncio.timeout(30):
                while not isinstance(await sender_events.recv(), SynapseEvent.PeerConnected):
                    pass                        # wait until the listener is linked
                await sender.broadcast_message(MessageType.Data("Hello, neural mesh!"))
                await done.wait()
        await asyncio.gather(*tasks)  # both end once the node stopped


if __name__ == "__main__":
    asyncio.run(main())
