"""The bench timeline: latencies cut into intervals by due time, and the trend."""

from __future__ import annotations

from array import array

import pytest

from somasync.bench.timeline import build_timeline, format_trend, summarise_trend

MIB = 2**20


def test_a_stall_shows_in_the_interval_its_messages_were_due_at_the_node_that_saw_it() -> None:
    # One publisher at 10 msg/s, 1-s intervals: messages 0-9 are interval 0, and so on.
    steady = array("I", [1000] * 40)  # 1 ms each
    stalled = array("I", [1000] * 40)
    for number in range(20, 30):
        stalled[number] = 250_000  # interval 2 at node 1: 250 ms
    stalled[35] = 0  # never arrived
    samples = {node: [(float(k), (30 + k) * MIB, 0.1 * k) for k in range(5)]
               for node in (0, 1)}
    timeline, histograms = build_timeline(interval=1.0, rate_per_publisher=10.0, sent=[40],
                                          arrivals={0: [steady], 1: [stalled]},
                                          samples=samples)
    assert timeline["intervals"] == 4
    node0, node1 = timeline["nodes"]["0"], timeline["nodes"]["1"]
    assert [row["latency_ms"]["p99"] for row in node0] == [1.0, 1.0, 1.0, 1.0]
    assert [row["latency_ms"]["max"] for row in node1] == [1.0, 1.0, 250.0, 1.0]
    assert [row["messages"] for row in node1] == [10, 10, 10, 9]
    # Reach-all counts a message only when every node has it, at its latest arrival.
    assert timeline["reach_all_ms"][2]["p50"] == 250.0
    assert timeline["reach_all_ms"][0]["max"] == 1.0
    # RSS is the sample at each interval's end; CPU% over the interval.
    assert [row["rss_bytes"] for row in node0] == [31 * MIB, 32 * MIB, 33 * MIB, 34 * MIB]
    assert node0[0]["cpu_percent"] == pytest.approx(10.0)
    assert len(histograms["1"]) == 4


def test_trend_compares_each_window_with_the_first_and_fits_the_memory_slope() -> None:
    rows = 12  # 12 intervals of 10 s: two 60-s windows
    fast = array("I", [2000] * (rows * 10))
    slow = array("I", [2000] * (rows * 10))
    for number in range(60, 120):
        slow[number] = 8000  # the second minute is 4x slower at node 1
    growing = [(10.0 * k, (40 + k) * MIB, 0.0) for k in range(rows + 1)]
    flat = [(10.0 * k, 40 * MIB, 0.0) for k in range(rows + 1)]
    timeline, histograms = build_timeline(interval=10.0, rate_per_publisher=1.0,
                                          sent=[rows * 10],
                                          arrivals={0: [fast], 1: [slow]},
                                          samples={0: flat, 1: growing})
    trend = summarise_trend(timeline, histograms)
    assert trend["window_s"] == 60.0
    assert len(trend["windows"]) == 2
    assert trend["windows"][1]["worst_node_p99_ms"] == 8.0
    steady, slowed = trend["nodes"]["0"], trend["nodes"]["1"]
    assert steady["worst_over_first"] == 1.0
    assert slowed["first_p99_ms"] == 2.0
    assert slowed["worst_over_first"] == 4.0
    assert steady["rss_mib_per_min_second_half"] == 0.0
    assert slowed["rss_mib_per_min_second_half"] == pytest.approx(6.0)  # 1 MiB per 10 s
    assert slowed["rss_mib_after_first_window"] == 46.0
    text = format_trend(timeline, trend)
    assert "x4.00" in text
    assert "+6.000 MiB/min" in text
