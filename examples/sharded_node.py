"""A sharded node: two worker processes verify and deliver what a plain node publishes.

A script that creates a sharded node must guard its entry point (``forkserver``).

    python examples/sharded_node.py [--messages 200]
"""

from __future__ import annotations

import argparse
import asyncio

from somasync import MessageType, SynapseEvent, SynapseNodeBuilder


async def main(count: int) -> int:
    sharded, messages, events = (SynapseNodeBuilder().with_node_id("sharded")
                                  .with_bind_address("127.0.0.1:0").with_workers(2).build())
    async with sharded:
        publisher, _, _ = (SynapseNodeBuilder().with_node_id("publisher")
                           .with_bind_address("127.0.0.1:0")
                           .add_bootstrap_peer(sharded.listen_address).build())
        async with publisher, asyncio.timeout(60):
            while not isinstance(await events.recv(), SynapseEvent.PeerConnected):
                pass  # membership events come first
            for n in range(count):
                await publisher.broadcast_message(MessageType.Data(f"event {n}"))
            received = {(await messages.recv()).id for _ in range(count)}
        stats = await sharded.get_stats()
    print(f"sharded node: {len(received)} of {count} messages, "
          f"verified by workers {[w.messages_verified for w in stats.workers]}")
    return 0 if len(received) == count else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    raise SystemExit(asyncio.run(main(parser.parse_args().messages)))
