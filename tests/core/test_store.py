"""MessageStore: the catch-up store, its digest answers, and what they cost."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from somasync.core import wire
from somasync.core.antientropy import ORIGIN_SHARE, MessageStore, SequenceTracker, covers

ORIGINS = [bytes([n]) * 32 for n in range(1, 4)]
WALL = 1_000_000.0  # wall-clock seconds of the stepped clock's zero


def envelope(sequence: int, *, origin: bytes = ORIGINS[0], ttl: int = 3600,
             sent_at: float = WALL, payload: bytes = b"x") -> wire.Envelope:
    # Unsigned: the store never verifies, and 100,000 signatures would dominate the test.
    body = wire.encode_envelope(origin=origin, sequence=sequence,
                                timestamp_ms=int(sent_at * 1000), ttl=ttl, priority=128,
                                payload_kind=0, source="origin", correlation_id=None,
                                headers={}, payload=payload)
    return wire.decode_envelope(body, None)


def stream_of(origin: bytes = ORIGINS[0]) -> wire.StreamKey:
    return (origin, "origin")


def sequences_in(frames: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
    """(origin, sequence) of each repair frame handed out, in order."""
    out = []
    for frame, _priority in frames:
        decoded = wire.decode_frame(frame[4:])
        signature, body = wire.split_message_payload(decoded)
        env = wire.decode_envelope(body, signature)
        out.append((env.origin, env.sequence))
    return out


def test_a_caught_up_neighbour_costs_a_bounded_scan_whatever_the_store_holds() -> None:
    store = MessageStore(capacity=100_000, max_age=3600.0)
    for sequence in range(1, 100_001):
        store.add(envelope(sequence), now=0.0, wall_now=WALL)
    assert len(store) == 100_000
    caught_up = {stream_of(): [(1, 100_000)]}
    for complete in (True, False):
        before = store.scanned
        assert store.missing_for(caught_up, complete=complete, limit=1024,
                                 wall_now=WALL) == []
        assert store.scanned - before <= 2, "answering a caught-up digest walked the store"

    # Behind by three messages, with one hole: exactly those are touched and sent.
    behind = {stream_of(): [(1, 50_000), (50_002, 99_998)]}
    before = store.scanned
    found = store.missing_for(behind, complete=True, limit=1024, wall_now=WALL)
    assert sequences_in(found) == [(ORIGINS[0], 50_001), (ORIGINS[0], 99_999),
                                   (ORIGINS[0], 100_000)]
    assert store.scanned - before <= 2 + 3


def test_a_neighbour_with_nothing_gets_the_oldest_first_up_to_the_limit() -> None:
    store = MessageStore(capacity=1000, max_age=3600.0)
    for sequence in range(1, 501):
        store.add(envelope(sequence), now=0.0, wall_now=WALL)
    found = store.missing_for({}, complete=True, limit=10, wall_now=WALL)
    assert [s for _, s in sequences_in(found)] == list(range(1, 11))
    before = store.scanned
    store.missing_for({stream_of(): []}, complete=False, limit=10, wall_now=WALL)
    assert store.scanned - before <= 11, "a limited answer scanned past its limit"
    # A partial digest that does not name the stream asks nothing of it.
    assert store.missing_for({}, complete=False, limit=10, wall_now=WALL) == []


def test_age_and_count_bound_the_store_and_keep_streams_consistent() -> None:
    store = MessageStore(capacity=100, max_age=10.0)
    for sequence in range(1, 301):
        store.add(envelope(sequence), now=sequence * 0.01, wall_now=WALL)
    assert len(store) == 100
    found = store.missing_for({}, complete=True, limit=1000, wall_now=WALL)
    assert [s for _, s in sequences_in(found)] == list(range(201, 301))
    store.expire(now=100.0, wall_now=WALL)
    assert len(store) == 0
    assert store.streams == 0
    assert store.missing_for({}, complete=True, limit=1000, wall_now=WALL) == []


def test_ttl_expiry_drops_only_what_expired() -> None:
    store = MessageStore(capacity=1000, max_age=300.0)
    for sequence in range(1, 101):
        # Even sequence numbers live 10 s, odd ones an hour.
        store.add(envelope(sequence, ttl=10 if sequence % 2 == 0 else 3600), now=0.0,
                  wall_now=WALL)
    store.expire(now=5.0, wall_now=WALL + 5)
    assert len(store) == 100
    store.expire(now=11.0, wall_now=WALL + 11)
    assert len(store) == 50
    found = store.missing_for({}, complete=True, limit=1000, wall_now=WALL + 11)
    assert [s for _, s in sequences_in(found)] == list(range(1, 101, 2))


def test_ttl_bookkeeping_stays_proportional_to_the_store() -> None:
    # Short-lived messages evicted by count before they expire leave stale heap
    # entries behind; they must not pile up with history.
    store = MessageStore(capacity=100, max_age=300.0)
    for sequence in range(1, 20_001):
        store.add(envelope(sequence, ttl=60), now=0.0, wall_now=WALL)
    assert len(store) == 100
    assert len(store._ttl_heap) <= 2 * 100 + 64


def test_a_second_message_under_a_held_sequence_number_keeps_the_first() -> None:
    store = MessageStore(capacity=10, max_age=300.0)
    first, other = envelope(7, payload=b"first"), envelope(7, payload=b"other")
    store.add(first, now=0.0, wall_now=WALL)
    store.add(other, now=0.0, wall_now=WALL)
    assert len(store) == 1
    assert first.id in store
    assert other.id not in store


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 400),
       capacity=st.integers(1, 300), limit=st.integers(1, 500),
       complete=st.booleans())
def test_answers_match_a_brute_force_reference(seed: int, count: int, capacity: int,
                                               limit: int, complete: bool) -> None:
    rng = random.Random(seed)
    store = MessageStore(capacity=capacity, max_age=3600.0)
    held: dict[tuple[bytes, int], wire.Envelope] = {}  # what the reference holds
    order: list[tuple[bytes, int]] = []
    for _ in range(count):
        origin = rng.choice(ORIGINS)
        key = (origin, rng.randrange(1, 200))
        if key in held:
            continue
        env = envelope(key[1], origin=origin)
        store.add(env, now=0.0, wall_now=WALL)
        held[key] = env
        order.append(key)
        if len(order) > capacity:
            own = [k for k in held if k[0] == origin]
            if len(own) > capacity // ORIGIN_SHARE:
                lowest = min(own)  # an origin past its share evicts its own first
                del held[lowest]
                order.remove(lowest)
            while len(order) > capacity:
                del held[order.pop(0)]
    # The asker holds a random subset of each stream, as its tracker would describe it.
    theirs: dict[wire.StreamKey, list[tuple[int, int]]] = {}
    for origin in ORIGINS:
        if rng.random() < 0.25:
            continue  # a stream the asker never heard of
        tracker = SequenceTracker()
        for sequence in range(1, 200):
            if rng.random() < 0.6:
                tracker.add(sequence, now=0.0)
        theirs[stream_of(origin)] = tracker.intervals()
    expected = []
    streams_in_store_order = list(dict.fromkeys(stream_of(o) for o, _ in order))
    for stream in streams_in_store_order:
        intervals = theirs.get(stream)
        if intervals is None and not complete:
            continue
        for origin, sequence in sorted(k for k in held if k[0] == stream[0]):
            if intervals is None or not covers(intervals, sequence):
                expected.append((origin, sequence))
    found = sequences_in(store.missing_for(theirs, complete=complete, limit=limit,
                                           wall_now=WALL))
    assert len(found) == min(limit, len(expected))
    assert set(found) <= set(expected)
    per_stream: dict[bytes, list[int]] = {}
    for origin, sequence in found:
        per_stream.setdefault(origin, []).append(sequence)
    for origin, sequences in per_stream.items():
        wanted = [s for o, s in expected if o == origin]
        assert sequences == wanted[: len(sequences)], "not oldest first within a stream"


def test_fill_merges_the_intervals_between_two_recorded_ends() -> None:
    tracker = SequenceTracker()
    for sequence in (1, 4, 9, 12):
        tracker.add(sequence, now=0.0)
    tracker.fill(4, 12)
    assert tracker.intervals() == [(1, 1), (4, 12)]
    assert 7 in tracker
    assert tracker.has_gaps  # the hole 2-3 is still open
    with pytest.raises(ValueError, match="both ends"):
        tracker.fill(2, 4)


def test_one_origin_flooding_a_full_store_cannot_flush_the_others() -> None:
    """Before: eviction always took the store's oldest message, so an origin publishing
    fast enough pushed every other origin's messages out, and neighbours that missed
    them could no longer be repaired. Now an origin holding a quarter of a full store
    makes room from its own messages."""
    store = MessageStore(capacity=100, max_age=3600.0)
    for sequence in range(1, 101):
        store.add(envelope(sequence, origin=ORIGINS[0]), now=0.0, wall_now=WALL)
    honest = [envelope(sequence, origin=ORIGINS[1]) for sequence in range(1, 11)]
    for message in honest:
        store.add(message, now=1.0, wall_now=WALL)
    for sequence in range(101, 10_001):
        store.add(envelope(sequence, origin=ORIGINS[0]), now=2.0, wall_now=WALL)
    assert len(store) == 100
    assert all(message.id in store for message in honest)
    # ...and the flood's newest are what it keeps of its own.
    assert envelope(10_000, origin=ORIGINS[0]).id in store


def test_a_single_origin_still_uses_the_whole_store() -> None:
    store = MessageStore(capacity=100, max_age=3600.0)
    for sequence in range(1, 301):
        store.add(envelope(sequence), now=0.0, wall_now=WALL)
    assert len(store) == 100
    assert envelope(201).id in store
    assert envelope(200).id not in store


def test_an_origin_cannot_escape_its_share_under_many_source_names() -> None:
    """Found in review: the share was counted per stream, so one key publishing under
    eight source names flushed everyone else's messages."""
    store = MessageStore(capacity=100, max_age=3600.0)
    honest = [envelope(sequence, origin=ORIGINS[1]) for sequence in range(1, 11)]
    for message in honest:
        store.add(message, now=0.0, wall_now=WALL)
    for sequence in range(1, 2001):
        body = wire.encode_envelope(origin=ORIGINS[0], sequence=sequence,
                                    timestamp_ms=int(WALL * 1000), ttl=3600, priority=128,
                                    payload_kind=0, source=f"name-{sequence % 8}",
                                    correlation_id=None, headers={}, payload=b"x")
        store.add(wire.decode_envelope(body, None), now=1.0, wall_now=WALL)
    assert len(store) == 100
    assert all(message.id in store for message in honest)
