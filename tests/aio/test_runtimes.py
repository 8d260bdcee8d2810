"""The two runtimes, side by side: a single-process node and a sharded node (2 workers)
see the same events and report the same statistics, membership included."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from somasync import (
    GossipConfig,
    MembershipConfig,
    MessageType,
    SynapseEvent,
    SynapseNodeBuilder,
)
from somasync.testing import wait_until

pytestmark = pytest.mark.multiprocess

DEADLINE = 20.0


@pytest.mark.parametrize("workers", [0, 2])
async def test_both_runtimes_report_the_same_events_and_stats(workers: int) -> None:
    node, messages, events = (SynapseNodeBuilder().with_node_id("x")
                              .with_bind_address("127.0.0.1:0").with_workers(workers)
                              .with_gossip_config(GossipConfig.local())
                              .with_membership_config(MembershipConfig.local()).build())
    seen: list[object] = []
    delivered: list[str] = []
    async with node:
        peer, _peer_messages, _peer_events = (
            SynapseNodeBuilder().with_node_id("y").with_bind_address("127.0.0.1:0")
            .add_bootstrap_peer(node.listen_address)
            .with_membership_config(MembershipConfig.local()).build())

        async def collect() -> None:
            with contextlib.suppress(EOFError):
                while True:
                    seen.append(await events.recv())

        async def consume() -> None:
            with contextlib.suppress(EOFError):
                while True:
                    delivered.append((await messages.recv()).id)

        tasks = [asyncio.create_task(collect()), asyncio.create_task(consume())]
        try:
            async with peer:
                await wait_until(lambda: "y" in node.connected_peers(), "x to link y",
                                 DEADLINE)
                sent = await peer.broadcast_message(MessageType.Data("same in both"))
                await wait_until(lambda: sent in delivered, "x to deliver", DEADLINE)
                stats = await node.get_stats()
                kinds = {type(event) for event in seen}
                assert {SynapseEvent.PeerJoined, SynapseEvent.PeerConnected,
                        SynapseEvent.MessageReceived} <= kinds
                assert stats.messages_processed == 1
                assert stats.peer_stats.healthy_peers == 1
                assert stats.core.messages_delivered == 1
                assert stats.core.peers == 1
                assert stats.membership is not None
                assert stats.membership.alive == 2
                assert stats.membership.members == 2
                assert len(stats.workers) == workers
                # The message's signature check at least, timed (summed over the
                # workers of a sharded node, whose supervisor runs the handshakes).
                assert sum(stats.core.verify_seconds) >= 1
                assert stats.core.verify_seconds_total > 0
            await wait_until(lambda: any(isinstance(e, SynapseEvent.PeerLeft) for e in seen),
                             "x to hear that y left", DEADLINE)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("workers", [0, 2])
async def test_a_seed_that_starts_late_is_joined_once_it_listens(workers: int) -> None:
    """Operators start nodes in any order: a node whose seed is not up yet keeps trying
    (membership's join retries, the overlay's rejoin) and links once the seed listens."""
    import socket

    from somasync import OverlayConfig

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        seed = f"127.0.0.1:{probe.getsockname()[1]}"
    local, overlay = MembershipConfig.local(), OverlayConfig.local()
    early, _m, _e = (SynapseNodeBuilder().with_node_id("early").with_workers(workers)
                     .with_bind_address("127.0.0.1:0").add_bootstrap_peer(seed)
                     .with_membership_config(local).with_overlay_config(overlay).build())
    async with early:
        await asyncio.sleep(2.0)  # several join attempts fail: nobody listens yet
        late, _lm, _le = (SynapseNodeBuilder().with_node_id("late").with_bind_address(seed)
                          .with_membership_config(local).with_overlay_config(overlay)
                          .build())
        async with late:
            await wait_until(lambda: "late" in early.connected_peers(), "early to link",
                             DEADLINE)
            await wait_until(lambda: len(early.members()) == 2, "early to see late",
                             DEADLINE)
