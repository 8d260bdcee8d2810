"""One greedy peer against an honest one: the honest publisher's latency while a
neighbour floods the node with validly signed messages.

    python -m somasync.bench flood --trials 3 --flood 60000 --workers 0

A node (the library's defaults) listens on 127.0.0.1. A flooder process pre-signs
``--flood`` distinct messages and writes them as fast as TCP takes them; at the same
time an honest process publishes ``--honest`` messages every ``--interval`` seconds,
each carrying its send time. The node's application measures every honest message's
latency (delivery minus send time, one host, one clock) and counts honest messages lost,
and how many flood messages it delivered while the honest publisher ran ("flood in run":
fair reading delays, and past its room sheds, the flooder's frames rather than
everyone's).
Each trial runs twice on the same machine state: with the node's fair reading (its
default: reads taken whole and their message frames handled by turns, a share of each
link's at a time, ``GossipConfig.read_ahead_bytes``) and with it disabled
(``read_ahead_bytes=0, read_slice=0``: whole reads handled in arrival order), so the
figure is a ratio within one run. Every process is stopped by PID at the end of its
trial, also on error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import sys
import time
from typing import Any

import nacl.signing

from somasync import GossipConfig, Message, MessageType, NodeConfig, SynapseNodeBuilder
from somasync.bench._link import secure_link
from somasync.bench._load import drain_events, start_together, stop_trial
from somasync.bench.machine import machine_info
from somasync.core import wire
from somasync.core.crypto import Identity

__all__ = ["main"]

HONEST = "honest-publisher"


def flooder(port: int, count: int) -> None:
    """Child process: pre-sign ``count`` messages, then write them as fast as TCP takes."""
    key = nacl.signing.SigningKey.generate()
    frames = [wire.encode_message_frame(
        Message(MessageType.Data("f" * 200), "flooder", sequence=i + 1)
        .sign_with_ed25519(key).to_envelope(), hops=0) for i in range(count)]
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        identity = Identity.generate()
        session, _ = secure_link(sock, identity, f"flooder-{identity.public_key[:4].hex()}")
        print("ready", flush=True)
        sys.stdin.readline()
        for start in range(0, len(frames), 1000):
            sock.sendall(session.seal(b"".join(frames[start:start + 1000])))
        sys.stdin.readline()


def honest(port: int, count: int, interval: float) -> None:
    """Child process: one small message every ``interval`` seconds, its send time inside."""
    key = nacl.signing.SigningKey.generate()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        identity = Identity.generate()
        session, _ = secure_link(sock, identity, f"honest-{identity.public_key[:4].hex()}")
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(count):
            message = Message(MessageType.Data(repr(time.time())), HONEST, sequence=i + 1)
            sock.sendall(session.seal(wire.encode_message_frame(
                message.sign_with_ed25519(key).to_envelope(), hops=0)))
            time.sleep(interval)
        sys.stdin.readline()


async def trial(args: argparse.Namespace, *, fair_reading: bool) -> dict[str, Any]:
    config = NodeConfig(node_id="target", bind_address="127.0.0.1:0",
                        gossip=GossipConfig.lan(), workers=args.workers)
    if not fair_reading:
        config = config.replace(read_slice=0,
                                gossip=config.gossip.replace(read_ahead_bytes=0))
    node, messages, events = SynapseNodeBuilder().with_config(config).build()
    await node.start()
    port = node.listen_address.rsplit(":", 1)[1]
    me = [sys.executable, "-m", "somasync.bench.flood"]
    processes = [
        await asyncio.create_subprocess_exec(*me, "--as-flooder", port, str(args.flood),
                                             stdin=asyncio.subprocess.PIPE,
                                             stdout=asyncio.subprocess.PIPE),
        await asyncio.create_subprocess_exec(*me, "--as-honest", port, str(args.honest),
                                             str(args.interval),
                                             stdin=asyncio.subprocess.PIPE,
                                             stdout=asyncio.subprocess.PIPE)]
    latencies: list[float] = []
    flooded = 0
    done = asyncio.Event()

    async def drain() -> None:
        nonlocal flooded
        with contextlib.suppress(EOFError):
            while True:
                message = await messages.recv()
                if message.source == HONEST:
                    assert isinstance(message.message_type, MessageType.Data)
                    latencies.append(time.time() - float(message.message_type.text))
                    if len(latencies) == args.honest:
                        done.set()
                else:
                    flooded += 1

    tasks = [asyncio.create_task(drain()), asyncio.create_task(drain_events(events))]
    try:
        await start_together(processes, within=args.timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), args.timeout)
        await asyncio.sleep(0.5)  # the last honest copies, if any are late
        ordered = sorted(latencies)
        return {"honest_delivered": len(latencies), "honest_lost": args.honest - len(latencies),
                "flood_delivered": flooded,
                "p50_ms": 1000 * ordered[len(ordered) // 2] if ordered else float("nan"),
                "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)] if ordered
                else float("nan"),
                "max_ms": 1000 * ordered[-1] if ordered else float("nan")}
    finally:
        await stop_trial(processes, node, tasks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m somasync.bench flood",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--flood", type=int, default=60_000, help="messages the flooder sends")
    parser.add_argument("--honest", type=int, default=300, help="honest messages")
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--as-flooder", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--as-honest", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.as_flooder:
        flooder(int(args.as_flooder[0]), int(args.as_flooder[1]))
        return 0
    if args.as_honest:
        honest(int(args.as_honest[0]), int(args.as_honest[1]), float(args.as_honest[2]))
        return 0
    import uvloop

    runs: dict[str, list[dict[str, Any]]] = {"fair": [], "unfair": []}
    for _ in range(args.trials):
        for mode in ("fair", "unfair"):
            runs[mode].append(uvloop.run(trial(args, fair_reading=mode == "fair")))
    print(f"{args.trials} trials; flood {args.flood:,} messages; honest {args.honest} every "
          f"{args.interval * 1000:.0f} ms; workers {args.workers}; node: GossipConfig.lan()")
    print(f"{'reading':>8} {'honest p50 ms':>16} {'honest p99 ms':>16} {'max ms':>10} "
          f"{'honest lost':>12} {'flood in run':>16}")
    for mode, rows in runs.items():
        def med(field: str, rows: list[dict[str, Any]] = rows) -> str:
            values = [r[field] for r in rows]
            return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"
        print(f"{mode:>8} {med('p50_ms'):>16} {med('p99_ms'):>16} "
              f"{statistics.median(r['max_ms'] for r in rows):>10.1f} "
              f"{sum(r['honest_lost'] for r in rows):>12} "
              f"{statistics.median(r['flood_delivered'] for r in rows):>16,.0f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine_info(), "args": vars(args), "runs": runs}, handle,
                      indent=2)
    return 0 if all(r["honest_lost"] == 0 for r in runs["fair"]) else 1


if __name__ == "__main__":
    sys.exit(main())
