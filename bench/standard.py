"""Run the standard scenario set of ``python -m somasync.bench`` and store every result.

    python bench/standard.py [--out bench/results/<host>] [--only quick,burst]

Each scenario is one bench run in a fresh set of processes; its JSON result (settings,
machine info, per-node figures, latency histogram) is written to ``--out`` as
``<scenario>.json``, and a one-line summary per scenario is printed. Exit status 1 when
any scenario lost or duplicated a message.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import orjson
import uvloop

from somasync.bench import PRESETS, BenchSettings, run_bench

SCENARIOS: dict[str, BenchSettings] = {
    "quick": PRESETS["quick"],
    "small": PRESETS["small"],
    "medium": PRESETS["medium"],
    "burst-1000": BenchSettings(nodes=8, scenario="burst", messages=1000),
    "kill-node": BenchSettings(nodes=8, rate=500, duration=10, scenario="kill-node"),
    "slow-consumer": BenchSettings(nodes=5, rate=400, duration=10, scenario="slow",
                                   slow_rate=300),
    "workers-1-max": BenchSettings(nodes=5, workers=1, rate=0, messages=20_000,
                                   scenario="burst"),
    "workers-2-max": BenchSettings(nodes=5, workers=2, rate=0, messages=20_000,
                                   scenario="burst"),
    "kill-worker": BenchSettings(nodes=5, workers=2, rate=500, duration=10,
                                 scenario="kill-worker"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).with_name("results") / socket.gethostname())
    parser.add_argument("--only", help="comma-separated scenario names")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for name in names:
        result = uvloop.run(run_bench(SCENARIOS[name]))
        (args.out / f"{name}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        totals, latency, reach = result["totals"], result["latency_ms"], result["reach_all_ms"]
        failed |= not result["ok"]
        print(f"{name:<14} {'ok' if result['ok'] else 'FAILED':<6} "
              f"lost {totals['lost']} dup {totals['duplicates']}  "
              f"slowest node {totals['slowest_node_rate_per_s']:,.0f} msg/s "
              f"({totals['fraction_of_ceiling']} of ceiling)  latency p50 {latency['p50']:.2f} "
              f"p99 {latency['p99']:.2f} ms  reach-all p50 {reach['p50']:.2f} "
              f"p99 {reach['p99']:.2f} ms  efficiency {totals['efficiency']}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
