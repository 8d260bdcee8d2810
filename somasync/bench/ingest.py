"""How many unique signed messages/s one node ingests, with 0 (embedded), 1, 2...
worker processes, as a ratio of the raw single-core PyNaCl verify rate measured in the
same run.

``--senders`` sender processes each pre-sign their share of ``--messages`` distinct
messages (128 origins each, 200-byte payloads), connect to the node over 127.0.0.1,
run the link handshake and write the frames in 256 KiB batches, each sealed in records
as a node would (``--encryption on``) or, with ``off``, in clear (both sides ask for
plaintext records after the same authenticated handshake). Comparing the two in one run
measures what sealing costs the receiver. The
node verifies, de-duplicates, stores and delivers each one to the application, which
drains its ``messages`` stream. Ingest rate = messages / (last delivery - first
delivery). Efficiency = ingest / (max(1, workers) x raw verify rate). Every trial is
bounded in time; sender processes are stopped by PID at the end of each trial, also on
error.

    python -m somasync.bench ingest --workers 0,1,2 --encryption on,off --senders 2 \
        --trials 5 --messages 20000
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

from somasync import GossipConfig, Message, MessageType, SecurityConfig, SynapseNodeBuilder
from somasync.bench._link import secure_link
from somasync.bench._load import drain_events, start_together, stop_trial
from somasync.bench.ceiling import raw_verify_rate
from somasync.bench.machine import machine_info
from somasync.core import wire
from somasync.core.crypto import Identity

PAYLOAD = "x" * 200
ORIGINS = 128



def sender(port: int, count: int, encrypt: bool) -> None:
    """Child process: pre-sign, then send everything as fast as the socket takes it."""
    keys = [nacl.signing.SigningKey.generate() for _ in range(ORIGINS)]
    frames = []
    for i in range(count):
        message = Message(MessageType.Data(PAYLOAD), f"origin-{i % ORIGINS}",
                          sequence=1 + i // ORIGINS).sign_with_ed25519(keys[i % ORIGINS])
        frames.append(wire.encode_message_frame(message.to_envelope(), hops=0))
    identity = Identity.generate()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # Nothing the node says after the handshake matters here; the socket buffer
        # holds it.
        # A name of its own: under any trust policy one name belongs to one key.
        session, _ = secure_link(sock, identity, f"bench-sender-{identity.public_key[:4].hex()}",
                                 plaintext=not encrypt)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()  # the parent says go
        batch: list[bytes] = []
        size = 0
        for frame in frames:
            batch.append(frame)
            size += len(frame)
            if size >= 256 * 1024:
                sock.sendall(session.seal(b"".join(batch)))
                batch, size = [], 0
        sock.sendall(session.seal(b"".join(batch)))
        sys.stdin.readline()  # keep the connection until the parent is done


async def trial(count: int, limit: float, workers: int, senders: int,
                encrypt: bool = True) -> dict[str, Any]:
    node, messages, events = (SynapseNodeBuilder().with_node_id("ingest")
                              .with_bind_address("127.0.0.1:0")
                              .with_gossip_config(GossipConfig.lan())
                              .with_security_config(SecurityConfig(encrypt_links=encrypt))
                              .with_workers(workers)
                              .build())
    await node.start()
    port = int(node.listen_address.rsplit(":", 1)[1])
    share = count // senders
    processes = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "somasync.bench.ingest", "--sender", str(port), str(share),
        str(int(encrypt)),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        for _ in range(senders)]
    count = share * senders
    loop = asyncio.get_running_loop()
    times: list[float] = []
    done = asyncio.Event()

    async def drain() -> None:
        with contextlib.suppress(EOFError):
            while True:
                await messages.recv()
                times.append(time.perf_counter())
                if len(times) == count:
                    done.set()

    tasks = [loop.create_task(drain()), loop.create_task(drain_events(events))]
    try:
        cpu_before = 0.0

        def start_clock() -> None:
            nonlocal cpu_before
            cpu_before = _node_cpu(node)

        await start_together(processes, within=limit, before_go=start_clock)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), limit)
        cpu = _node_cpu(node) - cpu_before
        stats = await node.get_stats()
        elapsed = times[-1] - times[0] if len(times) > 1 else float("nan")
        return {
            "delivered": len(times),
            "rate": (len(times) - 1) / elapsed,
            "cpu_us_per_message": 1e6 * cpu / max(1, len(times)),
            "rejected": sum(stats.rejected.values()),
            "duplicates": stats.duplicates,
            "per_worker_verified": [w.messages_verified for w in stats.workers],
            "handshake_failures": stats.handshake_failures,
        }
    finally:
        await stop_trial(processes, node, tasks)


def _node_cpu(node: object) -> float:
    """CPU seconds of this process plus its worker processes (psutil)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "--sender" not in child.cmdline():  # the node's workers, not the load
                total += sum(child.cpu_times()[:2])
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m somasync.bench ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="0,1,2",
                        help="comma-separated worker counts to compare (default 0,1,2)")
    parser.add_argument("--encryption", default="on,off",
                        help="link modes to compare: on (sealed records, the default of "
                             "every node), off (plaintext records); default on,off")
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--sender", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sender:
        port, share, encrypt = args.sender
        sender(port, share, bool(encrypt))
        return 0
    import uvloop

    worker_counts = [int(w) for w in args.workers.split(",")]
    modes = [m.strip() for m in args.encryption.split(",")]
    if not modes or any(m not in ("on", "off") for m in modes):
        parser.error("--encryption takes on, off or on,off")
    raw_rates: list[float] = []
    results: dict[tuple[int, str], list[dict[str, float]]] = {
        (w, m): [] for w in worker_counts for m in modes}
    for _ in range(args.trials):
        raw_rates.append(raw_verify_rate())
        for workers in worker_counts:
            for mode in modes:
                results[(workers, mode)].append(uvloop.run(
                    trial(args.messages, args.timeout, workers, args.senders, mode == "on")))
    raw = statistics.median(raw_rates)
    summary: dict[str, object] = {
        "machine": machine_info(),
        "messages_per_trial": args.messages, "senders": args.senders,
        "raw_verify_per_s": raw_rates,
        "results": {f"{w}/{m}": v for (w, m), v in results.items()},
    }
    print(f"raw PyNaCl verify, one core, same run: median {raw:,.0f}/s "
          f"({min(raw_rates):,.0f}-{max(raw_rates):,.0f})")
    print(f"{args.messages} messages x {args.trials} trials, {args.senders} sender processes; "
          "node configuration: GossipConfig.lan() unchanged (the library's defaults)")
    print(f"{'workers':>7} {'links':>6} {'ingest msg/s (median, min-max)':>34} "
          f"{'vs 1 worker':>12} {'vs plain':>9} {'efficiency':>10} {'CPU us/msg':>10} "
          f"{'lost':>5}")
    lost_total = 0
    medians: dict[tuple[int, str], float] = {}
    for (workers, mode), runs in results.items():
        rates = [r["rate"] for r in runs]
        median = medians[(workers, mode)] = statistics.median(rates)
        base = medians.get((1, mode))
        plain = medians.get((workers, "off"))
        lost = sum(args.messages - r["delivered"] for r in runs)
        lost_total += lost
        efficiency = median / (max(1, workers) * raw)
        cpu = statistics.median(r["cpu_us_per_message"] for r in runs)
        # Per-trial ratios (same trial, same machine state) say more than a ratio of
        # medians on a noisy machine.
        sealed_vs_plain = ([r["rate"] / p["rate"] for r, p in
                            zip(runs, results[(workers, "off")], strict=True)]
                           if mode == "on" and (workers, "off") in results else [])
        summary[f"workers_{workers}_{mode}"] = {
            "median": median, "min": min(rates), "max": max(rates),
            "efficiency": efficiency, "sealed_vs_plain_per_trial": sealed_vs_plain}
        versus = f"x{median / base:.2f}" if base else "-"
        versus_plain = (f"{statistics.median(sealed_vs_plain):.2f}" if sealed_vs_plain
                        else ("-" if plain is None or mode == "off" else "?"))
        print(f"{workers:>7} {mode:>6} {median:>14,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"
              f"{versus:>12} {versus_plain:>9} {efficiency:>10.2f} {cpu:>10.1f} {lost:>5}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)
    return 0 if lost_total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
