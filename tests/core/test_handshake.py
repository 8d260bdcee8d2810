"""The link handshake and sealed records (core/handshake.py), attacked as a peer or an
on-path host would."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from somasync.core import wire
from somasync.core.crypto import Identity
from somasync.core.handshake import MAX_RECORD, Handshake, PeerHello, Session
from somasync.errors import DecodeError

ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([2]) * 32)


def pair(*, alice_plain: bool = False, bob_plain: bool = False
         ) -> tuple[Handshake, Handshake, bytes, bytes]:
    """Alice dials Bob; returns both handshakes and what each sent (E then AUTH)."""
    alice = Handshake(ALICE, "alice", "127.0.0.1:1", dialer=True, plaintext=alice_plain)
    bob = Handshake(BOB, "bob", "127.0.0.1:2", dialer=False, plaintext=bob_plain)
    alice_sent, bob_sent = alice.initial_bytes(), bob.initial_bytes()
    alice_auth, bob_auth = alice.receive(bob_sent), bob.receive(alice_sent)
    alice.receive(bob_auth)
    bob.receive(alice_auth)
    return alice, bob, alice_sent + alice_auth, bob_sent + bob_auth


def sessions() -> tuple[Session, Session]:
    alice, bob, _, _ = pair()
    assert alice.session is not None
    assert bob.session is not None
    return alice.session, bob.session


def test_both_sides_learn_who_the_other_proved_to_be() -> None:
    alice, bob, _, _ = pair()
    assert alice.session is not None
    assert bob.session is not None
    assert alice.session.peer == PeerHello(BOB.public_key, "bob", "127.0.0.1:2")
    assert bob.session.peer == PeerHello(ALICE.public_key, "alice", "127.0.0.1:1")
    assert alice.session.sealed
    assert bob.session.sealed


def test_records_carry_frames_both_ways_in_any_chunking() -> None:
    a, b = sessions()
    records = a.seal(b"x" * 1000) + a.seal(b"y")
    got = b"".join(b.open(records[i:i + 7]) for i in range(0, len(records), 7))
    assert got == b"x" * 1000 + b"y"
    assert a.open(b.seal(b"back")) == b"back"


@given(chunks=st.lists(st.binary(min_size=1, max_size=3000), max_size=8),
       cut=st.integers(min_value=1, max_value=500))
def test_open_returns_exactly_what_was_sealed(chunks: list[bytes], cut: int) -> None:
    a, b = sessions()
    stream = b"".join(a.seal(chunk) for chunk in chunks)
    got = b"".join(b.open(stream[i:i + cut]) for i in range(0, len(stream), cut))
    assert got == b"".join(chunks)
    assert b.buffered == 0


def test_a_large_write_is_split_into_bounded_records() -> None:
    a, b = sessions()
    data = bytes(range(256)) * (MAX_RECORD // 256 * 2 + 3)
    sealed = a.seal(data)
    assert len(sealed) > len(data) + 3 * 20 - 1  # three records, 20 bytes of overhead each
    assert b.open(sealed) == data


def test_nothing_of_either_identity_travels_in_clear() -> None:
    _, _, alice_sent, bob_sent = pair()
    for needle in (b"alice", b"bob", ALICE.public_key, BOB.public_key, b"127.0.0.1"):
        assert needle not in alice_sent + bob_sent


def test_a_replayed_handshake_is_refused() -> None:
    """Everything Alice sent to Bob, captured and replayed on a new connection, does not
    make the replayer Alice: Bob's fresh ephemeral key is not the one Alice signed."""
    _, _, alice_sent, _ = pair()
    bob = Handshake(BOB, "bob", None, dialer=False)
    bob.initial_bytes()
    with pytest.raises(DecodeError) as caught:
        bob.receive(alice_sent)
    assert caught.value.reason == "bad_handshake"
    assert bob.session is None


def test_a_handshake_reflected_back_at_its_sender_is_refused() -> None:
    alice = Handshake(ALICE, "alice", None, dialer=True)
    sent = alice.initial_bytes()
    auth = alice.receive(sent)  # our own E as the peer's
    with pytest.raises(DecodeError):
        alice.receive(auth)


def test_a_signature_by_another_key_is_refused() -> None:
    """An AUTH that opens (the sender did the DH) but names a key it cannot sign for."""
    class Impostor(Identity):
        def sign(self, domain: bytes, data: bytes) -> bytes:
            return BOB.sign(domain, data)

    mallory = Handshake(Impostor(bytes([3]) * 32), "alice", None, dialer=True)
    bob = Handshake(BOB, "bob", None, dialer=False)
    mallory_auth = mallory.receive(bob.initial_bytes())
    bob.receive(mallory.initial_bytes())
    with pytest.raises(DecodeError) as caught:
        bob.receive(mallory_auth)
    assert caught.value.reason == "bad_signature"


@pytest.mark.parametrize("position", [0, 3, 4, 20, -1])
def test_a_flipped_byte_in_a_record_fails_it(position: int) -> None:
    a, b = sessions()
    record = bytearray(a.seal(b"an alert"))
    record[position] ^= 0x01
    with pytest.raises(DecodeError) as caught:
        # A longer length waits for more bytes: the next record's are taken for it.
        b.open(bytes(record) + a.seal(b"the next one"))
    assert caught.value.reason in ("bad_record", "record_too_large")


def test_replayed_dropped_or_reordered_records_fail() -> None:
    a, b = sessions()
    first, second = a.seal(b"one"), a.seal(b"two")
    assert b.open(first) == b"one"
    with pytest.raises(DecodeError):
        b.open(first)  # replayed
    a, b = sessions()
    first, second = a.seal(b"one"), a.seal(b"two")
    with pytest.raises(DecodeError):
        b.open(second)  # the first was dropped, or they were swapped


def test_a_record_length_past_the_bound_is_refused_before_buffering() -> None:
    _, b = sessions()
    with pytest.raises(DecodeError) as caught:
        b.open((MAX_RECORD + 17).to_bytes(4, "big") + b"x" * 10)
    assert caught.value.reason == "record_too_large"
    assert b.buffered == 0


def test_a_plaintext_v1_peer_is_named_as_such() -> None:
    bob = Handshake(BOB, "bob", None, dialer=False)
    old_hello = wire.encode_frame(wire.FrameKind.HELLO, b"\x00" * 120)
    with pytest.raises(DecodeError) as caught:
        bob.receive(old_hello)
    assert caught.value.reason == "plaintext_peer"


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"SSY\x01" + bytes(33), b"\xffxx"])
def test_anything_else_is_not_our_handshake(data: bytes) -> None:
    bob = Handshake(BOB, "bob", None, dialer=False)
    with pytest.raises(DecodeError) as caught:
        bob.receive(data)
    assert caught.value.reason == "bad_handshake"


def test_a_low_order_ephemeral_key_is_refused() -> None:
    bob = Handshake(BOB, "bob", None, dialer=False)
    with pytest.raises(DecodeError) as caught:
        bob.receive(b"SSY\x02\x00" + bytes(32))
    assert caught.value.reason == "bad_handshake"


def test_an_oversized_auth_is_refused_before_it_is_buffered() -> None:
    alice = Handshake(ALICE, "alice", None, dialer=True)
    bob = Handshake(BOB, "bob", None, dialer=False)
    bob.receive(alice.initial_bytes())
    with pytest.raises(DecodeError) as caught:
        bob.receive(b"\xff\xff")
    assert caught.value.reason == "bad_handshake"


def test_plaintext_records_only_when_both_sides_ask() -> None:
    alice, bob, _, _ = pair(alice_plain=True, bob_plain=False)
    assert alice.session is not None
    assert bob.session is not None
    assert alice.session.sealed
    assert bob.session.sealed
    alice, bob, _, _ = pair(alice_plain=True, bob_plain=True)
    assert alice.session is not None
    assert bob.session is not None
    assert not alice.session.sealed
    assert bob.session.open(alice.session.seal(b"frames")) == b"frames"


def test_an_exported_session_goes_on_where_it_left_off() -> None:
    """How a sharded node's supervisor hands a link to a worker."""
    a, b = sessions()
    assert b.open(a.seal(b"before")) == b"before"
    b_moved = Session.restore(b.export())
    assert b_moved.peer == b.peer
    assert b_moved.open(a.seal(b"after")) == b"after"
    assert a.open(b_moved.seal(b"reply")) == b"reply"


def test_a_truncated_export_is_a_decode_error() -> None:
    a, _ = sessions()
    with pytest.raises(DecodeError):
        Session.restore(a.export()[:50])
