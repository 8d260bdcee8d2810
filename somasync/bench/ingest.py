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
delivery). Efficiency = ingest / (max(1, workers) x raw verify rate). CPU us/msg is the
node's (its workers included), ``senders`` the sender processes', and ``cores busy``
both times the rate: next to the machine's usable cores, it says whether more workers
had cores left to use (the senders run on the same machine). Every trial is
bounded in time; sender processes are stopped by PID at the end of each trial, also on
error.

``--signing batch`` signs each origin's messages ``--batch-size`` to a signature
(:func:`somasync.message.sign_batch`); its efficiency is against the raw rate of
checking batch-signed messages (proofs plus one verify per batch, same run), and
"vs single" is its rate over single signatures' in the same trial.

    python -m somasync.bench ingest --workers 0,1,2 --encryption on,off --senders 2 \
        --trials 5 --messages 20000
    python -m somasync.bench ingest --workers 0 --encryption on --signing single,batch
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
from somasync.bench.ceiling import raw_batch_verify_rate, raw_verify_rate
from somasync.bench.machine import machine_info
from somasync.core import wire
from somasync.core.crypto import Identity
from somasync.message import sign_batch

PAYLOAD = "x" * 200
ORIGINS = 128



def signed_messages(count: int, batch_size: int) -> list[Message]:
    """``count`` messages of ``ORIGINS`` origins, interleaved; each origin's consecutive
    messages signed ``batch_size`` to a signature (1: each alone)."""
    keys = [nacl.signing.SigningKey.generate() for _ in range(ORIGINS)]
    unsigned = [Message(MessageType.Data(PAYLOAD), f"origin-{i % ORIGINS}",
                        sequence=1 + i // ORIGINS) for i in range(count)]
    signed: list[Message] = [None] * count  # type: ignore[list-item]
    for origin in range(ORIGINS):
        mine = list(range(origin, count, ORIGINS))
        for start in range(0, len(mine), batch_size):
            chunk = mine[start : start + batch_size]
            for i, message in zip(chunk, sign_batch([unsigned[i] for i in chunk],
                                                    keys[origin]), strict=True):
                signed[i] = message
    return signed


def sender(port: int, count: int, encrypt: bool, batch_size: int = 1) -> None:
    """Child process: pre-sign, then send everything as fast as the socket takes it."""
    frames = [wire.encode_message_frame(message.to_envelope(), hops=0)
              for message in signed_messages(count, batch_size)]
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
                encrypt: bool = True, batch_size: int = 1) -> dict[str, Any]:
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
        str(int(encrypt)), str(batch_size),
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
        cpu_before = senders_before = 0.0

        def start_clock() -> None:
            nonlocal cpu_before, senders_before
            cpu_before = _node_cpu(node)
            senders_before = _senders_cpu(processes)

        await start_together(processes, within=limit, before_go=start_clock)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), limit)
        cpu = _node_cpu(node) - cpu_before
        senders_cpu = _senders_cpu(processes) - senders_before
        stats = await node.get_stats()
        elapsed = times[-1] - times[0] if len(times) > 1 else float("nan")
        return {
            "delivered": len(times),
            "rate": (len(times) - 1) / elapsed,
            "cpu_us_per_message": 1e6 * cpu / max(1, len(times)),
            "sender_cpu_us_per_message": 1e6 * senders_cpu / max(1, len(times)),
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


def _senders_cpu(processes: list[asyncio.subprocess.Process]) -> float:
    """CPU seconds the sender processes used so far (they share the node's cores: on a
    small machine they bound what more workers can add)."""
    import psutil

    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += sum(psutil.Process(process.pid).cpu_times()[:2])
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m somasync.bench ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="0,1,2",
                        help="comma-separated worker counts to compare (default 0,1,2)")
    parser.add_argument("--encryption", default="on,off",
                        help="link modes to compare: on (sealed records, the default of "
                             "every node), off (plaintext records); default on,off")
    parser.add_argument("--signing", default="single",
                        help="signing modes to compare: single (a signature per message), "
                             "batch (--batch-size messages to a signature); default single")
    parser.add_argument("--batch-size", type=int, default=64, dest="batch_size",
                        help="messages per signature with --signing batch (2-1024, 64)")
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--sender", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sender:
        port, share, encrypt, batch_size = args.sender
        sender(port, share, bool(encrypt), batch_size)
        return 0
    import uvloop

    worker_counts = [int(w) for w in args.workers.split(",")]
    modes = [m.strip() for m in args.encryption.split(",")]
    if not modes or any(m not in ("on", "off") for m in modes):
        parser.error("--encryption takes on, off or on,off")
    signings = [m.strip() for m in args.signing.split(",")]
    if not signings or any(m not in ("single", "batch") for m in signings):
        parser.error("--signing takes single, batch or single,batch")
    if not 2 <= args.batch_size <= 1024:
        parser.error("--batch-size must be 2-1024")
    sizes = {"single": 1, "batch": args.batch_size}
    raw_rates: list[float] = []
    batch_rates: list[float] = []
    Key = tuple[int, str, str]
    results: dict[Key, list[dict[str, float]]] = {
        (w, m, g): [] for w in worker_counts for m in modes for g in signings}
    for _ in range(args.trials):
        raw_rates.append(raw_verify_rate())
        if "batch" in signings:
            batch_rates.append(raw_batch_verify_rate(args.batch_size))
        for workers, mode, signing in results:
            results[(workers, mode, signing)].append(uvloop.run(
                trial(args.messages, args.timeout, workers, args.senders, mode == "on",
                      sizes[signing])))
    raw = statistics.median(raw_rates)
    ceilings = {"single": raw, "batch": statistics.median(batch_rates) if batch_rates else 0}
    summary: dict[str, object] = {
        "machine": machine_info(),
        "messages_per_trial": args.messages, "senders": args.senders,
        "raw_verify_per_s": raw_rates,
        "raw_batch_verify_per_s": batch_rates, "batch_size": args.batch_size,
        "results": {f"{w}/{m}/{g}": v for (w, m, g), v in results.items()},
    }
    print(f"raw PyNaCl verify, one core, same run: median {raw:,.0f}/s "
          f"({min(raw_rates):,.0f}-{max(raw_rates):,.0f})")
    if batch_rates:
        print(f"raw batch-signed checks ({args.batch_size} to a signature), one core, same "
              f"run: median {ceilings['batch']:,.0f}/s "
              f"({min(batch_rates):,.0f}-{max(batch_rates):,.0f})")
    print(f"{args.messages} messages x {args.trials} trials, {args.senders} sender processes; "
          "node configuration: GossipConfig.lan() unchanged (the library's defaults); "
          f"{summary['machine']['usable_cores']} usable cores")  # type: ignore[index]
    print(f"{'workers':>7} {'links':>6} {'signing':>7} {'ingest msg/s (median, min-max)':>34} "
          f"{'vs 1 worker':>12} {'vs plain':>9} {'vs single':>10} {'efficiency':>10} "
          f"{'CPU us/msg':>10} {'senders':>8} {'cores busy':>10} {'lost':>5}")
    lost_total = 0
    medians: dict[Key, float] = {}
    for (workers, mode, signing), runs in results.items():
        rates = [r["rate"] for r in runs]
        median = medians[(workers, mode, signing)] = statistics.median(rates)
        base = medians.get((1, mode, signing))
        plain = medians.get((workers, "off", signing))
        lost = sum(args.messages - r["delivered"] for r in runs)
        lost_total += lost
        efficiency = median / (max(1, workers) * ceilings[signing])
        cpu = statistics.median(r["cpu_us_per_message"] for r in runs)
        senders_cpu = statistics.median(r["sender_cpu_us_per_message"] for r in runs)
        # Cores the node and its senders kept busy (CPU per message x rate): next to the
        # machine's core count, whether more workers had any core left to use.
        busy = (cpu + senders_cpu) * median / 1e6
        # Per-trial ratios (same trial, same machine state) say more than a ratio of
        # medians on a noisy machine.
        sealed_vs_plain = _per_trial(runs, results.get((workers, "off", signing)))
        batch_vs_single = _per_trial(runs, results.get((workers, mode, "single")))
        if mode == "off":
            sealed_vs_plain = []
        if signing == "single":
            batch_vs_single = []
        summary[f"workers_{workers}_{mode}_{signing}"] = {
            "median": median, "min": min(rates), "max": max(rates),
            "efficiency": efficiency, "sealed_vs_plain_per_trial": sealed_vs_plain,
            "batch_vs_single_per_trial": batch_vs_single,
            "cpu_us_per_message": cpu, "sender_cpu_us_per_message": senders_cpu,
            "cores_busy": busy}
        versus = f"x{median / base:.2f}" if base else "-"
        versus_plain = (f"{statistics.median(sealed_vs_plain):.2f}" if sealed_vs_plain
                        else ("-" if plain is None or mode == "off" else "?"))
        versus_single = (f"x{statistics.median(batch_vs_single):.2f}" if batch_vs_single
                         else "-")
        print(f"{workers:>7} {mode:>6} {signing:>7} {median:>14,.0f} "
              f"({min(rates):,.0f}-{max(rates):,.0f})"
              f"{versus:>12} {versus_plain:>9} {versus_single:>10} {efficiency:>10.2f} "
              f"{cpu:>10.1f} {senders_cpu:>8.1f} {busy:>10.2f} {lost:>5}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)
    return 0 if lost_total == 0 else 1


def _per_trial(runs: list[dict[str, float]],
               others: list[dict[str, float]] | None) -> list[float]:
    if others is None or others is runs:
        return []
    return [r["rate"] / o["rate"] for r, o in zip(runs, others, strict=True)]


if __name__ == "__main__":
    sys.exit(main())
