"""One node of a bench mesh in its own process; the runner starts it, users do not.

    python -m somasync.bench._node '<json spec>'

It speaks JSON lines: commands arrive on stdin (``connect``, ``report``, ``stop``), and it
writes ``ready``, periodic ``progress`` and one ``report`` line on stdout. End of stdin
stops the node, so a runner that dies takes its nodes with it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import sys
import time
from array import array
from typing import Any

import orjson

from somasync import Peer, Stream, SynapseNode
from somasync.bench import payload
from somasync.bench.histogram import LatencyHistogram
from somasync.config import GossipConfig
from somasync.core.payload import Binary
from somasync.message import Message
from somasync.node import SynapseNodeBuilder

__all__ = ["Recorder", "main"]


class Recorder:
    """What one node's application saw: per published message, its latency or nothing.

    ``arrivals[p][n]`` is the latency in us (at least 1) of publisher ``p``'s message
    ``n``, or 0 if it never arrived: exact loss and duplicate accounting in 4 bytes per
    planned message, allocated once from the plan (never grown by what peers send).
    """

    def __init__(self, planned: dict[int, int]) -> None:
        self.arrivals = {publisher: array("I", bytes(4 * count))
                         for publisher, count in planned.items()}
        self.histogram = LatencyHistogram()
        self.by_priority: dict[int, LatencyHistogram] = {}
        """The same latencies, by message priority (what priority routing is judged by)."""
        self.unique = 0
        self.duplicates = 0
        self.unexpected = 0
        """Bench messages outside the plan (unknown publisher or number)."""
        self.foreign = 0
        """Deliveries that are not bench messages at all."""
        self.injected_drops = 0
        self.first_ns = 0
        self.last_ns = 0

    def record(self, message: Message, now_ns: int) -> None:
        body = message.message_type
        parsed = payload.decode(body.data) if isinstance(body, Binary) else None
        if parsed is None:
            self.foreign += 1
            return
        publisher, number, due_ns = parsed
        slots = self.arrivals.get(publisher)
        if slots is None or number >= len(slots):
            self.unexpected += 1
            return
        if slots[number]:
            self.duplicates += 1
            return
        latency = max(1, min((now_ns - due_ns) // 1000, 0xFFFFFFFF))
        slots[number] = latency
        self.histogram.record(latency)
        by_priority = self.by_priority.get(message.priority)
        if by_priority is None:
            by_priority = self.by_priority[message.priority] = LatencyHistogram()
        by_priority.record(latency)
        self.unique += 1
        self.first_ns = self.first_ns or now_ns
        self.last_ns = now_ns


def _emit(kind: str, body: object) -> None:
    sys.stdout.buffer.write(orjson.dumps({kind: body}) + b"\n")
    sys.stdout.buffer.flush()


async def _consume(messages: Stream[Message], recorder: Recorder, *,
                   slow_rate: float, drop_every: int) -> None:
    """The application: takes every delivery; a slow one spends 1/slow_rate s on each."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / slow_rate if slow_rate > 0 else 0.0
    busy_until = 0.0
    taken = 0
    with contextlib.suppress(EOFError):
        while True:
            message = await messages.recv()
            now_ns = time.monotonic_ns()
            taken += 1
            if drop_every and taken % drop_every == 0:
                # Fault injection for testing the bench itself: the application
                # "loses" this delivery, and the runner must notice.
                recorder.injected_drops += 1
            else:
                recorder.record(message, now_ns)
            if interval:
                busy_until = max(busy_until, loop.time()) + interval
                await asyncio.sleep(busy_until - loop.time())


async def _drain(stream: Stream[Any]) -> None:
    with contextlib.suppress(EOFError):
        while True:
            await stream.recv()


async def _progress(node: SynapseNode, recorder: Recorder, messages: Stream[Message],
                    every: float) -> None:
    while True:
        _emit("progress", {"unique": recorder.unique, "duplicates": recorder.duplicates,
                           "injected_drops": recorder.injected_drops,
                           "peers": len(node.connected_peers()), "backlog": len(messages)})
        await asyncio.sleep(every)


async def _report(node: SynapseNode, recorder: Recorder) -> dict[str, object]:
    stats = await node.get_stats()
    return {
        "unique": recorder.unique, "duplicates": recorder.duplicates,
        "unexpected": recorder.unexpected, "foreign": recorder.foreign,
        "injected_drops": recorder.injected_drops,
        "first_ns": recorder.first_ns, "last_ns": recorder.last_ns,
        "histogram": recorder.histogram.to_dict(),
        "by_priority": {str(p): h.to_dict() for p, h in recorder.by_priority.items()},
        "arrivals": {str(p): base64.b64encode(a.tobytes()).decode()
                     for p, a in recorder.arrivals.items()},
        "bytes_in": stats.bytes_in, "bytes_out": stats.bytes_out,
        "frames_out": stats.frames_out, "duplicates_dropped": stats.duplicates,
        "rejected": stats.rejected, "deliveries_dropped": stats.deliveries_dropped,
        "worker_restarts": stats.worker_restarts,
        "worker_pids": _worker_pids(node),
        "core": {name: value for name, value in dataclasses.asdict(stats.core).items()
                 if isinstance(value, int)},
        # The broadcast tree's counters and timers: how many GRAFTs load cost.
        "tree": {} if stats.core.tree is None else dataclasses.asdict(stats.core.tree),
    }


def _worker_pids(node: SynapseNode) -> list[int]:
    pids = getattr(node.runtime, "worker_pids", None)
    return sorted(pids().values()) if pids is not None else []


async def serve(spec: dict[str, Any]) -> None:
    gossip = GossipConfig.lan().replace(**spec.get("gossip", {}))
    node, messages, events = (SynapseNodeBuilder().with_node_id(spec["node_id"])
                              .with_bind_address("127.0.0.1:0")
                              .with_gossip_config(gossip)
                              .with_workers(int(spec.get("workers", 0)))
                              .build())
    recorder = Recorder({int(p): int(n) for p, n in spec["planned"].items()})
    await node.start()
    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(_consume(messages, recorder, slow_rate=float(spec.get("slow_rate", 0)),
                                  drop_every=int(spec.get("drop_every", 0)))),
        loop.create_task(_drain(events)),
    ]
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        _emit("ready", {"address": node.listen_address, "pid": os.getpid(),
                        "worker_pids": _worker_pids(node),
                        "segment_tag": getattr(node.runtime, "segment_tag", None)})
        tasks.append(loop.create_task(
            _progress(node, recorder, messages, float(spec.get("progress_every", 0.25)))))
        while line := await reader.readline():
            command = orjson.loads(line)
            match command.get("cmd"):
                case "connect":
                    for peer_id, address in command["peers"]:
                        await node.add_peer(Peer(peer_id, address))
                case "report":
                    _emit("report", await _report(node, recorder))
                case "stop":
                    break
    finally:
        await node.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    import uvloop

    uvloop.run(serve(orjson.loads(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
