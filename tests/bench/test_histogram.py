"""LatencyHistogram: bounded relative error, merging, and its JSON form."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from somasync.bench.histogram import LatencyHistogram

latencies = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=300)


def _exact(values: list[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


@given(values=latencies, fraction=st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999, 1.0]))
def test_percentile_is_never_below_and_at_most_one_128th_above(
        values: list[int], fraction: float) -> None:
    histogram = LatencyHistogram()
    histogram.record_all(values)
    exact = _exact(values, fraction)
    reported = histogram.percentile(fraction)
    assert exact <= reported <= exact + exact / 128
    if exact < 256:
        assert reported == exact


@given(first=latencies, second=latencies)
def test_merge_equals_recording_everything_in_one(first: list[int], second: list[int]) -> None:
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    a.record_all(first)
    b.record_all(second)
    both.record_all(first + second)
    a.merge(b)
    assert a.to_dict() == both.to_dict()


@given(values=latencies)
def test_json_form_round_trips(values: list[int]) -> None:
    histogram = LatencyHistogram()
    histogram.record_all(values)
    again = LatencyHistogram.from_dict(histogram.to_dict())
    assert again.to_dict() == histogram.to_dict()
    assert again.percentile(0.99) == histogram.percentile(0.99)
    assert again.cdf() == histogram.cdf()


def test_inconsistent_json_is_refused() -> None:
    data = LatencyHistogram().to_dict() | {"count": 3}
    with pytest.raises(ValueError, match="count"):
        LatencyHistogram.from_dict(data)


def test_empty_histogram_and_bad_fraction() -> None:
    histogram = LatencyHistogram()
    assert histogram.percentile(0.5) == 0
    assert histogram.summary_ms()["max"] == 0
    with pytest.raises(ValueError, match="fraction"):
        histogram.percentile(1.5)

