"""SequenceTracker: the per-stream record of delivered sequence numbers."""

from __future__ import annotations

import itertools
import random

import nacl.signing
from hypothesis import given, settings, strategies as st

from somasync.config import GossipConfig
from somasync.core import wire
from somasync.core.antientropy import (
    HOLD_GAP_TIMEOUTS,
    MAX_GIVEN_UP,
    MAX_INTERVALS,
    SequenceTracker,
    count_lacking,
)
from somasync.core.payload import MessageType
from somasync.message import Message
from somasync.testing import WALL, Mesh

KEY = nacl.signing.SigningKey(bytes([9]) * 32)
STREAM = (bytes(KEY.verify_key), "origin")


def test_runs_merge_into_intervals() -> None:
    tracker = SequenceTracker()
    for sequence in (1, 2, 3, 7, 5, 6):
        assert tracker.add(sequence, now=0.0)
    assert tracker.intervals() == [(1, 3), (5, 7)]
    assert 2 in tracker
    assert 4 not in tracker
    assert not tracker.add(6, now=0.0)  # a real duplicate
    assert tracker.add(4, now=0.0)
    assert tracker.intervals() == [(1, 7)]


def test_timed_out_hole_is_claimed_but_a_late_copy_is_still_new() -> None:
    tracker = SequenceTracker()
    tracker.add(1, now=0.0)
    tracker.add(5, now=0.0)
    assert tracker.expire_gaps(now=10.0, gap_timeout=5.0) == 1
    assert tracker.intervals() == [(1, 5)]  # digests stop asking for 2-4
    assert 3 not in tracker  # ...but 3 was never delivered
    assert tracker.add(3, now=11.0)
    assert 3 in tracker
    assert 2 not in tracker
    assert 4 not in tracker
    assert not tracker.add(3, now=11.0)
    assert tracker.given_up == 1


def test_a_hole_a_neighbour_lists_as_held_outlives_gap_timeout_up_to_the_hold_limit() -> None:
    tracker = SequenceTracker()
    for sequence in (1, 5, 9):
        tracker.add(sequence, now=0.0)  # holes 2-4 and 6-8
    tracker.heard([(1, 3)], now=4.0)  # overlaps 2-4 only
    assert tracker.expire_gaps(now=5.0, gap_timeout=5.0, hold_limit=20.0) == 1
    assert tracker.intervals() == [(1, 1), (5, 9)]  # 6-8 given up, 2-4 still asked for
    tracker.heard([(1, 9)], now=8.0)
    assert tracker.expire_gaps(now=12.0, gap_timeout=5.0, hold_limit=20.0) == 0
    tracker.add(3, now=12.0)  # both halves of a split hole keep its times
    tracker.heard([(1, 9)], now=16.0)
    assert tracker.expire_gaps(now=19.0, gap_timeout=5.0, hold_limit=20.0) == 0
    # However often it is listed, at the hold limit a hole is given up.
    assert tracker.expire_gaps(now=20.0, gap_timeout=5.0, hold_limit=20.0) == 2
    assert tracker.intervals() == [(1, 9)]
    assert tracker.add(2, now=21.0)  # still a late copy, not a duplicate


def test_more_holes_than_a_digest_carries_gives_the_oldest_up_without_losing_it() -> None:
    tracker = SequenceTracker()
    odd = range(1, 2 * (MAX_INTERVALS + 10), 2)  # every even number is a hole
    for sequence in odd:
        tracker.add(sequence, now=0.0)
    assert len(tracker.intervals()) == MAX_INTERVALS
    assert tracker.given_up == len(odd) - MAX_INTERVALS
    for sequence in range(2, 2 * (MAX_INTERVALS + 10), 2):
        assert sequence not in tracker
        assert tracker.add(sequence, now=1.0), f"late {sequence} taken for a duplicate"
    assert tracker.intervals() == [(1, 2 * (MAX_INTERVALS + 10) - 1)]


@settings(max_examples=200, deadline=None)
@given(count=st.integers(1, 2000), seed=st.integers(0, 2**32 - 1),
       expire_every=st.integers(0, 50), heard_every=st.integers(0, 20))
def test_any_arrival_order_delivers_each_sequence_exactly_once(
        count: int, seed: int, expire_every: int, heard_every: int) -> None:
    # A burst reordered by priority bands and by two paths arrives in any order, with
    # holes timing out meanwhile (some kept longer, a neighbour listing them as held):
    # every number must still be new exactly once, as long as no more holes were given
    # up than the tracker remembers.
    order = list(range(1, count + 1))
    random.Random(seed).shuffle(order)
    tracker = SequenceTracker()
    for step, sequence in enumerate(order):
        if not tracker.forgotten:
            assert sequence not in tracker
            assert tracker.add(sequence, now=float(step))
        else:
            tracker.add(sequence, now=float(step))
        assert not tracker.add(sequence, now=float(step))
        if heard_every and step % heard_every == 0:
            tracker.heard([(1, count // 2)], now=float(step))
        if expire_every and step % expire_every == 0:
            tracker.expire_gaps(now=float(step), gap_timeout=float(expire_every),
                                hold_limit=3.0 * expire_every)
        assert len(tracker.intervals()) <= MAX_INTERVALS
    assert tracker.intervals() == [(1, count)]


@settings(max_examples=300, deadline=None)
@given(delivered=st.sets(st.integers(1, 200), min_size=1, max_size=120), data=st.data())
def test_heard_marks_exactly_the_holes_the_listed_intervals_overlap(
        delivered: set[int], data: st.DataObject) -> None:
    # Both ways heard walks (a pass over holes and intervals, or bisection for few
    # intervals) against the definition; interval ends fall mostly at holes' edges.
    tracker = SequenceTracker()
    for sequence in delivered:
        tracker.add(sequence, now=0.0)
    near = st.builds(int.__add__, st.sampled_from(sorted(delivered)), st.integers(-1, 1))
    ends = data.draw(st.lists(near | st.integers(0, 210), max_size=80))
    points = sorted(set(ends))
    held = [(points[k], points[k + 1] - (k % 4 == 0) * (points[k + 1] - points[k]))
            for k in range(0, len(points) - 1, 2)]  # some one-number intervals
    tracker.heard(held, now=1.0)
    intervals = tracker.intervals()
    holes = [(hi + 1, lo - 1) for (_, hi), (lo, _) in itertools.pairwise(intervals)]
    expected = [float(any(lo <= hole_hi and hole_lo <= hi for lo, hi in held))
                for hole_lo, hole_hi in holes]
    assert tracker._gap_heard == expected


def test_count_lacking() -> None:
    assert count_lacking([(1, 5)], [(6, 6)], 100) == 1
    assert count_lacking([(1, 5), (8, 9)], [(2, 3), (8, 8)], 100) == 0
    assert count_lacking([(3, 5), (8, 9)], [(1, 10)], 100) == 5
    assert count_lacking([], [(1, 10)], 100) == 10
    assert count_lacking([(5, 7)], [(1, 2), (4, 8), (20, 21)], 100) == 6
    # Counted up to the cap, whatever the intervals span.
    assert count_lacking([(1, 3)], [(1, 1_000_000)], 50) == 50


def test_beyond_the_remembered_given_up_holes_the_oldest_reads_as_delivered() -> None:
    # The documented bound on memory: a stream with more given-up holes than
    # MAX_GIVEN_UP forgets the oldest, whose late copies are then taken for duplicates.
    tracker = SequenceTracker()
    for sequence in range(1, 2 * (MAX_INTERVALS + MAX_GIVEN_UP + 2), 2):
        tracker.add(sequence, now=0.0)
    assert tracker.forgotten > 0
    assert 2 in tracker  # forgotten: reads as delivered
    last_hole = 2 * (MAX_INTERVALS + MAX_GIVEN_UP + 1) - 2
    assert last_hole not in tracker


def _mesh_with_a_hole(names: list[str]) -> Mesh:
    """``names`` in a ring with chords, all holding sequences 1-10 and 20-30 of STREAM:
    11-19 were never sent, so nobody can fill that hole."""
    mesh = Mesh(GossipConfig.local(), seed=3)
    for name in names:
        mesh.add(name)
    for i, name in enumerate(names):
        mesh.connect(name, names[(i + 1) % len(names)])
        if len(names) > 3:
            mesh.connect(name, names[(i + 2) % len(names)])
    mesh.settle()
    for sequence in [*range(1, 11), *range(20, 31)]:
        message = Message(MessageType.Data("x" * 100), STREAM[1], timestamp=WALL, ttl=3600,
                          sequence=sequence).sign_with_ed25519(KEY)
        mesh.nodes[names[0]].broadcast(message.to_envelope(), now=mesh.now)
        mesh.settle()
    return mesh


def _gapped(mesh: Mesh, name: str) -> bool:
    tracker = mesh.nodes[name]._streams.get(STREAM)
    return tracker is not None and tracker.has_gaps


def test_a_hole_nobody_can_fill_is_given_up_after_gap_timeout_though_listed_as_held() -> None:
    # Neighbours that gave the hole up list it as held in their digests, like any hole
    # given up: taken for "a neighbour holds it", it was kept max_message_age (an hour),
    # the whole mesh asking for it meanwhile (a late joiner's digests: 104 KB in 100 s
    # against 38 KB).
    names = [f"n{i}" for i in range(6)]
    mesh = _mesh_with_a_hole(names)
    gap_timeout = mesh.config.gap_timeout
    for _ in range(int(3 * gap_timeout)):
        mesh.step(1.0)
    assert not any(_gapped(mesh, name) for name in names)
    mesh.add("late")  # learns the messages, and the hole, from those that gave it up
    mesh.connect("late", "n1")
    mesh.connect("late", "n3")
    mesh.settle()
    assert _gapped(mesh, "late")
    for _ in range(int(3 * gap_timeout)):
        mesh.step(1.0)
    assert not _gapped(mesh, "late")
    assert mesh.nodes["late"]._streams.get(STREAM).given_up == 1  # type: ignore[union-attr]


def test_a_hole_a_deferring_neighbour_lists_is_kept_up_to_the_hold_limit() -> None:
    # A rate-limited neighbour defers its repairs until its queue drains and says so
    # (FLAG_DEFERRED): the holes it lists as held outlive gap_timeout, but not past
    # HOLD_GAP_TIMEOUTS of them (it may list a hole it gave up, as here).
    mesh = _mesh_with_a_hole(["a", "b", "c"])
    gap_timeout = mesh.config.gap_timeout
    deferred = wire.encode_digest({STREAM: [(1, 30)]}, reply=True, deferred=True)
    plain = wire.encode_digest({STREAM: [(1, 30)]}, reply=True)
    steps = 0
    while _gapped(mesh, "a"):
        mesh.inject("a", mesh.link_of("a", "b"), deferred)
        mesh.inject("c", mesh.link_of("c", "b"), plain)
        mesh.step(mesh.config.anti_entropy_interval)
        steps += 1
        elapsed = steps * mesh.config.anti_entropy_interval
        assert elapsed <= (HOLD_GAP_TIMEOUTS + 1) * gap_timeout
        if elapsed > 2 * gap_timeout:
            assert not _gapped(mesh, "c")
    assert elapsed >= HOLD_GAP_TIMEOUTS * gap_timeout - 1.0
    assert "digest_limited" not in mesh.nodes["a"].statistics().rejected


def test_a_deferring_digests_holes_are_scanned_and_paid_for_like_an_answer() -> None:
    # Comparing a digest's intervals with the holes costs up to MAX_INTERVALS per stream;
    # a digest that asked for nothing was free, and this work came before any budget.
    mesh = _mesh_with_a_hole(["a", "b"])
    link = mesh.link_of("a", "b")
    plain = wire.encode_digest({STREAM: [(1, 30)]}, reply=True)
    deferred = wire.encode_digest({STREAM: [(1, 30)]}, reply=True, deferred=True)
    before = mesh.nodes["a"].statistics()
    for _ in range(10):
        mesh.inject("a", link, plain)
    mesh.settle()
    after = mesh.nodes["a"].statistics()
    assert "digest_limited" not in after.rejected
    answering = (after.digest_entries_scanned - before.digest_entries_scanned) // 10
    for _ in range(10):
        mesh.inject("a", link, deferred)
    mesh.settle()
    stats = mesh.nodes["a"].statistics()
    assert stats.rejected["digest_limited"] == 2  # the budget's burst: 8
    # Each of the 8 also compared one hole with one interval.
    assert stats.digest_entries_scanned - after.digest_entries_scanned == 8 * (answering + 2)
