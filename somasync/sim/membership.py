"""The ``membership`` scenario: the real SWIM/Lifeguard core on every virtual node.

Each virtual node runs :class:`somasync.core.membership.Membership`; its datagrams cross
the simulated network (per-pair latency, ``network.loss``). Nodes join one after another
through node 0. The run measures:

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

import heapq
import itertools
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from somasync.config import MembershipConfig
from somasync.core import crypto
from somasync.core.crypto import Identity
from somasync.core.events import PeerFailed, PeerJoined, PeerLeft, PeerRecovered, PeerSuspected
from somasync.core.membership import Membership
from somasync.errors import ConfigError
from somasync.sim.engine import MemoVerifier, _key_seed, derive_seed
from somasync.sim.metrics import SimResult, summarize

if TYPE_CHECKING:
    from somasync.sim.scenarios import SimSettings

__all__ = ["MEMBERSHIP_MAX_NODES", "MembershipSim", "run_membership"]

MEMBERSHIP_MAX_NODES = 3000
"""Largest membership scenario: each node's view is O(N), joining is O(N^2) verifies."""

_DGRAM, _TIMER, _CALL = 0, 1, 2


class MembershipSim:
    """Virtual nodes running SWIM over the simulated datagram network."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.config = settings.membership or MembershipConfig.lan()
        self.network = settings.network
        self.seed = settings.seed
        n = settings.nodes
        self.now = 0.0
        self.events = 0
        self.alive = [True] * n
        self.armed: list[float | None] = [None] * n
        self.crashed_at: dict[int, float] = {}
        self.view = [0] * n
        """Per node: other members it holds as alive or suspect."""
        self.detections: dict[int, dict[int, float]] = {}
        self.false_failures = 0
        self.false_suspicions = 0
        self.datagrams = 0
        self.lost = 0
        self._heap: list[tuple[float, int, int, int, Any]] = []
        self._seq = itertools.count()
        self._rng = random.Random(derive_seed(self.seed, "membership-network"))
        self.addresses = [f"n{i}:1" for i in range(n)]
        self._index = {address: i for i, address in enumerate(self.addresses)}
        self._index.update({f"n{i}": i for i in range(n)})
        self.verifier: crypto.Verifier = (MemoVerifier() if settings.crypto == "fast"
                                          else crypto.verify)
        self.nodes = [
            Membership(self.config, Identity(_key_seed(self.seed, "node", i)), f"n{i}",
                       self.addresses[i],
                       rng=random.Random(derive_seed(self.seed, "membership", i)), now=0.0,
                       verify=self.verifier)
            for i in range(n)
        ]

    def join_all(self, spacing: float) -> None:
        """Node ``i`` joins through node 0 at ``i * spacing``."""
        for i in range(1, len(self.nodes)):
            self._call(i * spacing, self._join, i)
        self._pump(0)

    def _join(self, i: int) -> None:
        self.nodes[i].join([self.addresses[0]], now=self.now)
        self._pump(i)

    def crash(self, victims: list[int]) -> None:
        for i in victims:
            self.alive[i] = False
            self.crashed_at[i] = self.now
            self.detections[i] = {}

    def _call(self, at: float, function: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), _CALL, 0, (function, args)))

    def run_until(self, end: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= end:
            t, _, kind, target, data = heapq.heappop(heap)
            self.now = t
            self.events += 1
            if kind == _DGRAM:
                if not self.alive[target]:
                    self.lost += 1
                    continue
                self.nodes[target].receive_datagram(data[0], data[1], now=t)
                self._pump(target)
            elif kind == _TIMER:
                if self.armed[target] == t and self.alive[target]:
                    self.armed[target] = None
                    self.nodes[target].handle_timer(now=t)
                    self._pump(target)
            else:
                function, args = data
                function(*args)
        self.now = max(self.now, end)

    def _pump(self, i: int) -> None:
        node = self.nodes[i]
        source = self.addresses[i]
        loss = self.network.loss
        for address, data in node.datagrams_to_send():
            self.datagrams += 1
            target = self._index.get(address)
            if target is None or (loss and self._rng.random() < loss):
                self.lost += 1
                continue
            at = self.now + self.network.latency_between(self.seed, i, target)
            heapq.heappush(self._heap, (at, next(self._seq), _DGRAM, target, (source, data)))
        for event in node.take_events():
            self._on_event(i, event)
        deadline = node.get_timer()
        if deadline != self.armed[i]:
            self.armed[i] = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), _TIMER, i, None))

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
                                                        self.now - self.crashed_at[subject])
                else:
                    self.false_failures += 1
        elif isinstance(event, PeerSuspected) and subject not in self.crashed_at:
            self.false_suspicions += 1

    def converged(self) -> bool:
        """Every live node holds every other live node as alive (or suspect)."""
        live = sum(self.alive)
        return all(self.view[i] == live - 1 for i in range(len(self.nodes)) if self.alive[i])


def run_membership(settings: SimSettings,
                   progress: Callable[[float, str], None] | None = None) -> SimResult:
    """The membership scenario (see the module doc)."""
    n = settings.nodes
    if n > MEMBERSHIP_MAX_NODES:
        raise ConfigError("sim.nodes", f"the membership scenario is capped at "
                                       f"{MEMBERSHIP_MAX_NODES} nodes (full views are O(N) "
                                       f"per node), got {n}")
    started = time.perf_counter()
    sim = MembershipSim(settings)
    spacing = min(0.01, 5.0 / n)
    sim.join_all(spacing)
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
    stats = [node.statistics() for node in sim.nodes]
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
        "datagrams": sim.datagrams,
        "datagrams_lost": sim.lost,
        "bytes_per_node_per_second": bytes_out / n / max(virtual, 1e-9),
        "max_nodes": MEMBERSHIP_MAX_NODES,
        "verify_cache_hits": getattr(sim.verifier, "hits", None),
        "verify_cache_misses": getattr(sim.verifier, "misses", None),
    }
    return SimResult(
        scenario="membership", nodes=n, seed=settings.seed, forwarding="n/a",
        overlay="n/a", crypto=settings.crypto, network=settings.network.describe(), messages=0,
        reliability={}, rmr={"steady_mean": None, "series": []}, control={}, hops={},
        latency={}, memory={}, wall_seconds=round(time.perf_counter() - started, 3),
        virtual_seconds=round(virtual, 6), events=sim.events,
        trace_hash=_membership_hash(sim), extra=extra,
        settings={"nodes": n, "seed": settings.seed, "fail_fraction": settings.fail_fraction,
                  "membership_window": settings.membership_window},
    )


def _membership_hash(sim: MembershipSim) -> str:
    import hashlib

    hasher = hashlib.blake2b(digest_size=16)
    for victim in sorted(sim.detections):
        for observer, delay in sorted(sim.detections[victim].items()):
            hasher.update(b"%d:%d:%d;" % (victim, observer, round(delay * 1e6)))
    hasher.update(b"%d:%d:%d" % (sim.events, sim.datagrams, sim.false_suspicions))
    return hasher.hexdigest()
