"""A node sharded over worker processes: exactly-once, worker crashes, no leaked memory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from somasync import (
    GossipConfig,
    Message,
    MessageType,
    Peer,
    Stream,
    SynapseNode,
    SynapseNodeBuilder,
)
from somasync.core.shard import stream_owner
from somasync.testing import wait_until
from somasync.workers import shm, supervisor
from somasync.workers.ring import HEADER_SIZE, RECORD_OVERHEAD
from somasync.workers.supervisor import ShardedRuntime
from somasync.workers.worker import EXIT_PROTOCOL_ERROR, SUPERVISOR

pytestmark = pytest.mark.multiprocess

DEADLINE = 20.0


async def wait_for(condition: Callable[[], bool], what: str, within: float = DEADLINE) -> None:
    await wait_until(condition, what, within)


class Mesh:
    def __init__(self) -> None:
        self.nodes: dict[str, SynapseNode] = {}
        self.received: dict[str, list[Message]] = {}
        self.streams: dict[str, Stream[Message]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def add(self, name: str, *, workers: int = 0, bootstrap: tuple[str, ...] = (),
                  gossip: GossipConfig | None = None) -> SynapseNode:
        builder = (SynapseNodeBuilder().with_node_id(name).with_bind_address("127.0.0.1:0")
                   .with_gossip_config(gossip or GossipConfig.local()).with_workers(workers)
                   .with_discovery("static"))  # explicit topologies: links where put
        for address in bootstrap:
            builder = builder.add_bootstrap_peer(address)
        node, messages, _events = builder.build()
        self.nodes[name] = node
        self.streams[name] = messages
        self.received[name] = []
        await self.start(name)
        return node

    async def start(self, name: str) -> None:
        """(Re)start a node and consume its messages until it stops."""
        await self.nodes[name].start()
        messages, got = self.streams[name], self.received[name]

        async def drain() -> None:
            with contextlib.suppress(EOFError):
                while True:
                    got.append(await messages.recv())

        self._tasks.append(asyncio.create_task(drain()))

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def mesh() -> AsyncIterator[Mesh]:
    m = Mesh()
    try:
        yield m
    finally:
        await m.close()
    # Only this mesh's own segments: tests in parallel processes have theirs.
    for node in m.nodes.values():
        if isinstance(node.runtime, ShardedRuntime):
            assert shm.leaked_segments(node.runtime.segment_tag) == [], "segments leaked"


def sharded(node: SynapseNode) -> ShardedRuntime:
    runtime = node.runtime
    assert isinstance(runtime, ShardedRuntime)
    return runtime


def ids(messages: list[Message]) -> list[str]:
    return [m.id for m in messages]


async def test_copies_arriving_through_different_workers_are_delivered_once() -> None:
    # Push gossip: every node forwards each new message to its neighbours whatever
    # arrived first, so X surely gets copies over several links. (The broadcast tree
    # prunes redundant links, and a fast relay can win every race and see no copy.)
    push = GossipConfig.local().replace(forwarding="push")
    async with mesh() as m:
        x = await m.add("X", workers=2, gossip=push)
        xr = sharded(x)
        peers: list[SynapseNode] = []
        # Add peers until both workers own some links and some of their streams (owners
        # are hashes of keys and names); handshakes are verified by the supervisor, so
        # a worker verifies only the messages of the streams it owns.
        def stream_owners() -> set[int]:
            return {stream_owner(p.public_key, p.node_id.encode(), 2) for p in peers}

        while len(peers) < 6 or len(set(xr.peer_workers().values())) < 2 \
                or len(stream_owners()) < 2:
            peers.append(await m.add(f"p{len(peers)}", bootstrap=(x.listen_address,),
                                     gossip=push))
            await wait_for(lambda: len(x.connected_peers()) == len(peers), "X to see it")
        # Full mesh among the plain nodes too: X hears every message from several peers.
        for i, a in enumerate(peers):
            for b in peers[i + 1:]:
                await a.add_peer(Peer(b.node_id, b.listen_address))
        n = len(peers)
        await wait_for(lambda: all(len(p.connected_peers()) == n for p in peers), "full mesh")
        assert set(xr.peer_workers().values()) == {0, 1}
        sent = [await peers[k % n].broadcast_message(MessageType.Data(f"m{k}"))
                for k in range(60)]
        await wait_for(lambda: len(m.received["X"]) >= 60, "X to receive everything")
        await asyncio.sleep(0.3)  # late copies, if any, must not show up as deliveries
        assert sorted(ids(m.received["X"])) == sorted(sent)
        stats = await x.get_stats()
        assert stats.duplicates > 0  # copies really did arrive more than once
        assert stats.messages_processed == 60
        assert {w.index for w in stats.workers} == {0, 1}
        assert all(w.messages_verified > 0 for w in stats.workers)


@pytest.mark.parametrize("victim_role", ["link", "stream"])
async def test_worker_killed_under_load_is_restarted_and_nothing_is_lost(
        victim_role: str) -> None:
    """Kill the worker holding the publisher's connection, or the one owning its
    stream (which verified, stored and delivered it: its successor must not deliver
    again what anti-entropy refills)."""
    async with mesh() as m:
        x = await m.add("X", workers=2)
        xr = sharded(x)
        publisher = await m.add("pub", bootstrap=(x.listen_address,))
        sinks = [await m.add(f"sink{i}", bootstrap=(x.listen_address,)) for i in range(4)]
        await wait_for(lambda: len(x.connected_peers()) == 5, "X to see all peers")
        loop = asyncio.get_running_loop()
        sent: list[str] = []
        killed: dict[str, Any] = {}

        async def publish() -> None:
            for k in range(600):
                sent.append(await publisher.broadcast_message(MessageType.Data(f"load {k}")))
                await asyncio.sleep(0.004)

        async def kill_one() -> None:
            await wait_for(lambda: len(sent) >= 150, "load to build up")
            victim = (xr.peer_workers()["pub"] if victim_role == "link"
                      else stream_owner(publisher.public_key, b"pub", 2))
            pid = xr.worker_pids()[victim]
            killed["at"] = loop.time()
            os.kill(pid, signal.SIGKILL)
            await wait_for(lambda: xr.worker_pids()[victim] != pid, "a new worker process")
            await wait_for(lambda: len(x.connected_peers()) == 5, "peers to reconnect")
            killed["restored_after"] = loop.time() - killed["at"]

        await asyncio.gather(publish(), kill_one())
        everyone = ["X", *(s.node_id for s in sinks)]
        try:
            await wait_for(lambda: all(len(m.received[n]) >= len(sent) for n in everyone),
                           "every node to hold every message")
        except AssertionError as exc:
            counts = {n: len(m.received[n]) for n in everyone}
            raise AssertionError(f"{exc}: {counts} of {len(sent)}") from None
        await asyncio.sleep(0.3)
        for name in everyone:
            got = ids(m.received[name])
            assert len(got) == len(set(got)), f"{name} got a duplicate"
            assert set(got) == set(sent), f"{name} lost messages"
        stats = await x.get_stats()
        assert stats.worker_restarts == 1
        print(f"worker restored (new process, peers reconnected) after "
              f"{killed['restored_after']:.2f} s")


async def test_a_worker_sent_a_malformed_control_message_is_restarted_not_confused(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="somasync.workers")
    async with mesh() as m:
        x = await m.add("X", workers=2)
        xr = sharded(x)
        a = await m.add("a", bootstrap=(x.listen_address,))
        await wait_for(lambda: len(x.connected_peers()) == 1, "X to link with a")
        victim = xr.peer_workers()["a"]
        pid = xr.worker_pids()[victim]
        # An unknown kind on the control socket (what a bug in either side would send):
        # the worker must not guess; it exits and the supervisor restarts it.
        xr._workers[victim].control.send(b"\xc8\x00\x00\x00\x02{}")
        await wait_for(lambda: xr.worker_pids()[victim] != pid, "a new worker process")
        logged = [r.getMessage() for r in caplog.records if r.name == "somasync.workers"]
        assert len(logged) == 1, logged
        assert f"exited with code {EXIT_PROTOCOL_ERROR}; restarting it" in logged[0]
        await wait_for(lambda: len(x.connected_peers()) == 1, "a to reconnect")
        message_id = await a.broadcast_message(MessageType.Data("after the restart"))
        await wait_for(lambda: message_id in ids(m.received["X"]), "X to deliver it")
        assert (await x.get_stats()).worker_restarts == 1


async def test_full_rings_wake_their_producers_and_lose_nothing() -> None:
    # The smallest rings, and more than fits in them each way: the application's
    # broadcasts wait for room in the supervisor's rings, and deliveries wait in the
    # workers' rings, until the other side has read and rung back (nobody polls).
    builder = (SynapseNodeBuilder().with_node_id("X").with_bind_address("127.0.0.1:0")
               .with_gossip_config(GossipConfig.local()).with_workers(2)
               .with_discovery("static"))
    builder = builder.with_config(builder.config.replace(ring_capacity=64 * 1024))
    x, messages, _events = builder.build()
    received: list[Message] = []
    async with mesh() as m:
        m.nodes["X"], m.streams["X"], m.received["X"] = x, messages, received
        await m.start("X")
        y = await m.add("y", bootstrap=(x.listen_address,))
        await wait_for(lambda: len(x.connected_peers()) == 1, "X to link y")
        payload = "x" * 2000
        sent = [await x.broadcast_message(MessageType.Data(f"{k} {payload}"))
                for k in range(300)]  # 600 KB through 64 KiB rings
        incoming = [await y.broadcast_message(MessageType.Data(f"in {k} {payload}"))
                    for k in range(300)]
        await wait_for(lambda: set(sent) <= set(ids(m.received["y"])), "y to get X's")
        await wait_for(lambda: set(incoming) <= set(ids(received)), "X to deliver y's")
        assert len(ids(received)) == len(set(ids(received)))
        assert len(ids(m.received["y"])) == len(set(ids(m.received["y"])))


async def test_stop_and_restart_leave_no_segments_and_keep_exactly_once() -> None:
    async with mesh() as m:
        a = await m.add("a")
        x = await m.add("X", workers=2, bootstrap=(a.listen_address,))
        await wait_for(lambda: len(a.connected_peers()) == 1, "connect")
        first = await a.broadcast_message(MessageType.Data("first"))
        await wait_for(lambda: len(m.received["X"]) == 1, "first delivery")
        await x.stop()
        xr = sharded(x)
        assert shm.leaked_segments(xr.segment_tag) == []
        missed = await a.broadcast_message(MessageType.Data("missed"))
        await m.start("X")
        await wait_for(lambda: len(m.received["X"]) >= 2, "catch-up")
        await asyncio.sleep(0.5)  # a fresh worker re-learns everything; no re-delivery
        assert ids(m.received["X"]) == [first, missed]


def test_workers_auto_uses_the_usable_cores() -> None:
    builder = SynapseNodeBuilder().with_workers("auto")
    assert builder.config.workers == len(os.sched_getaffinity(0))


SIGNAL_SCRIPT = """
import asyncio
from somasync import SynapseNodeBuilder

async def main() -> None:
    node, _messages, _events = (SynapseNodeBuilder().with_bind_address("127.0.0.1:0")
                                .with_workers(2).build())
    await node.start()
    print(node.runtime.segment_tag, *node.runtime.worker_pids().values(), flush=True)
    await asyncio.sleep(60)

if __name__ == "__main__":
    # Not asyncio.run (it installs its own Ctrl-C handler): SIGTERM and SIGINT keep
    # their defaults, so the node's own handlers are what is tested.
    asyncio.new_event_loop().run_until_complete(main())
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_supervisor_stops_workers_and_frees_memory(
        tmp_path: Any, signum: int) -> None:
    import subprocess
    import sys

    script = tmp_path / "node.py"
    script.write_text(SIGNAL_SCRIPT)
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        _check_signal_stops_everything(process, signum)
        assert process.stderr is not None
        errors = process.stderr.read()
    # Without a graceful stop, Python's resource tracker would still unlink the segments
    # after the supervisor died, but it says so: that is the difference to catch.
    assert "leaked shared_memory" not in errors, errors


def _check_signal_stops_everything(process: Any, signum: int) -> None:
    import time

    import psutil

    try:
        assert process.stdout is not None
        tag, *pids = process.stdout.readline().split()
        assert len(pids) == 2
        assert len(shm.leaked_segments(tag)) > 0  # the rings exist while it runs
        process.send_signal(signum)
        process.wait(timeout=DEADLINE)
        deadline = time.monotonic() + DEADLINE
        while any(psutil.pid_exists(int(p)) and psutil.Process(int(p)).status() != "zombie"
                  for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in pids if psutil.pid_exists(int(p))
                    and psutil.Process(int(p)).status() != "zombie"]
        assert shm.leaked_segments(tag) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_a_worker_that_stops_making_progress_is_restarted_within_seconds() -> None:
    """Before: only a worker that exited was replaced; one stopped (SIGSTOP), deadlocked
    or stuck in a call kept its streams and links dead for good."""
    async with mesh() as m:
        x = await m.add("X", workers=2)
        xr = sharded(x)
        publisher = await m.add("pub", bootstrap=(x.listen_address,))
        sink = await m.add("sink", bootstrap=(x.listen_address,))
        await wait_for(lambda: len(x.connected_peers()) == 2, "X to see both peers")
        victim = stream_owner(publisher.public_key, b"pub", 2)
        pid = xr.worker_pids()[victim]
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        os.kill(pid, signal.SIGSTOP)
        try:
            await wait_for(lambda: xr.worker_pids()[victim] != pid, "a new worker process")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # ours, by PID, whatever happened
        took = loop.time() - stopped_at
        assert xr.hung_restarts == 1
        print(f"hung worker replaced {took:.2f} s after SIGSTOP")
        await wait_for(lambda: len(x.connected_peers()) == 2, "peers to reconnect")
        message_id = await publisher.broadcast_message(MessageType.Data("after"))
        await wait_for(lambda: message_id in ids(m.received["sink"]), "delivery through X")
        assert sink is not None


def _unread_bytes(ring: memoryview) -> int:
    """Published and not yet consumed (ring layout: u64 head at 0, u64 tail at 64)."""
    head, tail = struct.unpack_from("<Q", ring, 0)[0], struct.unpack_from("<Q", ring, 64)[0]
    return int(tail - head)


def _scribble_oldest_unread_record(ring: memoryview) -> None:
    """What a stray write (a bug, a bad pointer) does to a live ring: the header of the
    record its consumer reads next becomes garbage."""
    head = struct.unpack_from("<Q", ring, 0)[0]
    at = HEADER_SIZE + head % (len(ring) - HEADER_SIZE)
    ring[at : at + RECORD_OVERHEAD] = b"\xde\xad\xbe\xef" * (RECORD_OVERHEAD // 4)


@pytest.mark.parametrize("corrupt_ring", ["worker_to_supervisor", "worker_to_worker",
                                          "supervisor_to_worker"])
async def test_a_corrupt_ring_with_a_live_producer_is_rebuilt_and_delivery_resumes(
        corrupt_ring: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a reader that found a corrupt record skipped it and looked again at once,
    forever (100% CPU; the supervisor's own event loop, or a worker, stuck for good).
    Corruption was expected only from a producer that died mid-write. Now the reader is
    set aside, the corruption counted and logged once, the process that wrote the ring
    restarted (the consumer where the supervisor wrote it), and every ring of that
    worker rebuilt."""
    caplog.set_level(logging.WARNING, logger="somasync.workers")
    # A worker stopped below, on purpose, must not be replaced as hung meanwhile.
    monkeypatch.setattr(supervisor, "HUNG_AFTER", DEADLINE * 10)
    async with mesh() as m:
        x = await m.add("X", workers=2)
        xr = sharded(x)
        await m.add("sink", bootstrap=(x.listen_address,))
        # A publisher whose link and stream different workers own, so that its messages
        # cross a worker-to-worker ring inside X.
        while True:
            pub = await m.add(f"pub{len(m.nodes)}", bootstrap=(x.listen_address,))
            name = pub.node_id
            await wait_for(lambda: name in xr.peer_workers(), "X to link it")  # noqa: B023
            link_owner = xr.peer_workers()[pub.node_id]
            stream = stream_owner(pub.public_key, pub.node_id.encode(), 2)
            if link_owner != stream:
                break
        peers = len(m.nodes) - 1
        await wait_for(lambda: len(x.connected_peers()) == peers, "X to see every peer")
        source, target = {
            "worker_to_supervisor": (stream, SUPERVISOR),
            "worker_to_worker": (link_owner, stream),
            "supervisor_to_worker": (SUPERVISOR, stream_owner(x.public_key, b"X", 2)),
        }[corrupt_ring]
        # The supervisor cannot be restarted: a ring it wrote costs its consumer instead.
        distrusted = target if source == SUPERVISOR else source
        distrusted_pid = xr.worker_pids()[distrusted]
        segment = xr._segments[(source, target)]
        ring = segment.buf
        assert ring is not None
        loop = asyncio.get_running_loop()
        # Hold the consumer so that the record is still unread when it is scribbled.
        if target == SUPERVISOR:
            doorbell = xr._doorbell
            assert doorbell is not None
            loop.remove_reader(doorbell.fileno())
        else:
            consumer_pid = xr.worker_pids()[target]
            os.kill(consumer_pid, signal.SIGSTOP)
        try:
            if source == SUPERVISOR:
                await x.broadcast_message(MessageType.Data("scribbled over"))
            else:
                await pub.broadcast_message(MessageType.Data("scribbled over"))
            await wait_for(lambda: _unread_bytes(ring) > 0, "a record in the ring")
            _scribble_oldest_unread_record(ring)
        finally:
            if target == SUPERVISOR:
                loop.add_reader(doorbell.fileno(), xr._on_bell)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(consumer_pid, signal.SIGCONT)  # ours, by PID
        await wait_for(lambda: xr.worker_pids()[distrusted] != distrusted_pid,
                       "the worker that wrote (or read) the corrupt ring to be replaced")
        assert xr._segments[(source, target)].name != segment.name, "ring not rebuilt"
        await wait_for(lambda: len(x.connected_peers()) == peers, "peers to reconnect")
        # Delivery resumes through every kind of ring: a peer's message crosses X's
        # workers to X's application and on to the sink, and X's own reaches both.
        incoming = await pub.broadcast_message(MessageType.Data("after, from pub"))
        outgoing = await x.broadcast_message(MessageType.Data("after, from X"))
        await wait_for(lambda: incoming in ids(m.received["X"]), "X to deliver pub's")
        await wait_for(lambda: incoming in ids(m.received["sink"]), "sink to get pub's")
        await wait_for(lambda: outgoing in ids(m.received["sink"]), "sink to get X's")
        await wait_for(lambda: outgoing in ids(m.received[pub.node_id]), "pub to get X's")
        stats = await x.get_stats()
        logged = [r.getMessage() for r in caplog.records
                  if r.name == "somasync.workers" and "corrupt" in r.getMessage()]
        assert stats.ring_corrupted >= 1
        assert len(logged) == stats.ring_corrupted, logged  # once each, not per bell
        if target not in (SUPERVISOR, distrusted):  # the worker that found it lives on
            found_by = {w.index: w.ring_corrupted for w in stats.workers}[target]
            assert found_by >= 1
