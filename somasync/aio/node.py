"""The node facade: one ``SynapseNode``, whatever runs it.

A :class:`SynapseNode` owns what a node *is*: its configuration and identity, its
control part (:class:`~somasync.aio.control.ControlDriver` around the sans-IO
:class:`~somasync.core.node.NodeControl`: membership, overlay, dialler), the
application's ``messages`` and ``events`` streams, statistics, start/stop and signals.
The sockets and the data part belong to a runtime (:mod:`somasync.aio.runtime`): the
in-process :class:`~somasync.aio.local.LocalRuntime`, or the sharded runtime
(supervisor and worker processes, loaded only when ``workers`` > 0). The two runtimes
share no code path but this facade, so both behave alike by construction: same
statistics, same events, same errors, same signals.
"""

from __future__ import annotations

import asyncio
import bisect
import importlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from somasync.aio.channel import Stream
from somasync.aio.control import ControlDriver
from somasync.aio.direct import DEFAULT_DIRECT_TIMEOUT, DirectMessaging
from somasync.aio.local import LocalRuntime
from somasync.aio.once import LogOnce
from somasync.aio.runtime import Runtime, WorkerStats
from somasync.aio.signer import BYPASS_PRIORITY, BatchSigner
from somasync.bundle import BundleStatistics, Reassembler, is_chunk, split
from somasync.config import NodeConfig, parse_address
from somasync.core import wire
from somasync.core.crypto import Identity
from somasync.core.direct import DIRECT_HEADER
from somasync.core.endpoint import EndpointStatistics
from somasync.core.events import FrameRejected, PeerConnected, PeerDisconnected, PeerRevoked
from somasync.core.membership import Member, MembershipStatistics, PeerState
from somasync.core.payload import MessageType, encode_payload
from somasync.core.sizing import Sizing
from somasync.core.trust import Trust
from somasync.core.wire import ZERO_KEY
from somasync.datadir import DataDir, kept_identity
from somasync.errors import (
    ConfigError,
    DataDirError,
    MessageTooLargeError,
    NodeStateError,
    TransportError,
)
from somasync.events import (
    DeliveryDropped,
    Error,
    MessageReceived,
    MessageSent,
    NodeStarted,
    NodeStopping,
)
from somasync.message import Message
from somasync.protocol import GossipStats, NetworkStats
from somasync.query import Query, QueryFilter, QueryHandler

__all__ = ["LatencyHistogram", "NodeStats", "Peer", "PeerStats", "SynapseNode", "WorkerStats"]

Event = object
_log = logging.getLogger("somasync.node")
BUNDLE_PACING_WAIT = 1.0  # seconds one chunk waits at most for the send queues to drain
# Refusals that are a verdict about a peer (who it is, what it did), logged once each;
# protocol errors of one frame are only counted.
ADMISSION_REFUSALS = frozenset({
    "not_allowed", "name_taken", "revoked", "no_certificate", "bad_certificate",
    "unknown_operator", "certificate_mismatch", "certificate_not_yet_valid",
    "certificate_expired", "low_score", "connection_limit", "host_limit"})
EVICTIONS = frozenset({"evicted", "connection_limit", "low_score", "revoked"})
BIND_ATTEMPTS = 8  # port 0: tries to find a port free for both TCP and UDP


UNHEALTHY_STATES = frozenset({PeerState.SUSPECT, PeerState.FAILED, PeerState.LEFT})


@dataclass(frozen=True, slots=True)
class Peer:
    """A peer: a name for humans and the ``host:port`` it listens on; give ``add_peer``
    these two. ``SynapseNode.peers()`` and ``get_healthy_peers()`` also fill in how
    the node sees it: its link, its membership state and its quality."""

    id: str
    address: str
    state: PeerState | None = None
    """Membership's verdict (alive, suspect, failed, left); None for a peer this node
    knows only as an address or a link (not yet heard of as a member)."""
    connected: bool = False
    """True while a link to it is established (its handshake finished)."""
    quality: float = 0.0
    """Its score (:mod:`somasync.core.scoring`): positive for a peer that brought
    messages first, negative for invalid or greedy frames; 0 with no history."""

    def __post_init__(self) -> None:
        parse_address(self.address, "Peer.address")

    def is_healthy(self) -> bool:
        """Linked, and not suspected, failed or gone by membership's account."""
        return self.connected and self.state not in UNHEALTHY_STATES


@dataclass(frozen=True, slots=True)
class PeerStats:
    """How many of the peers this node knows it is connected to."""

    healthy_peers: int
    """Peers with an established, handshaken connection."""
    total_peers: int
    """Peers known to this node: configured addresses plus connected peers."""


LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                  10.0, 30.0)
"""Upper bounds (seconds) of the delivery latency histogram's buckets."""


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """Delivery latency: the origin's timestamp to this node's delivery, on the wall
    clock (so it includes the clocks' offset; a negative one counts as 0)."""

    bounds: tuple[float, ...]
    """Bucket upper bounds in seconds (the last bucket, ``+Inf``, is implicit)."""
    counts: tuple[int, ...]
    """Deliveries per bucket, ``len(bounds) + 1`` of them (not cumulative)."""
    total: float
    """Sum of the latencies, seconds."""

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class NodeStats:
    """A snapshot of a node's counters (see :meth:`SynapseNode.get_stats`)."""

    node_id: str
    uptime: float
    """Seconds since the node last started (0 when stopped)."""
    messages_processed: int
    """Messages from other nodes delivered to this node's application."""
    messages_originated: int
    peer_stats: PeerStats
    bytes_in: int
    """Bytes of frames read from peers, length prefixes included, whatever became of
    them (handled, or shed under overload: ``rejected``)."""
    bytes_out: int
    frames_in: int
    """Frames read from peers, counted as read (see ``bytes_in``)."""
    frames_out: int
    duplicates: int
    rejected: dict[str, int]
    """Refused frames by reason (``bad_signature``, ``oversize``, ``unsigned``...)."""
    deliveries_dropped: int
    """Messages the application did not take in time (delivery queue full)."""
    delivery_queue: int
    """Messages delivered and waiting for the application to take them now."""
    events_dropped: int
    connect_failures: int
    core: EndpointStatistics
    """Every counter of the protocol core (summed over workers in a sharded node)."""
    workers: tuple[WorkerStats, ...] = ()
    """Per-worker figures of a sharded node (empty for a single-process node)."""
    worker_restarts: int = 0
    """Workers the supervisor restarted after they died."""
    ring_dropped: int = 0
    """Sharded node: items the processes running now dropped because a shared-memory
    ring stayed full past its pending bound (each worker's own in ``workers``)."""
    ring_corrupted: int = 0
    """Sharded node: corrupt records found in its shared-memory rings since it started,
    by the supervisor or a worker (each worker's own in ``workers``). Each one made the
    supervisor restart the worker that wrote the ring (or read it, where the supervisor
    wrote it), which rebuilt the ring; anti-entropy refills what it held."""
    handshake_failures: int = 0
    """Sharded node: new connections dropped before reaching a worker (a handshake that
    failed or did not finish in time, or an owning worker that could not take the
    socket). Failed handshakes are also in ``rejected`` by reason."""
    membership: MembershipStatistics | None = None
    """Failure-detection counters (probes, suspicions, local health...)."""
    delivery_latency: LatencyHistogram = LatencyHistogram(
        LATENCY_BOUNDS, (0,) * (len(LATENCY_BOUNDS) + 1), 0.0)
    """Latency of every message delivered to the application since the node was built."""
    active_view: tuple[str, ...] | None = None
    """The overlay's neighbours now (HyParView's active view: listen addresses, oldest
    first); None with static discovery, where there is no overlay."""
    passive_view: tuple[str, ...] | None = None
    """The overlay's backups now (its passive view, addresses); None with no overlay."""
    bundles: BundleStatistics = field(default_factory=lambda: BundleStatistics(0, 0, 0, {}))
    """Large payloads received as bundles: delivered, in progress, bytes held, dropped
    by reason (see :mod:`somasync.bundle`)."""
    queries_dropped: dict[str, int] = field(default_factory=dict)
    """Queries and query answers refused here, by reason (``query_response_late``: after
    the query ended, at its timeout or cap; ``bad_query``; ``query_handlers_busy``...)."""

    @property
    def gossip_stats(self) -> GossipStats:
        """Peers and messages held now, as the original's ``gossip_stats``."""
        return GossipStats.from_statistics(self.core)

    @property
    def network_stats(self) -> NetworkStats:
        """Traffic since the node was built, as the original's ``NetworkStats``."""
        return NetworkStats.from_statistics(self.core)


class SynapseNode:
    """A mesh node in the caller's event loop. Build one with ``SynapseNodeBuilder``.

    Use ``async with node:`` or ``await node.start()`` / ``await node.stop()``. A stopped
    node can be started again: it keeps what it has seen and delivered, and catches up on
    what it missed through anti-entropy. With ``config.workers`` > 0 the node's links
    and signature checks run in that many worker processes; the API is the same.
    """

    def __init__(self, config: NodeConfig, identity: Identity,
                 messages: Stream[Message], events: Stream[Event]) -> None:
        self.config = config
        self.identity = identity
        self._messages = messages
        self._events = events
        self._peers: dict[str, Peer] = {}
        self._running = False
        self._started_at = 0.0
        self._bound: tuple[str, int] | None = None
        self._deliveries_reported = 0
        self._data_errors = 0
        self._verdicts = LogOnce(_log)  # admission refusals and evictions, once each
        self._bundles = Reassembler(max_bytes=config.max_bundle_bytes,
                                    max_held=2 * config.max_bundle_bytes)
        self._latency_counts = [0] * (len(LATENCY_BOUNDS) + 1)
        self._latency_total = 0.0
        self._signals: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.trust = Trust.from_config(config.security)
        """The node's trust policy and what it learned (bindings, certificates,
        revocations): shared by membership, the handshake and the message checks."""
        refused = self.trust.admit(identity.public_key, config.node_id,
                                   config.security.certificate, wall=time.time())
        if refused is not None:
            field = "security.certificate" if config.security.trust == "certificates" \
                else "node_id"
            raise ConfigError(field, f"this node is not admitted by its own trust policy: "
                                     f"{refused}")
        self._data: DataDir | None = None
        """Where the node keeps what it delivered (None: nowhere); locked from each
        start until the node stops."""
        if config.data_dir:
            kept_identity(config.data_dir, identity)  # its record is this identity's
            self._data = DataDir(config.data_dir, max_streams=config.gossip.max_streams,
                                 acquire=False)
            for public_key, notice in self._data.revocations():
                self.trust.revoke(public_key, notice)
        self._control = ControlDriver(self._runtime_proxy(), config, identity, events,
                                      trust=self.trust)
        self._direct = DirectMessaging(self)
        self._runtime: Runtime = self._make_runtime()
        self._signer: BatchSigner | None = None
        if config.sign_outgoing and config.signing_batch_size > 1 \
                and config.signing_batch_window > 0:
            self._signer = BatchSigner(identity, config.signing_batch_size,
                                       config.signing_batch_window, self._send_signed)

    def _make_runtime(self) -> Runtime:
        if self.config.workers == 0:
            return LocalRuntime(self.config, self.identity, self)
        # Loaded lazily: nothing in somasync imports the multiprocess runtime statically.
        sharded = importlib.import_module("somasync.workers.supervisor")
        runtime: Runtime = sharded.ShardedRuntime(self.config, self.identity, self)
        return runtime

    def _runtime_proxy(self) -> _RuntimeProxy:
        return _RuntimeProxy(self)

    # --- identity and state ------------------------------------------------------------

    @property
    def node_id(self) -> str:
        """The node's name (``NodeConfig.node_id``), the original's ``node_id()``."""
        return self.config.node_id

    @property
    def public_key(self) -> bytes:
        """This node's Ed25519 public key (32 bytes): its identity on the wire."""
        return self.identity.public_key

    @property
    def listen_address(self) -> str:
        """``host:port`` the node listens on (the real port when configured as 0)."""
        if self._bound is None:
            raise NodeStateError("the node has not been started")
        return f"{self._bound[0]}:{self._bound[1]}"

    @property
    def is_running(self) -> bool:
        """True between a successful ``start()`` and ``stop()``."""
        return self._running

    @property
    def runtime(self) -> Runtime:
        """The runtime that owns this node's sockets: a
        :class:`~somasync.aio.local.LocalRuntime`, or a ``ShardedRuntime`` (which also
        reports its worker processes and shared-memory segments)."""
        return self._runtime

    @property
    def control(self) -> ControlDriver:
        """The node's control part (membership, overlay, dialler)."""
        return self._control

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Listen, join the mesh through the bootstrap and added peers, and return once
        listening.

        Raises:
            NodeStateError: already running.
            TransportError: the bind address cannot be used.
            DataDirError: the data directory is held by another node, or unreadable.
        """
        if self._running:
            raise NodeStateError("the node is already running")
        self._loop = asyncio.get_running_loop()
        runtime = self._runtime
        data = self._data
        if data is not None:
            data.acquire()  # raises, before anything listens, while another node has it
            runtime.restore_delivered(data.delivered())
        try:
            await self._start_runtime(runtime)
        except BaseException:
            if data is not None:
                data.release()
            raise
        self._running = True
        self._started_at = self._loop.time()
        self._messages.reopen()
        self._events.reopen()
        if self._signer is not None:
            self._signer.reopen()
        self._control.open()
        self._install_signal_handlers()
        self._events.put_nowait(NodeStarted(self.config.node_id, self.listen_address))

    async def _start_runtime(self, runtime: Runtime) -> None:
        host, port = self._bound or parse_address(self.config.bind_address, "bind_address")
        for attempt in range(BIND_ATTEMPTS):
            bound_port = await runtime.listen(host, port)
            try:
                # The control part speaks UDP on the same port: one address names the node.
                await self._control.start(host, bound_port, f"{host}:{bound_port}",
                                          self._seeds(), list(self._peers))
                break
            except BaseException as exc:
                # Also when cancelled (a DNS seed's lookup takes long): nothing stays bound.
                runtime.close_listener()
                if not isinstance(exc, TransportError) or port != 0 \
                        or attempt == BIND_ATTEMPTS - 1:
                    raise
        self._bound = (host, bound_port)
        try:
            await runtime.start(self.listen_address)
        except BaseException:
            await self._control.stop()
            raise

    def _install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the node gracefully (members are told it left; a sharded
        node's workers exit and its shared memory is freed), then act as they would have.

        Only where the application left the default handler in place (asyncio.run's own
        Ctrl-C handling already cancels the main task, which stops the node on its way
        out); only in the main thread, where signals are delivered.
        """
        loop = self._loop
        if loop is None or threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
                loop.add_signal_handler(signum, self._on_signal, signum)
                self._signals.append(signum)

    def _remove_signal_handlers(self) -> None:
        if self._loop is not None:
            for signum in self._signals:
                self._loop.remove_signal_handler(signum)
        self._signals.clear()

    def _on_signal(self, signum: int) -> None:
        async def stop_then_raise() -> None:
            await self.stop()  # also restores the default handler
            signal.raise_signal(signum)

        asyncio.get_running_loop().create_task(stop_then_raise())

    def _seeds(self) -> list[str]:
        return list(dict.fromkeys([*self.config.bootstrap_peers, *self._peers]))

    async def stop(self) -> None:
        """Tell the members this node leaves, close every connection and the listener,
        and end the ``messages``/``events`` streams.

        Idempotent. Queued frames are flushed to the kernel before connections close.
        """
        if not self._running:
            return
        try:
            if self._signer is not None:
                # What the application broadcast before stop() is sent, not lost.
                await self._signer.close()
        finally:
            self._running = False
        self._events.put_nowait(NodeStopping(self.config.node_id))
        try:
            await self._control.stop()
            self._remove_signal_handlers()
            await self._runtime.stop()
        finally:
            # Whatever fails on the way (a full disk), the directory is let go and the
            # application's loops end.
            try:
                if self._data is not None:
                    self._data.release()
            finally:
                self._direct.on_stop()
                self._messages.close()
                self._events.close()

    async def __aenter__(self) -> SynapseNode:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    # --- peers ---------------------------------------------------------------------

    async def add_peer(self, peer: Peer) -> None:
        """Remember ``peer`` and keep a connection to it (re-dialled after failures)."""
        if not isinstance(peer, Peer):
            raise TypeError("add_peer takes a Peer")
        self._peers[peer.address] = peer
        self._control.keep(peer.address)

    async def remove_peer(self, peer: Peer | str) -> bool:
        """Forget a peer added with :meth:`add_peer` (given as that ``Peer``, its id or
        its address): it is no longer dialled, re-dialled or joined through, and its
        link is closed (``PeerDisconnected`` with reason ``removed``) unless the
        overlay picked it as a neighbour. Returns False when no added peer matched
        (the original reported a removal even then)."""
        key = peer.address if isinstance(peer, Peer) else peer
        if not isinstance(key, str):
            raise TypeError("remove_peer takes a Peer, a peer id or an address")
        matched = [address for address, added in self._peers.items()
                   if key in (address, added.id)]
        for address in matched:
            del self._peers[address]
            self._control.release(address)
        return bool(matched)

    async def peers(self) -> list[Peer]:
        """Every peer this node knows of, by id: linked peers, members and peers added
        with :meth:`add_peer`, each with its link, membership state and quality."""
        connected = self._runtime.connected_peers()
        scores: dict[str, float] = {}
        if self._running:
            scores = (await self._runtime.statistics()).core.peer_scores
        members = {m.node_id: m for m in self.members() if m.node_id != self.node_id}
        found: dict[str, Peer] = {}
        for node_id, address in connected.items():
            member = members.get(node_id)
            found[node_id] = Peer(node_id, address, None if member is None else member.state,
                                  True, scores.get(node_id, 0.0))
        for node_id, member in members.items():
            if node_id not in found:
                found[node_id] = Peer(node_id, member.address, member.state, False,
                                      scores.get(node_id, 0.0))
        addresses = {p.address for p in found.values()}
        for added in self._peers.values():
            if added.address not in addresses and added.id not in found:
                found[added.id] = Peer(added.id, added.address)
        return sorted(found.values(), key=lambda p: p.id)

    async def get_healthy_peers(self) -> list[Peer]:
        """The peers linked now and not suspected, failed or gone (see
        :meth:`Peer.is_healthy`), by id."""
        return [p for p in await self.peers() if p.is_healthy()]

    async def get_best_peers(self, count: int) -> list[Peer]:
        """Up to ``count`` healthy peers, highest quality first (ties by id)."""
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"count must be an integer >= 0, got {count!r}")
        healthy = await self.get_healthy_peers()
        return sorted(healthy, key=lambda p: (-p.quality, p.id))[:count]

    def connected_peers(self) -> dict[str, str]:
        """Node id -> listening address of every peer with an established connection."""
        return self._runtime.connected_peers()

    def members(self) -> list[Member]:
        """Every member of the mesh this node knows of, itself first, with its state
        (alive, suspect, failed, left), address, incarnation and when it was last heard
        from directly (wall-clock seconds since the epoch)."""
        clock = time.monotonic() if self._loop is None else self._loop.time()
        return self._control.members(time.time() - clock)

    # --- broadcasting ------------------------------------------------------------------

    async def broadcast_message(self, message_type: MessageType, *,
                                priority: int | None = None, ttl: int | None = None) -> str:
        """Sign ``message_type`` as this node and send it to the whole mesh. A payload too
        large for one frame goes as a bundle of signed chunks (:mod:`somasync.bundle`),
        which receivers deliver as one message, whole or not at all.

        Returns:
            the message id (hex), or for a bundle its id (hex, the ``bundle`` header of
            the message receivers get).

        Raises:
            MessageTooLargeError: the payload is larger than ``max_bundle_bytes``.
        """
        message = Message(message_type, self.config.node_id)
        if priority is not None:
            message = message.with_priority(priority)
        if ttl is not None:
            message = message.with_ttl(ttl)
        if self._frame_size(message) <= self.config.gossip.max_frame:
            return await self.broadcast(message)  # its envelope, built here, is kept
        encoded = encode_payload(message_type)
        size = len(encoded[1])
        if size > self.config.max_bundle_bytes:
            raise MessageTooLargeError(size, self.config.max_bundle_bytes, "max_bundle_bytes")
        bundle = ""
        window = self.config.gossip.link_queue_bytes // 2
        for chunk in split(message_type, self.config.node_id, priority=message.priority,
                           ttl=message.ttl, encoded=encoded):
            bundle = chunk.headers["bundle"]
            # Paced by the send queues: a burst of chunks past their room would be
            # dropped there and left to anti-entropy. A peer that takes nothing holds
            # each chunk back a second at most.
            waited = 0.0
            while self._runtime.send_backlog() > window and waited < BUNDLE_PACING_WAIT:
                await asyncio.sleep(0.005)
                waited += 0.005
            await self._send(chunk)
        self._events.put_nowait(MessageSent(None, bundle))
        return bundle

    def _frame_size(self, message: Message) -> int:
        if message.signature is not None:
            authenticator = len(message.signature)
        elif not self.config.sign_outgoing:
            authenticator = 0
        elif self._signer is not None and message.priority < BYPASS_PRIORITY:
            authenticator = wire.batch_authenticator_size(self.config.signing_batch_size)
        else:
            authenticator = wire.SIGNATURE_SIZE
        return (wire.FRAME_HEADER.size - wire.LENGTH_PREFIX.size + authenticator
                + len(message.envelope_bytes))

    async def broadcast(self, message: Message) -> str:
        """Send a prepared message to the whole mesh.

        A signed message is sent exactly as signed; an unsigned one is signed with this
        node's key first (unless ``sign_outgoing`` is off). With workers, the call waits
        while the owning worker's ring is full rather than drop the message.

        Raises:
            NodeStateError: the node is not running.
            MessageTooLargeError: its frame would exceed ``gossip.max_frame``, which
                every receiver with that limit refuses.
            ValueError: it carries the ``somasync-direct-to`` header of a direct
                message (see :meth:`send_message`).
        """
        message_id = await self._send(message)
        self._events.put_nowait(MessageSent(None, message_id))
        return message_id

    async def _send(self, message: Message) -> str:
        if not self._running:
            raise NodeStateError("start the node before broadcasting")
        if not isinstance(message, Message):
            raise TypeError("broadcast takes a Message; use broadcast_message for a payload")
        if DIRECT_HEADER in message.headers:
            # Every node refuses a broadcast carrying it (no replay of a direct message
            # as a broadcast): sent, it would reach nobody.
            raise ValueError(f"a message with the {DIRECT_HEADER} header is a direct "
                             f"message: use send_message")
        size = self._frame_size(message)
        if size > self.config.gossip.max_frame:
            # Sent, it would be refused by every receiver with this limit: say so now.
            raise MessageTooLargeError(size, self.config.gossip.max_frame)
        if message.signature is None and self.config.sign_outgoing:
            if self._signer is not None and message.priority < BYPASS_PRIORITY:
                return await self._signer.add(message)
            message = message.sign_with_ed25519(self.identity)
        await self._send_signed(message)
        return message.id

    async def _send_signed(self, message: Message) -> None:
        if self._data is not None:
            # Its own messages too: neighbours' digests list them, and a restarted node
            # that forgot them would take them back as new.
            self._keep(message)
        await self._runtime.broadcast(message)

    # --- direct messages and queries ---------------------------------------------------

    async def send_message(self, node_id: str, message: Message | MessageType, *,
                           timeout: float = DEFAULT_DIRECT_TIMEOUT) -> str:  # noqa: ASYNC109
        """Send ``message`` to the node ``node_id`` alone, signed by this node, and
        return once that node acknowledged it (its signed ACK checked): its core took
        the message, exactly once, and handed it to its application's ``messages``
        stream (a sharded node's worker, to its supervisor). Never broadcast.

        It goes over the link when ``node_id`` is a neighbour, otherwise relayed through
        the overlay (along a route learned from an earlier exchange, else flooded a few
        hops; ``RouteDiscovered`` on ``events`` when a route was learned), retried until
        acknowledged. A payload is wrapped in a new message; a ``Message`` must have
        this node's id as its source (an unsigned one is signed here; a signed one must
        already carry the ``somasync-direct-to`` header naming the target's key). Unlike
        the original crate, the target receives it on ``messages`` like any message.

        Returns:
            the message id (hex).

        Raises:
            DeliveryFailedError: ``node_id`` is unknown (not a member, not bound by the
                trust policy), or did not acknowledge within ``timeout`` seconds.
            MessageTooLargeError: the message does not fit in one frame.
            NodeStateError: the node is not running.
        """
        return await self._direct.send(node_id, message, timeout=timeout)

    async def reply(self, message: Message, payload: MessageType, *,
                    timeout: float = DEFAULT_DIRECT_TIMEOUT) -> str:  # noqa: ASYNC109
        """Answer ``message`` to its source alone: :meth:`send_message` of
        ``message.create_response(payload, ...)`` (its correlation id is ``message``'s id),
        where the original crate broadcast the answer to everyone.

        Raises:
            DeliveryFailedError: as :meth:`send_message`.
        """
        response = message.create_response(payload, self.node_id)
        if message.signer_public_key is not None:
            return await self._direct.send(message.source, response, timeout=timeout,
                                           target=message.signer_public_key)
        return await self._direct.send(message.source, response, timeout=timeout)

    async def route_message(self, message: Message | MessageType, via: list[str], *,
                            to: str | None = None,
                            timeout: float = DEFAULT_DIRECT_TIMEOUT) -> str:  # noqa: ASYNC109
        """As :meth:`send_message`, through the relays ``via`` (node ids, in order: each
        must be a neighbour of the one before it, the first of this node's). The target
        is ``to``, or else the last of ``via``. Relays pass it on only to the next one.

        Raises:
            DeliveryFailedError: as :meth:`send_message`; also for an unknown relay.
            ValueError: no target, or more than 8 relays.
        """
        relays = list(via)
        if to is None:
            if not relays:
                raise ValueError("route_message needs a target: to=, or via's last node")
            to = relays.pop()
        return await self._direct.send(to, message, timeout=timeout, via=relays)

    async def query(self, payload: MessageType, *, filter: QueryFilter | None = None,
                    timeout: float = 5.0, max_responses: int | None = None,  # noqa: ASYNC109
                    ack: bool = False) -> Query:
        """Ask the mesh: broadcast ``payload`` as a signed query, and return a
        :class:`~somasync.query.Query` that yields each matching node's answer (sent
        straight back to this node, see :meth:`send_message`), once per node, until
        ``timeout`` seconds pass or ``max_responses`` came; then ``QueryFinished`` goes
        on ``events``. ``filter`` picks the nodes that answer, by node id or tag. With
        ``ack``, every matching node also acknowledges receiving it, whatever its
        application answers (``Query.acks``, Serf's request acks)::

            query = await node.query(MessageType.Data("status?"), timeout=2.0)
            async for response in query:
                print(response.node_id, response.payload)

        Raises:
            QueryLimitError: 64 queries are open already.
            ValueError: a timeout or cap out of range.
            NodeStateError: the node is not running.
        """
        return await self._direct.query(payload, filter=filter, timeout=timeout,
                                        max_responses=max_responses, ack=ack)

    def on_query(self, handler: QueryHandler | None) -> None:
        """Answer matching queries with ``handler`` (an async function of a
        :class:`~somasync.query.QueryReceived`, returning the answer's payload, or None
        for no answer); None stops answering. Every matching query also goes on
        ``events`` as a ``QueryReceived``, which can be answered with its ``respond``."""
        self._direct.on_query(handler)

    @property
    def tags(self) -> dict[str, str]:
        """This node's tags (name -> value), which query filters match; local to this
        node (edit the dict to change them)."""
        return self._direct.tags

    # --- what the runtime reports (RuntimeHost) ----------------------------------------

    def deliver(self, message: Message, from_peer: str, *, direct: bool = False) -> None:
        """Put a delivered message on ``messages`` and ``MessageReceived`` on ``events``
        (a full queue drops and counts it, and says so with ``DeliveryDropped``). A
        bundle's chunks are held until the bundle is whole, then delivered as one.
        ``direct``: sent to this node alone (:meth:`send_message`), so in no stream the
        data directory records. Queries and their answers go to :mod:`somasync.query`."""
        # Only a message with headers can belong to a query: most skip the call.
        if (direct or message.headers) and self._direct.consume(message, direct=direct):
            if not direct and self._data is not None:
                self._keep(message)  # a query is in its stream: not to come again
            return
        if direct:
            pass  # in no stream: nothing to record
        elif is_chunk(message):
            done = self._bundles.add(message, now=time.time())
            if done is None:
                return  # kept nowhere until whole: after a restart the chunks come again
            message, chunks = done
            if self._data is not None:
                for chunk in chunks:
                    self._keep(chunk)
        elif self._data is not None:
            self._keep(message)
        messages, events = self._messages, self._events
        latency = max(0.0, time.time() - message.timestamp)
        self._latency_counts[bisect.bisect_left(LATENCY_BOUNDS, latency)] += 1
        self._latency_total += latency
        messages.put_nowait(message)
        events.put_nowait(MessageReceived(from_peer, message))
        if messages.dropped != self._deliveries_reported:
            events.put_nowait(DeliveryDropped(messages.dropped - self._deliveries_reported))
            self._deliveries_reported = messages.dropped

    def _keep(self, message: Message) -> None:
        """Record ``message`` in the data directory before anyone sees it."""
        assert self._data is not None
        assert self._loop is not None
        try:
            self._data.record((message.signer_public_key or ZERO_KEY, message.source),
                              message.sequence, now=self._loop.time())
        except DataDirError as exc:
            # A full or failing disk must not stop delivery: the message still goes to
            # the application; after a restart it may come again.
            self._data_errors += 1
            if self._data_errors == 1:
                _log.error("cannot keep delivered messages: %s", exc)
                self._events.put_nowait(Error(f"cannot keep delivered messages: {exc}"))

    def report(self, event: object) -> None:
        """Put an endpoint event on ``events``; link events also reach the control part,
        direct messages' verdicts their senders."""
        self._direct.on_event(event)
        self._events.put_nowait(event)
        if isinstance(event, FrameRejected) and event.reason in ADMISSION_REFUSALS:
            self._verdicts.warning(
                (event.reason, event.peer_id or event.address.rpartition(":")[0]),
                "refused %s at %s: %s%s", event.peer_id or "a peer", event.address,
                event.reason, f" ({event.detail})" if event.detail else "")
        elif isinstance(event, PeerDisconnected) and event.reason in EVICTIONS:
            self._verdicts.warning((event.reason, event.peer_id),
                                   "dropped the link to %s at %s: %s", event.peer_id,
                                   event.address, event.reason)
        if isinstance(event, PeerConnected):
            self._control.link_up(event.public_key, event.address)
        elif isinstance(event, PeerDisconnected) and event.public_key:
            self._control.link_down(event.public_key)
        elif isinstance(event, PeerRevoked):
            # Every part of the node refuses the key from now on: membership expels it,
            # every worker gets the notice, the links close.
            self.trust.revoke(event.public_key, event.notice)
            self._control.revoke(event.public_key)
            self._runtime.revoke(event.public_key, event.notice)
            if self._data is not None:
                try:
                    self._data.save_revocations(self.trust.revocations())
                except DataDirError as exc:
                    # Applied everywhere all the same; a restart relearns it from the
                    # first neighbour that keeps it.
                    _log.error("cannot keep the revocation: %s", exc)
                    self._events.put_nowait(Error(f"cannot keep the revocation: {exc}"))

    # --- statistics --------------------------------------------------------------------

    async def get_stats(self) -> NodeStats:
        """A snapshot of this node's counters (the same fields with or without workers).

        Raises:
            NodeStateError: the node has never been started.
        """
        control = self._control.statistics()
        if control is None or self._loop is None:
            raise NodeStateError("the node has not been started")
        runtime = await self._runtime.statistics()
        core = runtime.core
        known = set(self._peers) | set(self.config.bootstrap_peers)
        overlay = self._control.control.overlay if self._control.control else None
        connected = self._runtime.connected_peers()
        return NodeStats(
            node_id=self.config.node_id,
            uptime=self._loop.time() - self._started_at if self._running else 0.0,
            messages_processed=core.messages_delivered,
            messages_originated=core.messages_originated,
            peer_stats=PeerStats(healthy_peers=len(connected),
                                 total_peers=len(known | set(connected.values()))),
            bytes_in=core.bytes_in, bytes_out=core.bytes_out, frames_in=core.frames_in,
            frames_out=core.frames_out, duplicates=core.duplicates, rejected=core.rejected,
            deliveries_dropped=self._messages.dropped, delivery_queue=len(self._messages),
            events_dropped=self._events.dropped,
            connect_failures=control.connect_failures, core=core,
            workers=runtime.workers, worker_restarts=runtime.worker_restarts,
            ring_dropped=runtime.ring_dropped, ring_corrupted=runtime.ring_corrupted,
            handshake_failures=runtime.handshake_failures,
            membership=control.membership,
            delivery_latency=LatencyHistogram(LATENCY_BOUNDS, tuple(self._latency_counts),
                                              self._latency_total),
            active_view=None if overlay is None else tuple(overlay.active()),
            passive_view=None if overlay is None else tuple(overlay.passive()),
            bundles=self._bundles.statistics(),
            queries_dropped=dict(self._direct.dropped),
        )


class _RuntimeProxy:
    """The control part's view of the runtime: the facade creates the control driver
    before the runtime (the runtime needs the driver), so calls go through this."""

    __slots__ = ("_node",)

    def __init__(self, node: SynapseNode) -> None:
        self._node = node

    def dial(self, address: str) -> None:
        self._node._runtime.dial(address)

    def score_at(self, address: str) -> float:
        return self._node._runtime.score_at(address)

    def learn(self, bindings: list[tuple[str, bytes, bytes]], released: list[bytes]) -> None:
        self._node._runtime.learn(bindings, released)

    def close_peer(self, public_key: bytes, reason: str) -> None:
        self._node._runtime.close_peer(public_key, reason)

    def retune(self, sizing: Sizing) -> None:
        self._node._runtime.retune(sizing)
