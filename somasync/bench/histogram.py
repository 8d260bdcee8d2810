"""A mergeable latency histogram with bounded relative error (HdrHistogram's idea).

Values are whole microseconds. Below 256 us every value has its own bucket; above, each
power of two is split into 128 equal buckets, so a reported percentile is at most 1/128
(0.8 %) above the true value and never below it, whatever the range (1 us to hours).
Memory is bounded by the number of distinct buckets touched (at most ~3,500 for values
up to 2^32 us), not by the number of values, so every node process keeps one and the
runner merges them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["LatencyHistogram"]

_EXACT = 256
_SUB_BUCKETS = 128


def _index(value: int) -> int:
    if value < _EXACT:
        return value
    shift = value.bit_length() - 8
    return _EXACT + (shift - 1) * _SUB_BUCKETS + ((value >> shift) - _SUB_BUCKETS)


def _upper(index: int) -> int:
    """The largest value that falls into bucket ``index``."""
    if index < _EXACT:
        return index
    shift, sub = divmod(index - _EXACT, _SUB_BUCKETS)
    shift += 1
    return ((sub + _SUB_BUCKETS + 1) << shift) - 1


class LatencyHistogram:
    """Counts of latencies (us) in log-linear buckets; merge, then ask for percentiles."""

    __slots__ = ("_counts", "count", "maximum", "minimum", "total")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.minimum = 0
        self.maximum = 0

    def record(self, value_us: int, times: int = 1) -> None:
        """Add ``times`` observations of ``value_us`` (negative values count as 0)."""
        value = max(0, int(value_us))
        index = _index(value)
        self._counts[index] = self._counts.get(index, 0) + times
        if self.count == 0 or value < self.minimum:
            self.minimum = value
        self.maximum = max(self.maximum, value)
        self.count += times
        self.total += value * times

    def record_all(self, values: Iterable[int]) -> None:
        for value in values:
            self.record(value)

    def merge(self, other: LatencyHistogram) -> None:
        """Add every observation of ``other`` to this histogram."""
        if other.count == 0:
            return
        for index, times in other._counts.items():
            self._counts[index] = self._counts.get(index, 0) + times
        self.minimum = other.minimum if self.count == 0 else min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        self.count += other.count
        self.total += other.total

    def percentile(self, fraction: float) -> int:
        """The value at or below which ``fraction`` (0..1) of observations lie, rounded
        up to its bucket's upper edge (exact below 256 us) and capped at the maximum."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be within [0, 1], got {fraction}")
        if self.count == 0:
            return 0
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for index in sorted(self._counts):
            seen += self._counts[index]
            if seen >= rank:
                return min(_upper(index), self.maximum)
        return self.maximum

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def summary_ms(self) -> dict[str, float]:
        """p50/p90/p99/p999/max and mean in milliseconds (what the reports print)."""
        return {
            "p50": self.percentile(0.5) / 1000, "p90": self.percentile(0.9) / 1000,
            "p99": self.percentile(0.99) / 1000, "p999": self.percentile(0.999) / 1000,
            "max": self.maximum / 1000, "mean": round(self.mean / 1000, 3),
        }

    def cdf(self) -> list[tuple[int, float]]:
        """(bucket upper edge in us, cumulative fraction) points, for plots."""
        points: list[tuple[int, float]] = []
        seen = 0
        for index in sorted(self._counts):
            seen += self._counts[index]
            points.append((min(_upper(index), self.maximum), seen / self.count))
        return points

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form: ``buckets`` pairs each bucket's upper edge with its count."""
        return {
            "unit": "us", "count": self.count, "total": self.total,
            "min": self.minimum, "max": self.maximum,
            "buckets": [[_upper(i), self._counts[i]] for i in sorted(self._counts)],
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LatencyHistogram:
        """Rebuild a histogram written by :meth:`to_dict` (in another process)."""
        histogram = cls()
        buckets = data["buckets"]
        if not isinstance(buckets, list):
            raise ValueError("histogram buckets must be a list of [upper_us, count]")
        for upper, times in buckets:
            index = _index(int(upper))
            histogram._counts[index] = histogram._counts.get(index, 0) + int(times)
        histogram.count = int(data["count"])  # type: ignore[call-overload]
        histogram.total = int(data["total"])  # type: ignore[call-overload]
        histogram.minimum = int(data["min"])  # type: ignore[call-overload]
        histogram.maximum = int(data["max"])  # type: ignore[call-overload]
        if histogram.count != sum(histogram._counts.values()):
            raise ValueError("histogram count does not match its buckets")
        return histogram
