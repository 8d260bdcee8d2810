"""Scenarios: build a simulation, inject faults on a schedule, and measure.

``steady`` (no faults), ``crash`` (``fail_fraction`` of the nodes crash at once halfway
through the broadcasts), ``churn`` (crashes at ``churn_rate`` per second, each node back
after ``churn_downtime``), ``partition`` (two halves for ``partition_seconds``, broadcasts
on both sides, then heal), ``sweep`` (the crash scenario for each failed fraction) and
``membership`` (SWIM on its own, see :mod:`somasync.sim.membership`).

Each run: build the nodes, let the overlay form (``warmup``), send ``messages``
broadcasts ``interval`` seconds apart from random live nodes, then ``drain`` seconds for
repairs; reliability is judged at the end.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from somasync.config import AdaptiveConfig, GossipConfig, MembershipConfig
from somasync.errors import ConfigError
from somasync.sim.engine import Simulation
from somasync.sim.metrics import SimResult, deep_size, summarize
from somasync.sim.network import NetworkModel

__all__ = ["SCENARIOS", "SimSettings", "run_scenario", "sim_gossip_config"]

SCENARIOS = ("steady", "crash", "churn", "partition", "sweep", "membership")
STEADY_SKIP = 0.1
"""Share of a run's first broadcasts left out of steady-state RMR (the overlay settling).
Each origin's first broadcast is left out too: it floods, to grow that origin's tree."""
RUN_GC_THRESHOLD = 100_000
"""Allocations between two young-generation collections during a run (Python's default:
700). Ten thousand nodes' messages, links and timers churn through millions of objects
that reference counting frees: sweeping every 700 of them, and the older generations
after every tenth sweep, cost a tenth of the run."""
MEMORY_SAMPLE = 16
"""Endpoints whose memory is broken down by component."""

Progress = Callable[[float, str], None]


@dataclass(frozen=True, kw_only=True)
class SimSettings:
    """Everything a scenario run needs; invalid values raise ``ConfigError`` naming
    the field (``sim.<name>``)."""

    nodes: int = 1000
    seed: int = 1
    messages: int = 1000
    interval: float = 0.05
    """Seconds between two broadcasts."""
    fail_fraction: float = 0.3
    """crash / sweep: share of the nodes that crash at once."""
    forwarding: str = "tree"
    """``tree`` (Plumtree) or ``push`` (plain push gossip, the baseline)."""
    overlay: str = "node"
    """``node`` (the production control part: HyParView, dialler, SWIM) or ``random``
    (a baseline, see :mod:`somasync.sim.overlays`)."""
    swim: str = "auto"
    """``node`` overlay: ``on`` runs SWIM membership on every virtual node, ``off`` the
    overlay alone, ``auto`` on up to ``MEMBERSHIP_AUTO_LIMIT`` (2,000) nodes, where a
    full member list per node still fits in memory."""
    degree: int = 6
    """Random overlay: links per node."""
    crypto: str = "fast"
    """``fast``: memoised Ed25519, each distinct signature checked once per run;
    ``full``: every copy checked at every node."""
    network: NetworkModel = field(default_factory=NetworkModel)
    authors: int = 32
    """Publishing nodes of the workload (spread over the nodes; each its own stream),
    which keeps anti-entropy digests at that many streams."""
    payload_bytes: int = 256
    warmup: float = 2.0
    """Seconds for the overlay to form before the first broadcast (HyParView adds its
    join time)."""
    drain: float = 5.0
    """Seconds after the last broadcast before the run is judged."""
    deadline: float = 1.0
    """A delivery within this many seconds of the send is "on time"."""
    repair_window: float = 2.0
    """crash: broadcasts sent this long after the crash count as "after repair"."""
    partition_seconds: float = 60.0
    max_convergence: float = 120.0
    """partition: seconds after the heal to wait for full convergence."""
    churn_rate: float = 1.0
    """churn: crashes per second (each a random live node)."""
    churn_downtime: float = 10.0
    """churn: seconds a crashed node stays down before it restarts (empty state)."""
    fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    """sweep: the failed fractions."""
    gossip: GossipConfig | None = None
    """Endpoint settings; None: :func:`sim_gossip_config` of these settings."""
    membership: MembershipConfig | None = None
    """SWIM settings of the membership scenario and the ``node`` overlay (None:
    ``MembershipConfig.lan()``)."""
    announce_interval: float = 0.0
    """Tree: the endpoints' ``gossip.announce_interval`` (seconds between two IHAVE
    frames to one neighbour; 0 announces every turn)."""
    membership_window: float = 20.0
    """membership: seconds after the crash during which detections are counted."""
    memory_breakdown: bool = True
    adaptive: AdaptiveConfig | None = None
    """Adaptive fanout of the ``node`` overlay (None: the fixed degrees). Give the
    overlay time to estimate the size and settle (``warmup`` beyond ``settle_time``):
    the values in force when the run is judged are reported in ``extra``."""

    def __post_init__(self) -> None:
        _int(self.nodes, "nodes", 2)
        _int(self.messages, "messages", 0)
        _int(self.degree, "degree", 1)
        _int(self.authors, "authors", 1)
        _int(self.payload_bytes, "payload_bytes", 1)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError("sim.seed", f"must be an integer, got {self.seed!r}")
        for name in ("interval", "deadline", "repair_window", "partition_seconds",
                     "max_convergence", "churn_rate", "churn_downtime",
                     "membership_window"):
            _number(getattr(self, name), name, positive=True)
        for name in ("warmup", "drain", "announce_interval"):
            _number(getattr(self, name), name, positive=False)
        _fraction(self.fail_fraction, "fail_fraction")
        if not self.fractions:
            raise ConfigError("sim.fractions", "needs at least one fraction")
        for value in self.fractions:
            _fraction(value, "fractions")
        if self.forwarding not in ("tree", "push"):
            raise ConfigError("sim.forwarding",
                              f"must be 'tree' or 'push', got {self.forwarding!r}")
        if self.overlay not in ("node", "random"):
            raise ConfigError("sim.overlay",
                              f"must be 'node' or 'random', got {self.overlay!r}")
        if self.swim not in ("auto", "on", "off"):
            raise ConfigError("sim.swim", f"must be 'auto', 'on' or 'off', got {self.swim!r}")
        if self.crypto not in ("fast", "full"):
            raise ConfigError("sim.crypto", f"must be 'fast' or 'full', got {self.crypto!r}")
        if not isinstance(self.network, NetworkModel):
            raise ConfigError("sim.network", "must be a NetworkModel")
        if self.adaptive is not None and not isinstance(self.adaptive, AdaptiveConfig):
            raise ConfigError("sim.adaptive", "must be an AdaptiveConfig or None")

    def replace(self, **changes: Any) -> SimSettings:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


def sim_gossip_config(settings: SimSettings, *, store_seconds: float | None = None
                      ) -> GossipConfig:
    """The LAN preset with the run's forwarding, and caches sized to the run.

    A real node keeps 100k seen ids and 10k stored messages; ten thousand virtual nodes
    cannot. The catch-up store holds ``store_seconds`` of traffic (default: 5
    anti-entropy intervals, at least 10 s; the partition scenario uses the partition's
    length plus 30 s) and the seen cache 10 s of it (at least 256 ids): per-origin
    sequence intervals, kept whatever the cache size, still recognise older duplicates.
    """
    base = GossipConfig.lan()
    rate = 1.0 / settings.interval
    if store_seconds is None:
        store_seconds = max(5 * base.anti_entropy_interval, 10.0)
    stored = min(base.max_stored_messages, max(64, math.ceil(rate * store_seconds) + 16))
    seen = min(base.seen_cache_size, max(256, math.ceil(rate * 10.0)))
    return base.replace(forwarding=settings.forwarding, max_stored_messages=stored,
                        announce_interval=settings.announce_interval,
                        seen_cache_size=seen,
                        max_message_age=max(base.anti_entropy_interval * 4,
                                            store_seconds + 30.0))


def run_scenario(name: str, settings: SimSettings | None = None, *,
                 progress: Progress | None = None) -> SimResult:
    """Run scenario ``name`` (one of :data:`SCENARIOS`) and return what it measured."""
    settings = settings or SimSettings()
    if name not in SCENARIOS:
        raise ConfigError("sim.scenario", f"must be one of {SCENARIOS}, got {name!r}")
    if name == "membership":
        from somasync.sim.membership import run_membership

        return run_membership(settings, progress=progress)
    if name == "sweep":
        return _sweep(settings, progress)
    return _Run(name, settings, progress).execute()


class _Run:
    """One simulation run of a broadcast scenario, from building to the result."""

    def __init__(self, scenario: str, settings: SimSettings, progress: Progress | None,
                 *, fail_fraction: float | None = None, label: str | None = None) -> None:
        self.scenario = scenario
        self.settings = settings
        self.progress = progress
        self.fail_fraction = settings.fail_fraction if fail_fraction is None else fail_fraction
        self.label = label or scenario
        self.extra: dict[str, Any] = {}

    def execute(self) -> SimResult:
        s = self.settings
        started = time.perf_counter()
        rss_before = _rss()
        store_seconds = s.partition_seconds + 30.0 if self.scenario == "partition" else None
        config = s.gossip or sim_gossip_config(s, store_seconds=store_seconds)
        # Every endpoint, link and cache built here lives as long as the run: the
        # collector would only walk them again and again (a full sweep each time the
        # heap grew by a quarter: most of the building time at 10,000 nodes), and later
        # sweeps too. Built with the collector off, then frozen out of its sweeps;
        # unfrozen at the end, so nothing outlives the run.
        enabled = gc.isenabled()
        gc.disable()
        try:
            sim = Simulation(s.nodes, seed=s.seed, config=config, network=s.network,
                             overlay=s.overlay, degree=s.degree, crypto=s.crypto,
                             authors=s.authors, payload_bytes=s.payload_bytes,
                             deadline=s.deadline, membership=s.membership,
                             run_membership=None if s.swim == "auto" else s.swim == "on",
                             adaptive=s.adaptive)
        finally:
            if enabled:
                gc.enable()
        self.sim = sim
        gc.freeze()
        # What the run allocates is mostly acyclic (refcounting frees it): collect
        # seldom, but still collect.
        thresholds = gc.get_threshold()
        gc.set_threshold(RUN_GC_THRESHOLD, *thresholds[1:])
        try:
            sim.start()
            warmup = s.warmup + getattr(sim.overlay, "join_time", 0.0)
            self._advance(warmup, 0.0, 0.05)
            rss_built = _rss()
            gc.freeze()
            start = sim.now
            horizon = getattr(self, f"_{self.scenario}")(start)
            rss_end = _rss()
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
        self.extra["links_per_node"] = round(
            sum(len(n.conns) for n in sim.nodes if n.alive)
            / max(1, sum(1 for n in sim.nodes if n.alive)), 2)
        if s.adaptive is not None and s.adaptive.enabled:
            self.extra.update(_adaptive_figures(sim))
        return self._result(config, time.perf_counter() - started, horizon,
                            (rss_before, rss_built, rss_end))

    # --- scenarios ---------------------------------------------------------------------

    def _steady(self, start: float) -> float:
        s, sim = self.settings, self.sim
        sim.schedule_broadcasts(s.messages, start=start, interval=s.interval)
        end = start + s.messages * s.interval + s.drain
        self._advance(end, 0.05, 1.0)
        return end

    def _crash(self, start: float) -> float:
        s, sim = self.settings, self.sim
        before = s.messages // 2
        crash_at = start + before * s.interval
        sim.schedule_broadcasts(before, start=start, interval=s.interval)
        sim.schedule_broadcasts(s.messages - before, start=crash_at + s.interval / 2,
                                interval=s.interval)
        count = round(self.fail_fraction * s.nodes)
        victims = sim.workload_rng.sample(range(s.nodes), min(count, s.nodes - 1))
        sim.schedule(crash_at, sim.crash, victims)
        end = start + s.messages * s.interval + s.drain
        self._advance(end, 0.05, 1.0)
        self.extra["crashed"] = len(victims)
        self.extra["crash_at"] = crash_at
        return end

    def _churn(self, start: float) -> float:
        s, sim = self.settings, self.sim
        sim.schedule_broadcasts(s.messages, start=start, interval=s.interval)
        stop = start + s.messages * s.interval
        rng = sim.workload_rng
        t = start + rng.expovariate(s.churn_rate)
        crashes = 0
        while t < stop:
            sim.schedule(t, self._churn_crash)
            crashes += 1
            t += rng.expovariate(s.churn_rate)
        end = stop + s.drain
        self._advance(end, 0.05, 1.0)
        self.extra["churn_crashes"] = crashes
        return end

    def _churn_crash(self) -> None:
        sim = self.sim
        node = sim.random_live_node()
        if node is not None and len(sim.live_nodes()) > 2:
            sim.crash([node.index])
            sim.schedule(sim.now + self.settings.churn_downtime, sim.recover, [node.index])

    def _partition(self, start: float) -> float:
        s, sim = self.settings, self.sim
        half = s.nodes // 2
        sim.partition([list(range(half)), list(range(half, s.nodes))])
        heal_at = start + s.partition_seconds
        interval = min(s.interval, (s.partition_seconds - 1.0) / max(1, s.messages))
        sim.schedule_broadcasts(s.messages, start=start + 0.5, interval=interval)
        sim.schedule(heal_at, sim.heal)
        self._advance(heal_at, 0.05, 0.7)
        split = list(sim.broadcast_records())
        whole_side = sum(1 for r in split if _side_complete(r.holders, r.origin, half))
        self.extra["held_by_own_side_at_heal"] = whole_side / max(1, len(split))
        step = min(0.1, sim.config.anti_entropy_interval / 4)
        limit = heal_at + s.max_convergence
        converged: float | None = None
        while sim.now < limit:
            if sim.missing_copies() == 0:
                converged = sim.now - heal_at
                break
            sim.run_until(min(limit, sim.now + step))
            self._report(0.7 + 0.3 * (sim.now - heal_at) / s.max_convergence)
        ae = sim.config.anti_entropy_interval
        self.extra["heal_at"] = heal_at
        self.extra["convergence_seconds"] = converged
        self.extra["convergence_ae_intervals"] = (None if converged is None
                                                  else round(converged / ae, 2))
        self.extra["missing_copies_at_end"] = sim.missing_copies()
        return sim.now

    # --- helpers -----------------------------------------------------------------------

    def _advance(self, end: float, low: float, high: float) -> None:
        sim = self.sim
        begin = sim.now
        span = max(end - begin, 1e-9)
        steps = 50
        for i in range(1, steps + 1):
            sim.run_until(begin + span * i / steps)
            self._report(low + (high - low) * i / steps)

    def _report(self, fraction: float) -> None:
        if self.progress is not None:
            self.progress(min(1.0, fraction), f"{self.label} t={self.sim.now:.1f}s")

    def _result(self, config: GossipConfig, wall: float, horizon: float,
                rss: tuple[int, int, int]) -> SimResult:
        sim, s = self.sim, self.settings
        records = sim.broadcast_records()
        n = s.nodes
        candidates = [node for node in sim.nodes if not node.alive or node.up_since > 0]
        reliability: list[float] = []
        on_time: list[float] = []
        after: list[float] = []
        after_on_time: list[float] = []
        rmr_series: list[tuple[float, float]] = []
        steady_rmr: list[float] = []
        all_rmr: list[float] = []
        origins_seen: set[int] = set()
        hops: list[int] = []
        last_latency: list[float] = []
        skip = math.ceil(STEADY_SKIP * len(records))
        windows: dict[str, list[float]] = {"immediate": [], "repaired": []}
        crash_at = self.extra.get("crash_at")
        perfect = 0
        for record in records:
            holders = record.holders
            excluded = [node.index for node in candidates
                        if not node.alive or node.up_since > record.sent_at]
            eligible = n - len(excluded)
            held = n - holders.count(0) - sum(1 for i in excluded if holders[i])
            timely = holders.count(1) - sum(1 for i in excluded if holders[i] == 1)
            value = held / eligible if eligible else 1.0
            timely_value = timely / eligible if eligible else 1.0
            perfect += held == eligible
            reliability.append(value)
            on_time.append(timely_value)
            if record.after_fault:
                after.append(value)
                after_on_time.append(timely_value)
            if crash_at is not None and record.sent_at >= crash_at:
                key = ("immediate" if record.sent_at < crash_at + s.repair_window
                       else "repaired")
                windows[key].append(timely_value)
            total_holders = n - holders.count(0)
            if total_holders > 1:
                rmr = record.frames / (total_holders - 1) - 1
                rmr_series.append((round(record.sent_at, 6), round(rmr, 4)))
                all_rmr.append(rmr)
                if (record.index >= skip and not record.after_fault
                        and record.origin in origins_seen):
                    steady_rmr.append(rmr)
            origins_seen.add(record.origin)
            if record.max_hops >= 0:
                hops.append(record.max_hops)
            if record.last > 0:
                last_latency.append(record.last - record.sent_at)
        overlay = sim.overlay
        if getattr(overlay, "run_membership", False):
            self.extra["swim"] = "on"
            self.extra["false_failures"] = overlay.false_failures  # type: ignore[attr-defined]
            if crash_at is not None:
                first = sorted(overlay.first_detection.values())  # type: ignore[attr-defined]
                crashed = self.extra.get("crashed", 0)
                self.extra["crashes_detected"] = len(first)
                self.extra["detection_first_median_seconds"] = (
                    round(first[len(first) // 2], 3) if first else None)
                self.extra["detection_first_max_seconds"] = (
                    round(first[-1], 3) if first else None)
                live = sum(1 for node in sim.nodes if node.alive)
                self.extra["failure_verdicts_fraction"] = round(
                    overlay.detections / max(1, crashed * live), 4)  # type: ignore[attr-defined]
        if crash_at is not None:
            self.extra["on_time_immediate_min"] = min(windows["immediate"], default=None)
            self.extra["on_time_immediate_mean"] = _mean(windows["immediate"])
            self.extra["on_time_repaired_min"] = min(windows["repaired"], default=None)
            self.extra["on_time_repaired_mean"] = _mean(windows["repaired"])
            self.extra["repair_seconds"] = _repair_time(records, on_time, crash_at)
        stats = sim.endpoint_statistics()
        totals = _totals(stats)
        broadcasts = max(1, len(records))
        control_bytes = totals.get("control_bytes_out", 0)
        hops_sorted = sorted(hops)
        rel_summary = summarize(reliability)
        return SimResult(
            scenario=self.scenario, nodes=n, seed=s.seed, forwarding=config.forwarding,
            overlay=sim.overlay.name, crypto=s.crypto, network=s.network.describe(),
            messages=len(records),
            reliability={
                "min": rel_summary["min"], "mean": rel_summary["mean"],
                "perfect": perfect / broadcasts if records else None,
                "deadline": s.deadline,
                "on_time": _min_mean(on_time),
                "after_fault": _min_mean(after),
                "after_fault_on_time": _min_mean(after_on_time),
            },
            rmr={"steady_mean": _mean(steady_rmr), "steady_broadcasts": len(steady_rmr),
                 "all_mean": _mean(all_rmr),
                 "series": rmr_series},
            control={
                "bytes_per_broadcast_per_node": control_bytes / (broadcasts * n),
                "frames_per_broadcast_per_node":
                    totals.get("control_frames_out", 0) / (broadcasts * n),
                "ihave_entries": totals.get("ihaves_sent",
                                            totals.get("tree_announcements_sent", 0)),
                "grafts": totals.get("grafts_sent", totals.get("tree_grafts_sent", 0)),
                "prunes": totals.get("prunes_sent", totals.get("tree_prunes_sent", 0)),
                "digest_bytes_note": "anti-entropy DIGEST frames are not control frames",
            },
            hops={"median": hops_sorted[len(hops_sorted) // 2] if hops else None,
                  "max": hops_sorted[-1] if hops else None},
            latency={"delivery": sim.latency_hist.summary(),
                     "last_delivery": summarize(last_latency)},
            memory=self._memory(rss),
            wall_seconds=round(wall, 3), virtual_seconds=round(horizon, 6),
            events=sim.events, trace_hash=sim.trace_hash(),
            settings=_settings_dict(s, config),
            extra={**self.extra, "deliveries": sim.deliveries,
                   "verify_cache_hits": getattr(sim.verifier, "hits", None),
                   "verify_cache_misses": getattr(sim.verifier, "misses", None),
                   "dropped_bytes": sim.dropped_bytes},
            totals=totals,
        )

    def _memory(self, rss: tuple[int, int, int]) -> dict[str, Any]:
        before, built, end = rss
        n = self.settings.nodes
        memory: dict[str, Any] = {
            "rss_before": before, "rss_built": built, "rss_end": end,
            "per_node_built": (built - before) / n, "per_node_end": (end - before) / n,
        }
        if self.settings.memory_breakdown:
            memory["breakdown_bytes_per_node"] = _breakdown(self.sim)
        return memory


def _sweep(settings: SimSettings, progress: Progress | None) -> SimResult:
    points: list[dict[str, Any]] = []
    messages = max(20, settings.messages // len(settings.fractions))
    sub = settings.replace(messages=messages, memory_breakdown=False)
    result: SimResult | None = None
    wall = 0.0
    events = 0
    count = len(settings.fractions)
    for number, fraction in enumerate(settings.fractions):
        def report(value: float, label: str, number: int = number) -> None:
            if progress is not None:
                progress((number + value) / count, label)

        result = _Run("crash", sub, report if progress else None, fail_fraction=fraction,
                      label=f"sweep {fraction:.2f}").execute()
        wall += result.wall_seconds
        events += result.events
        rel = result.reliability
        points.append({
            "fail_fraction": fraction,
            "after_min": rel["after_fault"]["min"], "after_mean": rel["after_fault"]["mean"],
            "on_time_min": rel["after_fault_on_time"]["min"],
            "on_time_mean": rel["after_fault_on_time"]["mean"],
            "immediate_on_time_min": result.extra.get("on_time_immediate_min"),
            "immediate_on_time_mean": result.extra.get("on_time_immediate_mean"),
            "repair_seconds": result.extra.get("repair_seconds"),
            "rmr_steady": result.rmr["steady_mean"],
            "trace_hash": result.trace_hash,
        })
    assert result is not None
    extra = {"sweep": points, "messages_per_point": messages,
             "note": "top-level figures describe the last point"}
    return dataclasses.replace(result, scenario="sweep", wall_seconds=round(wall, 3),
                               events=events, extra=extra)


# --- helpers ---------------------------------------------------------------------------

def _side_complete(holders: bytearray, origin: int, half: int) -> bool:
    side = holders[:half] if origin < half else holders[half:]
    return side.count(0) == 0


def _repair_time(records: list[Any], on_time: list[float], crash_at: float) -> float | None:
    """Seconds from the crash to the first broadcast after which every broadcast was
    delivered on time to every eligible node."""
    last_bad: float | None = None
    after = [(r.sent_at, v) for r, v in zip(records, on_time, strict=True)
             if r.sent_at >= crash_at]
    if not after:
        return None
    for sent_at, value in after:
        if value < 1.0:
            last_bad = sent_at
    if last_bad is None:
        return 0.0
    later = [t for t, _ in after if t > last_bad]
    return round(later[0] - crash_at, 6) if later else None


def _totals(stats: list[Any]) -> dict[str, Any]:
    """Integer counters summed over endpoints; nested statistics (the tree's) flattened
    with their name as a prefix (``tree_grafts_sent``)."""
    totals: dict[str, Any] = {}
    rejected: dict[str, int] = {}

    def add(item: Any, prefix: str) -> None:
        for f in dataclasses.fields(item):
            value = getattr(item, f.name)
            key = prefix + f.name
            if isinstance(value, bool):
                continue
            if isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
            elif f.name == "rejected" and isinstance(value, dict):
                for reason, count in value.items():
                    rejected[reason] = rejected.get(reason, 0) + count
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                add(value, f"{key}_")

    for item in stats:
        add(item, "")
    totals["rejected"] = rejected
    return totals


def _breakdown(sim: Simulation) -> dict[str, float]:
    """Mean bytes per endpoint attribute over a sample of live nodes (shared objects,
    such as the config and the verifier, excluded)."""
    live = [node for node in sim.nodes if node.alive and node.endpoint is not None]
    if not live:
        return {}
    step = max(1, len(live) // MEMORY_SAMPLE)
    sample = live[::step][:MEMORY_SAMPLE]
    shared = {id(sim.config), id(sim.verifier), id(None), id(True), id(False)}
    sizes: dict[str, int] = {}
    for node in sample:
        endpoint = node.endpoint
        exclude = set(shared)
        exclude.add(id(endpoint.__dict__))
        for name, value in vars(endpoint).items():
            sizes[name] = sizes.get(name, 0) + deep_size(value, exclude)
        sizes["(endpoint object)"] = sizes.get("(endpoint object)", 0) + \
            deep_size(endpoint, exclude)
        # The simulator's own state for the node (shallow: its links and pipes, half of
        # each link counted per end), which a real node does not have.
        driver = sys.getsizeof(node) + sys.getsizeof(node.conns)
        for conn in node.conns.values():
            pipes = (conn.ab, conn.ba)
            driver += (sys.getsizeof(conn) + sum(sys.getsizeof(p) + sys.getsizeof(p.queue)
                                                 for p in pipes if p is not None)) // 2
        sizes["(simulator: node, links)"] = sizes.get("(simulator: node, links)", 0) + driver
    ordered = sorted(sizes.items(), key=lambda item: -item[1])
    return {name: round(total / len(sample), 1) for name, total in ordered}


def _adaptive_figures(sim: Simulation) -> dict[str, Any]:
    """The adaptive values the live nodes run on at the end, as ``median (min-max)``
    per value, the estimates, and how often the values changed after the first."""
    controls = [node.overlay for node in sim.nodes
                if node.alive and node.overlay is not None]
    sizings = [c.sizing for c in controls if c.sizing is not None]
    if not sizings:
        return {}

    def spread(values: list[float]) -> str:
        ordered = sorted(values)
        return (f"{ordered[len(ordered) // 2]:g} "
                f"({ordered[0]:g}-{ordered[-1]:g})")

    changes = [c.statistics().sizing_changes for c in controls]
    return {
        "adaptive_estimate": spread([c.size_estimate() for c in controls]),
        "adaptive_degree": spread([z.degree for z in sizings]),
        "adaptive_ihave_fanout": spread([z.ihave_fanout for z in sizings]),
        "adaptive_push_fanout": spread([z.fanout for z in sizings]),
        "adaptive_anti_entropy_interval": spread([z.anti_entropy_interval for z in sizings]),
        "adaptive_changes_per_node": round(sum(changes) / len(changes), 2),
    }


def _settings_dict(settings: SimSettings, config: GossipConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name == "adaptive":
            out[f.name] = None if value is None else dataclasses.asdict(value)
            continue
        if f.name in ("gossip", "membership", "network"):
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    out["gossip"] = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                     if f.name != "trusted_keys"}
    return out


def _rss() -> int:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency
        return 0
    return int(psutil.Process(os.getpid()).memory_info().rss)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _min_mean(values: list[float]) -> dict[str, float | None]:
    return {"min": min(values) if values else None, "mean": _mean(values),
            "count": len(values)}


def _int(value: Any, name: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"sim.{name}", f"must be an integer >= {minimum}, got {value!r}")


def _number(value: Any, name: str, *, positive: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"sim.{name}", f"must be a finite number {bound}, got {value!r}")


def _fraction(value: Any, name: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1:
        raise ConfigError(f"sim.{name}", f"must be a fraction in [0, 1), got {value!r}")
