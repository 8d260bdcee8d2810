"""``python -m somasync demo``: a real mesh on 127.0.0.1, signed alerts, measured delivery.

Starts ``--nodes`` nodes in one process (a ring, each joined through one bootstrap peer),
broadcasts ``--messages`` signed alerts from rotating origins at a fixed pace, and
measures for every (message, receiving node) pair the time from broadcast to delivery.
Exits non-zero when any node missed a message or got one twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass

from somasync import Peer, SynapseNode
from somasync.config import GossipConfig
from somasync.core.payload import MessageType
from somasync.node import SynapseNodeBuilder

__all__ = ["DemoResult", "main", "run_demo"]


@dataclass(frozen=True)
class DemoResult:
    nodes: int
    messages: int
    expected_deliveries: int
    deliveries: int
    missing: int
    duplicates: int
    join_seconds: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_ms_max: float
    """Broadcast-to-delivery latency over every (message, receiving node) pair."""
    all_nodes_ms_p50: float
    all_nodes_ms_p99: float
    """Time until the last node had each message."""
    bytes_per_delivery: float


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def run_demo(nodes: int = 10, messages: int = 200, interval: float = 0.002,
                   deadline: float = 30.0) -> DemoResult:
    """Run the demo mesh; every loop is bounded by ``deadline`` seconds.

    Latencies use ``time.perf_counter`` (uvloop's ``loop.time()`` has 1 ms resolution).
    """
    loop = asyncio.get_running_loop()
    mesh: list[SynapseNode] = []
    receivers: list[asyncio.Task[None]] = []
    arrivals: list[dict[str, float]] = [{} for _ in range(nodes)]
    duplicates = 0
    all_arrived = asyncio.Event()
    expected = messages * (nodes - 1)

    async def receive(index: int, stream: object) -> None:
        nonlocal duplicates
        with contextlib.suppress(EOFError):
            while True:
                message = await stream.recv()  # type: ignore[attr-defined]
                if message.id in arrivals[index]:
                    duplicates += 1
                arrivals[index][message.id] = time.perf_counter()
                if sum(len(a) for a in arrivals) >= expected:
                    all_arrived.set()

    try:
        started = loop.time()
        previous: str | None = None
        for i in range(nodes):
            builder = (SynapseNodeBuilder().with_node_id(f"demo-{i}")
                       .with_bind_address("127.0.0.1:0")
                       .with_gossip_config(GossipConfig.local()))
            if previous:
                builder = builder.add_bootstrap_peer(previous)
            node, stream, _events = builder.build()
            await node.start()
            previous = node.listen_address
            mesh.append(node)
            receivers.append(loop.create_task(receive(i, stream)))
        if nodes > 2:
            await mesh[-1].add_peer(Peer("demo-0", mesh[0].listen_address))
        links = nodes if nodes > 2 else nodes - 1
        while sum(len(n.connected_peers()) for n in mesh) < 2 * links:
            if loop.time() - started > deadline:
                raise TimeoutError("the demo mesh did not connect")
            await asyncio.sleep(0.005)
        join_seconds = loop.time() - started

        sent: dict[str, tuple[int, float]] = {}
        for k in range(messages):
            origin = k % nodes
            at = time.perf_counter()
            message_id = await mesh[origin].broadcast_message(MessageType.Alert(
                level="critical", message=f"demo alert {k}", details={"seq": str(k)}))
            sent[message_id] = (origin, at)
            await asyncio.sleep(interval)
        expected = messages * (nodes - 1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_arrived.wait(), deadline)
        await asyncio.sleep(0.1)  # let late duplicates show up, if any

        latencies: list[float] = []
        all_nodes: list[float] = []
        missing = 0
        for message_id, (origin, at) in sent.items():
            last = 0.0
            for index in range(nodes):
                if index == origin:
                    continue
                arrived = arrivals[index].get(message_id)
                if arrived is None:
                    missing += 1
                    continue
                latencies.append((arrived - at) * 1000)
                last = max(last, (arrived - at) * 1000)
            all_nodes.append(last)
        stats = [await n.get_stats() for n in mesh]
        delivered = sum(len(a) for a in arrivals)
        wire_bytes = sum(s.bytes_out for s in stats)
        return DemoResult(
            nodes=nodes, messages=messages, expected_deliveries=expected,
            deliveries=delivered, missing=missing, duplicates=duplicates,
            join_seconds=round(join_seconds, 4),
            latency_ms_p50=round(_percentile(latencies, 0.5), 3),
            latency_ms_p90=round(_percentile(latencies, 0.9), 3),
            latency_ms_p99=round(_percentile(latencies, 0.99), 3),
            latency_ms_max=round(max(latencies, default=float("nan")), 3),
            all_nodes_ms_p50=round(statistics.median(all_nodes), 3) if all_nodes else 0.0,
            all_nodes_ms_p99=round(_percentile(all_nodes, 0.99), 3),
            bytes_per_delivery=round(wire_bytes / max(1, delivered), 1),
        )
    finally:
        for node in mesh:
            await node.stop()
        for task in receivers:
            task.cancel()
        await asyncio.gather(*receivers, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m somasync demo", description=__doc__)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.002,
                        help="seconds between broadcasts (default 0.002)")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    args = parser.parse_args(argv)
    if args.nodes < 2 or args.messages < 1:
        parser.error("--nodes must be >= 2 and --messages >= 1")
    import uvloop

    started = time.perf_counter()
    result = uvloop.run(run_demo(args.nodes, args.messages, args.interval))
    print(f"SomaSync demo: {result.nodes} nodes on 127.0.0.1, {result.messages} signed alerts"
          f" ({time.perf_counter() - started:.1f} s)")
    width = max(len(k) for k in asdict(result))
    for key, value in asdict(result).items():
        print(f"  {key:<{width}}  {value}")
    ok = result.missing == 0 and result.duplicates == 0
    print("OK: every node received every alert exactly once" if ok
          else "FAILED: messages were lost or duplicated")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(asdict(result), handle, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
