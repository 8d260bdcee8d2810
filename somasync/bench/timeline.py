"""The bench's timeline: latency and memory of every node, interval by interval.

A node that runs for months must not slow down or grow with its history. The runner
samples each node's RSS and CPU at every interval boundary; latencies are cut into the
same intervals by when each message was *due* (message ``n`` of a publisher at ``r``
msg/s is due ``n / r`` seconds after the start), so a stall shows in the interval in
which the delayed messages were sent, at every node that saw it.

The soak scenario prints :func:`format_trend` and can draw :func:`plot_timeline`.
"""

from __future__ import annotations

import statistics
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

from somasync.bench.histogram import LatencyHistogram

__all__ = ["build_timeline", "format_trend", "plot_timeline", "reached_all", "summarise_trend"]

MIB = 2**20


def reached_all(columns: Sequence[array[int]], count: int) -> Iterator[tuple[int, int]]:
    """``(message number, latency in us)`` of each of the first ``count`` messages that
    every node (one column of latencies each, 0 for never) received, at its latest
    arrival: when the message had reached them all."""
    for number in range(count):
        latest = 0
        for column in columns:
            value = column[number]
            if not value:
                break
            latest = max(latest, value)
        else:
            yield number, latest


def build_timeline(*, interval: float, rate_per_publisher: float, sent: Sequence[int],
                   arrivals: dict[int, list[array[int]]],
                   samples: dict[int, list[tuple[float, int, float]]],
                   ) -> tuple[dict[str, Any], dict[str, list[LatencyHistogram]]]:
    """Per interval: each node's latency summary, RSS and CPU, and the reach-all latency;
    and, beside that JSON-ready timeline, each node's histogram per interval (for
    :func:`summarise_trend`; too large to keep in a result file).

    Args:
        interval: seconds per interval.
        rate_per_publisher: each publisher's open-loop rate (messages/s).
        sent: messages each publisher sent.
        arrivals: node index -> per publisher, latency in us of message ``n`` (0: never).
        samples: node index -> ``(seconds since go, RSS bytes, CPU seconds)``: one at
            the start, then one at the end of each interval.
    """
    per_interval = max(1, round(rate_per_publisher * interval))
    count = max((n + per_interval - 1) // per_interval for n in sent) if sent else 0
    node_histograms = {node: [LatencyHistogram() for _ in range(count)] for node in arrivals}
    reach = [LatencyHistogram() for _ in range(count)]
    columns_by_publisher = [[arrivals[node][p] for node in arrivals] for p in range(len(sent))]
    for p, total in enumerate(sent):
        columns = columns_by_publisher[p]
        for node, column in zip(arrivals, columns, strict=True):
            histograms = node_histograms[node]
            for number in range(total):
                value = column[number]
                if value:
                    histograms[number // per_interval].record(value)
        for number, latest in reached_all(columns, total):
            reach[number // per_interval].record(latest)
    nodes: dict[str, list[dict[str, Any]]] = {}
    for node, histograms in node_histograms.items():
        rows = []
        taken = samples.get(node, [])
        for k, histogram in enumerate(histograms):
            # taken[0] is the baseline at the start; taken[k + 1] ends interval k.
            sample = taken[k + 1] if k + 1 < len(taken) else None
            previous = taken[k] if sample else None
            rows.append({
                "messages": histogram.count,
                "latency_ms": histogram.summary_ms() if histogram.count else None,
                "rss_bytes": sample[1] if sample else None,
                "cpu_percent": round(100 * (sample[2] - previous[2]) / (sample[0] - previous[0]),
                                     1) if sample and previous and sample[0] > previous[0]
                else None,
            })
        nodes[str(node)] = rows
    timeline = {
        "interval_s": interval,
        "intervals": count,
        "nodes": nodes,
        "reach_all_ms": [h.summary_ms() if h.count else None for h in reach],
    }
    return timeline, {str(node): histograms for node, histograms in node_histograms.items()}


def _per_window(histograms: list[LatencyHistogram], size: int) -> list[LatencyHistogram]:
    """Merge consecutive intervals into windows of ``size`` (a minute of 10-s rows)."""
    windows = []
    for start in range(0, len(histograms), size):
        merged = LatencyHistogram()
        for histogram in histograms[start : start + size]:
            merged.merge(histogram)
        windows.append(merged)
    return windows


def summarise_trend(timeline: dict[str, Any], histograms: dict[str, list[LatencyHistogram]],
                    window_s: float = 60.0) -> dict[str, Any]:
    """Per window (a minute by default), over all nodes: p50, p99, the worst node's p99,
    max, reach-all p99 and the range of RSS at its end. Per node: p99 per window, the
    worst against the first, RSS after the first window and at the end, and its slope
    over the second half."""
    interval = float(timeline["interval_s"])
    size = max(1, round(window_s / interval))
    result: dict[str, Any] = {"window_s": size * interval, "windows": [], "nodes": {}}
    windows_by_node = {node: _per_window(h, size) for node, h in histograms.items()}
    node_rows = timeline["nodes"]
    reach_rows = timeline["reach_all_ms"]
    for w in range((timeline["intervals"] + size - 1) // size):
        merged = LatencyHistogram()
        worst = 0.0
        for windows in windows_by_node.values():
            if windows[w].count:
                merged.merge(windows[w])
                worst = max(worst, windows[w].percentile(0.99) / 1000)
        if not merged.count:
            continue
        reach = [r["p99"] for r in reach_rows[w * size : (w + 1) * size] if r]
        last_k = min(timeline["intervals"], (w + 1) * size) - 1
        rss = [rows[last_k]["rss_bytes"] / MIB for rows in node_rows.values()
               if rows[last_k]["rss_bytes"]]
        result["windows"].append({
            "from_s": w * size * interval, "p50_ms": merged.percentile(0.5) / 1000,
            "p99_ms": merged.percentile(0.99) / 1000, "worst_node_p99_ms": worst,
            "max_ms": merged.maximum / 1000, "reach_all_p99_ms": max(reach, default=None),
            "rss_mib_min": round(min(rss), 1) if rss else None,
            "rss_mib_max": round(max(rss), 1) if rss else None,
        })
    for node, rows in node_rows.items():
        windows = [w for w in windows_by_node[node] if w.count]
        p99s = [w.percentile(0.99) / 1000 for w in windows]
        rss = [(k * interval, row["rss_bytes"]) for k, row in enumerate(rows, start=1)
               if row["rss_bytes"]]
        half = rss[len(rss) // 2 :]
        slope = None
        if len(half) >= 2 and half[-1][0] > half[0][0]:
            slope = statistics.linear_regression([t / 60 for t, _ in half],
                                                 [b / MIB for _, b in half]).slope
        first_window_rss = next((b for t, b in rss if t >= size * interval), None)
        result["nodes"][node] = {
            "p99_ms_per_window": [round(v, 3) for v in p99s],
            "first_p99_ms": p99s[0] if p99s else None,
            "worst_p99_ms": max(p99s) if p99s else None,
            "worst_over_first": round(max(p99s) / p99s[0], 2) if p99s and p99s[0] else None,
            "rss_mib_after_first_window": round(first_window_rss / MIB, 1)
            if first_window_rss else None,
            "rss_mib_at_end": round(rss[-1][1] / MIB, 1) if rss else None,
            "rss_mib_per_min_second_half": round(slope, 3) if slope is not None else None,
        }
    return result


def format_trend(timeline: dict[str, Any], trend: dict[str, Any]) -> str:
    """The trend as text: one row per window, then one line per node."""
    lines = [f"timeline: {timeline['intervals']} intervals of {timeline['interval_s']:g} s; "
             f"per {trend['window_s']:g}-s window, over all nodes:",
             f"{'from s':>7} {'p50 ms':>8} {'p99 ms':>8} {'worst node p99':>15} "
             f"{'max ms':>8} {'reach-all p99':>14} {'RSS MiB min-max':>16}"]
    for row in trend["windows"]:
        reach = row["reach_all_p99_ms"]
        rss = ("-" if row["rss_mib_min"] is None
               else f"{row['rss_mib_min']:.1f}-{row['rss_mib_max']:.1f}")
        lines.append(
            f"{row['from_s']:>7.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{row['worst_node_p99_ms']:>15.2f} {row['max_ms']:>8.1f} "
            f"{'-' if reach is None else f'{reach:.2f}':>14} {rss:>16}")
    lines.append("per node: first-window p99 -> worst window p99 (ratio); RSS after the "
                 "first window -> at the end (slope over the second half)")
    for node, row in trend["nodes"].items():
        slope = row["rss_mib_per_min_second_half"]
        lines.append(
            f"  node {node:>3}: p99 {_ms(row['first_p99_ms'])} -> {_ms(row['worst_p99_ms'])} "
            f"(x{row['worst_over_first'] or 0:.2f}); RSS {row['rss_mib_after_first_window']} "
            f"-> {row['rss_mib_at_end']} MiB "
            f"({'-' if slope is None else f'{slope:+.3f}'} MiB/min)")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def plot_timeline(result: dict[str, Any], path: str) -> None:
    """Draw p99 latency and RSS of every node over time into ``path`` (a PNG).

    Raises:
        ImportError: matplotlib is missing (the ``plot`` extra).
    """
    # Loaded only when drawing: the bench's node processes import this module too, and
    # must not carry the simulator (or matplotlib, an optional extra) in their memory.
    from somasync.sim.plot import require_matplotlib

    plt = require_matplotlib()
    timeline = result["timeline"]
    interval = float(timeline["interval_s"])
    figure, (latency_axes, rss_axes) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for node, rows in timeline["nodes"].items():
        minutes = [(k + 0.5) * interval / 60 for k in range(len(rows))]
        p99 = [row["latency_ms"]["p99"] if row["latency_ms"] else float("nan") for row in rows]
        latency_axes.plot(minutes, p99, linewidth=0.8, label=f"bench-{node}")
        ends = [(k + 1) * interval / 60 for k in range(len(rows))]
        rss = [row["rss_bytes"] / MIB if row["rss_bytes"] else float("nan") for row in rows]
        rss_axes.plot(ends, rss, linewidth=0.8)
    settings = result["settings"]
    latency_axes.set_title(
        f"{settings['nodes']} nodes x {settings['workers']} workers, "
        f"{settings['rate']:g} msg/s, {settings['size']} B, scenario {settings['scenario']}")
    latency_axes.set_ylabel(f"p99 latency per {interval:g} s (ms)")
    latency_axes.set_yscale("log")
    latency_axes.legend(fontsize="small", ncol=4)
    rss_axes.set_ylabel("RSS per node (MiB)")
    rss_axes.set_xlabel("minutes since publishing started")
    rss_axes.set_ylim(bottom=0)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
