"""The single-process node: asyncio (uvloop when installed) around one core Endpoint.

This driver only moves bytes and arms one timer. Each TCP connection is a link of the
endpoint; its protocol cuts frames with :class:`~somasync.core.wire.FrameBuffer` and hands
them to the endpoint, then :meth:`SynapseNode._pump` writes whatever the endpoint queued
(one write per link per pump, so frames are batched), closes what it asked to close,
hands deliveries and events to the application's streams and re-arms the timer.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, cast

from somasync.aio.channel import Stream
from somasync.aio.control import ControlDriver
from somasync.config import NodeConfig, parse_address
from somasync.core.crypto import Identity
from somasync.core.endpoint import Endpoint, EndpointStatistics
from somasync.core.events import PeerConnected, PeerDisconnected
from somasync.core.membership import Member, MembershipStatistics
from somasync.core.node import ControlStatistics
from somasync.core.payload import MessageType
from somasync.errors import NodeStateError, TransportError
from somasync.events import DeliveryDropped, MessageReceived
from somasync.message import Message

__all__ = ["LinkTransport", "NodeStats", "Peer", "PeerStats", "SynapseNode", "WorkerStats",
           "write_and_close"]

Event = object
BIND_ATTEMPTS = 8  # port 0: tries to find a port free for both TCP and UDP


@dataclass(frozen=True, slots=True)
class Peer:
    """A peer to dial: a name for humans and the ``host:port`` it listens on."""

    id: str
    address: str

    def __post_init__(self) -> None:
        parse_address(self.address, "Peer.address")


@dataclass(frozen=True, slots=True)
class PeerStats:
    """How many of the peers this node knows it is connected to."""

    healthy_peers: int
    """Peers with an established, handshaken connection."""
    total_peers: int
    """Peers known to this node: configured addresses plus connected peers."""


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
    bytes_out: int
    frames_in: int
    frames_out: int
    duplicates: int
    rejected: dict[str, int]
    """Refused frames by reason (``bad_signature``, ``oversize``, ``unsigned``...)."""
    deliveries_dropped: int
    """Messages the application did not take in time (delivery queue full)."""
    events_dropped: int
    connect_failures: int
    core: EndpointStatistics
    """Every counter of the protocol core (summed over workers in a sharded node)."""
    workers: tuple[WorkerStats, ...] = ()
    """Per-worker figures of a sharded node (empty for a single-process node)."""
    worker_restarts: int = 0
    """Workers the supervisor restarted after they died."""
    handshake_failures: int = 0
    """Sharded node: new connections dropped before reaching a worker (no HELLO in
    time, or the owning worker could not take the socket)."""
    membership: MembershipStatistics | None = None
    """Failure-detection counters (probes, suspicions, local health...)."""


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One worker process of a sharded node."""

    index: int
    pid: int
    messages_verified: int
    """Signatures this worker checked (messages and HELLOs)."""
    messages_delivered: int
    ring_in_used: int
    """Bytes waiting in the rings this worker reads."""
    ring_out_pending: int
    """Bytes this worker could not yet publish because a ring was full."""
    cpu_percent: float
    """Average CPU use since the worker started (100 = one core)."""
    rss_bytes: int


class LinkTransport(Protocol):
    """What :func:`write_and_close` needs of a connection's protocol object."""

    transport: asyncio.Transport | None
    close_reason: str


def write_and_close(endpoint: Endpoint, links: Mapping[int, LinkTransport]) -> None:
    """Hand the endpoint's queued bytes to the transports (one write per link) and
    close the links it gave up on (after their queued bytes)."""
    for link, data in endpoint.frames_to_send():
        protocol = links.get(link)
        if protocol is not None and protocol.transport is not None:
            protocol.transport.write(data)
    for link, reason in endpoint.links_to_close():
        protocol = links.get(link)
        if protocol is not None and protocol.transport is not None:
            protocol.close_reason = reason
            protocol.transport.close()


class _LinkProtocol(asyncio.Protocol):
    """One TCP connection: frames in, bytes out. Owned by the node."""

    def __init__(self, node: SynapseNode, *, dialled_address: str | None) -> None:
        self.node = node
        self.dialled_address = dialled_address
        self.link = next(node._link_ids)
        self.transport: asyncio.Transport | None = None
        self.close_reason = "closed"
        self.identified = False
        self.lost: asyncio.Future[None] = node._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        node = self.node
        if not node._running or len(node._protocols) >= node.config.max_connections:
            transport.abort()
            return
        peername = transport.get_extra_info("peername")
        address = f"{peername[0]}:{peername[1]}" if peername else "unknown"
        node._protocols[self.link] = self
        node._endpoint_or_raise().open_link(
            self.link, outbound=self.dialled_address is not None, address=address,
            now=node._loop.time(),
        )
        node._pump()

    def data_received(self, data: bytes) -> None:
        node = self.node
        endpoint = node._endpoint_or_raise()
        endpoint.receive_bytes(self.link, data, now=node._loop.time())
        if self.dialled_address is not None and not self.identified:
            key = endpoint.peer_key_of(self.link)
            if key is not None:
                self.identified = True
                node._control.dial_succeeded(self.dialled_address, key)
        node._pump()

    def pause_writing(self) -> None:
        if self.node._endpoint is not None:
            self.node._endpoint.set_link_paused(self.link, True)

    def resume_writing(self) -> None:
        if self.node._endpoint is not None:
            self.node._endpoint.set_link_paused(self.link, False)
            self.node._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        node = self.node
        if not self.lost.done():
            self.lost.set_result(None)
        if node._protocols.pop(self.link, None) is None:
            return
        endpoint = node._endpoint
        if endpoint is None:
            return
        endpoint.close_link(self.link, now=node._loop.time(), reason=self.close_reason)
        node._pump()
        if self.dialled_address is not None:
            # Ignored by the control part unless the dial was still outstanding.
            node._control.dial_failed(self.dialled_address)


class SynapseNode:
    """A mesh node in the caller's event loop. Build one with ``SynapseNodeBuilder``.

    Use ``async with node:`` or ``await node.start()`` / ``await node.stop()``. A stopped
    node can be started again: it keeps what it has seen and delivered, and catches up on
    what it missed through anti-entropy.
    """

    def __init__(self, config: NodeConfig, identity: Identity,
                 messages: Stream[Message], events: Stream[Event]) -> None:
        self.config = config
        self.identity = identity
        self._messages = messages
        self._events = events
        self._endpoint: Endpoint | None = None
        self._peers: dict[str, Peer] = {}
        self._protocols: dict[int, _LinkProtocol] = {}
        self._dials: set[asyncio.Task[None]] = set()
        self._link_ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._running = False
        self._started_at = 0.0
        self._bound: tuple[str, int] | None = None
        self._deliveries_reported = 0
        self._signals: list[int] = []
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._control = ControlDriver(self, config, identity, events)

    # --- lifecycle -----------------------------------------------------------------

    @property
    def node_id(self) -> str:
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
        return self._running

    async def start(self) -> None:
        """Listen, dial the bootstrap and added peers, and return once listening.

        Raises:
            NodeStateError: already running.
            TransportError: the bind address cannot be used.
        """
        if self._running:
            raise NodeStateError("the node is already running")
        self._loop = loop = asyncio.get_running_loop()
        host, port = self._bound or parse_address(self.config.bind_address, "bind_address")
        for attempt in range(BIND_ATTEMPTS):
            try:
                self._server = await loop.create_server(
                    lambda: _LinkProtocol(self, dialled_address=None), host, port)
            except OSError as exc:
                raise TransportError(f"cannot listen on {host}:{port}: {exc}") from exc
            bound_port = self._server.sockets[0].getsockname()[1]
            try:
                # The control part speaks UDP on the same port: one address names the node.
                self._bound = (host, bound_port)
                await self._control.start(host, bound_port, f"{host}:{bound_port}",
                                          self._seeds(), list(self._peers))
                break
            except TransportError:
                self._server.close()
                if port != 0 or attempt == BIND_ATTEMPTS - 1:
                    raise
        if self._endpoint is None:
            self._endpoint = Endpoint(
                self.config.gossip, self.identity, self.config.node_id,
                rng=random.Random(os.urandom(16)), now=loop.time(),
                wall_offset=time.time() - loop.time(), listen_address=self.listen_address,
                handshake_timeout=self.config.handshake_timeout,
            )
        self._endpoint.listen_address = self.listen_address
        self._running = True
        self._started_at = loop.time()
        self._messages.reopen()
        self._events.reopen()
        self._control.open()  # dials wait for the endpoint, which exists only now
        self._pump()
        self._install_signal_handlers()

    def _install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the node gracefully (members are told it left; a sharded
        node's workers exit and its shared memory is freed), then act as they would have.

        Only where the application left the default handler in place (asyncio.run's own
        Ctrl-C handling already cancels the main task, which stops the node on its way
        out); only in the main thread, where signals are delivered.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
                self._loop.add_signal_handler(signum, self._on_signal, signum)
                self._signals.append(signum)

    def _remove_signal_handlers(self) -> None:
        for signum in self._signals:
            self._loop.remove_signal_handler(signum)
        self._signals.clear()

    def _on_signal(self, signum: int) -> None:
        async def stop_then_raise() -> None:
            await self.stop()  # also restores the default handler
            signal.raise_signal(signum)

        self._loop.create_task(stop_then_raise())

    def _seeds(self) -> list[str]:
        return list(dict.fromkeys([*self.config.bootstrap_peers, *self._peers]))

    async def stop(self) -> None:
        """Close every connection and the listener; end the ``messages``/``events`` streams.

        Idempotent. Queued frames are flushed to the kernel before connections close.
        """
        if not self._running:
            return
        self._running = False
        self._control.stop()
        self._remove_signal_handlers()
        dials = list(self._dials)
        for task in dials:
            task.cancel()
        await asyncio.gather(*dials, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        endpoint = self._endpoint_or_raise()
        now = self._loop.time()
        protocols = list(self._protocols.values())
        self._protocols.clear()
        for protocol in protocols:
            endpoint.close_link(protocol.link, now=now, reason="stopped")
            if protocol.transport is not None:
                protocol.transport.close()
        if protocols:
            await asyncio.wait([p.lost for p in protocols], timeout=2.0)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_deadline = None
        self._pump_events()
        self._messages.close()
        self._events.close()
        self._server = None

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

    def connected_peers(self) -> dict[str, str]:
        """Node id -> listening address of every peer with an established connection."""
        if self._endpoint is None:
            return {}
        return self._endpoint.peer_addresses()

    def members(self) -> list[Member]:
        """Every member of the mesh this node knows of, itself first, with its state
        (alive, suspect, failed, left), address, incarnation and when it was last heard
        from directly (wall-clock seconds since the epoch)."""
        return self._control.members(time.time() - time.monotonic()
                                     if self._loop is None else
                                     time.time() - self._loop.time())

    # --- what the control part asks of this runtime (ControlHost) ----------------------

    def dial(self, address: str) -> None:
        """Open one connection to ``address``; the outcome goes to the control part."""
        if not self._running:
            return
        task = self._loop.create_task(self._connect(address))
        self._dials.add(task)
        task.add_done_callback(self._dials.discard)

    async def _connect(self, address: str) -> None:
        try:
            host, port = parse_address(address, "peer address")
            await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: _LinkProtocol(self, dialled_address=address), host, port),
                timeout=self.config.connect_timeout,
            )
        except (TimeoutError, OSError, ValueError):
            self._control.dial_failed(address)

    def close_peer(self, public_key: bytes, reason: str) -> None:
        if self._endpoint is not None and self._endpoint.disconnect_peer(public_key, reason):
            self._pump()

    # --- broadcasting ------------------------------------------------------------------

    async def broadcast_message(self, message_type: MessageType, *,
                                priority: int | None = None, ttl: int | None = None) -> str:
        """Sign ``message_type`` as this node and send it to the whole mesh.

        Returns:
            the message id (hex).
        """
        message = Message(message_type, self.config.node_id)
        if priority is not None:
            message = message.with_priority(priority)
        if ttl is not None:
            message = message.with_ttl(ttl)
        return await self.broadcast(message)

    async def broadcast(self, message: Message) -> str:
        """Send a prepared message to the whole mesh.

        A signed message is sent exactly as signed; an unsigned one is signed with this
        node's key first (unless ``sign_outgoing`` is off).

        Raises:
            NodeStateError: the node is not running.
        """
        message = self._outgoing(message)
        endpoint = self._endpoint_or_raise()
        endpoint.broadcast(message.to_envelope(), now=self._loop.time())
        self._pump()
        return message.id

    def _outgoing(self, message: Message) -> Message:
        """Check that a broadcast can go out now, and sign it as this node if unsigned."""
        if not self._running:
            raise NodeStateError("start the node before broadcasting")
        if not isinstance(message, Message):
            raise TypeError("broadcast takes a Message; use broadcast_message for a payload")
        if message.signature is None and self.config.sign_outgoing:
            message = message.sign_with_ed25519(self.identity)
        return message

    # --- statistics --------------------------------------------------------------------

    async def get_stats(self) -> NodeStats:
        """A snapshot of this node's counters."""
        endpoint = self._endpoint
        if endpoint is None:
            raise NodeStateError("the node has not been started")
        core = endpoint.statistics()
        known = set(self._peers) | set(self.config.bootstrap_peers)
        connected = endpoint.peer_addresses()
        total = len(known | set(connected.values()))
        return NodeStats(
            node_id=self.config.node_id,
            uptime=self._loop.time() - self._started_at if self._running else 0.0,
            messages_processed=core.messages_delivered,
            messages_originated=core.messages_originated,
            peer_stats=PeerStats(healthy_peers=len(connected), total_peers=total),
            bytes_in=core.bytes_in, bytes_out=core.bytes_out, frames_in=core.frames_in,
            frames_out=core.frames_out, duplicates=core.duplicates, rejected=core.rejected,
            deliveries_dropped=self._messages.dropped, events_dropped=self._events.dropped,
            connect_failures=self._control_statistics().connect_failures, core=core,
            membership=self._control_statistics().membership,
        )

    def _control_statistics(self) -> ControlStatistics:
        stats = self._control.statistics()
        if stats is None:
            raise NodeStateError("the node has not been started")
        return stats

    # --- the pump: endpoint outputs to the outside world -------------------------------

    def _endpoint_or_raise(self) -> Endpoint:
        if self._endpoint is None:
            raise NodeStateError("the node has not been started")
        return self._endpoint

    def _pump(self) -> None:
        endpoint = self._endpoint
        if endpoint is None:
            return
        write_and_close(endpoint, self._protocols)
        self._pump_events()
        if self._running:
            deadline = endpoint.get_timer()
            if deadline != self._timer_deadline:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer_deadline = deadline
                self._timer = self._loop.call_at(deadline, self._on_timer)

    def _pump_events(self) -> None:
        endpoint = self._endpoint
        if endpoint is None:
            return
        messages, events = self._messages, self._events
        for delivery in endpoint.take_deliveries():
            message = Message.from_envelope(delivery.envelope, delivery.payload)
            messages.put_nowait(message)
            events.put_nowait(MessageReceived(delivery.from_peer, message))
        for event in endpoint.take_events():
            events.put_nowait(event)
            if isinstance(event, PeerConnected):
                self._control.link_up(event.public_key, event.address)
            elif isinstance(event, PeerDisconnected):
                self._control.link_down(event.public_key)
        if messages.dropped != self._deliveries_reported:
            events.put_nowait(DeliveryDropped(messages.dropped - self._deliveries_reported))
            self._deliveries_reported = messages.dropped

    def _on_timer(self) -> None:
        self._timer = self._timer_deadline = None
        if self._running and self._endpoint is not None:
            self._endpoint.handle_timer(now=self._loop.time())
            self._pump()
