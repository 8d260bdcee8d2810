"""The send backlog a large sender paces itself by leaves out peers that stopped
reading: one stalled peer must not slow every bundle a node sends."""

from __future__ import annotations

import asyncio
import importlib
import socket

import pytest

from somasync import GossipConfig, MessageType, SynapseNodeBuilder
from somasync.bench._link import secure_link
from somasync.core.crypto import Identity
from somasync.testing import RunningNodes, wait_until

pytestmark = pytest.mark.filterwarnings("error")

DEADLINE = 20.0
PAYLOAD = "x" * 16_000


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.multiprocess)],
                         ids=["embedded", "workers2"])
async def test_a_peer_that_stops_reading_is_left_out_of_the_send_backlog(workers: int) -> None:
    nodes = RunningNodes()
    stalled = socket.socket()
    try:
        node, *_ = (SynapseNodeBuilder().with_node_id("sender")
                    .with_bind_address("127.0.0.1:0").with_gossip_config(GossipConfig.local())
                    .with_workers(workers).with_discovery("static")).build()
        await nodes.start(node, *_)
        host, port = node.listen_address.rsplit(":", 1)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((host, int(port)))
        await asyncio.to_thread(secure_link, stalled, Identity.generate(), "stalled")
        await wait_until(lambda: bool(node.connected_peers()), "the stalled link", DEADLINE)
        # The peer reads nothing more: what the node sends it fills the kernel's buffers,
        # then the transport pauses, then the node's own queue to it grows.
        for i in range(600):
            await node.broadcast_message(MessageType.Data(f"{i} {PAYLOAD}"))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while (held := (await node.get_stats()).core.send_queue_bytes) <= 1 << 20:
            assert loop.time() < deadline, f"only {held} B queued"
            await asyncio.sleep(0.05)
        # Queued for the stalled peer, yet nothing a sender waits for. A sharded node
        # learns it from its workers' reports, which get_stats() and the supervisor's
        # watch take: watched over three of the watch's rounds.
        watch_interval = importlib.import_module("somasync.workers.supervisor").WATCH_INTERVAL
        watched_until = loop.time() + 3 * watch_interval
        while loop.time() < watched_until:
            assert node._runtime.send_backlog() < 256 << 10
            await asyncio.sleep(0.05)
    finally:
        stalled.close()
        await nodes.close()
