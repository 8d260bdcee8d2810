"""Direct messages and queries between real nodes (TCP on 127.0.0.1), with and without
worker processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from somasync import GossipConfig, Message, MessageType, SynapseNodeBuilder
from somasync.core.events import DirectAcked, RouteDiscovered
from somasync.errors import DeliveryFailedError
from somasync.message import sign_batch
from somasync.query import QueryFilter, QueryFinished, QueryReceived
from somasync.testing import RunningNodes, wait_until

DEADLINE = 15.0  # generous: polls end as soon as the condition holds

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(params=[0, pytest.param(2, marks=pytest.mark.multiprocess)],
                ids=["embedded", "workers2"])
def workers(request: pytest.FixtureRequest) -> int:
    return int(request.param)


class Chain(RunningNodes):
    """Nodes n0 - n1 - ... in a line, each consuming its streams."""

    def __init__(self, workers: int) -> None:
        super().__init__()
        self.workers = workers

    async def grow(self, count: int) -> None:
        previous: list[str] = []
        for i in range(count):
            builder = (SynapseNodeBuilder().with_node_id(f"n{i}")
                       .with_bind_address("127.0.0.1:0")
                       .with_gossip_config(GossipConfig.local())
                       .with_workers(self.workers).with_discovery("static"))
            for address in previous:
                builder = builder.add_bootstrap_peer(address)
            node = self.nodes[await self.start(*builder.build())]
            previous = [node.listen_address]
        await wait_until(lambda: sum(len(n.connected_peers()) for n in self.nodes)
                         == 2 * (count - 1), "the chain to connect", DEADLINE)
        # Every node knows every other by name once membership spread.
        await wait_until(lambda: all(len(n.members()) == count for n in self.nodes),
                         "membership to spread", DEADLINE)


@contextlib.asynccontextmanager
async def chain(count: int, workers: int) -> AsyncIterator[Chain]:
    c = Chain(workers)
    try:
        await c.grow(count)
        yield c
    finally:
        await c.close()


async def test_send_message_reaches_one_node_three_hops_away_once(workers: int) -> None:
    async with chain(4, workers) as c:
        sent = [await c.nodes[0].send_message("n3", MessageType.Data(f"for n3 {i}"))
                for i in range(3)]
        # Acknowledged: the target's core took it; its application's stream has it
        # once the reader task ran (a sharded node's supervisor took it from a ring).
        await wait_until(lambda: len(c.received[3]) == 3, "n3's deliveries", DEADLINE)
        assert [m.id for m in c.received[3]] == sent
        assert all(m.verify_signature() for m in c.received[3])
        assert [m.source for m in c.received[3]] == ["n0"] * 3
        assert c.received[1] == []
        assert c.received[2] == []
        await wait_until(lambda: RouteDiscovered("n3", "n1") in c.events[0],
                         "the route event", DEADLINE)
        # The other way, as an answer made with create_response: to the asker alone.
        answer = c.received[3][0].create_response(MessageType.Data("got it"), "n3")
        await c.nodes[3].send_message("n0", answer)
        await c.nodes[3].reply(c.received[3][1], MessageType.Data("got that too"))
        await wait_until(lambda: len(c.received[0]) == 2, "the answers", DEADLINE)
        assert [m.correlation_id for m in c.received[0]] == sent[:2]
        assert c.received[1] == []
        assert c.received[2] == []
        stats = await c.nodes[3].get_stats()
        assert stats.messages_processed == 3


async def test_unknown_and_unreachable_nodes_fail_clearly(workers: int) -> None:
    async with chain(3, workers) as c:
        with pytest.raises(DeliveryFailedError, match="unknown node") as unknown:
            await c.nodes[0].send_message("nobody", MessageType.Data("x"))
        assert unknown.value.node_id == "nobody"
        await c.nodes[2].stop()  # still a member for a while: known, but not answering
        with pytest.raises(DeliveryFailedError, match="no acknowledgement") as failed:
            await c.nodes[0].send_message("n2", MessageType.Data("x"), timeout=1.0)
        assert failed.value.node_id == "n2"


async def test_a_direct_message_is_refused_as_a_broadcast() -> None:
    async with chain(2, 0) as c:
        sender, target = c.nodes
        header = {"somasync-direct-to": target.public_key.hex()}
        with pytest.raises(ValueError, match="send_message"):
            await sender.broadcast(Message(MessageType.Data("x"), sender.node_id,
                                           headers=header))


async def test_a_batch_signed_message_is_refused_for_a_direct_send() -> None:
    async with chain(2, 0) as c:
        sender, target = c.nodes
        header = {"somasync-direct-to": target.public_key.hex()}
        batch = sign_batch([Message(MessageType.Data(f"b{i}"), sender.node_id, headers=header)
                            for i in range(2)], sender.identity)
        with pytest.raises(ValueError, match="signed alone"):
            await sender.send_message(target.node_id, batch[0])


async def test_route_message_goes_through_the_named_relays(workers: int) -> None:
    async with chain(3, workers) as c:
        message_id = await c.nodes[0].route_message(MessageType.Data("hop"), ["n1", "n2"])
        await wait_until(lambda: len(c.received[2]) == 1, "n2's delivery", DEADLINE)
        assert [m.id for m in c.received[2]] == [message_id]
        with pytest.raises(DeliveryFailedError):
            # n2 is no neighbour of n0: a route through it goes nowhere.
            await c.nodes[0].route_message(MessageType.Data("x"), ["n2", "n1"], timeout=1.0)


async def test_query_filters_caps_and_times_out(workers: int) -> None:
    async with chain(4, workers) as c:
        for i, node in enumerate(c.nodes):
            node.tags["role"] = "sensor" if i % 2 else "hub"

            async def answer(query: QueryReceived, name: str = node.node_id) -> MessageType:
                return MessageType.Data(f"{name} ok")
            node.on_query(answer)

        query = await c.nodes[0].query(MessageType.Data("status?"), timeout=2.0)
        responses = await query.collect()
        assert sorted(r.node_id for r in responses) == ["n1", "n2", "n3"]
        assert all(r.message.verify_signature() for r in responses)
        assert {r.payload for r in responses} == {MessageType.Data(f"n{i} ok") for i in (1, 2, 3)}
        assert query.timed_out
        expected = QueryFinished(query.query_id, tuple(r.node_id for r in responses), True)
        await wait_until(lambda: expected in c.events[0], "QueryFinished", DEADLINE)
        # Answers travel directly: nobody but the asker got one, nobody got the query on
        # its message stream.
        assert all(received == [] for received in c.received)

        by_tag = await c.nodes[0].query(MessageType.Data("sensors?"), timeout=2.0,
                                        filter=QueryFilter(tags={"role": "sens.*"}))
        assert sorted(r.node_id for r in await by_tag.collect()) == ["n1", "n3"]
        by_name = await c.nodes[0].query(MessageType.Data("n2?"), timeout=2.0,
                                         filter=QueryFilter(nodes=("n2",)))
        assert [r.node_id for r in await by_name.collect()] == ["n2"]
        await wait_until(lambda: sum(isinstance(e, QueryReceived) for e in c.events[1]) == 2,
                         "n1's two queries: the whole mesh's and the sensors'", DEADLINE)

        capped = await c.nodes[0].query(MessageType.Data("first two"), timeout=30.0,
                                        max_responses=2)
        first = await asyncio.wait_for(capped.collect(), DEADLINE)  # ends at the cap
        assert len(first) == 2
        assert not capped.timed_out

        async def third_refused() -> bool:
            stats = await c.nodes[0].get_stats()
            return stats.queries_dropped.get("query_response_late", 0) == 1

        deadline = asyncio.get_running_loop().time() + DEADLINE
        while not await third_refused():  # the third answer comes after the cap
            assert asyncio.get_running_loop().time() < deadline, "the third answer"
            await asyncio.sleep(0.01)


async def test_query_answered_from_the_event_stream() -> None:
    async with chain(2, 0) as c:
        query = await c.nodes[0].query(MessageType.Data("ping"), timeout=5.0,
                                       max_responses=1)
        await wait_until(lambda: any(isinstance(e, QueryReceived) for e in c.events[1]),
                         "the query to arrive", DEADLINE)
        [asked] = [e for e in c.events[1] if isinstance(e, QueryReceived)]
        assert asked.from_node == "n0"
        await asked.respond(MessageType.Data("pong"))
        with pytest.raises(ValueError, match="already answered"):
            await asked.respond(MessageType.Data("again"))
        [response] = await query.collect()
        assert response.node_id == "n1"
        assert response.payload == MessageType.Data("pong")
        assert response.message.correlation_id == query.message_id
        await wait_until(lambda: any(isinstance(e, DirectAcked) for e in c.events[1]),
                         "the answer's ack", DEADLINE)


def test_query_events_are_plain_data() -> None:
    """The agent prints every event as JSON (dataclasses.asdict, bytes as hex)."""
    import dataclasses

    import orjson

    from somasync.core.events import DirectFailed

    def hexed(value: object) -> object:
        if isinstance(value, bytes):
            return value.hex()
        raise TypeError

    message = Message(MessageType.Data("status?"), "n0")
    for event in (QueryReceived("q1", "n0", message), QueryFinished("q1", ("n1",), True),
                  RouteDiscovered("n3", "n1"), DirectAcked(bytes(16), "n3", bytes(32)),
                  DirectFailed(bytes(16), "n3", bytes(32), "timeout")):
        assert orjson.loads(orjson.dumps(dataclasses.asdict(event), default=hexed))


async def test_a_sender_that_gives_up_leaves_nothing_behind() -> None:
    async with chain(2, 0) as c:
        await c.nodes[1].stop()  # known, never answering
        sender = c.nodes[0]
        task = asyncio.create_task(sender.send_message("n1", MessageType.Data("x"),
                                                       timeout=1.0))
        endpoint = sender.runtime.endpoint  # type: ignore[attr-defined]
        await wait_until(lambda: endpoint.direct_pending == 1, "the send to start", DEADLINE)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The core still gives its verdict at the timeout; nobody waits for it any more.
        await wait_until(lambda: endpoint.direct_pending == 0, "the verdict", DEADLINE)
        await wait_until(lambda: not sender._direct._waiters, "the waiter to go", DEADLINE)


async def test_query_acks_come_from_every_matching_node_answer_or_not(workers: int) -> None:
    async with chain(3, workers) as c:
        async def answer(query: QueryReceived) -> MessageType:
            return MessageType.Data("n1 here")

        async def broken(query: QueryReceived) -> MessageType:
            raise RuntimeError("the application's bug")

        c.nodes[1].on_query(answer)
        c.nodes[2].on_query(broken)  # acks all the same, answers nothing
        query = await c.nodes[0].query(MessageType.Data("who hears me?"), timeout=2.0,
                                       ack=True)
        assert [r.node_id for r in await query.collect()] == ["n1"]
        assert sorted(query.acks) == ["n1", "n2"]
        await wait_until(lambda: any(isinstance(e, QueryFinished) for e in c.events[0]),
                         "QueryFinished", DEADLINE)
        [finished] = [e for e in c.events[0] if isinstance(e, QueryFinished)]
        assert sorted(finished.acks) == ["n1", "n2"]
        assert finished.responses == ("n1",)
