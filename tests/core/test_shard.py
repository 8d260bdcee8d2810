"""A sharded node (several endpoints, one identity) in the deterministic harness."""

from __future__ import annotations

import random

import nacl.signing
import pytest

from somasync.config import GossipConfig
from somasync.core import wire
from somasync.core.crypto import Identity
from somasync.core.endpoint import Endpoint
from somasync.core.handshake import PeerHello
from somasync.core.payload import MessageType
from somasync.core.shard import Routed, RoutedKind, Shard, peer_owner, stream_owner
from somasync.message import Message
from somasync.testing import WALL, Mesh

SHARDS = 2


def message(key: nacl.signing.SigningKey, text: str, sequence: int,
            source: str = "origin") -> Message:
    return Message(MessageType.Data(text), source, timestamp=WALL,
                   sequence=sequence).sign_with_ed25519(key)


def build(peers: int = 4, config: GossipConfig | None = None) -> tuple[Mesh, list[str]]:
    """Sharded node X joined to ``peers`` plain nodes, with both shards owning some."""
    mesh = Mesh(config or GossipConfig.local(), seed=7)
    mesh.add("X", shards=SHARDS)
    names: list[str] = []
    owners: set[int] = set()
    while len(names) < peers or owners != set(range(SHARDS)):
        name = f"p{len(names)}"
        mesh.add(name)
        mesh.connect(name, "X")
        names.append(name)
        owners.add(peer_owner(mesh.nodes[name].identity.public_key, SHARDS))
    mesh.settle()
    return mesh, names


def x_delivered(mesh: Mesh) -> list[bytes]:
    return mesh.delivered["X"]


def test_every_shard_knows_every_peer() -> None:
    mesh, names = build()
    for shard in mesh.shards["X"]:
        # one entry per peer: the connections it owns, plus those its sibling owns
        assert shard.statistics().peers == len(names)
        assert shard.statistics().links == len(names)
    wires_at_x = [link for (owner, link) in mesh.wires if owner == "X"]
    assert {link % SHARDS for link in wires_at_x} == {0, 1}


def test_copies_through_peers_of_different_shards_deliver_once() -> None:
    mesh, names = build()
    ids = []
    for i in range(20):
        key = nacl.signing.SigningKey(bytes([i]) * 32)
        envelope = message(key, f"m{i}", 1, source=f"o{i}").to_envelope()
        ids.append(envelope.id)
        # The same message reaches X from every peer, i.e. through both shards.
        for name in names:
            mesh.nodes[name].broadcast(envelope, now=mesh.now)
        mesh.settle()
    assert sorted(x_delivered(mesh)) == sorted(ids)
    owners = {stream_owner(bytes(nacl.signing.SigningKey(bytes([i]) * 32).verify_key),
                           f"o{i}".encode(), SHARDS) for i in range(20)}
    assert owners == {0, 1}  # the streams really were spread over both shards
    routed = sum(s.statistics().frames_routed for s in mesh.shards["X"])
    assert routed > 0


def test_sharded_node_forwards_between_peers_of_different_shards() -> None:
    mesh = Mesh(GossipConfig.local(), seed=7)
    mesh.add("X", shards=SHARDS)
    names = []
    for i in range(12):  # find a peer owned by each shard
        name = f"p{i}"
        mesh.add(name)
        names.append(name)
    by_owner: dict[int, str] = {}
    for name in names:
        by_owner.setdefault(peer_owner(mesh.nodes[name].identity.public_key, SHARDS), name)
    a, b = by_owner[0], by_owner[1]
    mesh.connect(a, "X")
    mesh.connect("X", b)
    mesh.settle()
    key = nacl.signing.SigningKey(bytes(32))
    ids = [mesh.nodes[a].broadcast(message(key, f"m{i}", i + 1, source=f"s{i}").to_envelope(),
                                   now=mesh.now) for i in range(10)]
    mesh.settle()
    assert sorted(mesh.delivered[b]) == sorted(ids)
    assert sorted(x_delivered(mesh)) == sorted(ids)


def test_sharded_node_own_broadcasts_reach_everyone() -> None:
    mesh, names = build()
    key = nacl.signing.SigningKey(bytes([3]) * 32)
    ids = []
    for i in range(10):
        envelope = message(key, f"own {i}", i + 1, source=f"x{i}").to_envelope()
        owner = stream_owner(envelope.origin, envelope.source.encode(), SHARDS)
        ids.append(mesh.shards["X"][owner].broadcast(envelope, now=mesh.now))
    mesh.settle()
    for name in names:
        assert sorted(mesh.delivered[name]) == sorted(ids)


def test_sharded_node_catches_up_after_disconnect() -> None:
    mesh, names = build(peers=2)
    for w in [w for (owner, _), w in list(mesh.wires.items()) if owner == "X"]:
        mesh.disconnect(w)
    mesh.connect(names[0], names[1])
    mesh.settle()
    key = nacl.signing.SigningKey(bytes([4]) * 32)
    ids = [mesh.nodes[names[0]].broadcast(
        message(key, f"m{i}", i + 1, source=f"s{i % 5}").to_envelope(), now=mesh.now)
        for i in range(15)]
    mesh.settle()
    assert x_delivered(mesh) == []
    mesh.connect(names[1], "X")
    mesh.settle()
    mesh.step(mesh.config.anti_entropy_interval * 8)
    assert sorted(x_delivered(mesh)) == sorted(ids)


def test_dead_shard_links_are_forgotten_by_the_others() -> None:
    mesh, names = build()
    survivor = mesh.shards["X"][0]
    survivor.drop_worker_links(1)
    owned_by_0 = [n for n in names
                  if peer_owner(mesh.nodes[n].identity.public_key, SHARDS) == 0]
    assert survivor.statistics().peers == len(owned_by_0)


def test_shard_index_is_validated() -> None:
    with pytest.raises(ValueError, match="outside"):
        Shard(2, 2)


def test_replaced_shard_learns_the_surviving_shards_peers() -> None:
    """A worker killed and restarted starts empty; the survivor re-announces its peers."""
    mesh, names = build()
    dead = mesh.shards["X"][1]
    # The dead shard's connections die with it (without a word from it, as with kill -9).
    for (owner, link), w in list(mesh.wires.items()):
        if owner == "X" and link % SHARDS == 1:
            del mesh.wires[("X", link)]
            del mesh.wires[(w.a if w.b == "X" else w.b, w.link_a if w.b == "X" else w.link_b)]
            other = w.a if w.b == "X" else w.b
            other_link = w.link_a if w.b == "X" else w.link_b
            mesh.nodes[other].close_link(other_link, now=mesh.now)
    fresh = Endpoint(mesh.config, dead.identity, "X", rng=random.Random(5), now=mesh.now,
                     wall_offset=WALL - mesh.now, listen_address="X:1", shard=Shard(1, SHARDS))
    mesh.shards["X"][1] = fresh
    mesh.shards["X"][0].drop_worker_links(1)
    mesh.settle()
    survivors = [n for n in names
                 if peer_owner(mesh.nodes[n].identity.public_key, SHARDS) == 0]
    assert fresh.statistics().peers == len(survivors)
    # A stream owned by the fresh shard reaches the survivor's peers through it.
    sequence = 1
    while True:
        key = nacl.signing.SigningKey(bytes([sequence]) * 32)
        envelope = message(key, "after restart", 1, source=f"s{sequence}").to_envelope()
        if stream_owner(envelope.origin, envelope.source.encode(), SHARDS) == 1:
            break
        sequence += 1
    fresh.broadcast(envelope, now=mesh.now)
    mesh.settle()
    for name in survivors:
        assert envelope.id in mesh.delivered[name]


def test_a_flooding_links_routed_messages_do_not_hold_up_another_links() -> None:
    """The filed starvation, with workers: the flood and an honest message met in one
    FIFO ring from the connection owner to the stream owner, and the stream owner
    verified everything in arrival order, so the honest message waited behind the whole
    flood. Routed messages now wait per link and are verified one link after another."""
    owner = Endpoint(GossipConfig.local(), Identity(bytes(32)), "X",
                     rng=random.Random(1), now=100.0, wall_offset=WALL - 100.0,
                     shard=Shard(0, 2))
    flooder, honest = Identity(bytes([1]) * 32), Identity(bytes([2]) * 32)
    # Links 1 and 3 belong to worker 1, which routes their messages here.
    for link, peer in ((1, flooder), (3, honest)):
        hello = PeerHello(peer.public_key, f"peer-{link}", f"peer-{link}:1")
        owner.receive_routed(Routed(RoutedKind.PEER_UP, link, 0, hello.encode()), now=100.0)

    def owned_here(key: nacl.signing.SigningKey, source: str) -> bool:
        return stream_owner(bytes(key.verify_key), source.encode(), SHARDS) == 0

    keys = (nacl.signing.SigningKey(bytes([i]) * 32) for i in range(3, 200))
    flood_key = next(k for k in keys if owned_here(k, "flood"))
    honest_key = next(k for k in keys if owned_here(k, "alert"))
    for sequence in range(1, 201):
        frame = wire.encode_message_frame(
            message(flood_key, f"flood {sequence}", sequence, "flood").to_envelope(), hops=0)
        owner.receive_routed(Routed(RoutedKind.MESSAGE, 1, 0, frame[4:]), now=100.0)
    alert = message(honest_key, "intrusion", 1, "alert").to_envelope()
    owner.receive_routed(Routed(RoutedKind.MESSAGE, 3, 0,
                                wire.encode_message_frame(alert, hops=0)[4:]), now=100.0)
    delivered: list[bytes] = []
    while True:
        more = owner.process_backlog(now=100.0, budget=8)
        delivered += [d.envelope.id for d in owner.take_deliveries()]
        if not more:
            break
    assert len(delivered) == 201
    assert delivered.index(alert.id) <= 1  # not after the 200 flood messages
