"""Read-ahead by priority (``GossipConfig.read_ahead_bytes``): a critical message read
behind bulk is handled first; past the room, bulk is shed, counted, never critical."""

from __future__ import annotations

import itertools

import nacl.signing
import pytest

from somasync.config import GossipConfig
from somasync.core import wire
from somasync.core.endpoint import FLUSH_LIMIT
from somasync.core.inbox import ENTRY_COST, ID_COST, Inbox
from somasync.core.payload import MessageType
from somasync.message import Message
from somasync.testing import WALL, Mesh

KEY = nacl.signing.SigningKey(bytes(range(32)))
PAYLOAD = "x" * 300


def frames(count: int, *, priority: int, first: int = 1, source: str = "feed",
           key: nacl.signing.SigningKey = KEY) -> tuple[bytes, list[bytes]]:
    messages = [Message(MessageType.Data(PAYLOAD), source, timestamp=WALL,
                        priority=priority, sequence=first + i).sign_with_ed25519(key)
                for i in range(count)]
    data = b"".join(wire.encode_message_frame(m.to_envelope(), hops=0) for m in messages)
    return data, [bytes.fromhex(m.id) for m in messages]


def linked(config: GossipConfig, *senders: str) -> Mesh:
    mesh = Mesh(config)
    mesh.add("b")
    for name in senders:
        mesh.add(name)
        mesh.connect(name, "b")
    mesh.settle()
    return mesh


def read_at_once(mesh: Mesh, sender: str, data: bytes) -> None:
    """``data`` reaches b in one read, as a busy node finds it in its socket."""
    link = mesh.link_of("b", sender)
    mesh.inject("b", link, data)


@pytest.mark.parametrize("priority", [192, 255])
def test_a_critical_message_read_behind_bulk_is_handled_first(priority: int) -> None:
    mesh = linked(GossipConfig.local(), "a")
    bulk, bulk_ids = frames(500, priority=0)
    critical, [critical_id] = frames(1, priority=priority, first=501)
    read_at_once(mesh, "a", bulk + critical)
    b = mesh.nodes["b"]
    # Nothing of the bulk handled yet; the critical message already delivered.
    assert [d.envelope.id for d in b.take_deliveries()] == [critical_id]
    assert b.has_backlog
    mesh.settle()
    assert sorted(mesh.delivered["b"]) == sorted(bulk_ids)
    assert not b.has_backlog
    assert b.backlog_bytes == 0


def test_waiting_bands_are_handled_highest_first() -> None:
    mesh = linked(GossipConfig.local(), "a")
    low, low_ids = frames(3, priority=10)
    mid, mid_ids = frames(3, priority=100, first=4)
    high, high_ids = frames(3, priority=150, first=7)
    read_at_once(mesh, "a", low + mid + high)
    mesh.settle()
    assert mesh.delivered["b"] == high_ids + mid_ids + low_ids


def test_without_read_ahead_frames_are_handled_in_arrival_order() -> None:
    mesh = linked(GossipConfig.local().replace(read_ahead_bytes=0), "a")
    bulk, bulk_ids = frames(50, priority=0)
    critical, critical_ids = frames(1, priority=255, first=51)
    read_at_once(mesh, "a", bulk + critical)
    assert not mesh.nodes["b"].has_backlog
    mesh.settle()
    assert mesh.delivered["b"] == bulk_ids + critical_ids


def test_past_the_room_bulk_is_shed_and_counted_never_critical() -> None:
    mesh = linked(GossipConfig.local().replace(read_ahead_bytes=64 * 1024), "a")
    bulk, bulk_ids = frames(1000, priority=0)
    critical, critical_ids = frames(20, priority=255, first=1001)
    interleaved = bulk[: len(bulk) // 2] + critical + bulk[len(bulk) // 2 :]
    read_at_once(mesh, "a", interleaved)
    b = mesh.nodes["b"]
    assert b.backlog_bytes <= 64 * 1024
    mesh.settle()
    shed = b.statistics().rejected["ingress_shed"]
    assert shed > 0
    delivered = set(mesh.delivered["b"])
    assert set(critical_ids) <= delivered
    assert len(delivered) == len(bulk_ids) + len(critical_ids) - shed
    # The oldest bulk went: what was read last is what was kept.
    assert bulk_ids[-1] in delivered
    assert bulk_ids[0] not in delivered


def test_a_flooding_link_is_shed_and_its_neighbour_is_not() -> None:
    mesh = linked(GossipConfig.local().replace(read_ahead_bytes=64 * 1024), "flood", "honest")
    flood, _ = frames(1000, priority=0, source="flood-feed",
                      key=nacl.signing.SigningKey(bytes(32)))
    honest, honest_ids = frames(20, priority=0, source="honest-feed")
    read_at_once(mesh, "flood", flood)
    read_at_once(mesh, "honest", honest)
    read_at_once(mesh, "flood", flood)  # the same again: duplicates, still read ahead
    mesh.settle()
    assert set(honest_ids) <= set(mesh.delivered["b"])
    assert mesh.nodes["b"].statistics().rejected["ingress_shed"] > 0


def test_frames_waiting_when_their_link_closes_are_still_handled() -> None:
    mesh = linked(GossipConfig.local(), "a")
    bulk, bulk_ids = frames(30, priority=0)
    read_at_once(mesh, "a", bulk)
    b = mesh.nodes["b"]
    assert b.has_backlog
    b.close_link(mesh.link_of("b", "a"), now=mesh.now)
    assert sorted(d.envelope.id for d in b.take_deliveries()) == sorted(bulk_ids)
    assert not b.has_backlog


def test_the_inbox_sheds_lowest_band_oldest_first() -> None:
    inbox = Inbox()
    for priority, name in itertools.product((150, 10, 100), "ab"):
        inbox.put(f"{priority}{name}".encode().ljust(10), priority)
    assert len(inbox) == 6
    assert inbox.shed(ENTRY_COST + 15) == 2  # both priority-10 frames, oldest first
    assert [inbox.take().strip() for _ in range(len(inbox))] == [
        b"150a", b"150b", b"100a", b"100b"]


def test_the_inbox_indexes_the_ids_waiting_when_asked_and_charges_for_them() -> None:
    messages = [Message(MessageType.Data(PAYLOAD), "feed", timestamp=WALL, priority=p,
                        sequence=i).sign_with_ed25519(KEY)
                for i, p in enumerate((0, 0, 150), 1)]
    first, second, third = (wire.encode_message_frame(m.to_envelope(), hops=0)[4:]
                            for m in messages)
    ids = [bytes.fromhex(m.id) for m in messages]
    inbox = Inbox()
    inbox.put(first, 0)
    inbox.put(first, 0)  # a second copy
    inbox.put(b"\x01\x00\x00\x00\x00", 0)  # no envelope: no id
    assert inbox.ids == {}  # nothing hashed until asked
    plain = inbox.size
    assert inbox.index() == 2 * ID_COST
    inbox.put(third, 150)
    inbox.put(second, 0)
    assert inbox.index() == 2 * ID_COST
    assert inbox.index() == 0  # each frame hashed once
    assert inbox.ids == {ids[0]: 2, ids[1]: 1, ids[2]: 1}
    assert inbox.size == plain + len(third) + len(second) + 2 * ENTRY_COST + 4 * ID_COST
    assert inbox.take() == third
    assert inbox.take() == first
    assert inbox.ids == {ids[0]: 1, ids[1]: 1}
    assert inbox.shed(1) == 1
    assert inbox.ids == {ids[1]: 1}
    assert inbox.shed(10**6) == 2
    assert (inbox.ids, inbox.size) == ({}, 0)


def test_waiting_frames_of_a_peer_that_leaves_are_handled() -> None:
    # Membership says the peer left (its leave datagram overtook the frames it sent
    # before it): the frames read from it count, as they did without read-ahead.
    mesh = linked(GossipConfig.local(), "a")
    bulk, bulk_ids = frames(30, priority=0)
    read_at_once(mesh, "a", bulk)
    b = mesh.nodes["b"]
    assert b.disconnect_peer(mesh.nodes["a"].identity.public_key, "left")
    assert sorted(d.envelope.id for d in b.take_deliveries()) == sorted(bulk_ids)
    assert not b.has_backlog


def test_tiny_frames_are_charged_what_holding_them_costs() -> None:
    # Header-only MESSAGE frames: a few bytes each, but a bytes object and a deque slot
    # to hold. Charged at their length alone, 64 KiB of them would be 7,000 entries.
    room = 64 * 1024
    mesh = linked(GossipConfig.local().replace(read_ahead_bytes=room), "a")
    tiny = wire.encode_frame(wire.FrameKind.MESSAGE, b"", priority=0)
    read_at_once(mesh, "a", tiny * 20_000)
    b = mesh.nodes["b"]
    assert b.backlog_bytes <= room
    assert b.statistics().rejected["ingress_shed"] >= 20_000 - room // ENTRY_COST


def test_a_closing_link_hands_in_its_last_frames_not_a_flood() -> None:
    mesh = linked(GossipConfig.local(), "a")
    bulk, _ = frames(FLUSH_LIMIT + 100, priority=0)
    read_at_once(mesh, "a", bulk)
    b = mesh.nodes["b"]
    b.close_link(mesh.link_of("b", "a"), now=mesh.now)
    assert len(b.take_deliveries()) == FLUSH_LIMIT
    assert b.statistics().rejected["closed_link_backlog"] == 100
    assert b.backlog_bytes == 0


def test_without_read_ahead_a_sharded_node_still_takes_routed_messages() -> None:
    mesh = Mesh(GossipConfig.local().replace(read_ahead_bytes=0))
    mesh.add("b", shards=2)
    mesh.add("a")
    mesh.connect("a", "b")
    mesh.settle()
    sent = []
    for origin in range(8):  # streams of both workers of b
        data, ids = frames(5, priority=0, source=f"feed-{origin}",
                           key=nacl.signing.SigningKey(bytes([origin + 1]) * 32))
        read_at_once(mesh, "a", data)
        sent += ids
    mesh.settle()
    assert sorted(mesh.delivered["b"]) == sorted(sent)
    assert sum(e.statistics().frames_routed for e in mesh.shards["b"]) > 0
    assert all("ingress_shed" not in e.statistics().rejected for e in mesh.shards["b"])


def test_a_frame_larger_than_the_room_is_shed_and_nothing_breaks() -> None:
    mesh = linked(GossipConfig.local().replace(read_ahead_bytes=64 * 1024), "a")
    big = Message(MessageType.Binary(bytes(100_000)), "feed", timestamp=WALL, priority=0,
                  sequence=1).sign_with_ed25519(KEY)
    read_at_once(mesh, "a", wire.encode_message_frame(big.to_envelope(), hops=0))
    b = mesh.nodes["b"]
    assert b.statistics().rejected["ingress_shed"] == 1
    assert not b.has_backlog
    small, small_ids = frames(3, priority=0, first=2)
    read_at_once(mesh, "a", small)
    mesh.settle()
    assert small_ids[0] in mesh.delivered["b"]


def test_a_neighbour_that_relabels_priority_is_refused_and_cut_off() -> None:
    # The header's priority orders read-ahead; the signed one is the origin's. A bulk
    # message relabelled critical would jump every queue.
    mesh = linked(GossipConfig.local(), "a")
    message = Message(MessageType.Data(PAYLOAD), "feed", timestamp=WALL, priority=0,
                      sequence=1).sign_with_ed25519(KEY)
    honest = wire.encode_message_frame(message.to_envelope(), hops=0)
    relabelled = bytearray(honest)
    relabelled[7] = 255  # length (4), version, kind, flags, priority
    read_at_once(mesh, "a", bytes(relabelled))
    mesh.settle()
    b = mesh.nodes["b"]
    assert mesh.delivered["b"] == []
    assert b.statistics().rejected == {"bad_priority": 1}
    assert b.statistics().peers == 0


def test_every_link_gets_turns_however_many_wait() -> None:
    senders = [f"s{i}" for i in range(20)]
    mesh = linked(GossipConfig.local(), *senders)
    for i, name in enumerate(senders):
        data, _ = frames(50, priority=0, source=f"feed-{i}",
                         key=nacl.signing.SigningKey(bytes([i + 1]) * 32))
        read_at_once(mesh, name, data)
    b = mesh.nodes["b"]
    for _ in range(10):  # 160 frames: 8 for each of 20 links, were turns fair
        b.process_backlog(now=mesh.now)
    by_source: dict[str, int] = {}
    for delivery in b.take_deliveries():
        by_source[delivery.envelope.source] = by_source.get(delivery.envelope.source, 0) + 1
    assert len(by_source) == 20
    assert max(by_source.values()) - min(by_source.values()) <= 1


def test_a_frame_that_closes_another_waiting_link_breaks_no_turn() -> None:
    # A revocation handled from one link closes another peer's link, whose waiting
    # frames are then handed in: the turn in progress must go on without them.
    mesh = linked(GossipConfig.local(), "a", "c")
    for name, seed in (("a", 1), ("c", 2)):
        data, _ = frames(5, priority=0, source=f"feed-{name}",
                         key=nacl.signing.SigningKey(bytes([seed]) * 32))
        read_at_once(mesh, name, data)
    b = mesh.nodes["b"]
    handle = b._on_message
    closed: list[bool] = []

    def closing_other_peer(*args: object) -> None:
        if not closed:
            closed.append(True)  # before: c's frames handed in go through here too
            assert b.disconnect_peer(mesh.nodes["c"].identity.public_key, "revoked")
        handle(*args)  # type: ignore[arg-type]

    b._on_message = closing_other_peer  # type: ignore[method-assign]
    while b.has_backlog:
        b.process_backlog(now=mesh.now)
    assert closed == [True]
    assert len(b.take_deliveries()) == 10


def test_what_waits_from_a_peer_cut_off_for_its_conduct_is_dropped_and_counted() -> None:
    mesh = linked(GossipConfig.local(), "a")
    good, _ = frames(10, priority=0, first=2)
    forged = bytearray(frames(1, priority=0)[0])
    forged[-1] ^= 1  # the payload changed after signing
    read_at_once(mesh, "a", bytes(forged) + good)
    mesh.settle()
    b = mesh.nodes["b"]
    assert mesh.delivered["b"] == []
    assert b.statistics().rejected == {"bad_signature": 1, "closed_link_backlog": 10}
    assert b.backlog_bytes == 0


# --- the broadcast tree and what waits here ---------------------------------------------

TREE = GossipConfig.local().replace(anti_entropy_interval=3600.0, lazy_timeout=0.2,
                                    graft_retry=0.3)


def ihave(message_id: bytes, key: nacl.signing.SigningKey = KEY, source: str = "feed") -> bytes:
    tag = wire.stream_tag(bytes(key.verify_key), source.encode())
    return wire.encode_tree_frame(wire.FrameKind.IHAVE, [wire.encode_tree_entry(message_id, tag)])


def one_turn_later(mesh: Mesh, seconds: float) -> None:
    """The clock moves on and b runs its timer once: one share of the backlog, then what
    is due (no settling, which would work through the whole backlog first)."""
    mesh.now += seconds
    mesh.nodes["b"].handle_timer(now=mesh.now)


def test_no_graft_for_a_message_waiting_in_this_nodes_own_backlog() -> None:
    # The tree pushes the message from a; it is read behind bulk and waits. c announces
    # it meanwhile (control frames are handled as read). GRAFTing it would count a
    # broken promise against c later, for a copy that only our own overload holds.
    mesh = linked(TREE, "a", "c")
    b = mesh.nodes["b"]
    data, ids = frames(60, priority=0)
    read_at_once(mesh, "a", data)
    read_at_once(mesh, "c", ihave(ids[-1]))
    assert b.statistics().tree.missing == 1  # type: ignore[union-attr]
    one_turn_later(mesh, TREE.lazy_timeout + 0.01)
    assert b.has_backlog, "the announced message still waits"
    one_turn_later(mesh, TREE.graft_retry + 0.01)
    assert b.has_backlog
    tree = b.statistics().tree
    assert tree is not None
    assert (tree.grafts_sent, tree.broken_promises) == (0, 0)
    assert tree.grafts_held == 2
    mesh.settle()
    assert sorted(mesh.delivered["b"]) == sorted(ids)
    assert b.statistics().tree.missing == 0  # type: ignore[union-attr]


def test_a_graft_answer_waiting_in_this_nodes_backlog_is_no_broken_promise() -> None:
    mesh = linked(TREE, "a", "c")
    b = mesh.nodes["b"]
    wanted = Message(MessageType.Data(PAYLOAD), "feed", timestamp=WALL, priority=0,
                     sequence=100).sign_with_ed25519(KEY)
    wanted_id = bytes.fromhex(wanted.id)
    read_at_once(mesh, "c", ihave(wanted_id))
    read_at_once(mesh, "a", ihave(wanted_id))
    one_turn_later(mesh, TREE.lazy_timeout + 0.01)
    assert b.statistics().tree.grafts_sent == 1  # type: ignore[union-attr]
    # c answers at once, but behind bulk it sent before: the answer waits here.
    bulk, _ = frames(60, priority=0, source="c-feed",
                     key=nacl.signing.SigningKey(bytes([7]) * 32))
    answer = wire.encode_message_frame(wanted.to_envelope(), hops=0, repair=True)
    read_at_once(mesh, "c", bulk + answer)
    one_turn_later(mesh, TREE.graft_retry + 0.01)
    assert b.has_backlog, "the answer still waits"
    tree = b.statistics().tree
    assert tree is not None
    assert (tree.grafts_sent, tree.broken_promises, tree.grafts_held) == (1, 0, 1)
    mesh.settle()
    assert wanted_id in mesh.delivered["b"]


def test_a_message_missing_while_bulk_waits_is_grafted_on_time() -> None:
    # What waits holds back only its own ids: a critical alert lost on its push (never
    # in the backlog, as critical frames are handled as read) is repaired at the lazy
    # timeout, however much bulk waits.
    mesh = linked(TREE, "a", "c")
    b = mesh.nodes["b"]
    _, [lost_id] = frames(1, priority=255, first=500)
    bulk, _ = frames(60, priority=0)
    read_at_once(mesh, "a", bulk)
    read_at_once(mesh, "c", ihave(lost_id))
    one_turn_later(mesh, TREE.lazy_timeout + 0.01)
    assert b.has_backlog
    assert b.statistics().tree.grafts_sent == 1  # type: ignore[union-attr]


def test_a_waiting_message_shed_is_grafted_at_its_next_deadline() -> None:
    room = 64 * 1024
    mesh = linked(TREE.replace(read_ahead_bytes=room), "a", "c")
    b = mesh.nodes["b"]
    target, [target_id] = frames(1, priority=0)
    ahead, _ = frames(60, priority=100, first=2)  # handled first, target waits
    read_at_once(mesh, "a", target + ahead)
    read_at_once(mesh, "c", ihave(target_id))
    one_turn_later(mesh, TREE.lazy_timeout + 0.01)
    tree = b.statistics().tree
    assert tree is not None
    assert (tree.grafts_sent, tree.grafts_held) == (0, 1)
    flood, _ = frames(1000, priority=0, source="flood",
                      key=nacl.signing.SigningKey(bytes([9]) * 32))
    read_at_once(mesh, "a", flood)  # the target, oldest of the lowest band, goes first
    assert b.statistics().rejected["ingress_shed"] > 0
    one_turn_later(mesh, TREE.graft_retry + 0.01)
    tree = b.statistics().tree
    assert tree is not None
    assert (tree.grafts_sent, tree.grafts_held, tree.broken_promises) == (1, 1, 0)


def test_the_ids_read_for_the_tree_count_in_the_room() -> None:
    room = 64 * 1024
    mesh = linked(TREE.replace(read_ahead_bytes=room), "a", "c")
    b = mesh.nodes["b"]
    data, ids = frames(125, priority=0)  # just under the room, without ids
    read_at_once(mesh, "a", data)
    assert "ingress_shed" not in b.statistics().rejected
    read_at_once(mesh, "c", ihave(ids[-1]))
    one_turn_later(mesh, TREE.lazy_timeout + 0.01)
    assert b.statistics().tree.grafts_held == 1  # type: ignore[union-attr]
    assert b.backlog_bytes <= room
    assert b.statistics().rejected["ingress_shed"] > 0


# --- statistics: what was read, whatever became of it ----------------------------------

def read_counts(mesh: Mesh) -> tuple[int, int]:
    stats = mesh.nodes["b"].statistics()
    return stats.frames_in, stats.bytes_in


def test_frames_are_counted_as_read_also_those_that_wait_or_are_shed() -> None:
    mesh = linked(GossipConfig.local().replace(read_ahead_bytes=64 * 1024), "a")
    bulk, _ = frames(1000, priority=0)
    critical, _ = frames(20, priority=255, first=1001)
    frames_before, bytes_before = read_counts(mesh)
    read_at_once(mesh, "a", bulk + critical)
    # Read, not yet handled: counted now.
    assert read_counts(mesh) == (frames_before + 1020, bytes_before + len(bulk + critical))
    mesh.settle()
    stats = mesh.nodes["b"].statistics()
    assert stats.rejected["ingress_shed"] > 0
    assert (stats.frames_in, stats.bytes_in) == (frames_before + 1020,
                                                 bytes_before + len(bulk + critical))


def test_frames_dropped_with_a_closing_link_were_counted_as_read() -> None:
    mesh = linked(GossipConfig.local(), "a")
    bulk, _ = frames(FLUSH_LIMIT + 100, priority=0)
    frames_before, bytes_before = read_counts(mesh)
    read_at_once(mesh, "a", bulk)
    mesh.nodes["b"].close_link(mesh.link_of("b", "a"), now=mesh.now)
    assert mesh.nodes["b"].statistics().rejected["closed_link_backlog"] == 100
    assert read_counts(mesh) == (frames_before + FLUSH_LIMIT + 100, bytes_before + len(bulk))


def test_frames_dropped_from_a_peer_cut_off_were_counted_as_read() -> None:
    mesh = linked(GossipConfig.local(), "a")
    good, _ = frames(10, priority=0, first=2)
    forged = bytearray(frames(1, priority=0)[0])
    forged[-1] ^= 1
    frames_before, bytes_before = read_counts(mesh)
    read_at_once(mesh, "a", bytes(forged) + good)
    mesh.settle()
    assert mesh.nodes["b"].statistics().rejected["closed_link_backlog"] == 10
    assert read_counts(mesh) == (frames_before + 11, bytes_before + len(forged) + len(good))


def test_a_sharded_node_counts_each_frame_once_where_it_was_read() -> None:
    mesh = Mesh(GossipConfig.local())
    mesh.add("b", shards=2)
    mesh.add("a")
    mesh.connect("a", "b")
    mesh.settle()
    before = [(e.statistics().frames_in, e.statistics().bytes_in) for e in mesh.shards["b"]]
    data = b""
    for origin in range(8):  # streams of both workers of b
        part, _ = frames(5, priority=0, source=f"feed-{origin}",
                         key=nacl.signing.SigningKey(bytes([origin + 1]) * 32))
        data += part
    read_at_once(mesh, "a", data)
    mesh.settle()
    after = [(e.statistics().frames_in, e.statistics().bytes_in) for e in mesh.shards["b"]]
    assert sum(f for f, _ in after) - sum(f for f, _ in before) == 40
    assert sum(b for _, b in after) - sum(b for _, b in before) == len(data)


def test_a_digest_read_behind_its_senders_waiting_messages_asks_for_none_of_them() -> None:
    # A busy node reads a neighbour's messages and, behind them, its digest: the digest
    # is handled at once, the messages wait. What they carry must not be asked for
    # again as lacking, or every anti-entropy round under load sends them twice.
    mesh = linked(GossipConfig.local(), "a")
    a, b = mesh.nodes["a"], mesh.nodes["b"]
    messages = [Message(MessageType.Data(PAYLOAD), "feed", timestamp=WALL,
                        sequence=i + 1).sign_with_ed25519(KEY) for i in range(200)]
    for message in messages:
        a.broadcast(message.to_envelope(), now=mesh.now)
    # a's anti-entropy round falls before b reads: its digest follows the messages.
    mesh.now += mesh.config.anti_entropy_interval
    a.handle_timer(now=mesh.now)
    mesh.settle()
    assert sorted(mesh.delivered["b"]) == sorted(bytes.fromhex(m.id) for m in messages)
    assert b.statistics().duplicates == 0
    assert a.statistics().repairs_sent == 0


def test_a_shaped_link_under_load_still_carries_its_periodic_digests() -> None:
    # Behind a rate limit the higher bands take the whole allowance on every flush: a
    # digest put in the lowest band to go behind the queued messages never went at all.
    # A shaped link needs no such ordering: its sender defers repairs while frames wait
    # for it (repair_deferred), so a digest read first brings nothing twice.
    config = GossipConfig.local()
    shaped = config.replace(max_link_send_rate=10_000, link_queue_bytes=1 << 20)
    mesh = Mesh(config)
    mesh.add("b")
    mesh.add("a", shaped)
    mesh.connect("a", "b")
    mesh.settle()
    a, b = mesh.nodes["a"], mesh.nodes["b"]
    digests_read = 0
    on_digest = b._on_digest

    def counted(state: object, frame: wire.Frame, now: float) -> None:
        nonlocal digests_read
        digests_read += 1
        on_digest(state, frame, now)  # type: ignore[arg-type]

    b._on_digest = counted  # type: ignore[method-assign]
    sequence = 0
    for _ in range(100):  # 10 s at about 54 KB/s against the link's 10 KB/s
        for _ in range(6):
            sequence += 1
            message = Message(MessageType.Data("x" * 900), "feed", sequence=sequence,
                              timestamp=WALL + mesh.now - 100.0).sign_with_ed25519(KEY)
            a.broadcast(message.to_envelope(), now=mesh.now)
        mesh.settle()
        mesh.step(0.1)
    rounds = 10.0 / config.anti_entropy_interval
    assert digests_read >= rounds / 2
