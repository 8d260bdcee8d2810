"""A node answers a peer with at most AMPLIFICATION_LIMIT bytes per byte that peer sent it,
over the link's life (QUIC's anti-amplification rule), and an honest node that lacks much
pays for its answers with padded digests and still catches up."""

from __future__ import annotations

import nacl.signing
import pytest

from somasync.core import wire
from somasync.core.endpoint import AMPLIFICATION_LIMIT
from somasync.core.payload import MessageType
from somasync.errors import DecodeError
from somasync.message import Message
from somasync.testing import WALL, Mesh, Wire

KEY = nacl.signing.SigningKey(bytes(range(32)))
PAYLOAD = "x" * 300


def _holder(mesh: Mesh, count: int, *, shards: int = 1) -> list[bytes]:
    """Node ``a`` holding ``count`` messages of one origin, before anyone links to it;
    their ids."""
    mesh.add("a", shards=shards)
    ids = []
    for sequence in range(1, count + 1):
        message = Message(MessageType.Data(PAYLOAD), "origin", timestamp=WALL, ttl=3600,
                          sequence=sequence).sign_with_ed25519(KEY)
        ids.append(mesh.nodes["a"].broadcast(message.to_envelope(), now=mesh.now))
    mesh.settle()
    return ids


def _link(mesh: Mesh) -> Wire:
    return _link_to(mesh, "a")


def _link_to(mesh: Mesh, holder: str) -> Wire:
    mesh.add("b")
    wire_ = mesh.connect("b", holder)
    mesh.settle()
    return wire_


def _rejected(mesh: Mesh, name: str, reason: str) -> int:
    return sum(e.statistics().rejected.get(reason, 0) for e in mesh.shards[name])


@pytest.mark.parametrize("shards", [1, 2])
def test_empty_digests_get_at_most_ten_bytes_per_byte_sent(shards: int) -> None:
    """Before: each 11-byte empty DIGEST got the 200 messages a holds (up to 8 back to
    back): 8 x 200 x 450 bytes for a few hundred bytes of handshake and digests."""
    mesh = Mesh()
    _holder(mesh, 200, shards=shards)
    link = _link(mesh)
    empty = wire.encode_digest({}, reply=True)
    for _ in range(20):
        mesh.inject("a", mesh.link_of("a", "b"), empty)
    mesh.settle()
    to_b, to_a = link.received["b"], link.received["a"]
    assert to_b <= AMPLIFICATION_LIMIT * to_a, (to_b, to_a)
    assert _rejected(mesh, "a", "answer_over_credit") > 0


def test_a_graft_of_many_stored_ids_is_answered_within_the_credit() -> None:
    mesh = Mesh()
    ids = _holder(mesh, 200)[:100]
    link = _link(mesh)
    tag = wire.stream_tag(KEY.verify_key.encode(), b"origin")
    graft = wire.encode_tree_frame(wire.FrameKind.GRAFT,
                                   [wire.encode_tree_entry(i, tag) for i in ids])
    mesh.inject("a", mesh.link_of("a", "b"), graft)
    mesh.settle()
    to_b, to_a = link.received["b"], link.received["a"]
    assert to_b <= AMPLIFICATION_LIMIT * to_a, (to_b, to_a)
    assert _rejected(mesh, "a", "answer_over_credit") > 0


@pytest.mark.parametrize("shards", [1, 2])
def test_a_node_that_lacks_much_pays_with_padded_digests_and_catches_up(
        shards: int) -> None:
    mesh = Mesh()
    _holder(mesh, 300, shards=shards)
    link = _link(mesh)
    for _ in range(40):
        if len(mesh.delivered["b"]) == 300:
            break
        mesh.step(mesh.config.anti_entropy_interval)
    # The credit held answers back (a's handshake-sized credit cannot carry 300
    # messages), and b's padded digests, asked for by a's notices, brought them all.
    assert len(mesh.delivered["b"]) == 300
    assert link.received["b"] <= AMPLIFICATION_LIMIT * link.received["a"]
    assert _rejected(mesh, "a", "answer_over_credit") > 0


def test_a_padded_digest_decodes_and_trailing_bytes_without_the_flag_do_not() -> None:
    stream = (bytes(32), "s")
    padded = wire.encode_digest({stream: [(1, 4)]}, reply=False, padding=1000)
    frame = wire.decode_frame(padded[wire.LENGTH_PREFIX.size:])
    assert frame.flags & wire.FLAG_PADDED
    assert len(padded) > 1000
    assert wire.decode_digest(frame).streams == {stream: ((1, 4),)}
    unflagged = wire.Frame(frame.kind, frame.flags & ~wire.FLAG_PADDED, frame.priority,
                           frame.hops, frame.payload)
    with pytest.raises(DecodeError, match="trailing"):
        wire.decode_digest(unflagged)


def test_a_peer_claiming_much_buys_padded_digests_only_within_its_credit() -> None:
    """A digest claiming a million messages of a stream makes the node pad its replies
    and its own rounds of digests to that peer, for an answer that never comes: the
    padding is paid from the credit the peer earned, so it stays within ten times what
    the peer sent, over every anti-entropy round that follows."""
    mesh = Mesh()
    _holder(mesh, 20)
    link = _link(mesh)
    claim = wire.encode_digest({(KEY.verify_key.encode(), "origin"): [(1, 1_000_000)]},
                               reply=False, partial=True)
    for _ in range(5):
        mesh.inject("a", mesh.link_of("a", "b"), claim)
        mesh.step(mesh.config.anti_entropy_interval)
    to_b, to_a = link.received["b"], link.received["a"]
    assert to_b <= AMPLIFICATION_LIMIT * to_a, (to_b, to_a)


@pytest.mark.parametrize("size", [60_000, 300_000, 900_000])
def test_a_large_message_lost_on_its_push_is_repaired_within_the_gap_timeout(
        size: int) -> None:
    """A review found that a message much larger than the asker's running mean was never
    repaired on a quiet link: the asker padded for an average message and the holder,
    short of credit, sent nothing. Now the holder says how many bytes it holds back
    (FLAG_WITHHELD), and the two sides' credit grows tenfold each exchange."""
    mesh = Mesh()
    mesh.add("a")
    link = _link_to(mesh, "a")
    key = KEY

    def publish(sequence: int, payload: str) -> bytes:
        message = Message(MessageType.Data(payload), "origin", timestamp=WALL, ttl=3600,
                          sequence=sequence).sign_with_ed25519(key)
        return mesh.nodes["a"].broadcast(message.to_envelope(), now=mesh.now)

    publish(1, "small")
    mesh.settle()
    link.drop = True
    big = publish(2, "x" * size)
    mesh.settle()
    link.drop = False
    publish(3, "small")
    mesh.settle()
    assert big not in mesh.delivered["b"]
    start = mesh.now
    while big not in mesh.delivered["b"] and mesh.now - start < mesh.config.gap_timeout:
        mesh.step(mesh.config.anti_entropy_interval)
    assert big in mesh.delivered["b"]
    assert link.received["b"] <= AMPLIFICATION_LIMIT * link.received["a"]


def test_a_sharded_nodes_workers_answer_from_their_share_and_count_what_went() -> None:
    """A review found that a worker not owning the connection routed its whole batch of
    repairs to the owner, which dropped what the credit did not cover, while
    ``repairs_sent`` counted every one."""
    mesh = Mesh()
    _holder(mesh, 200, shards=2)
    link = _link(mesh)
    for _ in range(8):
        mesh.inject("a", mesh.link_of("a", "b"), wire.encode_digest({}, reply=True))
    mesh.settle()
    repairs = sum(e.statistics().repairs_sent for e in mesh.shards["a"])
    repaired_at_b = mesh.nodes["b"].statistics().duplicates + len(mesh.delivered["b"])
    assert repairs <= repaired_at_b
    assert link.received["b"] <= AMPLIFICATION_LIMIT * link.received["a"]
