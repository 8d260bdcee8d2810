"""The original's node API on real nodes (127.0.0.1): lifecycle and send events, peers
with state and quality, ``remove_peer``, ``get_healthy_peers``, ``get_best_peers``, the
``Error`` event and the original's statistics names."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from somasync import (
    GossipConfig,
    GossipStats,
    MembershipConfig,
    Message,
    MessageSent,
    MessageType,
    NetworkStats,
    NodeStarted,
    NodeStopping,
    Peer,
    PeerConnected,
    PeerDisconnected,
    PeerState,
    Stream,
    SynapseEvent,
    SynapseNode,
    SynapseNodeBuilder,
    priority,
)
from somasync.events import Error
from somasync.testing import wait_until

DEADLINE = 10.0


class Nodes:
    """Started nodes and everything their streams produced, stopped at the end."""

    def __init__(self) -> None:
        self.nodes: list[SynapseNode] = []
        self.streams: list[tuple[Stream[Message], Stream[object]]] = []

    async def add(self, name: str, *, data_dir: Path | None = None,
                  workers: int = 0) -> SynapseNode:
        node, messages, events = (SynapseNodeBuilder().with_node_id(name)
                                  .with_bind_address("127.0.0.1:0")
                                  .with_gossip_config(GossipConfig.local())
                                  .with_membership_config(MembershipConfig.local())
                                  .with_workers(workers)
                                  .with_discovery("static").with_data_dir(data_dir).build())
        self.nodes.append(node)
        self.streams.append((messages, events))
        await node.start()
        return node

    def events(self, index: int) -> list[object]:
        """Events node ``index`` produced so far (taken from its stream)."""
        stream = self.streams[index][1]
        taken = self.__dict__.setdefault(f"events{index}", [])
        while (event := stream.try_recv()) is not None:
            taken.append(event)
        return taken


@contextlib.asynccontextmanager
async def started() -> AsyncIterator[Nodes]:
    """Nodes stopped on the way out, also when the test fails."""
    cluster = Nodes()
    try:
        yield cluster
    finally:
        for node in cluster.nodes:
            with contextlib.suppress(Exception):  # the others are stopped all the same
                await node.stop()


async def test_lifecycle_and_send_events() -> None:
    async with started() as nodes:
        a = await nodes.add("alpha")
        assert NodeStarted("alpha", a.listen_address) in nodes.events(0)
        sent = await a.broadcast_message(MessageType.Data("hello"), priority=priority.HIGH)
        assert MessageSent(None, sent) in nodes.events(0)
        message = Message(MessageType.Data("prepared"), "alpha")
        assert MessageSent(None, await a.broadcast(message)) in nodes.events(0)
        await a.stop()
        events = nodes.events(0)
        assert events.count(NodeStopping("alpha")) == 1
        assert isinstance(events[-1], SynapseEvent.NodeStopping | SynapseEvent.PeerDisconnected)
        await a.start()  # a restart reports itself again
        assert nodes.events(0).count(NodeStarted("alpha", a.listen_address)) == 2


async def test_a_bundle_is_one_message_sent() -> None:
    async with started() as nodes:
        a = await nodes.add("alpha")
        bundle = await a.broadcast_message(MessageType.Binary(os.urandom(2 * 1024 * 1024)))
        assert [e for e in nodes.events(0) if isinstance(e, MessageSent)] == [
            MessageSent(None, bundle)]


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.multiprocess)],
                         ids=["embedded", "workers2"])
async def test_peers_health_quality_and_removal(workers: int) -> None:
    async with started() as nodes:
        a = await nodes.add("alpha", workers=workers)
        b = await nodes.add("beta")
        c = await nodes.add("gamma")
        await a.add_peer(Peer("beta", b.listen_address))
        await a.add_peer(Peer("gamma", c.listen_address))
        await wait_until(lambda: len(a.connected_peers()) == 2, "alpha linked to both",
                         DEADLINE)
        # beta brings alpha messages first (gamma brings nothing): its quality rises.
        for i in range(5):
            await b.broadcast_message(MessageType.Data(f"from beta {i}"))
        await wait_until(lambda: len(nodes.streams[0][0]) == 5, "alpha got beta's five",
                         DEADLINE)

        healthy = await a.get_healthy_peers()
        assert [(p.id, p.address, p.connected) for p in healthy] == [
            ("beta", b.listen_address, True), ("gamma", c.listen_address, True)]
        assert all(p.is_healthy() and p.state in (None, PeerState.ALIVE) for p in healthy)
        quality = {p.id: p.quality for p in healthy}
        assert quality["beta"] > 0 == quality["gamma"]
        assert [p.id for p in await a.get_best_peers(1)] == ["beta"]
        assert [p.id for p in await a.get_best_peers(5)] == ["beta", "gamma"]
        assert await a.get_best_peers(0) == []
        with pytest.raises(ValueError, match="count"):
            await a.get_best_peers(-1)

        assert await a.remove_peer("beta")
        await wait_until(lambda: "beta" not in a.connected_peers(), "beta's link closed",
                         DEADLINE)
        assert any(isinstance(e, PeerDisconnected) and e.peer_id == "beta"
                   and e.reason == "removed" for e in nodes.events(0))
        control = a.control.control
        assert control is not None
        assert b.listen_address not in control.wanted()  # not dialled again
        assert c.listen_address in control.wanted()
        assert [p.id for p in await a.get_healthy_peers()] == ["gamma"]
        assert not await a.remove_peer("beta")  # already gone
        assert await a.remove_peer(Peer("gamma", c.listen_address))
        await wait_until(lambda: not a.connected_peers(), "gamma's link closed", DEADLINE)


async def test_peers_before_start_are_the_added_ones() -> None:
    node, _messages, _events = SynapseNodeBuilder().with_node_id("x").build()
    await node.add_peer(Peer("y", "127.0.0.1:9"))
    assert await node.peers() == [Peer("y", "127.0.0.1:9")]
    assert await node.get_healthy_peers() == []
    assert await node.remove_peer("127.0.0.1:9")
    assert await node.peers() == []


async def test_the_originals_monitoring_names() -> None:
    async with started() as nodes:
        a = await nodes.add("alpha")
        b = await nodes.add("beta")
        await a.add_peer(Peer("beta", b.listen_address))
        await wait_until(lambda: any(isinstance(e, PeerConnected) for e in nodes.events(1)),
                         "beta linked", DEADLINE)
        await a.broadcast_message(MessageType.Data("x"))
        await wait_until(lambda: len(nodes.streams[1][0]) == 1, "beta got it", DEADLINE)
        stats = await b.get_stats()
        assert stats.gossip_stats == GossipStats(healthy_peers=1, total_peers=1,
                                                 cached_messages=1, known_messages=1)
        network = stats.network_stats
        assert isinstance(network, NetworkStats)
        assert network.messages_received == stats.messages_processed == 1
        assert network.bytes_received == stats.bytes_in > 0
        assert (await a.get_stats()).network_stats.messages_sent >= 1


async def test_a_failing_data_directory_is_an_error_event(tmp_path: Path) -> None:
    async with started() as nodes:
        a = await nodes.add("alpha", data_dir=tmp_path / "alpha")
        b = await nodes.add("beta")
        await b.add_peer(Peer("alpha", a.listen_address))
        await wait_until(lambda: bool(a.connected_peers()), "linked", DEADLINE)
        data = a._data
        assert data is not None
        assert data._log_fd is not None
        kept = os.dup(data._log_fd)
        full = os.open("/dev/full", os.O_WRONLY)
        try:
            os.dup2(full, data._log_fd)  # the disk is full from now on
            await b.broadcast_message(MessageType.Data("kept nowhere"))
            await wait_until(lambda: any(isinstance(e, Error) for e in nodes.events(0)),
                             "the Error event", DEADLINE)
        finally:
            os.dup2(kept, data._log_fd)  # room again: the node stops cleanly
            os.close(kept)
            os.close(full)
        [error] = [e for e in nodes.events(0) if isinstance(e, Error)]
        assert "cannot keep delivered messages" in error.error
        assert "No space left" in error.error
        assert len(nodes.streams[0][0]) == 1  # delivered all the same
