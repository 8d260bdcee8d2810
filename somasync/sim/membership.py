"""The ``membership`` scenario: SWIM/Lifeguard on every virtual node, measured alone.

It runs on the simulator's one engine (:class:`~somasync.sim.engine.Simulation`) with
the production control part on every node (:class:`~somasync.sim.overlays.NodeOverlay`:
membership, HyParView and the dialler, beside an idle endpoint), exactly as the
broadcast scenarios do; it only sends no broadcasts and watches membership's events.
Nodes join one after another through node 0. The run measures:

* **convergence**: from the first join until every node holds every other as alive;
* **failure detection**: ``fail_fraction`` of the nodes (at least one) crash at once;
  for each, the time until the first live node and until every live node reports it
  failed (``PeerFailed``);
* **false positives**: ``PeerFailed`` about nodes that never crashed, and suspicions of
  live nodes (which Lifeguard lets them refute).

Each node's view is O(N) and a join makes every node check every other's signed claim:
O(N^2) checks. With ``crypto="fast"`` (the default) every virtual node shares one
:class:`~somasync.sim.engine.MemoVerifier`, as in the broadcast scenarios, so each
distinct claim costs one real Ed25519 verification per run and a forged copy still
fails; ``crypto="full"`` verifies every copy. The views stay O(N) per node either way,
so the scenario is capped at :data:`MEMBERSHIP_MAX_NODES` nodes.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from somasync.config import MembershipConfig
from somasync.core.events import PeerFailed, PeerJoined, PeerLeft, PeerRecovered, PeerSuspected
from somasync.errors import ConfigError
from somasync.sim.engine import Simulation, derive_seed
from somasync.sim.metrics import SimResult, summarize
from somasync.sim.overlays import NodeOverlay

if TYPE_CHECKING:
    from somasync.sim.scenarios import SimSettings

__all__ = ["MEMBERSHIP_MAX_NODES", "MembershipSim", "run_membership"]

MEMBERSHIP_MAX_NODES = 3000
"""Largest membership scenario: each node's view is O(N), joining is O(N^2) verifies."""


class MembershipSim:
    """A :class:`Simulation` of the production control part, with membership's events
    counted per observer."""

    def __init__(self, settings: SimSettings, spacing: float) -> None:
        n = settings.nodes
        self.sim = Simulation(n, seed=settings.seed, network=settings.network,
                              crypto=settings.crypto,
                              membership=settings.membership or MembershipConfig.lan(),
                              run_membership=True)
        overlay = self.sim.overlay
        assert isinstance(overlay, NodeOverlay)
        self.overlay = overlay
        overlay.join_spacing = spacing
        overlay.contact = 0
        overlay.listener = self._on_event
        self.alive = [True] * n
        self.crashed_at: dict[int, float] = {}
        self.view = [0] * n
        """Per node: other members it holds as alive or suspect."""
        self.detections: dict[int, dict[int, float]] = {}
        self.false_failures = 0
        self.false_suspicions = 0
        self._index = {node.name: node.index for node in self.sim.nodes}

    @property
    def now(self) -> float:
        return self.sim.now

    def start(self) -> None:
        self.sim.start()

    def run_until(self, end: float) -> None:
        self.sim.run_until(end)

    def crash(self, victims: list[int]) -> None:
        for i in victims:
            self.alive[i] = False
            self.crashed_at[i] = self.sim.now
            self.detections[i] = {}
        self.sim.crash(victims)

    def _on_event(self, observer: int, event: Any) -> None:
        subject = self._index.get(event.peer_id)
        if subject is None:
            return
        if isinstance(event, PeerJoined | PeerRecovered):
            self.view[observer] += 1
        elif isinstance(event, PeerFailed | PeerLeft):
            self.view[observer] -= 1
            if isinstance(event, PeerFailed):
                if subject in self.crashed_at:
                    self.detections[subject].setdefault(observer,
                                                        self.sim.now - self.crashed_at[subject])
                else:
                    self.false_failures += 1
        elif isinstance(event, PeerSuspected) and subject not in self.crashed_at:
            self.false_suspicions += 1

    def converged(self) -> bool:
        """Every live node holds every other live node as alive (or suspect)."""
        live = sum(self.alive)
        return all(self.view[i] == live - 1 for i in range(len(self.view)) if self.alive[i])

    def membership_statistics(self) -> list[Any]:
        """SWIM counters of every node, crashed incarnations included."""
        controls = [*self.overlay.retired,
                    *(node.overlay.statistics() for node in self.sim.nodes
                      if node.overlay is not None)]
        return [c.membership for c in controls if c.membership is not None]


def run_membership(settings: SimSettings,
                   progress: Callable[[float, str], None] | None = None) -> SimResult:
    """The membership scenario (see the module doc)."""
    n = settings.nodes
    if n > MEMBERSHIP_MAX_NODES:
        raise ConfigError("sim.nodes", f"the membership scenario is capped at "
                                       f"{MEMBERSHIP_MAX_NODES} nodes (full views are O(N) "
                                       f"per node), got {n}")
    started = time.perf_counter()
    spacing = min(0.01, 5.0 / n)
    sim = MembershipSim(settings, spacing)
    sim.start()
    join_end = spacing * n
    limit = join_end + 120.0
    converged: float | None = None
    step = 0.05
    while sim.now < limit:
        sim.run_until(sim.now + step)
        if sim.now >= join_end and sim.converged():
            converged = sim.now
            break
        if progress is not None:
            progress(0.5 * sim.now / limit, f"membership joining t={sim.now:.1f}s")
    false_before = sim.false_failures
    count = max(1, round(settings.fail_fraction * n))
    victims = random.Random(derive_seed(settings.seed, "victims")).sample(range(1, n),
                                                                         min(count, n - 2))
    crash_at = sim.now
    sim.crash(victims)
    end = crash_at + settings.membership_window
    while sim.now < end:
        sim.run_until(min(end, sim.now + 0.25))
        if progress is not None:
            progress(0.5 + 0.5 * (sim.now - crash_at) / settings.membership_window,
                     f"membership detecting t={sim.now:.1f}s")
    live = [i for i in range(n) if sim.alive[i]]
    first: list[float] = []
    everyone: list[float] = []
    pairs = 0
    for victim in victims:
        seen = sim.detections[victim]
        pairs += sum(1 for i in live if i in seen)
        times = [seen[i] for i in live if i in seen]
        if times:
            first.append(min(times))
        if len(times) == len(live):
            everyone.append(max(times))
    stats = sim.membership_statistics()
    bytes_out = sum(s.bytes_out for s in stats)
    virtual = sim.now
    extra = {
        "convergence_seconds": None if converged is None else round(converged, 4),
        "join_spread_seconds": round(join_end, 4),
        "crashed": len(victims),
        "detected_pairs_fraction": pairs / max(1, len(victims) * len(live)),
        "detection_first": summarize(first),
        "detection_all": summarize(everyone),
        "false_failures": sim.false_failures,
        "false_failures_before_crash": false_before,
        "false_suspicions": sim.false_suspicions,
        "datagrams": sim.sim.datagrams,
        "datagrams_lost": sim.sim.datagrams_lost,
        "bytes_per_node_per_second": bytes_out / n / max(virtual, 1e-9),
        "max_nodes": MEMBERSHIP_MAX_NODES,
        "verify_cache_hits": getattr(sim.sim.verifier, "hits", None),
        "verify_cache_misses": getattr(sim.sim.verifier, "misses", None),
    }
    return SimResult(
        scenario="membership", nodes=n, seed=settings.seed, forwarding="n/a",
        overlay="node", crypto=settings.crypto, network=settings.network.describe(), messages=0,
        reliability={}, rmr={"steady_mean": None, "series": []}, control={}, hops={},
        latency={}, memory={}, wall_seconds=round(time.perf_counter() - started, 3),
        virtual_seconds=round(virtual, 6), events=sim.sim.events,
        trace_hash=_membership_hash(sim), extra=extra,
        settings={"nodes": n, "seed": settings.seed, "fail_fraction": settings.fail_fraction,
                  "membership_window": settings.membership_window},
    )


def _membership_hash(sim: MembershipSim) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    for victim in sorted(sim.detections):
        for observer, delay in sorted(sim.detections[victim].items()):
            hasher.update(b"%d:%d:%d;" % (victim, observer, round(delay * 1e6)))
    hasher.update(b"%d:%d:%d:" % (sim.sim.events, sim.sim.datagrams, sim.false_suspicions))
    hasher.update(sim.sim.trace_hash().encode())
    return hasher.hexdigest()
