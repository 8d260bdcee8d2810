"""Adaptive fanout: estimate the mesh's size, derive degrees from it. Sans-IO.

Three parts, each usable alone:

* :func:`derive_sizing`, a pure function from an estimated size N, a target delivery
  probability p and bounds (:class:`~somasync.config.AdaptiveConfig`) to the overlay
  degree, push fanout, IHAVE fanout and anti-entropy interval (:class:`Sizing`).
* :class:`MeshSizeSketch`, an estimator for nodes that do not run SWIM (the
  simulator's large meshes, where a member list per node would not fit): a HyperLogLog
  sketch of the nodes' keys, merged between overlay neighbours.
* :class:`AdaptiveSizer`, which applies :func:`derive_sizing` to a moving estimate with
  hysteresis, so an estimate that wanders within its noise changes nothing.

:class:`~somasync.core.node.NodeControl` composes them: its estimate is SWIM's count
of live members where membership runs (exact up to the dissemination delay: a join or a
failure verdict reaches everyone within a few gossip rounds), else the sketch's; it
resizes its overlay and hands the rest to its runtime, which retunes the endpoint
(:meth:`~somasync.core.endpoint.Endpoint.retune`).

The sketch
----------
Every node hashes its public key with the current epoch (``floor(wall clock /
sketch_epoch)``) into one of 256 one-byte registers: register ``h mod 256`` holds the
rank of ``h``'s remaining 56 bits (leading zeros + 1). A node's sketch is the
register-wise maximum of its own and every sketch it received for that epoch; merging
is idempotent and commutative, so the maximum over the whole mesh spreads like any
epidemic, and the HyperLogLog estimate of the merged registers is the number of distinct
keys (Flajolet, Fusy, Gandouet, Meunier 2007; linear counting below 640 nodes).

*Error*: about 1.04 / sqrt(256) = 6.5 % (one standard error) from 640 nodes up, and
at most that below, where linear counting takes over (10 nodes: 10 +- 0.4; 500: +- 32;
the simulator's 1,000-node mesh estimated 917). The estimate is the larger of the
current and the previous epoch's, which biases it up by about half a standard error.
Far below the hysteresis (25 %) and a degree step (a factor of e).

*Lag*: a node that joins is counted everywhere once the sketch has crossed the overlay:
about its diameter (log N / log degree hops, 5-8 up to 10,000 nodes) times
``sketch_interval`` (1 s). A node that leaves is still counted until the epoch after the
one it was last in has ended: one to two ``sketch_epoch`` (2-4 minutes). Growth is seen
fast, shrinking slowly, which errs on the side of more links.

*Cost*: a sketch is one 261-byte datagram, sent only to neighbours that lack something
it holds (a neighbour whose sketch showed less, a new neighbour, and all of them after
the node's own sketch grew), at most one per neighbour per ``sketch_interval``; a
converged mesh sends none until the next epoch starts. Memory: three 256-byte arrays
(previous, current and next epoch) per node, whatever the mesh size.

*Trust*: any member can claim high registers and so inflate everyone's estimate (never
lower it: merging keeps maxima). What that buys is bounded by the configured upper
bounds of every derived value; ranks above the largest a 64-bit hash gives are refused.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from dataclasses import dataclass, field

from somasync.config import AdaptiveConfig, GossipConfig
from somasync.errors import DecodeError

__all__ = ["MAX_ESTIMATE", "SKETCH_REGISTERS", "SKETCH_SIZE", "AdaptiveSizer",
           "MeshSizeSketch", "Sizing", "SketchStatistics", "anti_entropy_scale",
           "derive_sizing", "epidemic_fanout", "hll_estimate", "retuned_config"]

SKETCH_VERSION = 1
SKETCH_REGISTERS = 256
"""Registers of the size sketch (one byte each): 6.5 % standard error."""
_INDEX_BITS = 8
_RANK_BITS = 64 - _INDEX_BITS
MAX_RANK = _RANK_BITS + 1
"""The largest rank a 56-bit remainder can have; a larger register is refused."""
_HEADER = struct.Struct("!BI")  # version, epoch (mod 2**32)
SKETCH_SIZE = _HEADER.size + SKETCH_REGISTERS
"""Bytes of one sketch datagram (before the node's channel byte and seal)."""
_EPOCHS = 1 << 32
_POWERS = [2.0 ** -rank for rank in range(MAX_RANK + 1)]
AE_SCALE_THRESHOLD = 32
"""Mesh size above which the anti-entropy interval is scaled up (memberlist's
``pushPullScaleThreshold``)."""
MAX_ESTIMATE = float(1 << 32)
"""Estimates are capped here: no mesh is larger, and a sketch with every register at
its largest rank claims 2.65e19 nodes (any member can say so; the derived values are
bounded anyway, but the number itself must stay a 64-bit integer on the wire)."""


def epidemic_fanout(size: float, probability: float) -> int:
    """``ceil(ln N - ln(-ln p))``, at least 1: the fanout at which one round of epidemic
    spread reaches all ``size`` nodes with probability ``probability``.

    Two results give this same form. Push gossip with fanout ``ln N + c`` reaches every
    node with probability ``exp(-exp(-c))`` (Kermarrec, Massoulie, Ganesh 2003), and a
    random graph of mean degree ``ln N + c`` is connected with that probability
    (Erdos-Renyi 1960): so it sizes push gossip, the overlay a stream's first message
    floods, and the lazy announcements that must reach every node a broken tree missed
    (each node announcing to ``k`` random lazy links leaves a node unannounced with
    probability about ``exp(-k)``). Solving ``exp(-exp(-c)) = p`` gives
    ``c = -ln(-ln p)``: 2.97 for p = 0.95, 6.91 for 0.999; at 1,000 nodes that is 10
    and 14.
    """
    c = -math.log(-math.log(probability))
    return max(1, math.ceil(math.log(max(1.0, size)) + c))


def anti_entropy_scale(size: float) -> int:
    """How many times the base anti-entropy interval a mesh of ``size`` nodes waits
    between digests: 1 up to 32 nodes, then ``ceil(log2(N) - log2(32)) + 1`` (memberlist
    scales its push-pull interval so). A digest describes one entry per stream (up to
    ``max_digest_streams``), and streams grow with the mesh where every node
    publishes; the tree and its GRAFTs deliver and repair within a second, so
    anti-entropy, the last resort, can afford to grow its period with log N and keep
    a node's digest bandwidth from growing linearly."""
    if size <= AE_SCALE_THRESHOLD:
        return 1
    return math.ceil(math.log2(size) - math.log2(AE_SCALE_THRESHOLD)) + 1


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return min(max(value, bounds[0]), bounds[1])


@dataclass(frozen=True, slots=True)
class Sizing:
    """The values a node runs on for one estimate of its mesh's size."""

    estimate: int
    """The estimated number of nodes these values were derived for."""
    degree: int
    """Overlay degree (``OverlayConfig.active_size``): the links the broadcast tree
    keeps, eager (tree links of a stream) and lazy (announcements only) together."""
    fanout: int
    """Push forwarding's fanout (``GossipConfig.fanout``)."""
    ihave_fanout: int
    """Lazy links each message is announced to (IHAVE), at most."""
    anti_entropy_interval: float
    """Seconds between two digests (``GossipConfig.anti_entropy_interval``)."""


def derive_sizing(estimate: float, config: AdaptiveConfig, *,
                  anti_entropy_interval: float) -> Sizing:
    """The degrees, fanouts and pacing for a mesh of ``estimate`` nodes.

    With ``e = epidemic_fanout(N, p)`` (``p = config.target_delivery_probability``):

    * ``degree = clamp(e, degree_bounds)``: the overlay a stream's first message floods,
      and whose links the tree is made of, is connected with probability p even were
      its links random; a larger degree also keeps the tree shallow (depth about
      ``log N / log(degree - 1)``).
    * ``fanout = clamp(e, fanout_bounds)``: push gossip reaches everyone with
      probability p.
    * ``ihave_fanout = clamp(e, ihave_bounds)``: enough announcements that every node a
      broken tree missed hears of the message with probability p; binds only when the
      degree exceeds it.
    * ``anti_entropy_interval = min(base x anti_entropy_scale(N),
      max_anti_entropy_interval)``, never below ``base`` (``anti_entropy_interval``).
    """
    size = max(1.0, float(estimate))
    e = epidemic_fanout(size, config.target_delivery_probability)
    interval = min(anti_entropy_interval * anti_entropy_scale(size),
                   config.max_anti_entropy_interval)
    return Sizing(estimate=round(size), degree=_clamp(e, config.degree_bounds),
                  fanout=_clamp(e, config.fanout_bounds),
                  ihave_fanout=_clamp(e, config.ihave_bounds),
                  anti_entropy_interval=max(anti_entropy_interval, interval))


class AdaptiveSizer:
    """:func:`derive_sizing` applied to a moving estimate, with hysteresis.

    The first estimate is applied at once. After that, the values are derived again
    only when the estimate differs from the one they were derived for by more than
    ``config.hysteresis`` (relative, either way) and ``config.settle_time`` has passed
    since the last change; an estimate that wanders within its noise, or hovers at the
    boundary between two degrees, changes nothing.
    """

    __slots__ = ("_base_interval", "_basis", "_changed_at", "changes", "config", "current")

    def __init__(self, config: AdaptiveConfig, *, anti_entropy_interval: float) -> None:
        self.config = config
        self._base_interval = anti_entropy_interval
        self.current: Sizing | None = None
        """The values in force (None before the first estimate)."""
        self._basis = 1.0
        self._changed_at = -math.inf
        self.changes = 0
        """Times the values changed after the first."""

    def update(self, estimate: float, *, now: float) -> Sizing | None:
        """Feed the latest estimate; returns the new values when they changed."""
        estimate = min(max(1.0, float(estimate)), MAX_ESTIMATE)
        config = self.config
        if self.current is not None:
            if now - self._changed_at < config.settle_time:
                return None
            if abs(math.log(estimate / self._basis)) <= math.log1p(config.hysteresis):
                return None
        sizing = derive_sizing(estimate, config, anti_entropy_interval=self._base_interval)
        self._basis = estimate
        previous = self.current
        if previous is not None and _same_values(previous, sizing):
            return None
        if previous is not None:
            self.changes += 1
        self.current = sizing
        self._changed_at = now
        return sizing


def _same_values(a: Sizing, b: Sizing) -> bool:
    return (a.degree, a.fanout, a.ihave_fanout, a.anti_entropy_interval) == \
        (b.degree, b.fanout, b.ihave_fanout, b.anti_entropy_interval)


@functools.lru_cache(maxsize=64)
def retuned_config(config: GossipConfig, fanout: int, anti_entropy_interval: float
                   ) -> GossipConfig:
    """``config`` with an adaptive fanout and anti-entropy interval. Cached: the many
    endpoints of a simulation that settle on the same values share one object."""
    if config.fanout == fanout and config.anti_entropy_interval == anti_entropy_interval:
        return config
    return config.replace(fanout=fanout, anti_entropy_interval=anti_entropy_interval)


def hll_estimate(registers: bytes | bytearray) -> float:
    """The HyperLogLog estimate of the distinct keys behind ``registers`` (0 for an
    empty sketch): linear counting while it is below 2.5 x registers and some register
    is still zero, the harmonic-mean estimate above."""
    m = len(registers)
    zeros = registers.count(0)
    if zeros == m:
        return 0.0
    alpha = 0.7213 / (1 + 1.079 / m)
    raw = alpha * m * m / sum(_POWERS[r] for r in registers)
    if raw <= 2.5 * m and zeros:
        return m * math.log(m / zeros)
    return raw


def _contribution(public_key: bytes, epoch: int) -> tuple[int, int]:
    """(register, rank) of one key in one epoch."""
    digest = hashlib.blake2b(epoch.to_bytes(4, "big") + public_key, digest_size=8,
                             person=b"somasync-size").digest()
    value = int.from_bytes(digest, "big")
    rest = value >> _INDEX_BITS
    return value & (SKETCH_REGISTERS - 1), _RANK_BITS - rest.bit_length() + 1


def encode_sketch(epoch: int, registers: bytes | bytearray) -> bytes:
    """One sketch datagram: u8 version, u32 epoch, 256 one-byte registers."""
    return _HEADER.pack(SKETCH_VERSION, epoch % _EPOCHS) + bytes(registers)


def decode_sketch(data: bytes) -> tuple[int, bytes]:
    """(epoch, registers) of a sketch datagram.

    Raises:
        DecodeError: wrong length or version, or a register above :data:`MAX_RANK`.
    """
    if len(data) != SKETCH_SIZE:
        raise DecodeError("sketch_size", f"{len(data)} bytes, expected {SKETCH_SIZE}")
    version, epoch = _HEADER.unpack_from(data)
    if version != SKETCH_VERSION:
        raise DecodeError("sketch_version", f"version {version}")
    registers = data[_HEADER.size:]
    if max(registers) > MAX_RANK:
        raise DecodeError("sketch_rank", f"a register above {MAX_RANK}")
    return epoch, registers


@dataclass(frozen=True, slots=True)
class SketchStatistics:
    """Counters of one node's size sketch."""

    epoch: int
    estimate: float
    sent: int
    """Sketch datagrams sent."""
    received: int
    """Sketch datagrams accepted."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Refused sketches by reason (malformed, an epoch too far from ours)."""


class MeshSizeSketch:
    """One node's HyperLogLog estimate of its mesh's size (see the module docstring).

    Args:
        public_key: this node's key (what it is counted by).
        config: ``sketch_interval`` and ``sketch_epoch``.
        now: the driver's monotonic clock.
        wall_offset: wall-clock seconds minus ``now`` (epochs follow the wall clock, so
            that every node starts one at about the same moment).
    """

    def __init__(self, public_key: bytes, config: AdaptiveConfig, *, now: float,
                 wall_offset: float = 0.0) -> None:
        self._key = public_key
        self._interval = config.sketch_interval
        self._epoch_length = config.sketch_epoch
        self._wall_offset = wall_offset
        self._epoch = self._epoch_at(now)
        self._current = bytearray(SKETCH_REGISTERS)
        self._previous = bytearray(SKETCH_REGISTERS)
        self._next = bytearray(SKETCH_REGISTERS)  # a peer whose clock is ahead
        self._add_self(self._current, self._epoch)
        self._owed: dict[str, None] = {}  # neighbours that lack something we hold
        self._grew = True  # since the last tick: owe every neighbour
        self._next_tick = now
        self._sent = 0
        self._received = 0
        self._rejected: dict[str, int] = {}

    def _epoch_at(self, now: float) -> int:
        return math.floor((now + self._wall_offset) / self._epoch_length) % _EPOCHS

    def _add_self(self, registers: bytearray, epoch: int) -> None:
        index, rank = _contribution(self._key, epoch)
        if registers[index] < rank:
            registers[index] = rank

    # --- queries -----------------------------------------------------------------------

    def estimate(self) -> float:
        """Nodes in the mesh: the larger of the current and the previous epoch's count
        (the current one only grows while its epoch lasts)."""
        return max(hll_estimate(self._current), hll_estimate(self._previous))

    def next_tick(self) -> float:
        """When :meth:`tick` is due."""
        return self._next_tick

    def statistics(self) -> SketchStatistics:
        """A snapshot of the counters."""
        return SketchStatistics(epoch=self._epoch, estimate=self.estimate(), sent=self._sent,
                                received=self._received, rejected=dict(self._rejected))

    # --- inputs ------------------------------------------------------------------------

    def neighbour_up(self, address: str) -> None:
        """A new overlay neighbour: it gets this node's sketch at the next tick."""
        self._owed[address] = None

    def receive(self, source: str, data: bytes) -> None:
        """A sketch from ``source``. Bad input is counted and dropped, never raised."""
        try:
            epoch, registers = decode_sketch(data)
        except DecodeError as exc:
            self._reject(exc.reason)
            return
        offset = (epoch - self._epoch) % _EPOCHS
        if offset == 0:
            target = self._current
        elif offset == _EPOCHS - 1:
            target = self._previous
        elif offset == 1:
            target = self._next
        else:
            self._reject("epoch")
            return
        self._received += 1
        grew = lacks = False
        for i, theirs in enumerate(registers):
            ours = target[i]
            if theirs > ours:
                target[i] = theirs
                grew = True
            elif ours > theirs:
                lacks = True
        if offset == 0:
            self._grew = self._grew or grew
            if lacks:
                self._owed[source] = None

    def tick(self, neighbours: list[str], *, now: float) -> list[tuple[str, bytes]]:
        """Start a new epoch when the wall clock says, and return the sketch datagrams
        due: to every neighbour after this node's sketch grew, else to those that lack
        something it holds."""
        if now < self._next_tick:
            return []
        self._next_tick = now + self._interval
        epoch = self._epoch_at(now)
        if epoch != self._epoch:
            ahead = (epoch - self._epoch) % _EPOCHS == 1
            self._previous = self._current if ahead else bytearray(SKETCH_REGISTERS)
            self._current = self._next if ahead else bytearray(SKETCH_REGISTERS)
            self._next = bytearray(SKETCH_REGISTERS)
            self._epoch = epoch
            self._add_self(self._current, epoch)
            self._grew = True
        if self._grew:
            targets = neighbours
        else:
            targets = [n for n in neighbours if n in self._owed]
        self._grew = False
        self._owed.clear()
        if not targets:
            return []
        data = encode_sketch(self._epoch, self._current)
        self._sent += len(targets)
        return [(address, data) for address in targets]

    def _reject(self, reason: str) -> None:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
