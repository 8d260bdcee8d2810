"""The discrete-event engine: virtual nodes running real Endpoints over a simulated network.

One heap of ``(time, seq, kind, target, data)`` entries; ``seq`` increases by one per push,
so ties are broken in push order and a run is a pure function of its seed and settings.
No asyncio, sockets, threads or wall clock are involved: every endpoint sees the virtual
``now`` and a wall clock of ``WALL + now``.

Event kinds: bytes arriving on one direction of a link (``_ARRIVE``: the chunks queued on
that direction whose time has come are handed over in one ``receive_bytes`` call), an
endpoint's timer (``_TIMER``), an overlay datagram (``_DGRAM``), an overlay timer
(``_OTIMER``) and rare scheduled calls (``_CALL``: connects, closes, faults, workload).
Timers use lazy deletion: a node remembers the deadline it armed, and heap entries that
do not match it are skipped.

After every input to an endpoint the engine pumps it: frames to send (scheduled at the
peer after the pair's latency, never before an earlier send on the same direction, like
TCP), links to close, deliveries (recorded and hashed into the trace), events, and the
re-armed timer.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import random
import struct
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from somasync.config import GossipConfig
from somasync.core import crypto, wire
from somasync.core.crypto import Identity
from somasync.core.endpoint import Delivery, Endpoint
from somasync.core.payload import MessageType
from somasync.errors import ConfigError
from somasync.message import Message
from somasync.sim.metrics import LogHistogram
from somasync.sim.network import NetworkModel
from somasync.testing import WALL  # one fixed epoch for every deterministic harness

if TYPE_CHECKING:
    from somasync.sim.overlays import Overlay

__all__ = ["WALL", "MemoVerifier", "Simulation", "VirtualNode", "derive_seed"]


_ARRIVE, _TIMER, _DGRAM, _OTIMER, _CALL = 0, 1, 2, 3, 4
_LENGTH = struct.Struct("!I")
_TRACE_DELIVERY = struct.Struct("!qI")
_TRACE_OVERLAY = struct.Struct("!qIIB")
_MESSAGE = int(wire.FrameKind.MESSAGE)
_SIGNED = wire.FLAG_SIGNED
_BATCH = wire.FLAG_BATCH
_HEADER = wire.FRAME_HEADER.size  # length prefix + fixed header
_TRACE_FLUSH = 1 << 20


def derive_seed(seed: int, *parts: object) -> int:
    """A 64-bit seed for one component (a node's endpoint, the network...) of a run."""
    text = ":".join([str(seed), *(str(p) for p in parts)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


class MemoVerifier:
    """A signature check shared by every virtual node of one run (the ``fast`` mode).

    The first time a signature is seen, the real Ed25519 check runs and its answer is
    cached with the key, domain and data it was given; later copies of the same message
    at other nodes are answered from the cache only when all four match. A forged copy
    (other data, other key) misses the cache and is really verified, so it still fails.
    At most ``capacity`` entries; the oldest go first.
    """

    __slots__ = ("_cache", "capacity", "hits", "misses")

    def __init__(self, capacity: int = 65_536) -> None:
        self._cache: dict[bytes, tuple[bytes, bytes, bytes, bool]] = {}
        self.capacity = capacity
        self.hits = 0
        self.misses = 0

    def __call__(self, public_key: bytes, signature: bytes, domain: bytes,
                 data: bytes) -> bool:
        entry = self._cache.get(signature)
        if entry is not None and entry[2] == data and entry[0] == public_key \
                and entry[1] == domain:
            self.hits += 1
            return entry[3]
        self.misses += 1
        ok = crypto.verify(public_key, signature, domain, data)
        cache = self._cache
        if entry is None:
            if len(cache) >= self.capacity:
                del cache[next(iter(cache))]
            cache[signature] = (public_key, domain, data, ok)
        return ok


class VirtualNode:
    """One simulated node: its endpoint and what the engine tracks about it."""

    __slots__ = ("address", "alive", "armed", "conns", "dialing", "endpoint", "held",
                 "identity", "inbox", "incarnation", "index", "lost", "name", "overlay",
                 "overlay_armed", "paused", "retry_armed", "timer_due", "up_since")

    def __init__(self, index: int, identity: Identity, name: str | None = None,
                 address: str | None = None) -> None:
        self.index = index
        self.name = name or f"n{index}"
        self.address = address or f"{self.name}:1"
        self.identity = identity
        self.endpoint: Endpoint | None = None
        self.alive = True
        self.paused = False
        self.armed: float | None = None
        self.timer_due = False
        self.up_since = 0.0
        self.incarnation = 0
        self.conns: dict[int, _Conn] = {}
        """Peer index -> established link."""
        self.dialing: dict[int, None] = {}
        self.lost: dict[int, float] = {}
        """Random overlay: neighbours whose link failed -> when; retried."""
        self.retry_armed = False
        self.held: dict[_Pipe, None] = {}
        self.inbox: list[tuple[int, bytes]] = []
        self.overlay: Any = None
        self.overlay_armed: float | None = None


class _Pipe:
    """One direction of a link: chunks in flight to ``dst``, oldest first."""

    __slots__ = ("a", "armed", "b", "closed", "conn", "dst", "endpoint", "last", "latency",
                 "link", "queue", "ready")

    def __init__(self, conn: _Conn, dst: VirtualNode, endpoint: Endpoint, link: int) -> None:
        self.conn = conn
        self.dst = dst
        self.endpoint = endpoint
        self.link = link
        self.latency = conn.latency
        # The link's two ends, for the partition check on every send and arrival.
        self.a = conn.a.index
        self.b = conn.b.index
        self.queue: deque[tuple[float, bytes]] = deque()
        self.armed = False
        self.closed = False
        self.last = 0.0
        self.ready = False
        """The receiving endpoint finished its handshake: what arrives is whole frames."""


class _Conn:
    """A link between two nodes: two link ids, two pipes, one fixed latency."""

    __slots__ = ("a", "ab", "b", "ba", "ep_a", "latency", "link_a", "link_b", "open")

    def __init__(self, a: VirtualNode, b: VirtualNode, latency: float) -> None:
        self.a = a
        self.b = b
        self.latency = latency
        self.ep_a = a.endpoint
        self.link_a = -1
        self.link_b = -1
        self.ab: _Pipe | None = None
        self.ba: _Pipe | None = None
        self.open = False


class _Broadcast:
    __slots__ = ("after_fault", "frames", "holders", "id", "index", "key", "last",
                 "max_hops", "origin", "sent_at")

    def __init__(self, index: int, envelope: wire.Envelope, origin: int, sent_at: float,
                 nodes: int, after_fault: bool) -> None:
        self.index = index
        self.id = envelope.id
        self.key = envelope.body[3:43]  # origin key + sequence number
        self.origin = origin
        self.sent_at = sent_at
        self.holders = bytearray(nodes)
        """Per node: 0 missing, 1 delivered within the deadline (or origin), 2 later,
        3 delivered by a node that (re)started after the send (not eligible)."""
        self.holders[origin] = 1
        self.frames = 0
        self.last = 0.0
        self.max_hops = -1
        self.after_fault = after_fault


class Simulation:
    """Thousands of real :class:`~somasync.core.endpoint.Endpoint` objects on one virtual
    clock and a simulated network (see :mod:`somasync.sim`).

    Args:
        nodes: how many virtual nodes.
        seed: every random choice of the run derives from it.
        config: gossip settings of every endpoint (see :func:`sim_gossip_config`).
        network: latency, loss, and fault timings.
        overlay: ``"node"`` (the production control part, :mod:`somasync.core.node`:
            HyParView, the dialler and SWIM membership) or ``"random"`` (each node keeps
            ``degree`` links to random nodes: a baseline); or a function that builds
            the overlay for this simulation (the test harnesses' presets).
        degree: links per node of the random overlay.
        crypto: ``"fast"`` (:class:`MemoVerifier`) or ``"full"`` (every copy verified).
        authors: publishers of the workload: that many nodes, spread over the index
            range, send the broadcasts (a live one at random; any live node when none
            is), each its own stream of sequence numbers, as feed publishers do; node
            ``i`` signs as author ``i % authors``.
        payload_bytes: size of each broadcast's text payload.
        deadline: seconds within which a delivery counts as "on time".
        reconnect_interval: random overlay: seconds between redials of lost neighbours.
        overlay_config: HyParView settings (``somasync.config.OverlayConfig``).
        membership: SWIM settings of the ``node`` overlay (``MembershipConfig.lan()``).
        run_membership: whether the ``node`` overlay runs SWIM (None: on meshes of up to
            :data:`~somasync.sim.overlays.MEMBERSHIP_AUTO_LIMIT` nodes).
        adaptive: adaptive fanout settings of the ``node`` overlay's control parts
            (``somasync.config.AdaptiveConfig``; None: off): each node's degree, IHAVE
            fanout and anti-entropy pacing follow its estimate of the mesh's size.
    """

    def __init__(self, nodes: int, *, seed: int = 1, config: GossipConfig | None = None,
                 network: NetworkModel | None = None,
                 overlay: str | Callable[[Simulation], Overlay] = "node",
                 degree: int = 6, crypto: str = "fast", authors: int = 32,
                 payload_bytes: int = 256, deadline: float = 1.0,
                 reconnect_interval: float = 5.0, overlay_config: Any = None,
                 membership: Any = None, run_membership: bool | None = None,
                 adaptive: Any = None) -> None:
        _check_int(nodes, "sim.nodes", 0)  # presets add their nodes one by one
        _check_int(degree, "sim.degree", 1)
        _check_int(authors, "sim.authors", 1)
        _check_int(payload_bytes, "sim.payload_bytes", 1)
        if crypto not in ("fast", "full"):
            raise ConfigError("sim.crypto", f"must be 'fast' or 'full', got {crypto!r}")
        if not isinstance(deadline, int | float) or not deadline > 0:
            raise ConfigError("sim.deadline", f"must be a number > 0, got {deadline!r}")
        if not isinstance(reconnect_interval, int | float) or not reconnect_interval > 0:
            raise ConfigError("sim.reconnect_interval",
                              f"must be a number > 0, got {reconnect_interval!r}")
        self.size = nodes
        self.seed = seed
        self.config = config or GossipConfig.lan()
        self.network = network or NetworkModel()
        self.degree = min(degree, nodes - 1)
        self.crypto = crypto
        self.deadline = float(deadline)
        self.reconnect_interval = float(reconnect_interval)
        self.payload_bytes = payload_bytes
        self.verifier: crypto_Verifier = MemoVerifier() if crypto == "fast" else _full_verify
        self.now = 0.0
        self.events = 0
        self.first_fault: float | None = None
        self.dropped_bytes = 0
        self.datagrams = 0
        self.datagrams_lost = 0
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self._seq = itertools.count()
        self._net_rng = random.Random(derive_seed(seed, "network"))
        self.workload_rng = random.Random(derive_seed(seed, "workload"))
        self._links: dict[int, _Pipe] = {}
        """Link id -> the pipe that link's endpoint sends on (until its side closes)."""
        self._pairs: dict[tuple[int, int], _Conn] = {}
        self._next_link = itertools.count(1)
        self._groups: list[int] | None = None
        self._broadcasts: list[_Broadcast] = []
        self._by_id: dict[bytes, _Broadcast] = {}
        self._by_key: dict[bytes, _Broadcast] = {}
        self.latency_hist = LogHistogram()
        self.deliveries = 0
        self._trace = bytearray()
        self._hasher = hashlib.blake2b(digest_size=16)
        self._authors = [Identity(_key_seed(seed, "author", a)) for a in range(authors)]
        # One stream per publishing node, as a real feed has: each origin numbers its own
        # messages, so a partition never interleaves one stream's numbers across sides
        # (a hole the other side would give up and then claim in its digests).
        self._sequences: dict[int, int] = {}
        self.publishers = sorted({(i * nodes) // min(authors, nodes)
                                  for i in range(min(authors, nodes))})
        self._retired: list[Any] = []  # statistics of endpoints of crashed incarnations
        self.crashed_ever: dict[int, None] = {}
        self.nodes = [VirtualNode(i, Identity(_key_seed(seed, "node", i)))
                      for i in range(nodes)]
        self._names = {node.name: node.index for node in self.nodes}
        self._names.update({node.address: node.index for node in self.nodes})
        for node in self.nodes:
            node.endpoint = self._new_endpoint(node)
        self.overlay: Overlay = (overlay(self) if callable(overlay) else
                                 _make_overlay(self, overlay, overlay_config, membership,
                                               run_membership, adaptive))
        self.overlay_name = self.overlay.name

    # --- setup -------------------------------------------------------------------------

    def _new_endpoint(self, node: VirtualNode) -> Endpoint:
        rng = random.Random(derive_seed(self.seed, "endpoint", node.index, node.incarnation))
        # Links run the real handshake, then unsealed records: sealing adds 20 bytes per
        # write and CPU, not protocol behaviour, and the engine reads frame headers to
        # count each broadcast's copies.
        return Endpoint(self.config, node.identity, node.name, rng=rng, now=self.now,
                        wall_offset=WALL, listen_address=node.address,
                        verify=self.verifier, plaintext_links=True)

    def add_node(self, identity: Identity, *, name: str | None = None,
                 address: str | None = None, endpoint: bool = True) -> VirtualNode:
        """A node joining the simulation now (named ``n<index>`` unless ``name`` says),
        with an endpoint unless ``endpoint`` is False (a node that runs only what its
        overlay runs: the membership harness). The overlay starts whatever it runs."""
        node = VirtualNode(len(self.nodes), identity, name, address)
        node.up_since = self.now
        self.nodes.append(node)
        self.size = len(self.nodes)
        self._names[node.name] = node.index
        self._names[node.address] = node.index
        if endpoint:
            node.endpoint = self._new_endpoint(node)
            self._pump(node)
        return node

    def start(self) -> None:
        """Arm every endpoint's timer and let the overlay form its first links."""
        for node in self.nodes:
            self._pump(node)
        self.overlay.start()

    # --- the loop ----------------------------------------------------------------------

    def schedule(self, at: float, function: Callable[..., None], *args: Any) -> None:
        """Call ``function(*args)`` at virtual time ``at`` (not before ``now``)."""
        heapq.heappush(self._heap, (max(at, self.now), next(self._seq), _CALL, function,
                                    args))

    def run_until(self, end: float) -> None:
        """Process every event due up to virtual time ``end``; then ``now == end``."""
        heap = self._heap
        pop = heapq.heappop
        arrive = self._arrive
        pump = self._pump
        processed = 0
        while heap and heap[0][0] <= end:
            t, _, kind, target, data = pop(heap)
            self.now = t
            processed += 1
            if kind == _ARRIVE:
                arrive(target)
            elif kind == _TIMER:
                node = target
                if node.armed != t or not node.alive:
                    continue
                if node.paused:
                    node.timer_due = True
                    continue
                node.armed = None
                node.endpoint.handle_timer(now=t)
                node.endpoint.take_events()  # not needed; taken here, not on every pump
                pump(node)
            elif kind == _DGRAM:
                self._datagram_arrives(target, data)
            elif kind == _OTIMER:
                node = target
                if node.overlay_armed == t and node.alive and not node.paused:
                    node.overlay_armed = None
                    self.overlay.timer(node)
            else:
                target(*data)
        self.events += processed
        if self.now < end:
            self.now = end

    def run(self, seconds: float) -> None:
        """Advance the virtual clock by ``seconds``."""
        self.run_until(self.now + seconds)

    # --- endpoints ---------------------------------------------------------------------

    def _pump(self, node: VirtualNode) -> None:
        endpoint = node.endpoint
        assert endpoint is not None
        send = self._send
        for link, data in endpoint.frames_to_send():
            send(link, data)
        closing = endpoint.links_to_close()
        if closing:
            for link, reason in closing:
                self._endpoint_closes(node, link, reason)
        deliveries = endpoint.take_deliveries()
        if deliveries:
            self._record(node, deliveries)
        deadline = endpoint.get_timer()
        if deadline != node.armed:
            node.armed = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), _TIMER, node, None))

    def _send(self, link: int, data: bytes) -> None:
        pipe = self._links.get(link)
        if pipe is None:
            return
        groups = self._groups
        if pipe.closed or (groups is not None and groups[pipe.a] != groups[pipe.b]):
            self.dropped_bytes += len(data)
            return
        t = self.now + pipe.latency
        if t < pipe.last:
            t = pipe.last
        pipe.last = t
        pipe.queue.append((t, data))
        if not pipe.armed:
            pipe.armed = True
            heapq.heappush(self._heap, (t, next(self._seq), _ARRIVE, pipe, None))

    def _arrive(self, pipe: _Pipe) -> None:
        pipe.armed = False
        queue = pipe.queue
        node = pipe.dst
        if pipe.closed or node.endpoint is not pipe.endpoint or not node.alive:
            queue.clear()
            return
        if node.paused:
            node.held[pipe] = None
            return
        now = self.now
        if queue and queue[0][0] <= now:  # else: a resumed node's pipe, nothing due yet
            groups = self._groups
            if groups is not None and groups[pipe.a] != groups[pipe.b]:
                while queue and queue[0][0] <= now:
                    self.dropped_bytes += len(queue.popleft()[1])
            elif len(queue) == 1 or queue[1][0] > now:
                self._deliver_bytes(pipe, queue.popleft()[1])
            else:
                chunks = []
                while queue and queue[0][0] <= now:
                    chunks.append(queue.popleft()[1])
                self._deliver_bytes(pipe, b"".join(chunks))
        if queue and not pipe.armed:
            pipe.armed = True
            heapq.heappush(self._heap, (queue[0][0], next(self._seq), _ARRIVE, pipe, None))

    def _deliver_bytes(self, pipe: _Pipe, data: bytes) -> None:
        # Senders hand over whole frames, so the simulator cuts them itself (it reads the
        # headers anyway, to count payload MESSAGE frames per broadcast for RMR) and
        # gives each to receive_frame: the endpoint's FrameBuffer would only copy them.
        link, now = pipe.link, self.now
        endpoint = pipe.endpoint
        if not pipe.ready:
            if endpoint.session_of(link) is None:
                # The handshake (its last bytes never share a delivery with frames: a
                # side sends frames only after the other's AUTH, one latency later).
                endpoint.receive_bytes(link, data, now=now)
                self._pump(pipe.dst)
                return
            pipe.ready = True
        by_key = self._by_key
        unpack = _LENGTH.unpack_from
        receive = endpoint.receive_frame
        offset, end = 0, len(data)
        while offset < end:
            stop = offset + 4 + unpack(data, offset)[0]
            if data[offset + 5] == _MESSAGE:
                flags = data[offset + 6]
                body = offset + _HEADER + (
                    0 if not flags & _SIGNED else 64 if not flags & _BATCH
                    else wire.authenticator_size(data, flags, offset + _HEADER))
                record = by_key.get(data[body + 3 : body + 43])
                if record is not None:
                    record.frames += 1
            receive(link, data[offset + 4 : stop], now=now)
            offset = stop
        self._pump(pipe.dst)

    def _record(self, node: VirtualNode, deliveries: list[Delivery]) -> None:
        now = self.now
        index = node.index
        trace = self._trace
        stamp = _TRACE_DELIVERY.pack(round(now * 1e6), index)
        by_id = self._by_id
        for delivery in deliveries:
            message_id = delivery.envelope.id
            trace += stamp
            trace += message_id
            record = by_id.get(message_id)
            if record is None:
                continue
            holders = record.holders
            if holders[index]:
                continue
            self.deliveries += 1
            sent_at = record.sent_at
            if node.up_since > sent_at:
                holders[index] = 3
                continue
            delay = now - sent_at
            holders[index] = 1 if delay <= self.deadline else 2
            self.latency_hist.add(delay)
            if now > record.last:
                record.last = now
            hops = getattr(delivery, "hops", None)
            if hops is not None and hops > record.max_hops:
                record.max_hops = hops
        if len(trace) > _TRACE_FLUSH:
            self._hasher.update(trace)
            trace.clear()

    def _trace_overlay(self, a: int, b: int, up: bool) -> None:
        self._trace += _TRACE_OVERLAY.pack(round(self.now * 1e6), a, b, up)

    def trace_hash(self) -> str:
        """The BLAKE2b trace of every delivery and overlay change so far (hex)."""
        hasher = self._hasher.copy()
        hasher.update(self._trace)
        return hasher.hexdigest()

    # --- links -------------------------------------------------------------------------

    def latency(self, a: int, b: int) -> float:
        """The fixed one-way latency between nodes ``a`` and ``b`` (seconds)."""
        return self.network.latency_between(self.seed, a, b)

    def cut(self, a: int, b: int) -> bool:
        """True while a partition separates nodes ``a`` and ``b``."""
        groups = self._groups
        return groups is not None and groups[a] != groups[b]

    def linked(self, a: int, b: int) -> bool:
        """True when a link between ``a`` and ``b`` exists or is being set up."""
        return (min(a, b), max(a, b)) in self._pairs

    def dial(self, a: VirtualNode, b: VirtualNode) -> bool:
        """``a`` opens a connection to ``b`` (one per unordered pair). The SYN takes one
        latency; both endpoints then open the link (the dialer's extra half round trip is
        not modelled). Returns False when the pair is already linked or dialling."""
        if a is b or not a.alive:
            return False
        key = (min(a.index, b.index), max(a.index, b.index))
        if key in self._pairs:
            return False
        conn = _Conn(a, b, self.latency(a.index, b.index))
        self._pairs[key] = conn
        a.dialing[b.index] = None
        self.schedule(self.now + conn.latency, self._syn_arrives, conn)
        return True

    def _syn_arrives(self, conn: _Conn) -> None:
        a, b = conn.a, conn.b
        a.dialing.pop(b.index, None)
        if not a.alive or a.endpoint is not conn.ep_a:
            self._pairs.pop((min(a.index, b.index), max(a.index, b.index)), None)
            return
        if not b.alive or self.cut(a.index, b.index):
            silent = self.network.silent_failures or b.alive  # alive: across a cut
            delay = self.network.connect_timeout if silent else conn.latency
            a.dialing[b.index] = None
            self.schedule(self.now + delay, self._connect_failed, conn)
            return
        assert a.endpoint is not None
        assert b.endpoint is not None
        conn.link_a, conn.link_b = next(self._next_link), next(self._next_link)
        conn.ab = _Pipe(conn, b, b.endpoint, conn.link_b)
        conn.ba = _Pipe(conn, a, a.endpoint, conn.link_a)
        conn.open = True
        self._links[conn.link_a] = conn.ab
        self._links[conn.link_b] = conn.ba
        a.conns[b.index] = conn
        b.conns[a.index] = conn
        a.endpoint.open_link(conn.link_a, outbound=True, address=b.address, now=self.now)
        b.endpoint.open_link(conn.link_b, outbound=False, address=f"{a.name}:9",
                             now=self.now)
        self._trace_overlay(a.index, b.index, True)
        self._pump(a)
        self._pump(b)
        self.overlay.link_up(a, b)
        self.overlay.link_up(b, a)

    def _connect_failed(self, conn: _Conn) -> None:
        a, b = conn.a, conn.b
        a.dialing.pop(b.index, None)
        self._pairs.pop((min(a.index, b.index), max(a.index, b.index)), None)
        if a.alive and a.endpoint is conn.ep_a:
            self.overlay.connect_failed(a, b)

    def hang_up(self, a: VirtualNode, b: VirtualNode, reason: str = "overlay") -> None:
        """``a`` closes its link to ``b`` on purpose; ``b`` sees it close one latency
        later (after the bytes already in flight)."""
        conn = a.conns.get(b.index)
        if conn is not None:
            self._close_now_and_fin(conn, a, reason, failed=False)

    def _endpoint_closes(self, node: VirtualNode, link: int, reason: str) -> None:
        pipe = self._links.get(link)
        if pipe is not None:
            self._close_now_and_fin(pipe.conn, node, reason, failed=True)

    def _close_now_and_fin(self, conn: _Conn, closer: VirtualNode, reason: str, *,
                           failed: bool) -> None:
        other = conn.b if closer is conn.a else conn.a
        to_other = conn.ab if closer is conn.a else conn.ba
        assert to_other is not None
        self._close_side(conn, closer, reason, failed=failed)
        fin = max(self.now + conn.latency, to_other.last)
        self.schedule(fin, self._close_side, conn, other, "peer_closed", failed)

    def _close_side(self, conn: _Conn, node: VirtualNode, reason: str,
                    failed: bool = True) -> None:
        """``node``'s end of ``conn`` is gone: tell its endpoint and the overlay."""
        inbound = conn.ba if node is conn.a else conn.ab
        link = conn.link_a if node is conn.a else conn.link_b
        if inbound is None or inbound.closed:
            return
        inbound.closed = True
        inbound.queue.clear()
        self._links.pop(link, None)
        other = conn.b if node is conn.a else conn.a
        outbound = conn.ab if node is conn.a else conn.ba
        assert outbound is not None
        if outbound.closed:
            conn.open = False
            self._pairs.pop((min(conn.a.index, conn.b.index),
                             max(conn.a.index, conn.b.index)), None)
        if node.conns.get(other.index) is conn:
            del node.conns[other.index]
        if node.alive and node.endpoint is inbound.endpoint:
            inbound.endpoint.close_link(link, now=self.now, reason=reason)
            self._trace_overlay(node.index, other.index, False)
            self._pump(node)
            self.overlay.link_down(node, other, failed=failed)

    # --- datagrams (overlay) -----------------------------------------------------------

    def send_datagram(self, source: VirtualNode, destination: str, data: bytes) -> None:
        """A datagram to the node named or addressed ``destination``: lost with
        ``network.loss``, dropped across a cut."""
        self.datagrams += 1
        target = self._names.get(destination)
        if target is None:
            self.datagrams_lost += 1
            return
        if (self.network.loss and self._net_rng.random() < self.network.loss) \
                or self.cut(source.index, target):
            self.datagrams_lost += 1
            return
        at = self.now + self.latency(source.index, target)
        heapq.heappush(self._heap, (at, next(self._seq), _DGRAM, self.nodes[target],
                                    (source.index, data)))

    def _datagram_arrives(self, node: VirtualNode, item: tuple[int, bytes]) -> None:
        if not node.alive:
            self.datagrams_lost += 1
            return
        if node.paused:
            node.inbox.append(item)
            return
        if self.cut(node.index, item[0]):
            self.datagrams_lost += 1
            return
        self.overlay.datagram(node, self.nodes[item[0]], item[1])

    def arm_overlay_timer(self, node: VirtualNode, deadline: float) -> None:
        """Call the overlay's ``timer(node)`` at ``deadline`` (one armed timer per node)."""
        if deadline != node.overlay_armed and math.isfinite(deadline):
            node.overlay_armed = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), _OTIMER, node, None))

    def node_named(self, name: str) -> VirtualNode | None:
        """The node called or addressed ``name`` (``"n17"`` or ``"n17:1"``), or None."""
        index = self._names.get(name)
        return None if index is None else self.nodes[index]

    # --- workload ----------------------------------------------------------------------

    def random_live_node(self, rng: random.Random | None = None) -> VirtualNode | None:
        """A uniformly chosen node that is alive and not paused (None if there is none)."""
        rng = rng or self.workload_rng
        nodes = self.nodes
        for _ in range(64):
            node = nodes[rng.randrange(len(nodes))]
            if node.alive and not node.paused:
                return node
        live = [n for n in nodes if n.alive and not n.paused]
        return live[rng.randrange(len(live))] if live else None

    def _random_live_publisher(self) -> VirtualNode | None:
        live = [self.nodes[i] for i in self.publishers
                if self.nodes[i].alive and not self.nodes[i].paused]
        return live[self.workload_rng.randrange(len(live))] if live else None

    def broadcast(self, origin: VirtualNode | None = None) -> int | None:
        """Sign a new message and broadcast it from ``origin`` (a random live node by
        default). Returns the broadcast's index, or None when no node is live."""
        origin = origin or self._random_live_publisher() or self.random_live_node()
        if origin is None or origin.endpoint is None:
            return None
        index = len(self._broadcasts)
        author = origin.index % len(self._authors)
        sequence = self._sequences[origin.index] = self._sequences.get(origin.index, 0) + 1
        text = f"sim broadcast {index} from {origin.name} ".ljust(self.payload_bytes, ".")
        # A feed of its own: the node's name is bound to the node's key (its handshake),
        # and a message signed by an author key may not claim it.
        message = Message(MessageType.Data(text), f"feed-{origin.name}",
                          timestamp=round(WALL + self.now, 3), ttl=3600,
                          sequence=sequence)
        envelope = message.sign_with_ed25519(self._authors[author]).to_envelope()
        after_fault = self.first_fault is not None
        record = _Broadcast(index, envelope, origin.index, self.now, self.size, after_fault)
        self._broadcasts.append(record)
        self._by_id[record.id] = record
        self._by_key[record.key] = record
        origin.endpoint.broadcast(envelope, now=self.now)
        self._pump(origin)
        return index

    def schedule_broadcasts(self, count: int, *, start: float, interval: float) -> None:
        """``count`` broadcasts from random live nodes, one every ``interval`` seconds."""
        for i in range(count):
            self.schedule(start + i * interval, self._scheduled_broadcast)

    def _scheduled_broadcast(self) -> None:
        self.broadcast()

    @property
    def broadcasts(self) -> int:
        """Broadcasts sent so far."""
        return len(self._broadcasts)

    # --- faults ------------------------------------------------------------------------

    def _fault(self) -> None:
        if self.first_fault is None:
            self.first_fault = self.now

    def crash(self, indices: Iterable[int], *, silent: bool | None = None) -> None:
        """Stop these nodes now. Each neighbour's link closes after ``detect_delay`` (one
        latency by default: a reset), or ``link_timeout`` for silent host failures."""
        self._fault()
        silent = self.network.silent_failures if silent is None else silent
        for index in indices:
            node = self.nodes[index]
            if not node.alive:
                continue
            node.alive = False
            node.paused = False
            self.crashed_ever[index] = None
            if node.endpoint is not None:
                self._retired.append(node.endpoint.statistics())
            for peer_index, conn in list(node.conns.items()):
                inbound = conn.ba if node is conn.a else conn.ab
                assert inbound is not None
                inbound.closed = True
                inbound.queue.clear()
                self._links.pop(conn.link_a if node is conn.a else conn.link_b, None)
                delay = (self.network.link_timeout if silent else
                         self.network.detect_delay if self.network.detect_delay is not None
                         else conn.latency)
                self.schedule(self.now + delay, self._close_side, conn,
                              self.nodes[peer_index], "peer_failed", True)
            node.conns.clear()
            node.dialing.clear()
            node.held.clear()
            node.inbox.clear()
            self._trace_overlay(index, index, False)
            self.overlay.crashed(node)

    def recover(self, indices: Iterable[int]) -> None:
        """Restart these crashed nodes with their identity and empty state."""
        for index in indices:
            node = self.nodes[index]
            if node.alive:
                continue
            node.alive = True
            node.incarnation += 1
            node.up_since = self.now
            node.armed = None
            node.overlay_armed = None
            node.lost.clear()
            node.endpoint = self._new_endpoint(node)
            self._pump(node)
            self._trace_overlay(index, index, True)
            self.overlay.recovered(node)

    def pause(self, indices: Iterable[int]) -> None:
        """Freeze these nodes (SIGSTOP): bytes and datagrams wait for them, timers are
        late; their links stay open."""
        self._fault()
        for index in indices:
            node = self.nodes[index]
            if node.alive:
                node.paused = True

    def resume(self, indices: Iterable[int]) -> None:
        """Thaw paused nodes: what waited is handled, late timers fire."""
        for index in indices:
            node = self.nodes[index]
            if not node.alive or not node.paused:
                continue
            node.paused = False
            held, node.held = node.held, {}
            for pipe in held:
                if not pipe.armed:
                    self._arrive(pipe)
            inbox, node.inbox = node.inbox, []
            for source, data in inbox:
                self.overlay.datagram(node, self.nodes[source], data)
            if node.endpoint is not None:
                if node.timer_due or (node.armed is not None and node.armed <= self.now):
                    node.timer_due = False
                    node.armed = None
                    node.endpoint.handle_timer(now=self.now)
                self._pump(node)
            self.overlay.resumed(node)

    def partition(self, groups: list[list[int]]) -> None:
        """Cut the network into ``groups`` (nodes in no group form one more group). Bytes
        across the cut are dropped; links across it close after ``link_timeout``."""
        self._fault()
        assignment = [len(groups)] * self.size
        for number, group in enumerate(groups):
            for index in group:
                assignment[index] = number
        self._groups = assignment
        for conn in list(self._pairs.values()):
            if conn.open and assignment[conn.a.index] != assignment[conn.b.index]:
                self.schedule(self.now + self.network.link_timeout, self._cut_timeout, conn)

    def heal(self) -> None:
        """Remove the partition."""
        self._groups = None

    def _cut_timeout(self, conn: _Conn) -> None:
        if conn.open and self.cut(conn.a.index, conn.b.index):
            self._close_side(conn, conn.a, "timeout", True)
            self._close_side(conn, conn.b, "timeout", True)

    # --- queries -----------------------------------------------------------------------

    def live_nodes(self) -> list[VirtualNode]:
        """Nodes that are up (paused ones included)."""
        return [n for n in self.nodes if n.alive]

    def missing_copies(self) -> int:
        """Broadcasts x live nodes not yet holding them (0: everyone has everything)."""
        dead = [n.index for n in self.nodes if not n.alive]
        missing = 0
        for record in self._broadcasts:
            holders = record.holders
            missing += holders.count(0) - sum(1 for i in dead if not holders[i])
        return missing

    def endpoint_statistics(self) -> list[Any]:
        """Statistics of every endpoint, crashed incarnations included."""
        live = [n.endpoint.statistics() for n in self.nodes
                if n.alive and n.endpoint is not None]
        return self._retired + live

    def broadcast_records(self) -> list[_Broadcast]:
        """Per broadcast: send time, origin, who holds it, frames received, last hop."""
        return self._broadcasts


crypto_Verifier = crypto.Verifier


def _full_verify(public_key: bytes, signature: bytes, domain: bytes, data: bytes) -> bool:
    return crypto.verify(public_key, signature, domain, data)


def _key_seed(seed: int, *parts: object) -> bytes:
    text = ":".join([str(seed), *(str(p) for p in parts)]).encode()
    return hashlib.blake2b(text, digest_size=32).digest()


def _check_int(value: Any, name: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(name, f"must be an integer >= {minimum}, got {value!r}")


def _make_overlay(sim: Simulation, name: str, config: Any, membership: Any,
                  run_membership: bool | None, adaptive: Any) -> Overlay:
    from somasync.sim import overlays

    return overlays.make(sim, name, config, membership=membership,
                         run_membership=run_membership, adaptive=adaptive)
