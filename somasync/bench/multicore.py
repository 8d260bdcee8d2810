"""The sharded node's benchmark, in one run: (a) shared-memory ring vs
multiprocessing.Queue for 256-byte records between two processes; (b) unique signed
messages/s one node ingests with 0, 1 and 2 (or ``--workers``) worker processes, fed by
separate sender processes, against the raw single-core PyNaCl verify rate measured in
the same run.

    python -m somasync.bench multicore [--workers 0,1,2] [--trials 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from somasync.bench.ceiling import raw_verify_rate
from somasync.bench.machine import machine_info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m somasync.bench multicore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    import uvloop

    from somasync.bench import ingest, ring

    count = args.records - args.records % ring.BATCH
    ring_rates: dict[str, list[float]] = {"queue/record": [], "ring/record": [],
                                          "queue/batch": [], "ring/batch": []}
    workers = [int(w) for w in args.workers.split(",")]
    ingest_runs: dict[int, list[dict[str, Any]]] = {w: [] for w in workers}
    raw_rates: list[float] = []
    for _ in range(args.trials):
        ring_rates["queue/record"].append(ring.run_queue(count, False))
        ring_rates["ring/record"].append(ring.run_ring(count, False))
        ring_rates["queue/batch"].append(ring.run_queue(count, True))
        ring_rates["ring/batch"].append(ring.run_ring(count, True))
        raw_rates.append(raw_verify_rate())
        for w in workers:
            ingest_runs[w].append(uvloop.run(
                ingest.trial(args.messages, 60.0, w, args.senders)))
    med = {k: statistics.median(v) for k, v in ring_rates.items()}
    raw = statistics.median(raw_rates)
    print(f"(a) ring vs multiprocessing.Queue, {count} records of 256 B, {args.trials} trials")
    for name, values in ring_rates.items():
        print(f"    {name:<13} {med[name]:>12,.0f}/s ({min(values):,.0f}-{max(values):,.0f})")
    print(f"    ring/record = x{med['ring/record'] / med['queue/record']:.1f} queue/record; "
          f"ring/batch = x{med['ring/batch'] / med['queue/batch']:.2f} queue/batch")
    print(f"(b) ingest, {args.messages} messages, {args.senders} senders; raw verify "
          f"{raw:,.0f}/s ({min(raw_rates):,.0f}-{max(raw_rates):,.0f})")
    summary: dict[str, object] = {
        "machine": machine_info(),
        "ring": ring_rates, "raw_verify_per_s": raw_rates,
        "ingest": {str(w): runs for w, runs in ingest_runs.items()},
    }
    base = None
    lost = 0
    for w, runs in ingest_runs.items():
        rates = [r["rate"] for r in runs]
        median = statistics.median(rates)
        base = median if w == 1 else base
        lost += sum(args.messages // args.senders * args.senders - r["delivered"]
                    for r in runs)
        versus = f" = x{median / base:.2f} of 1 worker" if base and w != 1 else ""
        print(f"    workers={w}: {median:,.0f}/s ({min(rates):,.0f}-{max(rates):,.0f}), "
              f"efficiency {median / (max(1, w) * raw):.2f}{versus}")
    print(f"    lost: {lost}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
