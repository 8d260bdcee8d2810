"""Ask a mesh of four nodes on 127.0.0.1 a question and collect the answers: every node,
then only the nodes tagged as sensors, then the first two to answer.

    python examples/query_status.py
"""

import asyncio

from somasync import MessageType, QueryFilter, SynapseNode, SynapseNodeBuilder
from somasync.query import QueryReceived
from somasync.testing import wait_until


async def main() -> None:
    nodes: list[SynapseNode] = []
    for i in range(4):
        builder = (SynapseNodeBuilder().with_node_id(f"node-{i}")
                   .with_bind_address("127.0.0.1:0").with_discovery("static"))
        if nodes:
            builder = builder.add_bootstrap_peer(nodes[-1].listen_address)
        node, _messages, _events = builder.build()
        node.tags["role"] = "sensor" if i % 2 else "hub"

        async def status(query: QueryReceived, name: str = f"node-{i}") -> MessageType:
            return MessageType.Data(f"{name}: healthy")
        node.on_query(status)                           # answers every matching query
        await node.start()
        nodes.append(node)
    asker = nodes[0]
    try:
        await wait_until(lambda: all(len(n.members()) == 4 for n in nodes),
                         "every node to know every other")
        everyone = await asker.query(MessageType.Data("status?"), timeout=1.5)
        print("all:", sorted(r.node_id for r in await everyone.collect()))
        sensors = await asker.query(MessageType.Data("status?"), timeout=1.5,
                                    filter=QueryFilter(tags={"role": "sensor"}))
        print("sensors:", sorted(r.node_id for r in await sensors.collect()))
        first = await asker.query(MessageType.Data("status?"), timeout=30.0, max_responses=2)
        print("first two:", len(await first.collect()), "timed out:", first.timed_out)
    finally:
        for node in nodes:
            await node.stop()


if __name__ == "__main__":
    asyncio.run(main())
