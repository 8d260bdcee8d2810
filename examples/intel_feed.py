"""A threat-intelligence feed: one publisher, three subscribers, signed IOC records.

The publisher signs each indicator as a ``Structured`` record with its own key; every
subscriber accepts only messages signed by the feed's key (``trusted_keys``), checks the
signature, and keeps the indicators it has not seen. The mesh forms through one seed.

    python examples/intel_feed.py [--indicators 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from somasync import (
    GossipConfig,
    Identity,
    Message,
    MessageType,
    Stream,
    SynapseEvent,
    SynapseNode,
    SynapseNodeBuilder,
)

SUBSCRIBERS = 3


async def collect(name: str, messages: Stream[Message], want: int,
                  seen: dict[str, set[str]]) -> None:
    indicators = seen.setdefault(name, set())
    with contextlib.suppress(EOFError):
        while len(indicators) < want:
            message = await messages.recv()
            if message.verify_signature() and isinstance(message.message_type,
                                                         MessageType.Structured):
                indicators.add(message.message_type.fields["value"])


async def linked(events: Stream[object]) -> None:
    """Return once the node reports its first link."""
    while not isinstance(await events.recv(), SynapseEvent.PeerConnected):
        pass


async def main(count: int) -> int:
    feed_key = Identity.generate()
    trusted = GossipConfig.local().replace(trusted_keys=frozenset({feed_key.public_key}))
    publisher, _, _ = (SynapseNodeBuilder().with_node_id("intel-feed")
                       .with_bind_address("127.0.0.1:0")
                       .with_signing_key(feed_key.signing_key)
                       .with_gossip_config(trusted).build())
    subscribers: list[SynapseNode] = []
    seen: dict[str, set[str]] = {}
    tasks = []
    links = []
    async with publisher:
        for i in range(SUBSCRIBERS):
            node, messages, events = (SynapseNodeBuilder().with_node_id(f"soc-{i}")
                                       .with_bind_address("127.0.0.1:0")
                                       .add_bootstrap_peer(publisher.listen_address)
                                       .with_gossip_config(trusted).build())
            await node.start()
            subscribers.append(node)
            links.append(linked(events))
            tasks.append(asyncio.create_task(collect(node.node_id, messages, count, seen)))
        try:
            async with asyncio.timeout(30):
                await asyncio.gather(*links)
                for n in range(count):
                    record = {"type": "ipv4", "value": f"198.51.100.{n % 250}-{n}",
                              "confidence": "high"}
                    await publisher.broadcast_message(MessageType.Structured(record))
                await asyncio.gather(*tasks)
        finally:
            for node in subscribers:
                await node.stop()
    for name in sorted(seen):
        print(f"{name}: {len(seen[name])} of {count} indicators, every signature valid")
    return 0 if all(len(v) == count for v in seen.values()) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--indicators", type=int, default=50)
    raise SystemExit(asyncio.run(main(parser.parse_args().indicators)))
