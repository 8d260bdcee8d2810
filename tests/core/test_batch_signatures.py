"""Batch signatures: one Ed25519 signature over a Merkle tree of an origin's messages.

Every message of a batch must verify alone, travel, be stored and be repaired like any
signed message; any change to a message or to its authenticator must be refused.
"""

from __future__ import annotations

import dataclasses
import itertools

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from somasync.core import wire
from somasync.core.crypto import Identity
from somasync.core.payload import MessageType
from somasync.errors import DecodeError, SignatureError
from somasync.message import DEFAULT_PRIORITY, Message, sign_batch
from somasync.testing import WALL, Mesh

KEY = Identity(bytes(range(32)))
OTHER = Identity(bytes(32))
PROPERTY = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def batch(count: int, *, key: Identity = KEY, source: str = "feed", first: int = 1,
          text: str = "ioc") -> list[Message]:
    return sign_batch([Message(MessageType.Data(f"{text} {i}"), source, timestamp=WALL,
                               sequence=first + i) for i in range(count)], key)


def frame_of(message: Message, *, repair: bool = False) -> bytes:
    return wire.encode_message_frame(message.to_envelope(), hops=0, repair=repair)


def chain(mesh: Mesh, names: list[str], *, shards: dict[str, int] | None = None) -> None:
    for name in names:
        mesh.add(name, shards=(shards or {}).get(name, 1))
    for a, b in itertools.pairwise(names):
        mesh.connect(a, b)
    mesh.settle()


def signature_checks(mesh: Mesh, name: str) -> tuple[int, int]:
    total = [e.statistics() for e in mesh.shards[name]]
    return (sum(s.signatures_verified for s in total), sum(s.batch_proofs for s in total))


# --- the tree ----------------------------------------------------------------------------

@pytest.mark.parametrize("count", [2, 3, 5, 8, 64, 100])
def test_every_message_of_a_batch_verifies_alone(count: int) -> None:
    signed = batch(count)
    depth = (count - 1).bit_length()
    for message in signed:
        assert len(message.signature or b"") == wire.batch_authenticator_size(count)
        assert message.verify_signature()
        # As a receiver rebuilds it from the wire.
        assert Message.from_envelope(message.to_envelope()).verify_signature()
    signatures = {m.signature[:wire.SIGNATURE_SIZE] for m in signed if m.signature}
    assert len(signatures) == 1, "one signature for the whole batch"
    assert signed[0].signature is not None
    assert signed[0].signature[64] == depth


def test_a_batch_of_one_is_an_ordinary_signature() -> None:
    (message,) = batch(1)
    assert message.signature is not None
    assert len(message.signature) == wire.SIGNATURE_SIZE
    assert message.verify_signature()


def test_a_batch_keeps_the_ids_a_single_signature_gives() -> None:
    unsigned = [Message(MessageType.Data(f"m{i}"), "feed", timestamp=WALL, sequence=i + 1)
                for i in range(4)]
    alone = [m.sign_with_ed25519(KEY).id for m in unsigned]
    assert [m.id for m in sign_batch(unsigned, KEY)] == alone


@given(count=st.integers(2, 40), data=st.data())
@PROPERTY
def test_any_change_to_a_batch_signed_message_is_refused(count: int,
                                                         data: st.DataObject) -> None:
    message = batch(count)[data.draw(st.integers(0, count - 1))]
    assert message.signature is not None
    raw = bytearray(message.signature + message.envelope_bytes)
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    flags = wire.FLAG_SIGNED | wire.FLAG_BATCH
    try:
        authenticator, body = wire.split_signed(bytes(raw), flags)
        tampered = Message.from_envelope(wire.decode_envelope(body, authenticator))
    except (DecodeError, ValueError):
        return  # refused on decoding: a malformed head or envelope
    with pytest.raises(SignatureError):
        tampered.verify_signature()


@given(count=st.integers(2, 40), data=st.data())
@PROPERTY
def test_a_proof_never_vouches_for_another_message(count: int, data: st.DataObject) -> None:
    signed = batch(count)
    i = data.draw(st.integers(0, count - 1))
    j = data.draw(st.integers(0, count - 1).filter(lambda j: j != i))
    borrowed = dataclasses.replace(signed[i], signature=signed[j].signature)
    with pytest.raises(SignatureError):
        borrowed.verify_signature()


def test_the_last_message_of_an_uneven_batch_has_one_valid_index() -> None:
    # Batch of 3 in a tree of 4 leaves: had the 4th leaf repeated the 3rd, message 2
    # would also verify as leaf 3, a second form of the same authenticator.
    last = batch(3)[2]
    assert last.signature is not None
    moved = bytearray(last.signature)
    moved[wire.SIGNATURE_SIZE + 2] = 3  # u16 index, low byte
    with pytest.raises(SignatureError):
        dataclasses.replace(last, signature=bytes(moved)).verify_signature()


def test_build_batch_refuses_sizes_it_cannot_hold() -> None:
    with pytest.raises(ValueError, match="a batch holds 2 to 65536"):
        wire.build_batch([bytes(16)])
    with pytest.raises(ValueError, match="at least one message"):
        sign_batch([], KEY)


# --- at an endpoint ------------------------------------------------------------------------

def test_a_batch_costs_each_node_one_signature_check() -> None:
    mesh = Mesh()
    chain(mesh, ["a", "b", "c"])
    signed = batch(20)
    for message in signed:
        mesh.nodes["a"].broadcast(message.to_envelope(), now=mesh.now)
    mesh.settle()
    ids = sorted(bytes.fromhex(m.id) for m in signed)
    assert sorted(mesh.delivered["b"]) == ids
    assert sorted(mesh.delivered["c"]) == ids
    assert signature_checks(mesh, "b") == (1, 19)
    assert signature_checks(mesh, "c") == (1, 19)


def _inject_and_settle(mesh: Mesh, frame: bytes) -> None:
    mesh.inject("b", mesh.link_of("b", "a"), frame)
    mesh.settle()


def _frame(authenticator: bytes, body: bytes) -> bytes:
    return wire.encode_frame(wire.FrameKind.MESSAGE, authenticator + body,
                             flags=wire.FLAG_SIGNED | wire.FLAG_BATCH,
                             priority=DEFAULT_PRIORITY)


def _forgeries() -> dict[str, bytes]:
    signed = batch(8)
    target = signed[3]
    assert target.signature is not None
    assert signed[5].signature is not None
    auth, body = target.signature, target.envelope_bytes
    flipped = bytearray(auth)
    flipped[wire.SIGNATURE_SIZE + 3 + 5] ^= 1  # a sibling hash of the proof
    other_root = batch(8, text="other")[3].signature
    assert other_root is not None
    foreign = OTHER.sign(wire.BATCH_DOMAIN, wire.batch_root(wire.message_id(body), auth)[1])
    return {
        "forged proof": _frame(bytes(flipped), body),
        "proof for another message": _frame(signed[5].signature, body),
        "proof for another root": _frame(other_root, body),
        "root signed by another key": _frame(foreign + auth[wire.SIGNATURE_SIZE:], body),
    }


@pytest.mark.parametrize("name", list(_forgeries()))
def test_forged_batch_authenticators_are_refused_and_counted(name: str) -> None:
    mesh = Mesh()
    chain(mesh, ["a", "b", "c"])
    _inject_and_settle(mesh, _forgeries()[name])
    assert mesh.delivered["b"] == []
    assert mesh.delivered["c"] == []
    assert mesh.nodes["b"].statistics().rejected == {"bad_signature": 1}


def test_a_truncated_proof_is_refused_as_such() -> None:
    mesh = Mesh()
    chain(mesh, ["a", "b"])
    message = batch(8)[2]
    assert message.signature is not None
    # Depth 3 announced, two hashes given: the envelope's head is read as the third.
    _inject_and_settle(mesh, _frame(message.signature[:-16], b""))
    assert mesh.delivered["b"] == []
    assert mesh.nodes["b"].statistics().rejected == {"truncated": 1}
    mesh = Mesh()
    chain(mesh, ["a", "b"])
    bad_head = bytearray(message.signature)
    bad_head[wire.SIGNATURE_SIZE] = 0  # depth 0
    _inject_and_settle(mesh, _frame(bytes(bad_head), message.envelope_bytes))
    assert mesh.nodes["b"].statistics().rejected == {"bad_batch": 1}


def test_a_relay_cannot_pass_on_a_corrupted_signature_under_a_verified_root() -> None:
    # b has verified the batch's root with message 0. A relay then sends message 1 with
    # the right proof but garbage in place of the signature: had b trusted the root
    # alone, it would forward the garbage, and c (without the root) would cut b off.
    mesh = Mesh()
    chain(mesh, ["a", "b", "c"])
    signed = batch(4)
    mesh.nodes["a"].broadcast(signed[0].to_envelope(), now=mesh.now)
    mesh.settle()
    assert signature_checks(mesh, "b") == (1, 0)
    auth = signed[1].signature
    assert auth is not None
    garbage = bytes(64) + auth[wire.SIGNATURE_SIZE:]
    _inject_and_settle(mesh, _frame(garbage, signed[1].envelope_bytes))
    assert len(mesh.delivered["b"]) == 1
    assert mesh.nodes["b"].statistics().rejected == {"bad_signature": 1}
    # The honest copy still gets through, on the root b already holds.
    mesh.nodes["c"].broadcast(signed[1].to_envelope(), now=mesh.now)
    mesh.settle()
    assert len(mesh.delivered["b"]) == 2
    assert mesh.nodes["c"].statistics().rejected == {}


def test_a_batch_crosses_a_sharded_node_and_is_repaired_by_anti_entropy() -> None:
    mesh = Mesh()
    chain(mesh, ["a", "b", "c"], shards={"b": 2})
    w = mesh.wires[("b", mesh.link_of("b", "c"))]
    signed = batch(16)
    for message in signed[:8]:
        mesh.nodes["a"].broadcast(message.to_envelope(), now=mesh.now)
    mesh.settle()
    w.drop = True  # c misses the rest of the batch on its tree pushes...
    for message in signed[8:]:
        mesh.nodes["a"].broadcast(message.to_envelope(), now=mesh.now)
    mesh.settle()
    assert len(mesh.delivered["c"]) == 8
    w.drop = False
    mesh.step(mesh.config.anti_entropy_interval * 3)  # ...and gets it from b's store
    ids = sorted(bytes.fromhex(m.id) for m in signed)
    assert sorted(mesh.delivered["b"]) == ids
    assert sorted(mesh.delivered["c"]) == ids
    assert mesh.nodes["c"].statistics().rejected == {}
    # The repaired copies carry their proofs: c checked the one root once.
    assert signature_checks(mesh, "c") == (1, 15)
    assert sum(e.statistics().repairs_sent for e in mesh.shards["b"]) >= 8


def test_a_single_signature_and_a_batch_mix_in_one_stream() -> None:
    mesh = Mesh()
    chain(mesh, ["a", "b"])
    key = nacl.signing.SigningKey(bytes(range(32)))
    alone = Message(MessageType.Data("alone"), "feed", timestamp=WALL,
                    sequence=100).sign_with_ed25519(key)
    for message in [*batch(3), alone, *batch(3, first=101)]:
        mesh.nodes["a"].broadcast(message.to_envelope(), now=mesh.now)
    mesh.settle()
    assert len(mesh.delivered["b"]) == 7
    assert signature_checks(mesh, "b") == (3, 4)


def test_estimated_size_is_the_frame_a_batch_signed_message_makes() -> None:
    for message in batch(5):
        frame = wire.encode_message_frame(message.to_envelope(), hops=0)
        assert message.estimated_size() == len(frame)


def test_a_frames_message_id_is_read_without_decoding_it() -> None:
    # The read-ahead backlog keys its frames by id (the tree must not GRAFT them): the
    # id peeked must be the one the receiver computes, whatever the authenticator.
    unsigned = Message(MessageType.Data("plain"), "feed", timestamp=WALL, sequence=1)
    single = Message(MessageType.Data("one"), "feed", timestamp=WALL,
                     sequence=2).sign_with_ed25519(nacl.signing.SigningKey(bytes(range(32))))
    for message in [unsigned, single, *batch(5, first=3)]:
        frame = frame_of(message)[4:]  # FrameBuffer hands frames without their prefix
        assert wire.peek_message_id(frame) == bytes.fromhex(message.id)
    proof = bytearray(frame_of(batch(2)[0])[4:])
    proof[5 + 64] = 17  # depth past MAX_BATCH_DEPTH
    assert wire.peek_message_id(bytes(proof)) is None
    assert wire.peek_message_id(frame_of(single)[4:80]) is None  # cut inside the envelope
    assert wire.peek_message_id(b"\x01\x01") is None
