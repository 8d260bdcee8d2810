"""Sealed datagrams (core/datagrams.py), attacked as an on-path host or a stranger would."""

from __future__ import annotations

import pytest

from somasync.core.crypto import Identity
from somasync.core.datagrams import OVERHEAD, WINDOW, DatagramSealer

A, B, C = (Identity(bytes([n]) * 32) for n in (1, 2, 3))
ADDRESS = {A.public_key: "10.0.0.1:7946", B.public_key: "10.0.0.2:7946",
           C.public_key: "10.0.0.3:7946"}
BY_ADDRESS = {address: key for key, address in ADDRESS.items()}
WALL = 1_800_000_000.0


def sealer(identity: Identity, *, knows: bool = True, **options: object) -> DatagramSealer:
    """A node's seal; it knows every member's key unless ``knows`` is False (a joiner
    that only has a seed's address)."""
    return DatagramSealer(identity, resolve=BY_ADDRESS.get if knows else lambda _: None,
                          **options)  # type: ignore[arg-type]


def sent_by(s: DatagramSealer, data: bytes, to: Identity, *, now: float = 0.0,
            wall: float = WALL) -> bytes:
    s.seal(ADDRESS[to.public_key], data, now=now, wall=wall)
    [(address, datagram)] = s.take()
    assert address == ADDRESS[to.public_key]
    return datagram


def test_a_sealed_datagram_opens_for_its_recipient_only_and_proves_its_sender() -> None:
    a, b, c = sealer(A), sealer(B), sealer(C)
    datagram = sent_by(a, b"\x01 alive node-a", B)
    assert len(datagram) == len(b"\x01 alive node-a") + OVERHEAD
    assert b"node-a" not in datagram
    assert b.open(ADDRESS[A.public_key], datagram, now=0.0, wall=WALL) == (
        A.public_key, b"\x01 alive node-a")
    assert c.open(ADDRESS[A.public_key], datagram, now=0.0, wall=WALL) is None
    assert c.statistics().rejected == {"bad_seal": 1}


@pytest.mark.parametrize("position", [0, 1, 40, 60, -1])
def test_any_altered_byte_is_refused(position: int) -> None:
    a, b = sealer(A), sealer(B)
    datagram = bytearray(sent_by(a, b"ping", B))
    datagram[position] ^= 0x01
    assert b.open("10.0.0.1:7946", bytes(datagram), now=0.0, wall=WALL) is None
    assert sum(b.statistics().rejected.values()) == 1


def test_a_replayed_datagram_is_refused_even_out_of_order() -> None:
    a, b = sealer(A), sealer(B)
    first, second = sent_by(a, b"one", B), sent_by(a, b"two", B)
    assert b.open("x", second, now=0.0, wall=WALL) is not None
    assert b.open("x", first, now=0.0, wall=WALL) is not None  # late, but not seen yet
    assert b.open("x", first, now=0.0, wall=WALL) is None
    assert b.open("x", second, now=0.0, wall=WALL) is None
    assert b.statistics().rejected == {"replayed": 2}


def test_a_datagram_older_than_the_window_is_refused() -> None:
    a, b = sealer(A), sealer(B)
    old = sent_by(a, b"old", B)
    for _ in range(WINDOW):
        assert b.open("x", sent_by(a, b"newer", B), now=0.0, wall=WALL) is not None
    assert b.open("x", old, now=0.0, wall=WALL) is None
    assert b.statistics().rejected == {"replayed": 1}


def test_a_captured_datagram_replayed_later_to_a_fresh_node_is_stale() -> None:
    captured = sent_by(sealer(A), b"suspect b", B)
    restarted_b = sealer(B, max_age=60.0)
    assert restarted_b.open("x", captured, now=0.0, wall=WALL + 61) is None
    assert restarted_b.statistics().rejected == {"stale": 1}


def test_a_restarted_sender_goes_on_past_its_old_counters() -> None:
    b = sealer(B)
    assert b.open("x", sent_by(sealer(A), b"before", B, wall=WALL), now=0, wall=WALL)
    assert b.open("x", sent_by(sealer(A), b"after restart", B, wall=WALL + 0.5), now=0,
                  wall=WALL + 0.5)


def test_an_unsealed_datagram_is_refused() -> None:
    b = sealer(B)
    assert b.open("x", b"\x01\x01" + bytes(40), now=0.0, wall=WALL) is None
    assert b.open("x", b"", now=0.0, wall=WALL) is None
    assert b.statistics().rejected == {"unsealed": 2}


def test_a_key_outside_the_policy_is_refused_before_anything_is_computed() -> None:
    b = sealer(B, admit=lambda key: key != C.public_key)
    assert b.open("x", sent_by(sealer(C), b"hello", B), now=0.0, wall=WALL) is None
    assert b.statistics().rejected == {"not_admitted": 1}


def test_an_unknown_address_is_asked_whois_and_held_datagrams_follow_the_answer() -> None:
    joiner, seed = sealer(A, knows=False), sealer(B)
    seed_address = ADDRESS[B.public_key]
    joiner.seal(seed_address, b"push: my state", now=0.0, wall=WALL)
    joiner.seal(seed_address, b"second", now=0.1, wall=WALL)
    [(to, whois)] = joiner.take()  # one question, both datagrams held
    assert to == seed_address
    assert seed.open(ADDRESS[A.public_key], whois, now=0.0, wall=WALL) is None
    [(back, iam)] = seed.take()
    assert back == ADDRESS[A.public_key]
    assert len(iam) == len(whois)  # the answer amplifies nothing
    assert joiner.open(seed_address, iam, now=0.2, wall=WALL) is None
    held = joiner.take()
    assert [seed.open(ADDRESS[A.public_key], d, now=0.2, wall=WALL) for _, d in held] == [
        (A.public_key, b"push: my state"), (A.public_key, b"second")]
    assert joiner.statistics().keys_learned == 1
    assert joiner.key_of(seed_address) == B.public_key


def test_an_iam_nobody_asked_for_or_signed_by_another_key_teaches_nothing() -> None:
    joiner, seed, stranger = sealer(A, knows=False), sealer(B), sealer(C)
    seed_address = ADDRESS[B.public_key]
    # Unasked: a stranger pushes its key for the seed's address.
    stranger.open("10.0.0.1:7946", _whois_from(sealer(A, knows=False), seed_address),
                  now=0.0, wall=WALL)
    [(_, unasked)] = stranger.take()
    assert joiner.open(seed_address, unasked, now=0.0, wall=WALL) is None
    assert joiner.key_of(seed_address) is None
    # Asked, but the answer's signature does not cover this joiner's challenge and key.
    joiner.seal(seed_address, b"push", now=0.0, wall=WALL)
    [(_, whois)] = joiner.take()
    seed.open("10.0.0.1:7946", whois, now=0.0, wall=WALL)
    [(_, iam)] = seed.take()
    forged = iam[:1] + C.public_key + iam[33:]
    assert joiner.open(seed_address, forged, now=0.0, wall=WALL) is None
    assert joiner.key_of(seed_address) is None
    assert joiner.statistics().rejected == {"unasked_iam": 1, "bad_iam": 1}


def _whois_from(asker: DatagramSealer, address: str) -> bytes:
    asker.seal(address, b"x", now=0.0, wall=WALL)
    [(_, whois)] = asker.take()
    return whois


def test_answers_are_rate_limited() -> None:
    seed = sealer(B)
    whois = _whois_from(sealer(A, knows=False), ADDRESS[B.public_key])
    for _ in range(500):
        seed.open("10.0.0.1:7946", whois, now=0.0, wall=WALL)
    answered = len(seed.take())
    assert 0 < answered < 500
    assert seed.statistics().rejected == {"iam_limited": 500 - answered}
    seed.open("10.0.0.1:7946", whois, now=1.0, wall=WALL)  # the bucket refills
    assert len(seed.take()) == 1


def test_datagrams_for_an_address_that_never_answers_are_bounded_and_dropped() -> None:
    joiner = sealer(A, knows=False)
    for i in range(100):
        joiner.seal("10.9.9.9:1", b"push %d" % i, now=i * 0.01, wall=WALL)
    whois = joiner.take()
    assert 1 <= len(whois) <= 2  # at most one question a second
    assert joiner.statistics().held_dropped == 100 - 16


def test_datagrams_sent_far_apart_may_still_arrive_out_of_order() -> None:
    a, b = sealer(A), sealer(B)
    early = sent_by(a, b"early", B, wall=WALL)
    late = sent_by(a, b"late", B, wall=WALL + 0.5)  # half a second later, by a's clock
    assert b.open("x", late, now=0.0, wall=WALL + 0.5) is not None
    assert b.open("x", early, now=0.0, wall=WALL + 0.5) is not None
    assert b.statistics().rejected == {}


def test_a_previous_life_of_the_sender_cannot_be_replayed() -> None:
    first_life = sealer(A)
    captured = sent_by(first_life, b"old", B, wall=WALL)
    b = sealer(B)
    assert b.open("x", sent_by(sealer(A), b"new life", B, wall=WALL + 5), now=0,
                  wall=WALL + 5) is not None
    assert b.open("x", captured, now=0, wall=WALL + 6) is None
    assert b.statistics().rejected == {"replayed": 1}


def test_a_sender_whose_clock_went_back_is_heard_again_once_its_old_life_is_stale() -> None:
    b = sealer(B, max_age=60.0)
    assert b.open("x", sent_by(sealer(A), b"before", B, wall=WALL), now=0, wall=WALL)
    set_back = sealer(A)  # restarted with its clock 30 s behind
    assert b.open("x", sent_by(set_back, b"too soon", B, wall=WALL - 25), now=0,
                  wall=WALL + 5) is None
    assert b.open("x", sent_by(set_back, b"later", B, wall=WALL + 36), now=0,
                  wall=WALL + 66) is not None


def test_a_datagram_past_the_size_bound_is_refused_before_any_key_work() -> None:
    b = sealer(B, max_size=1500)
    assert b.open("x", b"\xa1" + bytes(1600), now=0.0, wall=WALL) is None
    assert b.statistics().rejected == {"oversize": 1}


def test_datagrams_under_made_up_keys_cost_a_bounded_number_of_key_agreements() -> None:
    """Each unknown sender key costs an X25519 agreement: a flood of them is budgeted,
    while senders already known are not held up."""
    b = sealer(B)
    known = sent_by(sealer(A), b"hello", B)
    assert b.open("x", known, now=0.0, wall=WALL) is not None
    for n in range(1000):
        stranger = Identity(n.to_bytes(4, "big") * 8)
        b.open("x", sent_by(sealer(stranger), b"junk", B), now=0.0, wall=WALL)
    rejected = b.statistics().rejected
    assert rejected["new_sender_limited"] >= 700
    a = sealer(A)
    assert b.open("x", sent_by(a, b"still heard", B, wall=WALL + 1), now=0.0,
                  wall=WALL + 1) is not None
