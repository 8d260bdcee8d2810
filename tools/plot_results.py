"""Plots from stored bench results (needs the optional extra: pip install -e '.[plot]').

    python tools/plot_results.py bench/results/<host> [--out plots/]

Draws (1) delivered messages/s of the slowest node against workers per node, from every
result with ``rate = 0`` (as fast as possible), beside the verify ceiling measured in
the same runs; (2) the latency CDF (publish to delivery, every node) of every result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from somasync.bench import LatencyHistogram
from somasync.sim.plot import require_matplotlib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="folder of <scenario>.json results")
    parser.add_argument("--out", type=Path, help="folder for the PNGs (default: results)")
    args = parser.parse_args()
    try:
        plt = require_matplotlib()  # an optional extra: loaded only when drawing
    except ImportError as exc:
        print(exc, file=sys.stderr)
        return 2
    out = args.out or args.results
    out.mkdir(parents=True, exist_ok=True)
    # Only mesh-bench results: the folder also holds membership and memory results.
    loaded = {path.stem: json.loads(path.read_text())
              for path in sorted(args.results.glob("*.json"))}
    results = {name: result for name, result in loaded.items()
               if isinstance(result, dict) and result.get("schema") == "somasync.bench/1"}
    if not results:
        print(f"no results in {args.results}", file=sys.stderr)
        return 2

    flat_out = sorted((r["settings"]["workers"], r) for r in results.values()
                      if r["settings"]["rate"] == 0)
    if flat_out:
        figure, axes = plt.subplots()
        workers = [w for w, _ in flat_out]
        axes.plot(workers, [r["totals"]["slowest_node_rate_per_s"] for _, r in flat_out],
                  "o-", label="slowest node, msg/s")
        axes.plot(workers, [r["totals"]["ceiling_per_node_per_s"] for _, r in flat_out],
                  "s--", label="ceiling: cores x raw verify / nodes")
        axes.set_xlabel("workers per node")
        axes.set_ylabel("messages/s")
        axes.set_title("Throughput vs workers (as fast as possible)")
        axes.legend()
        figure.savefig(out / "throughput_vs_workers.png", dpi=120)

    figure, axes = plt.subplots()
    for name, result in results.items():
        cdf = LatencyHistogram.from_dict(result["latency_histogram"]).cdf()
        if cdf:
            axes.plot([us / 1000 for us, _ in cdf], [f for _, f in cdf], label=name)
    axes.set_xscale("log")
    axes.set_xlabel("publish to delivery, ms")
    axes.set_ylabel("fraction of deliveries")
    axes.set_title("Latency CDF, every node")
    axes.legend(fontsize="small")
    figure.savefig(out / "latency_cdf.png", dpi=120)
    print(f"wrote plots to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
