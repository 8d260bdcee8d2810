"""Runs a real mesh of node processes on 127.0.0.1 under load and measures what happened.

The runner is the only process that knows the plan: it starts the nodes, joins them,
starts the publishers, injects the scenario's fault, waits (bounded) for every node to
hold every message, collects each node's exact record of arrivals, and stops every
process it started, by PID, whatever happened (an error, Ctrl-C, a node that died).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import random
import signal
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
import psutil

from somasync.bench.ceiling import raw_batch_verify_samples, raw_verify_samples
from somasync.bench.histogram import LatencyHistogram
from somasync.bench.machine import machine_info
from somasync.bench.settings import BenchSettings
from somasync.bench.timeline import build_timeline, reached_all, summarise_trend

__all__ = ["BenchError", "Progress", "run_bench"]

SCHEMA_ID = "somasync.bench/1"
_START_TIMEOUT = 60.0
IDLE_CRITICAL = 254  # the priority scenario's alerts before the bulk starts...
LOADED_CRITICAL = 255  # ...and after: both in the critical band, told apart in reports
_LINE_LIMIT = 256 * 1024 * 1024  # a node's report carries 4 bytes per planned message


class BenchError(RuntimeError):
    """The bench could not run (a process failed to start, the mesh never formed)."""


@dataclass(frozen=True)
class Progress:
    """A live snapshot, passed to the caller's callback about four times a second."""

    elapsed: float
    phase: str
    published: int
    planned: int
    slowest_node: int
    """Unique messages held by the node that has the fewest (among live nodes)."""
    expected: int


@dataclass
class _Child:
    """One process the runner started; everything it said is kept here."""

    name: str
    process: asyncio.subprocess.Process
    stderr: IO[bytes]
    lines: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    latest: dict[str, Any] = field(default_factory=dict)
    ready: dict[str, Any] = field(default_factory=dict)
    killed: bool = False
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    rss_max: int = 0
    rss_last: int = 0
    processes: int = 1
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    """(seconds since go, RSS bytes, CPU seconds) at the start and every interval."""
    reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, line: bytes) -> None:
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.write(line)

    async def read_until(self, kind: str, within: float) -> dict[str, Any]:
        """The body of the next line of ``kind`` (lines of other kinds are skipped)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while True:
            remaining = end - loop.time()
            if remaining <= 0:
                raise BenchError(f"{self.name}: no {kind!r} within {within:.0f} s"
                                 f"{self.stderr_tail()}")
            try:
                line = await asyncio.wait_for(self.lines.get(), remaining)
            except TimeoutError:
                continue
            if not line:
                raise BenchError(f"{self.name} exited (code {self.process.returncode}) "
                                 f"before sending {kind!r}{self.stderr_tail()}")
            if kind in line:
                return dict(line[kind])

    def stderr_tail(self) -> str:
        try:
            self.stderr.seek(0)
            text = self.stderr.read()[-2000:].decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return f"; its stderr ends:\n{text}" if text else ""


def _cpu_and_rss(pid: int) -> tuple[float, int, int]:
    """CPU seconds (user+system) and RSS of ``pid`` and its descendants (a sharded node's
    workers), and how many processes that was."""
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0, 0, 0
    cpu, rss, alive = 0.0, 0, 0
    for member in members:
        with contextlib.suppress(psutil.Error):
            times = member.cpu_times()
            cpu += times.user + times.system
            rss += member.memory_info().rss
            alive += 1
    return cpu, rss, alive


async def _spawn(name: str, module: str, spec: dict[str, Any]) -> _Child:
    # stderr goes to an unnamed temporary file: unbounded chatter can never block a
    # child, and its tail is shown when the child fails.
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by _stop_all
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, orjson.dumps(spec).decode(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        limit=_LINE_LIMIT,
        # Own session: a Ctrl-C at the terminal reaches only the runner, which then
        # stops its children in order instead of racing them.
        start_new_session=True)
    child = _Child(name, process, stderr)
    child.reader = asyncio.get_running_loop().create_task(_read_lines(child))
    return child


async def _read_lines(child: _Child) -> None:
    stdout = child.process.stdout
    assert stdout is not None
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        while line := await stdout.readline():
            try:
                parsed = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if "progress" in parsed:
                child.latest = parsed["progress"]
            else:
                await child.lines.put(parsed)
    await child.lines.put({})  # end of output


async def _stop_all(children: list[_Child]) -> None:
    """Ask every child to stop, then make sure: SIGTERM, SIGKILL, by PID, and the worker
    processes of nodes too (they are the node's children, known from psutil)."""
    descendants: dict[int, list[psutil.Process]] = {}
    for child in children:
        with contextlib.suppress(psutil.Error):
            descendants[child.pid] = psutil.Process(child.pid).children(recursive=True)
        if child.process.returncode is None:
            child.send(b'{"cmd": "stop"}\n')
            if child.process.stdin is not None:
                child.process.stdin.close()
    for child in children:
        try:
            await asyncio.wait_for(child.process.wait(), 10.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.process.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()
        for orphan in descendants.get(child.pid, []):
            with contextlib.suppress(psutil.Error):
                if orphan.is_running():
                    orphan.kill()
        if child.reader is not None:
            child.reader.cancel()
            await asyncio.gather(child.reader, return_exceptions=True)
        tag = child.ready.get("segment_tag")
        if tag and child.killed:
            from somasync.workers import shm  # the multiprocess runtime, loaded lazily

            shm.remove_leaked(tag)
        child.stderr.close()


def _topology(nodes: int, links: int, seed: int) -> list[list[int]]:
    """Who each node dials: ``links`` random earlier nodes (a connected mesh)."""
    rng = random.Random(seed)
    return [rng.sample(range(i), min(i, links)) for i in range(nodes)]


async def run_bench(settings: BenchSettings,
                    progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
    """Run one bench and return its result (the JSON document described by
    ``somasync/bench/schema.json``). Bounded in time; stops every process it started."""
    loop = asyncio.get_running_loop()
    wall_started = time.perf_counter()
    run_id = os.urandom(4).hex()
    raw = raw_verify_samples(size=settings.size + 150)
    # Batch-signed messages are checked against their own ceiling (proofs, one verify
    # per batch), or a mesh that batches would read as beating the crypto.
    raw_batch = (raw_batch_verify_samples(settings.batch_size, size=settings.size + 150)
                 if settings.signing == "batch" else None)
    planned = settings.planned()
    victim = settings.nodes - 1 if settings.scenario == "kill-node" else None
    # The library's defaults, so the bench measures what users run; deviations are
    # explicit flags, and the report lists them.
    gossip = settings.gossip_deviations()
    nodes: list[_Child] = []
    publishers: list[_Child] = []
    events: list[dict[str, Any]] = []
    started_at = loop.time()

    def note(what: str) -> None:
        events.append({"at_s": round(loop.time() - started_at, 3), "what": what})

    try:
        for i in range(settings.nodes):
            spec = {
                "node_id": f"bench-{i}", "workers": settings.workers, "gossip": gossip,
                "planned": {str(p): n for p, n in enumerate(planned)},
                "slow_rate": settings.slow_rate if settings.scenario == "slow" and i == 0
                else 0,
                "drop_every": settings.drop_every if i == 0 else 0,
            }
            nodes.append(await _spawn(f"node bench-{i}", "somasync.bench._node", spec))
        for child in nodes:
            child.ready = await child.read_until("ready", _START_TIMEOUT)
        dials = _topology(settings.nodes, settings.links, settings.seed)
        degree = [len(d) for d in dials]
        for i, targets in enumerate(dials):
            for target in targets:
                degree[target] += 1
            if targets:
                peers = [[f"bench-{t}", nodes[t].ready["address"]] for t in targets]
                nodes[i].send(orjson.dumps({"cmd": "connect", "peers": peers}) + b"\n")
        end = loop.time() + _START_TIMEOUT
        while any(n.latest.get("peers", 0) < degree[i] for i, n in enumerate(nodes)):
            if loop.time() > end:
                raise BenchError("the mesh did not form within "
                                 f"{_START_TIMEOUT:.0f} s (node degrees expected {degree})")
            await asyncio.sleep(0.05)
        note(f"mesh formed: {settings.nodes} nodes, {sum(degree) // 2} links")

        entry_nodes = [i for i in range(settings.nodes) if i != victim]
        for p, count in enumerate(planned):
            entry = entry_nodes[p % len(entry_nodes)]
            spec = {"index": p, "count": count, "size": settings.size, "run": run_id,
                    "rate": settings.rate / settings.publishers
                    if settings.scenario != "burst" else 0,
                    "start_delay": 0.0,
                    "address": nodes[entry].ready["address"], "seed": settings.seed,
                    "priority_mix": [list(pair) for pair in settings.priority_mix],
                    "entry_node": entry,
                    "batch_size": settings.batch_size if settings.signing == "batch" else 1,
                    "batch_window": settings.batch_window}
            if settings.scenario == "priority":
                spec.update(_priority_roles(settings, p, count))
            publishers.append(await _spawn(f"publisher {p}", "somasync.bench._publisher",
                                           spec))
            publishers[-1].ready = {**spec}
        for child in publishers:
            child.ready.update(await child.read_until("ready", _START_TIMEOUT))
        end = loop.time() + _START_TIMEOUT
        joined = [degree[i] + sum(1 for c in publishers if c.ready["entry_node"] == i)
                  for i in range(settings.nodes)]
        while any(n.latest.get("peers", 0) < joined[i] for i, n in enumerate(nodes)):
            if loop.time() > end:
                raise BenchError("publishers did not join within "
                                 f"{_START_TIMEOUT:.0f} s")
            await asyncio.sleep(0.05)

        for child in nodes + publishers:
            child.cpu_start, child.rss_max, child.processes = _cpu_and_rss(child.pid)
        go_ns = time.monotonic_ns() + 200_000_000
        go_wall = loop.time() + 0.2
        for child in publishers:
            child.send(f"go {go_ns}\n".encode())
        fastest = settings.scenario == "burst" or not settings.rate
        pace = "as fast as possible" if fastest else f"{settings.rate:g}/s"
        note(f"publishing {settings.total_messages} messages ({pace})")

        # One sample at the start and one at the end of every interval of the schedule,
        # also while draining: the last interval ends after the last message was due.
        next_sample = go_wall
        last_sample = go_wall + math.ceil(settings.duration / settings.interval - 1e-9) \
            * settings.interval
        fault_at = go_wall + settings.duration / 2
        fault_done = settings.scenario not in ("kill-node", "kill-worker")
        done: dict[int, dict[str, Any]] = {}
        expected = settings.total_messages
        send_deadline = go_wall + 3 * settings.duration + 60
        drain_deadline: float | None = None
        while True:
            now = loop.time()
            for p, child in enumerate(publishers):
                if p not in done and not child.lines.empty():
                    line = child.lines.get_nowait()
                    if not line:
                        raise BenchError(f"{child.name} exited early{child.stderr_tail()}")
                    if "done" in line:
                        done[p] = line["done"]
            if not fault_done and now >= fault_at:
                fault_done = True
                if victim is not None:
                    nodes[victim].killed = True
                    os.kill(nodes[victim].pid, signal.SIGKILL)
                    note(f"SIGKILL node bench-{victim} (pid {nodes[victim].pid})")
                else:
                    pid = nodes[0].ready["worker_pids"][0]
                    os.kill(pid, signal.SIGKILL)
                    note(f"SIGKILL worker pid {pid} of node bench-0")
            live = [n for n in nodes if not n.killed]
            sampling = next_sample <= min(now, last_sample + 1e-6)
            if sampling:
                next_sample += settings.interval
            for child in live:
                cpu, rss, _ = _cpu_and_rss(child.pid)
                child.rss_max = max(child.rss_max, rss)
                if sampling:
                    child.samples.append((round(now - go_wall, 3), rss, cpu))
            slowest = min(n.latest.get("unique", 0) for n in live)
            if len(done) == len(publishers) and drain_deadline is None:
                drain_deadline = now + settings.drain_timeout
                note("publishers finished")
            if progress is not None:
                progress(Progress(elapsed=now - started_at,
                                  phase="draining" if drain_deadline else "publishing",
                                  published=sum(d["sent"] for d in done.values()),
                                  planned=expected, slowest_node=slowest, expected=expected))
            # A node whose application deliberately discards deliveries (testing the
            # bench) can never hold everything; it is done once it has taken everything.
            taken = min(n.latest.get("unique", 0) + n.latest.get("injected_drops", 0)
                        for n in live)
            if drain_deadline is not None and taken >= expected:
                note("every node holds every message" if slowest >= expected
                     else "every node has taken every message")
                break
            if drain_deadline is not None and now > drain_deadline:
                note(f"drain deadline: slowest node holds {slowest}/{expected}")
                break
            if drain_deadline is None and now > send_deadline:
                raise BenchError("publishers did not finish in time")
            await asyncio.sleep(0.25)

        finished_at = loop.time()
        for child in nodes + publishers:
            if not child.killed:
                child.cpu_end, child.rss_last, _ = _cpu_and_rss(child.pid)
                child.rss_max = max(child.rss_max, child.rss_last)
        if next_sample <= last_sample + 1e-6:
            # Everything arrived before the schedule's last interval ended: its closing
            # sample is the one just taken.
            for child in nodes:
                if not child.killed:
                    child.samples.append((round(finished_at - go_wall, 3), child.rss_last,
                                          child.cpu_end))
        reports: dict[int, dict[str, Any]] = {}
        for child in nodes:
            if not child.killed:
                child.send(b'{"cmd": "report"}\n')
        for i, child in enumerate(nodes):
            if not child.killed:
                reports[i] = await child.read_until("report", _START_TIMEOUT)
        for child in publishers:
            child.send(b"close\n")
        closed = [await child.read_until("closed", _START_TIMEOUT) for child in publishers]
        return _summarise(settings, raw, raw_batch, planned, nodes, publishers, done, reports,
                          closed, events, go_wall, finished_at,
                          time.perf_counter() - wall_started)
    finally:
        await _stop_all(publishers + nodes)


def _priority_roles(settings: BenchSettings, publisher: int, count: int) -> dict[str, Any]:
    """The ``priority`` scenario's publishers: 0 sends alerts at ``critical_rate`` all
    along (254 while the mesh idles, 255 once the bulk runs); the others bulk (priority
    0) at their share of ``rate`` from half-time on."""
    if publisher == 0:
        idle = count // 2
        return {"rate": settings.critical_rate,
                "priorities": [IDLE_CRITICAL] * idle + [LOADED_CRITICAL] * (count - idle)}
    return {"rate": settings.rate / (settings.publishers - 1), "priorities": [0] * count,
            "start_delay": settings.duration / 2}


def _priority_summary(by_priority: dict[int, LatencyHistogram],
                      node_rows: list[dict[str, Any]], sent: list[int],
                      arrivals: dict[int, list[array[int]]]) -> dict[str, Any]:
    idle = by_priority.get(IDLE_CRITICAL, LatencyHistogram()).summary_ms()
    loaded = by_priority.get(LOADED_CRITICAL, LatencyHistogram()).summary_ms()
    critical_lost = sum(1 for node in arrivals.values()
                        for number in range(sent[0]) if not node[0][number])
    ratio = (loaded["p99"] / idle["p99"]
             if idle.get("p99") and loaded.get("p99") is not None else None)
    return {
        "critical_idle_ms": idle, "critical_loaded_ms": loaded,
        "p99_loaded_over_idle": round(ratio, 2) if ratio is not None else None,
        "critical_lost": critical_lost,
        "bulk_shed": sum((row.get("rejected") or {}).get("ingress_shed", 0)
                         for row in node_rows),
        "bulk_lost": sum(r["missing"] for r in node_rows if r["missing"] is not None)
        - critical_lost,
    }


def _summarise(settings: BenchSettings, raw: dict[str, Any],
               raw_batch: dict[str, Any] | None, planned: list[int],
               nodes: list[_Child], publishers: list[_Child],
               done: dict[int, dict[str, Any]], reports: dict[int, dict[str, Any]],
               closed: list[dict[str, Any]], events: list[dict[str, Any]],
               go_wall: float, finished_at: float, wall_seconds: float) -> dict[str, Any]:
    sent = [done[p]["sent"] for p in range(len(publishers))]
    start_ns = min(d["start_ns"] for d in done.values())
    publish_seconds = (max(d["finished_ns"] for d in done.values()) - start_ns) / 1e9
    window = max(1e-9, finished_at - go_wall)
    merged = LatencyHistogram()
    by_priority: dict[int, LatencyHistogram] = {}
    arrivals: dict[int, list[array[int]]] = {}
    node_rows: list[dict[str, Any]] = []
    for i, child in enumerate(nodes):
        row: dict[str, Any] = {
            "node_id": f"bench-{i}", "pid": child.pid, "workers": settings.workers,
            "killed": child.killed, "processes": child.processes,
            "segment_tag": child.ready.get("segment_tag"),
            "rss_bytes": child.rss_max,
            "cpu_percent": None if child.killed
            else round(100 * (child.cpu_end - child.cpu_start) / window, 1),
        }
        report = reports.get(i)
        if report is None:
            node_rows.append({**row, "unique": None, "missing": None, "duplicates": None,
                              "gaps": [], "rate_per_s": None, "latency_ms": None})
            continue
        per_publisher = []
        missing = 0
        gaps: list[list[int]] = []
        for p, count in enumerate(sent):
            slots = array("I")
            slots.frombytes(base64.b64decode(report["arrivals"][str(p)]))
            per_publisher.append(slots)
            for number in range(count):
                if not slots[number]:
                    missing += 1
                    if len(gaps) < 10:
                        gaps.append([p, number])
        arrivals[i] = per_publisher
        histogram = LatencyHistogram.from_dict(report["histogram"])
        merged.merge(histogram)
        for priority, data in report.get("by_priority", {}).items():
            by_priority.setdefault(int(priority), LatencyHistogram()).merge(
                LatencyHistogram.from_dict(data))
        active = (report["last_ns"] - start_ns) / 1e9 if report["last_ns"] else 0.0
        node_rows.append({
            **row, "unique": report["unique"], "missing": missing,
            "duplicates": report["duplicates"], "gaps": gaps,
            "unexpected": report["unexpected"], "injected_drops": report["injected_drops"],
            "rate_per_s": round(report["unique"] / active, 1) if active > 0 else 0.0,
            "latency_ms": histogram.summary_ms(),
            "bytes_out": report["bytes_out"], "bytes_in": report["bytes_in"],
            "deliveries_dropped": report["deliveries_dropped"],
            "rejected": report["rejected"], "worker_restarts": report["worker_restarts"],
            # Where a lost message went: the core's integer counters (send queues that
            # overflowed, digests and repairs, duplicates dropped), summed over workers.
            "core": report["core"],
            "tree": report.get("tree", {}),
        })
    timeline = trend = None
    if settings.rate > 0 and settings.scenario not in ("burst", "priority"):
        timeline, histograms = build_timeline(
            interval=settings.interval, rate_per_publisher=settings.rate / settings.publishers,
            sent=sent, arrivals=arrivals,
            samples={i: child.samples for i, child in enumerate(nodes)})
        trend = summarise_trend(timeline, histograms)
    reach_all = LatencyHistogram()
    survivors = list(arrivals.values())
    for p, count in enumerate(sent):
        for _, latest in reached_all([node[p] for node in survivors], count):
            reach_all.record(latest)
    lost = sum(r["missing"] for r in node_rows if r["missing"] is not None)
    duplicates = sum(r["duplicates"] for r in node_rows if r["duplicates"] is not None)
    unique = sum(r["unique"] for r in node_rows if r["unique"] is not None)
    node_bytes = sum(r.get("bytes_out", 0) for r in node_rows)
    aggregate = sum(r["rate_per_s"] for r in node_rows if r["rate_per_s"])
    machine = machine_info()
    usable = int(machine["usable_cores"] or machine["logical_cores"] or 1)  # type: ignore[call-overload]
    verifiers = sum(1 for r in node_rows if not r["killed"]) * max(1, settings.workers)
    cores = min(usable, verifiers)
    ceiling = raw if raw_batch is None else raw_batch
    ceiling_per_node = cores * ceiling["median"] / max(1, len(survivors))
    slowest_rate = min((r["rate_per_s"] for r in node_rows if r["rate_per_s"] is not None),
                       default=0.0)
    publisher_rows = [{
        "index": p, "pid": child.pid, "entry_node": f"bench-{child.ready['entry_node']}",
        "sent": sent[p], "max_behind_ms": round(done[p]["max_behind_ms"], 3),
        "bytes_in": closed[p]["bytes_in"], "repairs": closed[p]["repairs"],
        "reconnects": closed[p]["reconnects"], "rss_bytes": child.rss_max,
        "cpu_percent": round(100 * (child.cpu_end - child.cpu_start) / window, 1),
    } for p, child in enumerate(publishers)]
    priority = (_priority_summary(by_priority, node_rows, sent, arrivals)
                if settings.scenario == "priority" else None)
    # Under a bulk load past the nodes' capacity, bulk is what they shed (counted); a
    # priority run succeeds when no critical alert was lost.
    ok = (priority["critical_lost"] == 0 if priority is not None else lost == 0) \
        and duplicates == 0 and bool(survivors)
    return {
        "schema": SCHEMA_ID,
        "ok": ok,
        "priority": priority,
        "settings": settings.to_dict(),
        "gossip_config": {"preset": "lan", "deviations": settings.gossip_deviations()},
        "machine": machine,
        "raw_verify_per_s": raw,
        "raw_batch_verify_per_s": raw_batch,
        "published": {"messages": sum(sent), "seconds": round(publish_seconds, 3),
                      "rate_per_s": round(sum(sent) / publish_seconds, 1)
                      if publish_seconds > 0 else None},
        "totals": {
            "lost": lost, "duplicates": duplicates, "unique_deliveries": unique,
            "bytes_per_delivery": round((node_bytes - sum(c["bytes_in"] for c in closed))
                                        / max(1, unique), 1),
            "aggregate_rate_per_s": round(aggregate, 1),
            "verify_cores": cores,
            "efficiency": round(aggregate / (cores * ceiling["median"]), 3),
            "ceiling": "single" if raw_batch is None else "batch",
            "ceiling_per_node_per_s": round(ceiling_per_node, 1),
            "slowest_node_rate_per_s": slowest_rate,
            "fraction_of_ceiling": round(slowest_rate / ceiling_per_node, 3)
            if ceiling_per_node else None,
        },
        "latency_ms": merged.summary_ms(),
        "latency_by_priority_ms": {str(p): by_priority[p].summary_ms()
                                   for p in sorted(by_priority, reverse=True)},
        "reach_all_ms": reach_all.summary_ms(),
        "reach_all_messages": reach_all.count,
        "latency_histogram": merged.to_dict(),
        "nodes": node_rows,
        "publishers": publisher_rows,
        "events": events,
        "timeline": timeline,
        "trend": trend,
        "wall_seconds": round(wall_seconds, 2),
    }
