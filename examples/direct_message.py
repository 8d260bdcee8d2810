"""Three nodes in a line on 127.0.0.1: the first sends a signed message to the last one
alone (relayed by the middle one, which never sees it as a message), and the last one
answers with ``create_response``, to the first one alone.

    python examples/direct_message.py
"""

import asyncio

from somasync import (
    Message,
    MessageType,
    RouteDiscovered,
    Stream,
    SynapseNode,
    SynapseNodeBuilder,
)
from somasync.testing import wait_until


async def main() -> None:
    nodes: list[SynapseNode] = []
    inboxes: list[Stream[Message]] = []
    events: list[Stream[object]] = []
    for name in ("hq", "relay", "sensor"):
        builder = (SynapseNodeBuilder().with_node_id(name).with_bind_address("127.0.0.1:0")
                   .with_discovery("static"))          # links only where we put them
        if nodes:
            builder = builder.add_bootstrap_peer(nodes[-1].listen_address)
        node, messages, node_events = builder.build()
        await node.start()
        nodes.append(node)
        inboxes.append(messages)
        events.append(node_events)
    hq, _relay, sensor = nodes
    try:
        await wait_until(lambda: all(len(n.members()) == 3 for n in nodes),
                         "every node to know every name")
        await hq.send_message("sensor", MessageType.Command(
            action="isolate", params={"host": "ws-042"}))  # returns once acknowledged
        order = await inboxes[2].recv()
        print("sensor got", order.message_type, "from", order.source,
              "signed:", order.verify_signature())
        reply = order.create_response(MessageType.Data("ws-042 isolated"), "sensor")
        await sensor.send_message("hq", reply)
        answer = await inboxes[0].recv()
        print("hq got", answer.message_type, "answering", answer.correlation_id == order.id)
        while True:
            event = await events[0].recv()
            if isinstance(event, RouteDiscovered):
                print("hq reaches", event.node_id, "via", event.via)
                break
        print("relay delivered", len(inboxes[1]), "messages")
    finally:
        for node in nodes:
            await node.stop()


if __name__ == "__main__":
    asyncio.run(main())
