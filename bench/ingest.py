"""How many unique signed messages/s one single-process node ingests, as a ratio of the
raw single-core PyNaCl verify rate measured in the same run.

A sender process pre-signs ``--messages`` distinct messages (16 origins, 200-byte
payloads), connects to the node over 127.0.0.1, introduces itself with a signed HELLO
and writes the frames in 256 KiB batches. The node verifies, de-duplicates, stores and
delivers each one to the application, which drains its ``messages`` stream. Ingest rate
= messages / (last delivery - first delivery). Every trial is bounded in time, and the
sender process is stopped by PID at the end of each trial, also on error.

    python bench/ingest.py --trials 5 --messages 20000 [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import sys
import time

import nacl.signing

from somasync import GossipConfig, Message, MessageType, SynapseNodeBuilder
from somasync.core import wire
from somasync.core.crypto import Identity

PAYLOAD = "x" * 200
ORIGINS = 16


def raw_verify_rate(samples: int = 5000) -> float:
    """Single-core PyNaCl verifies/s on messages of the benchmark's size."""
    key = nacl.signing.SigningKey.generate()
    verify_key = key.verify_key
    signed = [key.sign(wire.MESSAGE_DOMAIN + os.urandom(300)) for _ in range(samples)]
    started = time.perf_counter()
    for item in signed:
        verify_key.verify(item)
    return samples / (time.perf_counter() - started)


def sender(port: int, count: int) -> None:
    """Child process: pre-sign, then send everything as fast as the socket takes it."""
    keys = [nacl.signing.SigningKey.generate() for _ in range(ORIGINS)]
    frames = []
    for i in range(count):
        message = Message(MessageType.Data(PAYLOAD), f"origin-{i % ORIGINS}",
                          sequence=1 + i // ORIGINS).sign_with_ed25519(keys[i % ORIGINS])
        frames.append(wire.encode_message_frame(message.to_envelope(), hops=0))
    identity = Identity.generate()
    hello = wire.encode_hello_body(identity.public_key, "bench-sender", None)
    hello_frame = wire.encode_frame(wire.FrameKind.HELLO,
                                    identity.sign(wire.HELLO_DOMAIN, hello) + hello)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(hello_frame)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()  # the parent says go
        batch: list[bytes] = []
        size = 0
        for frame in frames:
            batch.append(frame)
            size += len(frame)
            if size >= 256 * 1024:
                sock.sendall(b"".join(batch))
                batch, size = [], 0
        sock.sendall(b"".join(batch))
        sys.stdin.readline()  # keep the connection until the parent is done


async def trial(count: int, limit: float) -> dict[str, float]:
    node, messages, events = (SynapseNodeBuilder().with_node_id("ingest")
                              .with_bind_address("127.0.0.1:0")
                              .with_gossip_config(GossipConfig.lan().replace(
                                  max_stored_messages=count, seen_cache_size=2 * count))
                              .build())
    await node.start()
    port = int(node.listen_address.rsplit(":", 1)[1])
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--sender", str(port), str(count),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
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

    async def drain_events() -> None:
        with contextlib.suppress(EOFError):
            while True:
                await events.recv()

    tasks = [loop.create_task(drain()), loop.create_task(drain_events())]
    try:
        assert process.stdout is not None
        assert process.stdin is not None
        ready = await asyncio.wait_for(process.stdout.readline(), limit)
        if ready.strip() != b"ready":
            raise RuntimeError("sender did not start")
        cpu_before = time.process_time()
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), limit)
        cpu = time.process_time() - cpu_before
        stats = await node.get_stats()
        elapsed = times[-1] - times[0] if len(times) > 1 else float("nan")
        return {
            "delivered": len(times),
            "rate": (len(times) - 1) / elapsed,
            "cpu_us_per_message": 1e6 * cpu / max(1, len(times)),
            "rejected": sum(stats.rejected.values()),
            "duplicates": stats.duplicates,
        }
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        await node.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--sender", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sender:
        sender(*args.sender)
        return 0
    import uvloop

    results = []
    raw_rates = []
    for _ in range(args.trials):
        raw_rates.append(raw_verify_rate())
        results.append(uvloop.run(trial(args.messages, args.timeout)))
    rates = [r["rate"] for r in results]
    ratios = [r / v for r, v in zip(rates, raw_rates, strict=True)]
    summary = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "python": platform.python_version()},
        "messages_per_trial": args.messages,
        "trials": results,
        "raw_verify_per_s": raw_rates,
        "ingest_median": statistics.median(rates),
        "ingest_min": min(rates),
        "ingest_max": max(rates),
        "raw_verify_median": statistics.median(raw_rates),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "lost": sum(args.messages - r["delivered"] for r in results),
    }
    print(f"one node ingest: median {summary['ingest_median']:,.0f} msg/s "
          f"(min {summary['ingest_min']:,.0f}, max {summary['ingest_max']:,.0f}) over "
          f"{args.trials} trials of {args.messages} messages")
    print(f"raw PyNaCl verify, one core, same run: median "
          f"{summary['raw_verify_median']:,.0f}/s")
    print(f"ingest / raw verify: median {summary['ratio_median']:.2f} "
          f"(min {summary['ratio_min']:.2f}, max {summary['ratio_max']:.2f}); "
          f"CPU per message median "
          f"{statistics.median(r['cpu_us_per_message'] for r in results):.1f} us; "
          f"lost {summary['lost']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)
    return 0 if summary["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
