"""``python -m somasync.bench``: load-test a real local mesh, or run a micro-benchmark.

    python -m somasync.bench --quick                      # the README's main job
    python -m somasync.bench --preset medium --json out.json
    python -m somasync.bench --nodes 5 --workers 2 --rate 0 --messages 20000 --scenario burst
    python -m somasync.bench ingest --workers 0,1,2       # the sharded node's benchmark
    python -m somasync.bench membership                  # failure detection, 32 processes
    python -m somasync.bench memory                      # bytes per seen id, message, stream
    python -m somasync.bench handshake                   # link handshakes/s, sealing MB/s
    python -m somasync.bench flood                       # an honest peer's latency in a flood
    python -m somasync.bench amplification               # bytes answered per request byte
    python -m somasync.bench --scenario soak --nodes 8 --rate 400 --duration 1800 --plot t.png

Exit status: 0 when every node received every message exactly once, 1 when any message
was lost or duplicated, 2 on a usage or configuration error, 3 when the bench could not
run (a process failed to start, the mesh did not form).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from somasync.bench.runner import BenchError, Progress, run_bench
from somasync.bench.settings import PRESETS, SCENARIOS, BenchSettings
from somasync.bench.timeline import format_trend
from somasync.errors import ConfigError

__all__ = ["format_summary", "main"]

_SUBCOMMANDS = ("amplification", "flood", "handshake", "ingest", "membership", "memory")


def _priority_mix(text: str) -> tuple[tuple[int, int], ...]:
    try:
        pairs = [item.split(":") for item in text.split(",") if item]
        return tuple((int(priority), int(weight)) for priority, weight in pairs)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected priority:weight pairs like 200:1,128:8, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m somasync.bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--quick", action="store_true",
                        help="the quick preset (5 nodes, 500 msg/s for 5 s)")
    choice.add_argument("--preset", choices=sorted(PRESETS), help="a named preset")
    defaults = BenchSettings()
    parser.add_argument("--nodes", type=int, help=f"node processes ({defaults.nodes})")
    parser.add_argument("--workers", type=int,
                        help=f"worker processes per node ({defaults.workers})")
    parser.add_argument("--publishers", type=int,
                        help=f"publisher processes ({defaults.publishers})")
    parser.add_argument("--rate", type=float,
                        help=f"messages/s in total, open loop; 0 = as fast as possible "
                             f"({defaults.rate:g})")
    parser.add_argument("--size", type=int, help=f"payload bytes ({defaults.size})")
    parser.add_argument("--duration", type=float,
                        help=f"seconds of publishing ({defaults.duration:g})")
    parser.add_argument("--messages", type=int, help="total messages (default rate x duration)")
    parser.add_argument("--scenario", choices=SCENARIOS, help="steady (default), burst, "
                        "kill-node, kill-worker, slow, soak or priority")
    parser.add_argument("--priority-mix", type=_priority_mix, dest="priority_mix",
                        help="priority:weight pairs (200:1,128:8,32:1)")
    parser.add_argument("--slow-rate", type=float, dest="slow_rate",
                        help="slow scenario: messages/s node 0's application takes (200)")
    parser.add_argument("--links", type=int, help="bootstrap peers per joining node (2)")
    parser.add_argument("--seed", type=int, help="topology and priority seed (1)")
    parser.add_argument("--drain-timeout", type=float, dest="drain_timeout",
                        help="seconds to wait for stragglers after publishing (30)")
    parser.add_argument("--drop-every", type=int, dest="drop_every",
                        help="testing the bench: node 0's application discards every "
                             "k-th delivery, so the run must fail")
    parser.add_argument("--interval", type=float,
                        help=f"seconds per timeline interval ({defaults.interval:g})")
    parser.add_argument("--anti-entropy-interval", type=float, dest="anti_entropy_interval",
                        help="seconds between the nodes' anti-entropy rounds (library "
                             "default; any value is a deviation the header lists)")
    parser.add_argument("--json", metavar="PATH", help="write the full result as JSON")
    parser.add_argument("--plot", metavar="PNG",
                        help="draw every node's p99 latency and RSS over time (needs "
                             "matplotlib: pip install 'somasync[plot]')")
    parser.add_argument("--signing", choices=("single", "batch"),
                        help="publishers sign each message (single, the default) or "
                             "--batch-size messages to one signature (batch)")
    parser.add_argument("--batch-size", type=int, dest="batch_size",
                        help=f"batch signing: messages per signature ({defaults.batch_size})")
    parser.add_argument("--batch-window", type=float, dest="batch_window",
                        help=f"batch signing: seconds a batch may wait to fill "
                             f"({defaults.batch_window:g})")
    parser.add_argument("--read-ahead-bytes", type=int, dest="read_ahead_bytes",
                        help="nodes' GossipConfig.read_ahead_bytes (library default; 0 "
                             "reads in order)")
    parser.add_argument("--critical-rate", type=float, dest="critical_rate",
                        help=f"priority scenario: critical alerts/s from publisher 0 "
                             f"({defaults.critical_rate:g})")
    parser.add_argument("--no-progress", action="store_true",
                        help="no live status line (it is shown only on a terminal anyway)")
    return parser


def _settings(args: argparse.Namespace) -> BenchSettings:
    base = PRESETS["quick"] if args.quick else PRESETS.get(args.preset or "", BenchSettings())
    fields = ("nodes", "workers", "publishers", "rate", "size", "duration", "messages",
              "scenario", "priority_mix", "slow_rate", "links", "seed", "drain_timeout",
              "drop_every", "interval", "anti_entropy_interval", "signing", "batch_size",
              "batch_window", "critical_rate", "read_ahead_bytes")
    changes = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    if changes.get("scenario") == "burst" and "messages" not in changes and not base.messages:
        changes["messages"] = base.total_messages
    return base.replace(**changes)


def _status_line(update: Progress) -> None:
    width = 24
    done = min(1.0, update.slowest_node / max(1, update.expected))
    bar = "#" * round(done * width)
    sys.stderr.write(
        f"\r  {update.elapsed:6.1f} s  {update.phase:<10} published {update.published:>8,}"
        f"/{update.planned:,}  slowest node [{bar:<{width}}] {update.slowest_node:,}   ")
    sys.stderr.flush()


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_summary(result: dict[str, Any]) -> str:
    """The human-readable report of one run (what the command prints)."""
    s, t = result["settings"], result["totals"]
    raw = result["raw_verify_per_s"]
    deviations = result["gossip_config"]["deviations"]
    lines = [
        f"SomaSync bench: {s['nodes']} nodes x {s['workers']} workers, {s['publishers']} "
        f"publisher(s), scenario {s['scenario']}, {s['size']} B payloads, "
        f"{result['published']['messages']:,} messages in {result['published']['seconds']:.1f}"
        f" s ({_fmt(result['published']['rate_per_s'])} msg/s offered), "
        + ("one signature per message" if s.get("signing", "single") == "single" else
           f"batch-signed, {s['batch_size']} to a signature within "
           f"{1000 * s['batch_window']:g} ms"),
        "node configuration: GossipConfig.lan() "
        + ("except " + ", ".join(f"{k}={v!r}" for k, v in deviations.items()) if deviations
           else "unchanged (the library's defaults)"),
        f"machine: {result['machine']['cpu']}, {result['machine']['usable_cores']} usable "
        f"cores; raw PyNaCl verify (one core, this run) {raw['median']:,.0f}/s "
        f"({raw['min']:,.0f}-{raw['max']:,.0f})",
        "",
        f"{'node':<9} {'state':<7} {'unique':>8} {'lost':>6} {'dup':>4} {'msg/s':>8} "
        f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'CPU%':>6} {'RSS MiB':>8}",
    ]
    for row in result["nodes"]:
        latency = row["latency_ms"] or {}
        lines.append(
            f"{row['node_id']:<9} {'killed' if row['killed'] else 'up':<7} "
            f"{_fmt(row['unique']):>8} {_fmt(row['missing']):>6} {_fmt(row['duplicates']):>4} "
            f"{_fmt(row['rate_per_s'], 0):>8} {_fmt(latency.get('p50'), 2):>8} "
            f"{_fmt(latency.get('p90'), 2):>8} {_fmt(latency.get('p99'), 2):>8} "
            f"{_fmt(latency.get('max'), 2):>8} {_fmt(row['cpu_percent'], 0):>6} "
            f"{row['rss_bytes'] / 2**20:>8.1f}")
    lines.extend(f"pub-{row['index']:<5} -> {row['entry_node']:<9} sent {row['sent']:,}, "
                 f"at most {row['max_behind_ms']:.1f} ms behind schedule, "
                 f"CPU {row['cpu_percent']:.0f}%, RSS {row['rss_bytes'] / 2**20:.1f} MiB"
                 for row in result["publishers"])
    all_nodes = result["latency_ms"]
    reach = result["reach_all_ms"]
    lines += [
        "",
        f"latency publish->delivery, every node: p50 {all_nodes['p50']:.2f}  p90 "
        f"{all_nodes['p90']:.2f}  p99 {all_nodes['p99']:.2f}  max {all_nodes['max']:.2f} ms",
        f"latency to reach all live nodes:       p50 {reach['p50']:.2f}  p90 {reach['p90']:.2f}"
        f"  p99 {reach['p99']:.2f}  max {reach['max']:.2f} ms",
        *(["latency by priority, every node:  " + "; ".join(
            f"{p}: p50 {s['p50']:.2f} p99 {s['p99']:.2f}"
            for p, s in result["latency_by_priority_ms"].items() if s) + " ms"]
          if len(result.get("latency_by_priority_ms", {})) > 1 else []),
        f"lost {t['lost']:,}, duplicates {t['duplicates']:,}, {t['bytes_per_delivery']:,.0f} "
        f"bytes on the wire (node to node) per delivery",
        f"ingest: slowest node {t['slowest_node_rate_per_s']:,.0f} msg/s; ceiling with every "
        f"node checking everything "
        f"({'batch-signed' if t.get('ceiling') == 'batch' else 'one verify each'}) "
        f"on {t['verify_cores']} core(s) = "
        f"{t['ceiling_per_node_per_s']:,.0f} msg/s -> {_fmt(t['fraction_of_ceiling'], 2)} of "
        f"ceiling; efficiency {t['efficiency']:.2f} (all nodes' msg/s / (cores x raw))",
    ]
    if s["scenario"] == "soak" and result["timeline"] is not None:
        lines += ["", format_trend(result["timeline"], result["trend"])]
    priority = result.get("priority")
    if priority is not None:
        idle, loaded = priority["critical_idle_ms"], priority["critical_loaded_ms"]
        lines += [
            "",
            f"critical alerts, mesh idle:     p50 {_fmt(idle.get('p50'), 2)}  p99 "
            f"{_fmt(idle.get('p99'), 2)}  max {_fmt(idle.get('max'), 2)} ms",
            f"critical alerts, bulk load:     p50 {_fmt(loaded.get('p50'), 2)}  p99 "
            f"{_fmt(loaded.get('p99'), 2)}  max {_fmt(loaded.get('max'), 2)} ms  -> p99 "
            f"x{_fmt(priority['p99_loaded_over_idle'], 2)} of idle",
            f"critical lost {priority['critical_lost']}; bulk frames shed "
            f"{priority['bulk_shed']:,}, bulk messages lost {priority['bulk_lost']:,}",
        ]
    lines.extend(f"  [{event['at_s']:7.2f} s] {event['what']}" for event in result["events"])
    if priority is not None:
        lines.append("OK: no critical alert was lost" if result["ok"]
                     else "FAILED: critical alerts were lost or messages duplicated")
    else:
        lines.append("OK: every live node received every message exactly once"
                     if result["ok"] else "FAILED: messages were lost or duplicated")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list and args_list[0] in _SUBCOMMANDS:
        import importlib

        module = importlib.import_module(f"somasync.bench.{args_list[0]}")
        return int(module.main(args_list[1:]))
    parser = _parser()
    args = parser.parse_args(args_list)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.plot:
        from somasync.sim.plot import require_matplotlib

        try:
            require_matplotlib()  # fail before the run, not after it
        except ImportError as exc:
            parser.error(str(exc))
        if settings.rate <= 0 or settings.scenario == "burst":
            parser.error("--plot draws the timeline of an open-loop run (rate > 0, not burst)")
    import uvloop

    show = sys.stderr.isatty() and not args.no_progress
    started = time.perf_counter()
    try:
        result = uvloop.run(run_bench(settings, _status_line if show else None))
    except BenchError as exc:
        if show:
            sys.stderr.write("\n")
        print(f"bench could not run: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("\ninterrupted; every process the bench started was stopped", file=sys.stderr)
        return 130
    if show:
        sys.stderr.write("\r" + " " * 100 + "\r")
    print(format_summary(result))
    print(f"({time.perf_counter() - started:.1f} s)")
    if args.plot:
        from somasync.bench.timeline import plot_timeline

        plot_timeline(result, args.plot)
        print(f"timeline drawn to {args.plot}")
    if args.json:
        import orjson

        with open(args.json, "wb") as handle:
            handle.write(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
