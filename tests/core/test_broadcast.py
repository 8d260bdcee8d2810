"""The epidemic broadcast tree (Plumtree) in the sans-IO core, on a stepped clock."""

from __future__ import annotations

import random

import nacl.signing
import pytest

from somasync.config import GossipConfig
from somasync.core import endpoint as endpoint_module, wire
from somasync.core.broadcast import STALE_PUSH_WINDOW, BroadcastTree
from somasync.core.endpoint import Endpoint
from somasync.core.events import FrameRejected
from somasync.core.payload import MessageType
from somasync.message import Message
from somasync.testing import WALL, Mesh

# Anti-entropy far away, so every repair seen here is the tree's own.
TREE = GossipConfig.local().replace(anti_entropy_interval=3600.0, lazy_timeout=0.2,
                                    graft_retry=0.3)
KEY = nacl.signing.SigningKey(bytes(range(32)))
TAG = wire.stream_tag(bytes(KEY.verify_key), b"origin")  # the tree every test message uses


def message(sequence: int, key: nacl.signing.SigningKey = KEY,
            source: str = "origin") -> wire.Envelope:
    return (Message(MessageType.Data(f"alert {sequence}"), source, timestamp=WALL,
                    ttl=3600, sequence=sequence)
            .sign_with_ed25519(key).to_envelope())


def random_mesh(config: GossipConfig, n: int = 16, degree: int = 4, seed: int = 3) -> Mesh:
    """``n`` nodes on a ring (so the overlay is connected) plus random chords."""
    mesh = Mesh(config, seed=seed)
    names = [f"n{i}" for i in range(n)]
    for name in names:
        mesh.add(name)
    rng = random.Random(seed)
    edges = {(i, (i + 1) % n) for i in range(n)}
    while len(edges) < n * degree // 2:
        a, b = rng.sample(range(n), 2)
        if (a, b) not in edges and (b, a) not in edges:
            edges.add((a, b))
    for a, b in sorted(edges):
        mesh.connect(names[a], names[b])
    mesh.settle()
    return mesh


def publish(mesh: Mesh, sequence: int, origin: str = "n0") -> bytes:
    envelope = message(sequence)
    mesh.nodes[origin].broadcast(envelope, now=mesh.now)
    mesh.settle()
    return envelope.id


def received_copies(mesh: Mesh) -> int:
    """MESSAGE frames that reached any node: deliveries plus duplicates."""
    return sum(e.statistics().messages_delivered + e.statistics().duplicates
               for e in mesh.nodes.values())


def test_tree_forms_and_then_each_node_receives_one_copy() -> None:
    mesh = random_mesh(TREE)
    first = received_copies(mesh)
    publish(mesh, 1)
    flood = received_copies(mesh) - first
    assert flood > 15  # links start eager: the first message floods the overlay
    for sequence in range(2, 5):
        publish(mesh, sequence)
    before = received_copies(mesh)
    publish(mesh, 5)
    steady = received_copies(mesh) - before
    assert steady == 15, "one copy per node (RMR 0) once the duplicates pruned the tree"
    assert all(len(ids) == 5 for name, ids in mesh.delivered.items() if name != "n0")
    prunes = sum(e.statistics().tree.prunes_sent for e in mesh.nodes.values())  # type: ignore[union-attr]
    assert prunes > 0
    eager = sum(e.statistics().tree.eager_links for e in mesh.nodes.values())  # type: ignore[union-attr]
    assert eager == 2 * 15, "the eager links are a spanning tree: N - 1 edges, both ends"


def test_plain_push_sends_many_copies_where_the_tree_sends_one() -> None:
    push = random_mesh(TREE.replace(forwarding="push", fanout=3))
    for sequence in range(1, 5):
        publish(push, sequence)
    before = received_copies(push)
    publish(push, 5)
    assert received_copies(push) - before > 30
    assert push.nodes["n1"].statistics().tree is None


def test_lazy_announcement_repairs_a_broken_tree_with_a_graft() -> None:
    mesh = random_mesh(TREE)
    for sequence in range(1, 4):
        publish(mesh, sequence)
    # Silently break every eager link of one node's parent side: bytes vanish, nobody
    # notices (a stalled path), so only IHAVE + GRAFT can bring the message.
    victim = "n7"
    parent_links = [link for link in mesh.nodes[victim].peer_links()
                    if mesh.nodes[victim]._tree.is_eager(link, TAG)]  # type: ignore[union-attr]
    assert parent_links
    for link in parent_links:
        mesh.wires[(victim, link)].drop = True
    message_id = publish(mesh, 4)
    delivered_at_once = {name for name, ids in mesh.delivered.items() if message_id in ids}
    mesh.step(1.0)
    everyone = {name for name, ids in mesh.delivered.items() if message_id in ids}
    assert everyone == set(mesh.nodes) - {"n0"}, "the tree repaired itself"
    assert victim not in delivered_at_once
    grafts = sum(e.statistics().tree.grafts_sent for e in mesh.nodes.values())  # type: ignore[union-attr]
    assert grafts >= 1
    assert sum(e.statistics().digests_sent for e in mesh.nodes.values()) < 200  # no rounds ran


def test_graft_moves_to_the_next_announcer_when_the_first_is_silent() -> None:
    tree = BroadcastTree(lazy_timeout=0.1, graft_retry=0.2, max_missing=10)
    for link in (1, 2, 3):
        tree.link_up(link)
        tree.make_lazy(link, b"t" * 8)
    tree.heard(b"m" * 16, b"t" * 8, 2, now=0.0)
    tree.heard(b"m" * 16, b"t" * 8, 3, now=0.01)
    assert tree.due(now=0.05) == []
    assert tree.due(now=0.1) == [(2, b"m" * 16, b"t" * 8)]
    assert tree.is_eager(2, b"t" * 8)
    assert not tree.is_eager(3, b"t" * 8)
    assert tree.due(now=0.25) == []
    assert tree.due(now=0.31) == [(3, b"m" * 16, b"t" * 8)]
    tree.received(b"m" * 16)
    assert tree.due(now=10.0) == []
    assert tree.statistics().grafts_sent == 2


def test_missing_messages_are_bounded_and_counted() -> None:
    tree = BroadcastTree(lazy_timeout=1.0, graft_retry=1.0, max_missing=3)
    tree.link_up(1)
    for i in range(5):
        tree.heard(bytes([i]) * 16, b"t" * 8, 1, now=0.0)
    stats = tree.statistics()
    assert stats.missing == 3
    assert stats.missing_dropped == 2


def test_an_announcer_that_went_away_is_skipped() -> None:
    tree = BroadcastTree(lazy_timeout=0.1, graft_retry=0.2, max_missing=10)
    tree.link_up(1)
    tree.heard(b"m" * 16, b"t" * 8, 1, now=0.0)
    tree.link_down(1)
    assert tree.due(now=1.0) == []
    assert tree.statistics().missing_dropped == 1


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x02" + bytes(25),
                                     b"\x00\x01" + bytes(24)])
def test_malformed_tree_frames_close_the_link_and_are_counted(payload: bytes) -> None:
    mesh = random_mesh(TREE, n=3, degree=2)
    link = mesh.link_of("n1", "n0")
    frame = wire.encode_frame(wire.FrameKind.IHAVE, payload)
    mesh.inject("n1", link, frame)
    mesh.settle()
    rejected = [e for e in mesh.events["n1"] if isinstance(e, FrameRejected)]
    assert rejected
    assert rejected[-1].closed
    assert sum(mesh.nodes["n1"].statistics().rejected.values()) == 1


def test_graft_for_an_unknown_message_sends_nothing_back() -> None:
    mesh = random_mesh(TREE, n=3, degree=2)
    publish(mesh, 1)
    link = mesh.link_of("n1", "n0")
    repairs = mesh.nodes["n1"].statistics().repairs_sent
    entry = wire.encode_tree_entry(b"x" * 16, b"t" * 8)
    mesh.inject("n1", link, wire.encode_tree_frame(wire.FrameKind.GRAFT, [entry]))
    mesh.settle()
    assert mesh.nodes["n1"].statistics().repairs_sent == repairs
    assert mesh.nodes["n1"].statistics().tree.grafts_received == 1  # type: ignore[union-attr]


def test_a_graft_naming_one_id_many_times_gets_one_copy() -> None:
    """Before: a GRAFT queued one copy of the message per mention (x100 here)."""
    mesh = random_mesh(TREE, n=3, degree=2)
    message_id = publish(mesh, 1)
    link = mesh.link_of("n1", "n0")
    repairs = mesh.nodes["n1"].statistics().repairs_sent
    entry = wire.encode_tree_entry(message_id, wire.stream_tag(bytes(KEY.verify_key),
                                                               b"origin"))
    mesh.inject("n1", link, wire.encode_tree_frame(wire.FrameKind.GRAFT, [entry] * 100))
    mesh.settle()
    stats = mesh.nodes["n1"].statistics()
    assert stats.repairs_sent == repairs + 1
    assert stats.rejected == {"graft_repeated_id": 99}


def test_sharded_node_in_the_middle_of_the_tree_delivers_each_message_once() -> None:
    mesh = Mesh(TREE, seed=5)
    for name in ("a", "c", "d"):
        mesh.add(name)
    mesh.add("b", shards=3)
    for x, y in (("a", "b"), ("b", "c"), ("b", "d"), ("a", "c"), ("c", "d")):
        mesh.connect(x, y)
    mesh.settle()
    for sequence in range(1, 8):
        mesh.nodes["a"].broadcast(message(sequence), now=mesh.now)
        mesh.settle()
    mesh.step(1.0)
    for name in ("b", "c", "d"):
        assert len(set(mesh.delivered[name])) == len(mesh.delivered[name]) == 7, name
    prunes = sum(shard.statistics().tree.prunes_sent  # type: ignore[union-attr]
                 for shards in mesh.shards.values() for shard in shards)
    assert prunes > 0, "the triangle a-b-c and c-d-b hold redundant paths to prune"


def test_a_repair_meeting_the_tree_copy_does_not_prune_the_tree() -> None:
    # An anti-entropy repair can reach a node while the tree is still carrying the same
    # message; the two waves meet somewhere inside the tree. Taking that meeting for a
    # redundant path would prune a tree link and split the tree.
    mesh = random_mesh(TREE)
    for sequence in range(1, 5):
        publish(mesh, sequence)
    eager_before = sum(e.statistics().tree.eager_links for e in mesh.nodes.values())  # type: ignore[union-attr]
    prunes_before = sum(e.statistics().tree.prunes_sent for e in mesh.nodes.values())  # type: ignore[union-attr]
    envelope = message(5)
    mesh.nodes["n0"].broadcast(envelope, now=mesh.now)
    far = "n8"
    tree = mesh.nodes[far]._tree
    assert tree is not None
    # The repair comes from an overlay neighbour off the tree, as anti-entropy's do.
    link = next(link for link in mesh.nodes[far].peer_links() if not tree.is_eager(link, TAG))
    mesh.inject(far, link, wire.encode_message_frame(envelope, hops=0, repair=True))
    mesh.settle()
    assert all(envelope.id in ids for name, ids in mesh.delivered.items() if name != "n0")
    assert sum(e.statistics().tree.prunes_sent for e in mesh.nodes.values()) == prunes_before  # type: ignore[union-attr]
    assert sum(e.statistics().tree.eager_links for e in mesh.nodes.values()) == eager_before  # type: ignore[union-attr]
    before = received_copies(mesh)
    publish(mesh, 6)
    assert received_copies(mesh) - before == 15, "still a spanning tree: one copy each"


def test_each_origin_gets_a_tree_of_its_own() -> None:
    mesh = random_mesh(TREE)
    other = nacl.signing.SigningKey(bytes(range(1, 33)))
    for sequence in range(1, 5):
        publish(mesh, sequence)
        mesh.nodes["n9"].broadcast(message(sequence, other, "n9-feed"), now=mesh.now)
        mesh.settle()
    for origin, envelope in (("n0", message(5)), ("n9", message(5, other, "n9-feed"))):
        before = received_copies(mesh)
        mesh.nodes[origin].broadcast(envelope, now=mesh.now)
        mesh.settle()
        assert received_copies(mesh) - before == 15, origin
    # A node keeps a stream's pruned links (none where every link is in that tree).
    assert max(e.statistics().tree.streams  # type: ignore[union-attr]
               for e in mesh.nodes.values()) == 2
    # Rooted at different nodes, the two trees are different sets of links.
    other_tag = wire.stream_tag(bytes(other.verify_key), b"n9-feed")
    shapes = {tag: {(name, link) for name, e in mesh.nodes.items()
                    for link in e.peer_links() if e._tree.is_eager(link, tag)}  # type: ignore[union-attr]
              for tag in (TAG, other_tag)}
    assert shapes[TAG] != shapes[other_tag]


def test_stream_trees_are_bounded_least_recently_used_first() -> None:
    tree = BroadcastTree(lazy_timeout=0.1, graft_retry=0.2, max_missing=10, max_trees=2)
    tree.link_up(1)
    tree.link_up(2)
    for tag in (b"a" * 8, b"b" * 8):
        tree.make_lazy(1, tag)
    tree.targets(b"a" * 8, received_from=None)  # "a" is used again, "b" is older
    tree.make_lazy(1, b"c" * 8)
    stats = tree.statistics()
    assert (stats.streams, stats.trees_dropped) == (2, 1)
    assert tree.is_eager(1, b"b" * 8), "forgotten: floods again"
    assert not tree.is_eager(1, b"a" * 8)
    assert tree.targets(b"c" * 8, received_from=None) == [2]
    assert tree.split_targets(b"c" * 8, received_from=None)[1] == [1]


def test_one_neighbours_announcements_cannot_evict_the_others_missing_messages() -> None:
    """The filed IHAVE flood: a neighbour announcing ids that exist nowhere used to push
    every legitimately missing message out of ``max_missing`` (and their GRAFTs with
    them). Now one link holds at most a share of the missing messages; the rest of its
    announcements are refused and counted."""
    tree = BroadcastTree(lazy_timeout=1.0, graft_retry=1.0, max_missing=100)
    for link in (1, 2):
        tree.link_up(link)
    tree.heard(b"honest-message-1", b"t" * 8, 1, now=0.0)
    for i in range(10_000):
        tree.heard(i.to_bytes(16, "big"), b"t" * 8, 2, now=0.0)
    assert (1, b"honest-message-1", b"t" * 8) in tree.due(now=1.0)
    stats = tree.statistics()
    assert stats.missing <= 100
    assert stats.announcements_refused == 10_000 - stats.missing + 1


def test_deadlines_of_forgotten_messages_do_not_pile_up() -> None:
    """Before: every announced id left a deadline behind, also once it was forgotten, so
    a flood of announcements grew the heap by its rate times the lazy timeout."""
    tree = BroadcastTree(lazy_timeout=60.0, graft_retry=1.0, max_missing=100)
    for link in range(1, 9):
        tree.link_up(link)
    for i in range(50_000):
        tree.heard(i.to_bytes(16, "big"), b"t" * 8, 1 + i % 8, now=0.0)
        tree.received(i.to_bytes(16, "big"))
    assert len(tree._deadlines) <= 4 * 100 + 64


def test_an_announcer_that_never_answers_its_graft_broke_a_promise() -> None:
    tree = BroadcastTree(lazy_timeout=0.1, graft_retry=0.2, max_missing=10)
    for link in (1, 2):
        tree.link_up(link)
    tree.heard(b"m" * 16, b"t" * 8, 1, now=0.0)
    tree.heard(b"m" * 16, b"t" * 8, 2, now=0.0)
    tree.due(now=0.1)  # GRAFT to 1
    assert tree.take_broken_promises() == []
    tree.due(now=0.35)  # 1 said nothing: GRAFT to 2
    assert tree.take_broken_promises() == [1]
    tree.received(b"m" * 16)  # 2 kept its promise
    tree.due(now=1.0)
    assert tree.take_broken_promises() == []
    assert tree.statistics().broken_promises == 1


def test_a_message_waiting_in_the_nodes_own_backlog_is_not_grafted_nor_a_broken_promise(
        ) -> None:
    tree = BroadcastTree(lazy_timeout=0.1, graft_retry=0.2, max_missing=10)
    for link in (1, 2):
        tree.link_up(link)
    waiting = {b"w" * 16}
    tree.heard(b"w" * 16, b"t" * 8, 1, now=0.0)
    tree.heard(b"w" * 16, b"t" * 8, 2, now=0.0)
    tree.heard(b"m" * 16, b"t" * 8, 1, now=0.0)
    tree.heard(b"m" * 16, b"t" * 8, 2, now=0.0)
    assert tree.due(now=0.1, waiting=waiting.__contains__) == [(1, b"m" * 16, b"t" * 8)]
    # 1 answered m, but the answer waits too: no promise broken, no GRAFT to 2.
    waiting.add(b"m" * 16)
    assert tree.due(now=0.31, waiting=waiting.__contains__) == []
    assert tree.take_broken_promises() == []
    # Shed from the backlog: missing after all, so GRAFTed; nobody is blamed for it.
    waiting.clear()
    assert sorted(tree.due(now=0.52, waiting=waiting.__contains__)) == [
        (1, b"w" * 16, b"t" * 8), (2, b"m" * 16, b"t" * 8)]
    assert tree.take_broken_promises() == []
    stats = tree.statistics()
    assert (stats.grafts_sent, stats.grafts_held, stats.broken_promises) == (3, 3, 0)


def test_a_neighbour_claiming_many_hops_cannot_stop_a_message_from_spreading() -> None:
    """The filed hop attack: a neighbour relays an honest message first, with its hop
    count set to the limit; the node used to deliver it and forward it to nobody (and
    PRUNE the honest link that brought the same message next). Now a message at the hop
    limit is still announced to every other neighbour, which GRAFTs it if it lacks it."""
    config = TREE.replace(max_hops=8)
    mesh = Mesh(config, seed=3)
    for name in ("attacker", "middle", "downstream"):
        mesh.add(name)
    mesh.connect("attacker", "middle")
    mesh.connect("middle", "downstream")
    mesh.settle()
    envelope = message(1)
    link = mesh.link_of("middle", "attacker")
    mesh.inject("middle", link, wire.encode_message_frame(envelope, hops=7))
    mesh.settle()
    mesh.step(1.0)  # the lazy timeout: downstream GRAFTs what it was told of
    mesh.settle()
    assert mesh.nodes["downstream"].statistics().messages_delivered == 1


def test_an_ihave_flood_is_refused_past_the_links_share_and_counted() -> None:
    mesh = random_mesh(TREE.replace(max_missing=400), n=3, degree=2)
    link = mesh.link_of("n1", "n0")
    entries = [wire.encode_tree_entry(i.to_bytes(16, "big"), b"t" * 8) for i in range(1000)]
    for start in range(0, 1000, 250):
        mesh.inject("n1", link, wire.encode_tree_frame(wire.FrameKind.IHAVE,
                                                       entries[start : start + 250]))
    mesh.settle()
    stats = mesh.nodes["n1"].statistics()
    assert stats.tree.missing == 100  # type: ignore[union-attr]
    assert stats.rejected["ihave_over_share"] == 900
    assert mesh.link_of("n1", "n0") == link  # a greedy neighbour, not a broken one


def test_the_tree_counts_each_links_lazy_streams() -> None:
    tree = BroadcastTree(lazy_timeout=1.0, graft_retry=1.0, max_missing=64)
    for link in (1, 2, 3):
        tree.link_up(link)
    tree.make_lazy(2, b"origin-a")
    tree.make_lazy(2, b"origin-b")
    tree.make_lazy(3, b"origin-a")
    assert tree.lazy_streams() == {1: 0, 2: 2, 3: 1}
    tree.make_eager(2, b"origin-b")  # a GRAFT
    tree.link_down(3)
    assert tree.lazy_streams() == {1: 0, 2: 1}
    assert tree.statistics().streams == 2


def test_endpoint_statistics_name_each_peers_lazy_streams() -> None:
    """The status page draws a link as lazy from ``lazy_streams``: per peer it must add up
    to the tree's own count, and once the tree has pruned, some link is lazy."""
    mesh = random_mesh(TREE)
    for sequence in range(1, 4):
        publish(mesh, sequence)
    lazy_somewhere = False
    for endpoint in mesh.nodes.values():
        stats = endpoint.statistics()
        assert stats.tree is not None
        assert set(stats.lazy_streams) == set(stats.peer_scores)  # every connected peer
        assert sum(stats.lazy_streams.values()) == stats.tree.lazy_links
        assert all(0 <= count <= stats.tree.streams for count in stats.lazy_streams.values())
        lazy_somewhere |= any(stats.lazy_streams.values())
    assert lazy_somewhere


def test_an_announce_interval_gathers_ihave_entries_into_fewer_frames() -> None:
    """Five messages in a burst: without an interval each goes to every lazy link in its
    own IHAVE frame; with one, the burst's entries share a frame per link, and every
    entry still goes (the timer sends what was gathered)."""
    sent: dict[float, tuple[int, int]] = {}
    for interval in (0.0, 0.5):
        mesh = random_mesh(TREE.replace(announce_interval=interval))
        for sequence in range(1, 4):
            publish(mesh, sequence)  # the tree forms
        mesh.step(1.0)

        def totals(mesh: Mesh = mesh) -> tuple[int, int]:
            stats = [e.statistics() for e in mesh.nodes.values()]
            return (sum(s.control_frames_out for s in stats),
                    sum(s.tree.announcements_sent for s in stats))  # type: ignore[union-attr]

        frames, entries = totals()
        for sequence in range(4, 9):
            publish(mesh, sequence)  # no time passes: one burst
        mesh.step(1.0)
        sent[interval] = (totals()[0] - frames, totals()[1] - entries)
        assert all(len(ids) == 8 for name, ids in mesh.delivered.items() if name != "n0")
        assert not any(e.statistics().tree.missing  # type: ignore[union-attr]
                       for e in mesh.nodes.values())
    assert sent[0.5][1] == sent[0.0][1] > 0, "the same announcements"
    assert sent[0.0][0] == sent[0.0][1], "one frame per entry without an interval"
    assert sent[0.5][0] < sent[0.0][0] / 2, "gathered: several entries a frame"


def test_a_broken_tree_is_repaired_with_an_announce_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # No housekeeping sweep to wake the nodes up: gathered announcements go because the
    # endpoint's own timer asks for the end of the interval.
    monkeypatch.setattr(endpoint_module, "HOUSEKEEPING_INTERVAL", 3600.0)
    mesh = random_mesh(TREE.replace(announce_interval=0.3))
    for sequence in range(1, 4):
        publish(mesh, sequence)
    mesh.step(1.0)
    publish(mesh, 4)  # announced at once: the next announcements wait for the interval
    victim = "n7"
    for link in mesh.nodes[victim].peer_links():
        if mesh.nodes[victim]._tree.is_eager(link, TAG):  # type: ignore[union-attr]
            mesh.wires[(victim, link)].drop = True
    message_id = publish(mesh, 5)
    assert message_id not in mesh.delivered[victim]
    mesh.step(2.0)
    assert message_id in mesh.delivered[victim], "IHAVE after the interval, then GRAFT"
    assert sum(e.statistics().tree.grafts_sent  # type: ignore[union-attr]
               for e in mesh.nodes.values()) >= 1


def test_announcements_go_in_their_messages_send_band() -> None:
    """Before: every IHAVE went at 255, ahead of everything queued for the link, so under
    load a bulk message was announced long before its copies, which waited behind
    other bulk, and was GRAFTed as missing while on its way. One frame per band: the
    send queue orders no finer, and an announce interval still gathers."""
    mesh = random_mesh(TREE)
    for sequence in range(1, 5):
        publish(mesh, sequence)  # the tree forms: lazy links appear
    queued: list[tuple[int, int]] = []
    real_queue = endpoint_module.Endpoint._queue

    def spy(self: endpoint_module.Endpoint, state: object, frame: bytes, priority: int) -> None:
        queued.append((frame[wire.LENGTH_PREFIX.size + 1], priority))
        real_queue(self, state, frame, priority)  # type: ignore[arg-type]

    endpoint_module.Endpoint._queue = spy  # type: ignore[method-assign]
    try:
        for sequence, priority in ((5, 32), (6, 200), (7, 10), (8, 250)):
            envelope = (Message(MessageType.Data(f"alert {sequence}"), "origin", timestamp=WALL,
                                ttl=3600, sequence=sequence, priority=priority)
                        .sign_with_ed25519(KEY).to_envelope())
            mesh.nodes["n0"].broadcast(envelope, now=mesh.now)
            mesh.settle()
    finally:
        endpoint_module.Endpoint._queue = real_queue  # type: ignore[method-assign]
    announced = {priority for kind, priority in queued if kind == wire.FrameKind.IHAVE}
    assert announced == {0, 192}  # the bands of 32 and 10, of 200 and 250


def _tree_of(links: tuple[str, ...], origin: str, *, sharded: str = "") -> Mesh:
    """Nodes joined by ``links`` (each two names), three messages published at
    ``origin`` so the stream's tree has formed; ``sharded``: a node of two workers."""
    mesh = Mesh(TREE)
    for name in sorted({name for link in links for name in link}):
        mesh.add(name, shards=2 if name == sharded else 1)
    for left, right in links:
        mesh.connect(left, right)
    mesh.settle()
    for sequence in range(1, 4):
        publish(mesh, sequence, origin=origin)
    return mesh


def _triangle() -> tuple[Mesh, Endpoint]:
    """a, b, c all linked, stream "origin" published at a: a pushes to b and c, and b-c
    is pruned (both ways)."""
    mesh = _tree_of(("ab", "ac", "bc"), "a")
    b = mesh.nodes["b"]
    assert b._tree is not None
    assert not b._tree.is_eager(mesh.link_of("b", "c"), TAG)
    return mesh, b


def test_a_push_crossing_a_prune_leaves_the_tree_as_it_was() -> None:
    """c's push of a message was on its way when b pruned c, and came before a's. Before:
    b passed it on to a (which pruned b for the duplicate) and pruned a for the tree copy
    behind it; no neighbour pushed the stream to b any more, and each later message came
    by GRAFT, a lazy timeout late."""
    mesh, b = _triangle()
    late = message(4)
    mesh.nodes["a"].broadcast(late, now=mesh.now)  # queued at a, not yet moved
    mesh.inject("b", mesh.link_of("b", "c"), wire.encode_message_frame(late, hops=1))
    mesh.settle()
    assert late.id in mesh.delivered["b"]
    following = publish(mesh, 5, origin="a")
    assert following in mesh.delivered["b"], "pushed by a, not left to a GRAFT"
    tree = b.statistics().tree
    assert tree is not None
    assert tree.grafts_sent == 0
    assert tree.stale_pushes == 1


def test_a_neighbour_pushing_long_after_its_prune_is_taken_at_its_word() -> None:
    """Past the window a push on a pruned link is on purpose (the neighbour forgot the
    tree): as in Plumtree, it is a parent again, and the tree prunes the redundant path."""
    mesh, b = _triangle()
    mesh.step(STALE_PUSH_WINDOW + 1)
    pushed = message(4)
    from_c = mesh.link_of("b", "c")
    mesh.inject("b", from_c, wire.encode_message_frame(pushed, hops=1))
    mesh.settle()
    assert b._tree is not None
    assert b._tree.is_eager(from_c, TAG)
    tree = b.statistics().tree
    assert tree is not None
    assert tree.stale_pushes == 0


@pytest.mark.parametrize("shards", [1, 2])
def test_a_parent_cut_off_upstream_still_hears_of_the_stale_push(shards: int) -> None:
    """Review: b passed a stale push on to everyone but its parent a, which had just lost
    its own link to the origin, so a never got the message (with anti-entropy far away).
    The parent is announced to instead: if it lacks the message it GRAFTs it."""
    # o pushes to a and c, a to b; b prunes c.
    mesh = _tree_of(("oa", "ab", "oc", "cb"), "o", sharded="b" if shards > 1 else "")
    mesh.disconnect(mesh.wires[("o", mesh.link_of("o", "a"))])  # a: only b is left
    mesh.settle()
    late = message(4)
    mesh.nodes["o"].broadcast(late, now=mesh.now)
    mesh.inject("b", mesh.link_of("b", "c"), wire.encode_message_frame(late, hops=1))
    mesh.settle()
    mesh.step(5.0)
    assert late.id in mesh.delivered["b"]
    assert late.id in mesh.delivered["a"], "a, whose only link is b, never got it"


def test_a_second_stale_push_of_one_message_does_not_make_its_link_eager() -> None:
    """Review: two crossing pushes of one message; the second was taken for a tree copy
    trailing a repair and turned its pruned link eager again (one more duplicate)."""
    mesh = _tree_of(("ab", "ac", "ad", "bc", "bd"), "a")
    b = mesh.nodes["b"]
    assert b._tree is not None
    from_c, from_d = mesh.link_of("b", "c"), mesh.link_of("b", "d")
    assert not b._tree.is_eager(from_c, TAG)
    assert not b._tree.is_eager(from_d, TAG)
    late = message(4)
    mesh.nodes["a"].broadcast(late, now=mesh.now)
    mesh.inject("b", from_c, wire.encode_message_frame(late, hops=1))
    mesh.inject("b", from_d, wire.encode_message_frame(late, hops=1))
    mesh.settle()
    assert not b._tree.is_eager(from_c, TAG)
    assert not b._tree.is_eager(from_d, TAG)
