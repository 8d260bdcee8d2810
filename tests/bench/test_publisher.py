"""The bench publisher answers a node's digest with exactly the messages it lacks."""

from __future__ import annotations

from hypothesis import given, strategies as st

from somasync.bench._publisher import _uncovered
from somasync.core.antientropy import SequenceTracker, covers


@given(holes=st.sets(st.integers(1, 300)), sent=st.integers(0, 320),
       start=st.integers(0, 320))
def test_publisher_repairs_exactly_what_a_digest_lacks_within_its_window(
        holes: set[int], sent: int, start: int) -> None:
    tracker = SequenceTracker()
    for sequence in range(1, 301):
        if sequence not in holes:
            tracker.add(sequence, now=0.0)
    intervals = tracker.intervals()
    expected = [n for n in range(start, sent) if not covers(intervals, n + 1)]
    assert list(_uncovered(intervals, sent, start=start)) == expected
    if start == 0:
        assert list(_uncovered(intervals, sent)) == expected  # the whole history
