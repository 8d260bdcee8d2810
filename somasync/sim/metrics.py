"""What a run measures, and the result object it returns.

Definitions (also in the README section of :mod:`somasync.sim`):

* **reliability** of a broadcast: of the nodes alive when it was sent and alive
  without interruption until the end of the run, the fraction that hold it (delivered
  it, or originated it). Measured at the end of the run (after the drain period), so it
  includes anti-entropy repairs. ``on_time`` counts only deliveries within ``deadline``
  seconds of the send (before anti-entropy could help).
* **RMR** (relative message redundancy, Plumtree paper): ``m / (n - 1) - 1`` where
  ``m`` is the number of payload MESSAGE frames received for the broadcast (eager pushes,
  GRAFT answers and anti-entropy repairs alike) and ``n`` the nodes that hold it. 0 means
  every node received exactly one copy. *Steady state* is every broadcast after the first
  10 % of a run's messages and before its first fault.
* **control overhead**: IHAVE/GRAFT/PRUNE bytes sent, per broadcast per node.
* **last-delivery hop**: the largest ``Delivery.hops`` of a broadcast (0 = received from
  the origin itself).
* **latency**: from the send to each delivery; **last-delivery latency**: to the last.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import sys
import types
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LogHistogram", "SimResult", "deep_size"]


class LogHistogram:
    """Counts of positive values (seconds) in logarithmic buckets, 1 us to hours.

    Sixteen buckets per doubling: a percentile is reported at most 4.4 % above the true
    value. The maximum is kept exactly.
    """

    __slots__ = ("count", "counts", "maximum")

    _PER_DOUBLING = 16
    _FLOOR = 1e-6

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.maximum = 0.0

    def add(self, value: float) -> None:
        index = (int(math.log2(value / self._FLOOR) * self._PER_DOUBLING) + 1
                 if value > self._FLOOR else 0)
        counts = self.counts
        counts[index] = counts.get(index, 0) + 1
        self.count += 1
        if value > self.maximum:
            self.maximum = value

    def percentile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0-100): the upper edge of its bucket."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                if index == 0:
                    return self._FLOOR
                edge: float = self._FLOOR * 2.0 ** (index / self._PER_DOUBLING)
                return min(edge, self.maximum)
        return self.maximum

    def summary(self) -> dict[str, float | None]:
        """count, p50, p99 and max."""
        return {"count": self.count, "p50": self.percentile(50), "p99": self.percentile(99),
                "max": self.maximum if self.count else None}


def summarize(values: list[float]) -> dict[str, float | None]:
    """min/mean/p50/p99/max of a list (None entries when empty)."""
    if not values:
        return {"count": 0, "min": None, "mean": None, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    n = len(ordered)

    def pick(q: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(n * q / 100.0) - 1))]

    return {"count": n, "min": ordered[0], "mean": sum(ordered) / n, "p50": pick(50),
            "p99": pick(99), "max": ordered[-1]}


_SKIP_TYPES = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
               types.MethodType, types.CodeType)


def deep_size(root: object, exclude: set[int]) -> int:
    """Bytes reachable from ``root`` (``sys.getsizeof`` summed over referents), not
    counting objects whose id is in ``exclude`` (shared ones) nor classes and modules.
    Objects counted are added to ``exclude``, so sizes of several roots do not overlap."""
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        key = id(obj)
        if key in exclude or isinstance(obj, _SKIP_TYPES):
            continue
        exclude.add(key)
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


@dataclass(frozen=True)
class SimResult:
    """Everything one simulator run measured. ``to_json()`` for files, ``table()`` for
    people. Times are virtual seconds unless a name says ``wall``."""

    scenario: str
    nodes: int
    seed: int
    forwarding: str
    overlay: str
    crypto: str
    """``fast`` (memoised Ed25519: each distinct signature verified once per run) or
    ``full`` (every copy verified at every node)."""
    network: str
    messages: int
    """Broadcasts sent."""
    reliability: dict[str, Any]
    """min/mean over all broadcasts, ``after_fault`` the same over those sent after the
    first fault, ``on_time`` within ``deadline`` seconds, and ``perfect``: the share of
    broadcasts every eligible node holds."""
    rmr: dict[str, Any]
    """``steady_mean`` (after the first 10% of broadcasts, leaving out each origin's
    first, which floods to grow its tree), ``all_mean``, and ``series``: (send time,
    RMR) per broadcast."""
    control: dict[str, Any]
    """Control (IHAVE/GRAFT/PRUNE) bytes and frames per broadcast per node, and totals."""
    hops: dict[str, Any]
    """Last-delivery hop per broadcast: median and max (None when the core does not
    report hops)."""
    latency: dict[str, Any]
    """``delivery`` (send to each delivery) and ``last_delivery`` (send to the last),
    p50/p99/max in seconds."""
    memory: dict[str, Any]
    """RSS in bytes before building, after building, after the run; per node; and the
    per-component breakdown of a sample of endpoints."""
    wall_seconds: float
    virtual_seconds: float
    events: int
    """Heap events processed."""
    trace_hash: str
    """BLAKE2b over every delivery (microsecond time, node, message id) and overlay
    change, in order: equal for equal seeds and settings."""
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    """Scenario-specific figures (crash windows, partition convergence, sweep points,
    membership timings)."""
    totals: dict[str, Any] = field(default_factory=dict)
    """Summed endpoint counters of every node (frames, bytes, duplicates, verifies...)."""

    def to_dict(self) -> dict[str, Any]:
        """The result as plain dicts and lists."""
        return dataclasses.asdict(self)

    def to_json(self, *, indent: int | None = 2) -> str:
        """The result as JSON (floats as JSON numbers, no NaN)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=str)

    def table(self) -> str:
        """A short human-readable summary."""
        rows: list[tuple[str, str]] = [
            ("scenario", f"{self.scenario}  nodes={self.nodes} seed={self.seed}"),
            ("forwarding / overlay / crypto",
             f"{self.forwarding} / {self.overlay} / {self.crypto}"),
            ("network", self.network),
            ("broadcasts", str(self.messages)),
        ]
        rel = self.reliability
        if rel.get("mean") is not None:
            rows.append(("reliability min / mean",
                         f"{_pct(rel['min'])} / {_pct(rel['mean'])}"
                         f"  (perfect {_pct(rel['perfect'])})"))
            on_time = rel.get("on_time", {})
            if on_time.get("mean") is not None:
                rows.append((f"on time (<= {rel['deadline']:g} s) min / mean",
                             f"{_pct(on_time['min'])} / {_pct(on_time['mean'])}"))
            after = rel.get("after_fault", {})
            if after.get("mean") is not None:
                rows.append(("after fault min / mean",
                             f"{_pct(after['min'])} / {_pct(after['mean'])}"))
        if self.rmr.get("steady_mean") is not None:
            rows.append(("RMR steady mean / all broadcasts",
                         f"{self.rmr['steady_mean']:.3f} / {self.rmr.get('all_mean') or 0:.3f}"))
        if self.control.get("bytes_per_broadcast_per_node") is not None:
            rows.append(("control bytes / broadcast / node",
                         f"{self.control['bytes_per_broadcast_per_node']:.1f}"))
        if self.hops.get("median") is not None:
            rows.append(("last-delivery hop median / max",
                         f"{self.hops['median']} / {self.hops['max']}"))
        delivery = self.latency.get("delivery", {})
        if delivery.get("p50") is not None:
            rows.append(("latency p50 / p99 / max",
                         f"{_ms(delivery['p50'])} / {_ms(delivery['p99'])} / "
                         f"{_ms(delivery['max'])}"))
        last = self.latency.get("last_delivery", {})
        if last.get("p50") is not None:
            rows.append(("last delivery p50 / p99 / max",
                         f"{_ms(last['p50'])} / {_ms(last['p99'])} / {_ms(last['max'])}"))
        for key, value in self.extra.items():
            if isinstance(value, int | float | str) or value is None:
                rows.append((key.replace("_", " "), _fmt(value)))
        memory = self.memory
        if memory.get("per_node_end") is not None:
            rows.append(("memory per node (built / end)",
                         f"{memory['per_node_built'] / 1024:.1f} KiB / "
                         f"{memory['per_node_end'] / 1024:.1f} KiB"))
        rows.append(("wall / virtual time", f"{self.wall_seconds:.1f} s / "
                                            f"{self.virtual_seconds:.1f} s"))
        rows.append(("events", f"{self.events:,}"))
        rows.append(("trace hash", self.trace_hash[:16]))
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        for point in self.extra.get("sweep", []):
            if point is self.extra["sweep"][0]:
                lines.append("")
                lines.append("failed  reliability(after, min/mean)  on-time(min/mean)")
            lines.append(f"{point['fail_fraction']:>6.2f}  "
                         f"{_pct(point['after_min'])} / {_pct(point['after_mean'])}"
                         f"{'':14}{_pct(point['on_time_min'])} / "
                         f"{_pct(point['on_time_mean'])}")
        return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.2f} ms"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
