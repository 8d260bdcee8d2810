"""``python -m somasync.sim SCENARIO ...``: run a scenario, print a table, write JSON.

Examples::

    python -m somasync.sim steady --nodes 1000 --messages 1000
    python -m somasync.sim crash --nodes 2000 --fail-fraction 0.5 --forwarding push
    python -m somasync.sim sweep --nodes 500 --messages 900 --json sweep.json --plot sweep.png
    python -m somasync.sim partition --nodes 200 --partition-seconds 30
    python -m somasync.sim membership --nodes 300 --fail-fraction 0.05
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from somasync.config import AdaptiveConfig
from somasync.errors import ConfigError
from somasync.sim.network import Latency, NetworkModel, WanModel, parse_duration
from somasync.sim.scenarios import SCENARIOS, SimSettings, run_scenario

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m somasync.sim",
        description="Deterministic discrete-event simulation of a SomaSync mesh: the real "
                    "sans-IO core on every virtual node.")
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--messages", type=int, default=1000, help="broadcasts to send")
    parser.add_argument("--interval", type=float, default=0.05,
                        help="virtual seconds between broadcasts (default 0.05)")
    parser.add_argument("--fail-fraction", type=float, default=0.3,
                        help="crash/membership: share of nodes that crash (default 0.3)")
    parser.add_argument("--fractions", default=None,
                        help="sweep: comma-separated failed fractions (default 0.1..0.9)")
    parser.add_argument("--forwarding", choices=("tree", "push"), default="tree")
    parser.add_argument("--overlay", choices=("node", "random"), default="node",
                        help="node (the production control part: HyParView, dialler, SWIM) "
                             "or random (a baseline)")
    parser.add_argument("--swim", choices=("auto", "on", "off"), default="auto",
                        help="node overlay: run SWIM membership (auto: up to 2,000 nodes)")
    parser.add_argument("--degree", type=int, default=6, help="random overlay: links per node")
    parser.add_argument("--crypto", choices=("fast", "full"), default="fast",
                        help="fast: each distinct signature verified once per run")
    parser.add_argument("--network", choices=("lan", "wan"), default="lan")
    parser.add_argument("--latency", default=None,
                        help="one-way latency of every pair: constant:1ms, uniform:0.2ms:2ms "
                             "or lognormal:0.5ms:0.4 (lan only)")
    parser.add_argument("--loss", type=float, default=0.0, help="datagram loss probability")
    parser.add_argument("--link-timeout", default="5s",
                        help="links across a partition (or to a silent host) close after it")
    parser.add_argument("--silent-failures", action="store_true",
                        help="crashed hosts stay silent (no TCP reset)")
    parser.add_argument("--partition-seconds", type=float, default=60.0)
    parser.add_argument("--churn-rate", type=float, default=1.0, help="crashes per second")
    parser.add_argument("--churn-downtime", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=5.0,
                        help="virtual seconds after the last broadcast")
    parser.add_argument("--deadline", type=float, default=1.0,
                        help="deliveries within this many seconds count as on time")
    parser.add_argument("--announce-interval", type=float, default=0.0,
                        help="tree: seconds between two IHAVE frames to one neighbour "
                             "(0: every turn)")
    parser.add_argument("--adaptive", action="store_true",
                        help="node overlay: adaptive fanout (degrees and pacing follow "
                             "each node's estimate of the mesh's size)")
    parser.add_argument("--target-probability", type=float, default=None,
                        help="adaptive: target delivery probability (default 0.95)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="virtual seconds for the overlay to form before the first "
                             "broadcast (default 2; 30 with --adaptive)")
    parser.add_argument("--authors", type=int, default=32)
    parser.add_argument("--payload-bytes", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--plot", type=Path, default=None,
                        help="draw reliability vs failed fraction (sweep) and RMR over time "
                             "(needs the 'plot' extra: matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def settings_from(args: argparse.Namespace) -> SimSettings:
    """The :class:`SimSettings` the command line describes."""
    link_timeout = parse_duration(args.link_timeout, "network.link_timeout")
    if args.network == "wan":
        if args.latency is not None:
            raise ConfigError("network.latency", "--latency applies to the lan network only")
        network = NetworkModel(wan=WanModel.default(), loss=args.loss,
                               link_timeout=link_timeout,
                               silent_failures=args.silent_failures)
    else:
        latency = Latency.parse(args.latency) if args.latency else NetworkModel().latency
        network = NetworkModel(latency=latency, loss=args.loss, link_timeout=link_timeout,
                               silent_failures=args.silent_failures)
    fractions = SimSettings().fractions
    if args.fractions:
        try:
            fractions = tuple(float(x) for x in args.fractions.split(","))
        except ValueError:
            raise ConfigError("sim.fractions", f"expected numbers, got {args.fractions!r}") \
                from None
    adaptive = None
    if args.adaptive:
        adaptive = AdaptiveConfig(enabled=True)
        if args.target_probability is not None:
            adaptive = adaptive.replace(target_delivery_probability=args.target_probability)
    elif args.target_probability is not None:
        raise ConfigError("sim.adaptive", "--target-probability needs --adaptive")
    warmup = args.warmup if args.warmup is not None else 30.0 if adaptive else 2.0
    return SimSettings(
        adaptive=adaptive, warmup=warmup,
        nodes=args.nodes, seed=args.seed, messages=args.messages, interval=args.interval,
        fail_fraction=args.fail_fraction, forwarding=args.forwarding, overlay=args.overlay,
        swim=args.swim, degree=args.degree, crypto=args.crypto, network=network,
        authors=args.authors, announce_interval=args.announce_interval,
        payload_bytes=args.payload_bytes, drain=args.drain, deadline=args.deadline,
        partition_seconds=args.partition_seconds, churn_rate=args.churn_rate,
        churn_downtime=args.churn_downtime, fractions=fractions)


class _ProgressBar:
    """``[#####.....]  42% label`` rewritten in place on stderr."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.shown = -1

    def __call__(self, fraction: float, label: str) -> None:
        percent = int(fraction * 100)
        if percent == self.shown:
            return
        self.shown = percent
        filled = int(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        print(f"\r[{bar}] {percent:3d}% {label:<40}", end="", file=self.stream, flush=True)

    def close(self) -> None:
        if self.shown >= 0:
            print(file=self.stream, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        settings = settings_from(args)
        if args.plot is not None:
            from somasync.sim.plot import require_matplotlib

            require_matplotlib()
    except (ConfigError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar = None if args.quiet else _ProgressBar()
    try:
        result = run_scenario(args.scenario, settings, progress=bar)
    except ConfigError as exc:
        if bar is not None:
            bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if bar is not None:
        bar.close()
    print(result.table())
    if args.json is not None:
        args.json.write_text(result.to_json() + "\n")
        print(f"wrote {args.json}")
    if args.plot is not None:
        from somasync.sim.plot import plot

        plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0
