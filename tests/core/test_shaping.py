"""Bandwidth limits (``GossipConfig.max_send_rate``, ``max_link_send_rate``): frames over
the rate wait in their queue rather than being dropped, critical ones first, on a stepped
clock."""

from __future__ import annotations

import nacl.signing
import pytest

from somasync.config import GossipConfig
from somasync.core.payload import MessageType
from somasync.core.shard import peer_owner, stream_owner
from somasync.message import Message
from somasync.testing import WALL, Mesh

KEY = nacl.signing.SigningKey(bytes(range(32)))
RATE = 100_000  # bytes/s


def _publish(mesh: Mesh, count: int, *, first: int = 1, priority: int = 128) -> list[bytes]:
    ids = []
    for sequence in range(first, first + count):
        message = Message(MessageType.Data("x" * 1000), "origin", timestamp=WALL, ttl=3600,
                          priority=priority, sequence=sequence).sign_with_ed25519(KEY)
        ids.append(mesh.nodes["a"].broadcast(message.to_envelope(), now=mesh.now))
    mesh.settle()
    return ids


@pytest.mark.parametrize("setting", ["max_send_rate", "max_link_send_rate"])
def test_a_node_sends_at_its_rate_within_ten_percent_and_drops_nothing(setting: str) -> None:
    config = GossipConfig.local().replace(**{setting: RATE})
    mesh = Mesh(config)
    mesh.add("a")
    mesh.add("b", GossipConfig.local())
    mesh.connect("a", "b")
    mesh.settle()
    sent_before = mesh.nodes["a"].statistics().bytes_out
    _publish(mesh, 600)  # about 630 KB: six seconds at the rate
    samples = []
    for step in range(1, 41):
        mesh.step(0.1)
        samples.append((step * 0.1, mesh.nodes["a"].statistics().bytes_out - sent_before))
    burst = RATE / 10
    for elapsed, sent in samples[10:]:  # past the first second: the rate, not the burst
        assert 0.9 * RATE <= (sent - burst) / elapsed <= 1.1 * RATE, (elapsed, sent)
    for _ in range(60):
        mesh.step(0.5)
    assert len(mesh.delivered["b"]) == 600  # shaped, not dropped
    assert mesh.nodes["a"].statistics().send_queue_dropped == 0


def test_critical_messages_are_not_held_back_behind_shaped_bulk() -> None:
    mesh = Mesh(GossipConfig.local().replace(max_send_rate=RATE))
    mesh.add("a")
    mesh.add("b", GossipConfig.local())
    mesh.connect("a", "b")
    mesh.settle()
    _publish(mesh, 600)  # bulk: six seconds of sending queued
    mesh.step(0.5)
    [critical] = _publish(mesh, 1, first=601, priority=255)
    mesh.step(0.01)
    assert critical in mesh.delivered["b"]
    assert len(mesh.delivered["b"]) < 200  # the bulk is still waiting


def _overload(mesh: Mesh, publisher: str, *, seconds: float) -> list[bytes]:
    """``publisher`` broadcasts 6 messages of about 330 B every 0.1 s for ``seconds``
    (stepping the clock); returns their ids."""
    ids = []
    sequence = 0
    for _ in range(round(seconds * 10)):
        for _ in range(6):
            sequence += 1
            message = Message(MessageType.Data("x" * 200), "origin", timestamp=WALL,
                              ttl=3600, sequence=sequence).sign_with_ed25519(KEY)
            ids.append(mesh.nodes[publisher].broadcast(message.to_envelope(), now=mesh.now))
        mesh.settle()
        mesh.step(0.1)
    return ids

def test_losses_of_an_overload_longer_than_gap_timeout_are_all_repaired() -> None:
    # A shaped link fed twice its rate for eight gap_timeouts: its queue drops what does
    # not fit, and the peer's holes outlive gap_timeout before the sender gets to them;
    # dropped a frame in a few, they would be more than a stream tracks (MAX_INTERVALS).
    # Once the load stops every message must still arrive, without a flood of copies.
    base = GossipConfig.local().replace(link_queue_bytes=64 * 1024, max_frame=64 * 1024)
    mesh = Mesh(base.replace(max_link_send_rate=10_000))
    mesh.add("a")
    mesh.add("b", base)
    mesh.connect("a", "b")
    mesh.settle()
    ids = _overload(mesh, "a", seconds=8 * base.gap_timeout)
    assert mesh.nodes["a"].statistics().send_queue_dropped > 0  # it was an overload
    lacking = len(set(ids) - set(mesh.delivered["b"]))
    repairs_before = mesh.nodes["a"].statistics().repairs_sent
    for _ in range(300):  # 64 KiB drains in 7 s; the lost in about 40 s more
        mesh.step(1.0)
    missing = set(ids) - set(mesh.delivered["b"])
    assert not missing, f"{len(missing)} of {len(ids)} never arrived"
    # No flood: at most one repair per frame the queue dropped (none dropped in turn,
    # none sent twice), and no copy of a frame that was still queued.
    sent = mesh.nodes["a"].statistics()
    assert 0 < sent.repairs_sent - repairs_before <= sent.send_queue_dropped <= lacking
    assert mesh.nodes["b"].statistics().duplicates == 0


def test_a_shaped_node_with_many_neighbours_tells_each_that_it_defers_repairs() -> None:
    # The peer keeps its holes past gap_timeout only while a neighbour says it defers
    # repairs to it (FLAG_DEFERRED); one random neighbour gets a node's digest per round,
    # each of 30 only every 7.5 s here (gap_timeout: 5 s), so the word also goes in reply
    # to the peer's own digests. Without that reply, 51-144 of 900 per leaf never came.
    leaves = [f"b{i}" for i in range(30)]
    base = GossipConfig.local().replace(link_queue_bytes=64 * 1024, max_frame=64 * 1024)
    mesh = Mesh(base.replace(max_link_send_rate=10_000))
    mesh.add("a")
    for leaf in leaves:
        mesh.add(leaf, base)
        mesh.connect("a", leaf)
    mesh.settle()
    assert len(leaves) * base.anti_entropy_interval > base.gap_timeout
    ids = _overload(mesh, "a", seconds=3 * base.gap_timeout)
    assert mesh.nodes["a"].statistics().send_queue_dropped > 0
    for _ in range(120):
        mesh.step(1.0)
    missing = {leaf: len(set(ids) - set(mesh.delivered[leaf])) for leaf in leaves}
    assert not any(missing.values()), missing


def test_a_shaped_sharded_node_repairs_the_streams_of_the_worker_without_the_link() -> None:
    # A sharded node's worker that does not own a peer's connection answers that peer's
    # digests for its own streams, through the owner; shaped, it must not take the empty
    # queue it sees (it has none of its own) for a queue with no room.
    shards = 2
    base = GossipConfig.local()
    mesh = Mesh(base, seed=7)
    mesh.add("x", base.replace(max_send_rate=10_000_000), shards=shards)
    mesh.add("source")
    mesh.connect("source", "x")
    mesh.settle()
    origin = bytes(KEY.verify_key)
    sources = [f"s{i}" for i in range(8)]
    assert {stream_owner(origin, s.encode(), shards) for s in sources} == {0, 1}
    ids = []
    for i in range(40):
        message = Message(MessageType.Data(f"m{i}"), sources[i % 8], timestamp=WALL,
                          sequence=i // 8 + 1).sign_with_ed25519(KEY)
        ids.append(mesh.nodes["source"].broadcast(message.to_envelope(), now=mesh.now))
    mesh.settle()
    assert sorted(mesh.delivered["x"]) == sorted(ids)
    mesh.add("late")  # learns everything from x, by anti-entropy only
    mesh.connect("late", "x")
    mesh.settle()
    owner = peer_owner(mesh.nodes["late"].identity.public_key, shards)
    assert any(stream_owner(origin, s.encode(), shards) != owner for s in sources)
    for _ in range(50):
        mesh.step(base.anti_entropy_interval)
    assert sorted(mesh.delivered["late"]) == sorted(ids)
