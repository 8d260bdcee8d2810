"""The in-process runtime: asyncio (uvloop when installed) around one core Endpoint.

This runtime only moves bytes and arms one timer. Each TCP connection is a link of the
endpoint; its protocol hands received bytes to the endpoint, then
:meth:`LocalRuntime._pump` writes whatever the endpoint queued (one write per link per
pump, so frames are batched), closes what it asked to close, hands deliveries and
events to the node and re-arms the timer. The endpoint outlives a stop: a node started
again keeps what it has seen and delivered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import Protocol, cast

from somasync.aio.fair import SlicedReader, reader_slice
from somasync.aio.once import LogOnce
from somasync.aio.runtime import RuntimeHost, RuntimeStatistics
from somasync.aio.timing import DeadlineTimer, TaskSet
from somasync.config import NodeConfig, parse_address
from somasync.core.crypto import Identity
from somasync.core.endpoint import Endpoint
from somasync.core.sizing import Sizing
from somasync.core.wire import StreamKey
from somasync.errors import NodeStateError, TransportError
from somasync.message import Message

EVICTION_TRIALS = 4
"""Connections accepted over ``max_connections`` at once, each to evict a peer that never
proved useful once its own handshake succeeds."""

__all__ = ["LinkTransport", "LocalRuntime", "write_and_close"]


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
    """One TCP connection: bytes in to the endpoint, bytes out from it."""

    def __init__(self, runtime: LocalRuntime, *, dialled_address: str | None) -> None:
        self.runtime = runtime
        self.dialled_address = dialled_address
        self.link = next(runtime._link_ids)
        self.transport: asyncio.Transport | None = None
        self.paused = False  # the transport asked us to stop writing (a slow peer)
        self.close_reason = "closed"
        self.identified = False
        self.host = ""  # the remote IP address, once connected
        self.lost: asyncio.Future[None] = runtime._loop.create_future()
        self.reader = SlicedReader(runtime._loop, self._feed,
                                   slice_size=reader_slice(runtime._config))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.reader.transport = transport
        runtime = self.runtime
        endpoint = runtime._endpoint
        if endpoint is None or not runtime._running:
            transport.abort()
            return
        peername = transport.get_extra_info("peername")
        address = f"{peername[0]}:{peername[1]}" if peername else "unknown"
        self.host = peername[0] if peername else "unknown"
        if self.dialled_address is None:
            config = runtime._config
            if runtime.inbound_connections(self.host) >= config.max_connections_per_host:
                runtime.refuse(transport, "host_limit")
                return
            if runtime.inbound_connections() >= config.max_connections:
                # Over the limit only on probation: a peer is evicted for it once its
                # handshake proves it, never for a socket that may never finish one.
                if len(runtime._probation) >= EVICTION_TRIALS or \
                        endpoint.eviction_candidate(now=runtime._loop.time()) is None:
                    runtime.refuse(transport, "connection_limit")
                    return
                runtime._probation[self.link] = None
        runtime._protocols[self.link] = self
        endpoint.open_link(self.link, outbound=self.dialled_address is not None,
                           address=address, now=runtime._loop.time())
        runtime._pump()

    def data_received(self, data: bytes) -> None:
        self.reader.data_received(data)

    def _feed(self, data: bytes) -> None:
        runtime = self.runtime
        endpoint = runtime._endpoint
        if endpoint is None or self.link not in runtime._protocols:
            return
        endpoint.receive_bytes(self.link, data, now=runtime._loop.time())
        if self.dialled_address is not None and not self.identified:
            key = endpoint.peer_key_of(self.link)
            if key is not None:
                self.identified = True
                runtime._host.control.dial_succeeded(self.dialled_address, key)
        runtime._pump()

    def pause_writing(self) -> None:
        self.paused = True
        if self.runtime._endpoint is not None:
            self.runtime._endpoint.set_link_paused(self.link, True)

    def resume_writing(self) -> None:
        self.paused = False
        if self.runtime._endpoint is not None:
            self.runtime._endpoint.set_link_paused(self.link, False)
            self.runtime._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        runtime = self.runtime
        self.reader.discard()
        if not self.lost.done():
            self.lost.set_result(None)
        if runtime._protocols.pop(self.link, None) is None:
            return
        endpoint = runtime._endpoint
        if endpoint is None:
            return
        endpoint.close_link(self.link, now=runtime._loop.time(), reason=self.close_reason)
        runtime._pump()
        if self.dialled_address is not None:
            # Ignored by the control part unless the dial was still outstanding.
            runtime._host.control.dial_failed(self.dialled_address)


class LocalRuntime:
    """One endpoint in the caller's event loop (see the module docstring)."""

    def __init__(self, config: NodeConfig, identity: Identity, host: RuntimeHost) -> None:
        self._config = config
        self._identity = identity
        self._host = host
        self._endpoint: Endpoint | None = None
        self._sizing: Sizing | None = None  # adaptive fanout's, should it precede the endpoint
        self._protocols: dict[int, _LinkProtocol] = {}
        self._dials = TaskSet()
        self._link_ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._timer: DeadlineTimer | None = None
        self._running = False
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._restored: Mapping[StreamKey, Sequence[tuple[int, int]]] = {}
        self._probation: dict[int, None] = {}  # inbound links accepted over the limit
        self.refused: dict[str, int] = {}
        self._refusals = LogOnce(logging.getLogger("somasync.node"))
        """Inbound connections refused as they arrived, by reason (``connection_limit``,
        ``host_limit``)."""

    def refuse(self, transport: asyncio.Transport, reason: str) -> None:
        """Drop a connection as it arrives, counted by ``reason`` (and logged once per
        host and reason)."""
        self.refused[reason] = self.refused.get(reason, 0) + 1
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else "?"
        self._refusals.warning((reason, host), "refused a connection from %s: %s", host,
                               reason)
        transport.abort()

    def inbound_connections(self, host: str | None = None) -> int:
        """Connections peers opened to this node, open now (from ``host`` only, if
        given)."""
        return sum(p.dialled_address is None and (host is None or p.host == host)
                   for p in self._protocols.values())

    @property
    def endpoint(self) -> Endpoint | None:
        """The protocol core (None until the first start)."""
        return self._endpoint

    async def listen(self, host: str, port: int) -> int:
        self._loop = loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _LinkProtocol(self, dialled_address=None), host, port)
        except OSError as exc:
            raise TransportError(f"cannot listen on {host}:{port}: {exc}") from exc
        return int(self._server.sockets[0].getsockname()[1])

    def close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def restore_delivered(self, streams: Mapping[StreamKey, Sequence[tuple[int, int]]]
                          ) -> None:
        self._restored = dict(streams)

    async def start(self, listen_address: str) -> None:
        loop = self._loop
        if self._endpoint is None:
            self._endpoint = Endpoint(
                self._config.gossip, self._identity, self._config.node_id,
                rng=random.Random(os.urandom(16)), now=loop.time(),
                wall_offset=time.time() - loop.time(), listen_address=listen_address,
                handshake_timeout=self._config.handshake_timeout,
                frame_timeout=self._config.frame_timeout,
                plaintext_links=not self._config.security.encrypt_links,
                credential=self._config.security.certificate, trust=self._host.trust,
                timer=time.perf_counter,
            )
            if self._sizing is not None:
                self._endpoint.retune(self._sizing)
        self._endpoint.listen_address = listen_address
        if self._restored:
            self._endpoint.restore_delivered(self._restored, now=loop.time())
            self._restored = {}
        self._timer = DeadlineTimer(loop, self._on_timer)
        self._running = True
        self._pump()

    async def stop(self) -> None:
        self._running = False
        await self._dials.cancel_all()
        self.close_listener()
        endpoint = self._endpoint
        protocols = list(self._protocols.values())
        self._protocols.clear()
        self._probation.clear()
        if endpoint is not None:
            now = self._loop.time()
            for protocol in protocols:
                endpoint.close_link(protocol.link, now=now, reason="stopped")
        for protocol in protocols:
            if protocol.transport is not None:
                protocol.transport.close()
        if protocols:
            await asyncio.wait([p.lost for p in protocols], timeout=2.0)
        if self._timer is not None:
            self._timer.cancel()
        self._pump_events()

    # --- what the control part asks ----------------------------------------------------

    def dial(self, address: str) -> None:
        if self._running:
            self._dials.spawn(self._loop, self._connect(address))

    async def _connect(self, address: str) -> None:
        try:
            host, port = parse_address(address, "peer address")
            await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: _LinkProtocol(self, dialled_address=address), host, port),
                timeout=self._config.connect_timeout,
            )
        except (TimeoutError, OSError, ValueError):
            self._host.control.dial_failed(address)

    def close_peer(self, public_key: bytes, reason: str) -> None:
        if self._endpoint is not None and self._endpoint.disconnect_peer(public_key, reason):
            self._pump()

    def send_backlog(self) -> int:
        # The fullest link that is still taking bytes: a stalled peer (its transport
        # paused) must not slow a large sender down for everyone else.
        endpoint = self._endpoint
        if endpoint is None:
            return 0
        return max((endpoint.queued_bytes(link) + p.transport.get_write_buffer_size()
                    for link, p in self._protocols.items()
                    if p.transport is not None and not p.paused), default=0)

    def learn(self, bindings: list[tuple[str, bytes, bytes]], released: list[bytes]) -> None:
        pass  # the endpoint shares the facade's trust object: it knows them already

    def retune(self, sizing: Sizing) -> None:
        self._sizing = sizing
        if self._endpoint is not None:
            self._endpoint.retune(sizing)

    def revoke(self, public_key: bytes, notice: bytes) -> None:
        if self._endpoint is not None:
            self._endpoint.revoke(public_key, notice)
            self._pump()

    # --- the application side ----------------------------------------------------------

    async def broadcast(self, message: Message) -> None:
        if self._endpoint is None or not self._running:
            raise NodeStateError("the node is not running")
        self._endpoint.broadcast(message.to_envelope(), now=self._loop.time())
        self._pump()

    def send_direct(self, message: Message, target: bytes, node_id: str, timeout: float,
                    via: Sequence[bytes]) -> None:
        if self._endpoint is None or not self._running:
            raise NodeStateError("the node is not running")
        self._endpoint.send_direct(message.to_envelope(), target, node_id,
                                   now=self._loop.time(), timeout=timeout, via=via)
        self._pump()

    def score_at(self, address: str) -> float:
        endpoint = self._endpoint
        return 0.0 if endpoint is None else endpoint.score_at(address, now=self._loop.time())

    def connected_peers(self) -> dict[str, str]:
        return {} if self._endpoint is None else self._endpoint.peer_addresses()

    async def statistics(self) -> RuntimeStatistics:
        if self._endpoint is None:
            raise NodeStateError("the node has not been started")
        core = self._endpoint.statistics()
        if self.refused:
            rejected = dict(core.rejected)
            for reason, count in self.refused.items():
                rejected[reason] = rejected.get(reason, 0) + count
            core = dataclasses.replace(core, rejected=rejected)
        return RuntimeStatistics(core=core)

    # --- the pump: endpoint outputs to the outside world -------------------------------

    def _pump(self) -> None:
        endpoint = self._endpoint
        if endpoint is None:
            return
        if self._probation:
            self._end_probation(endpoint)
        write_and_close(endpoint, self._protocols)
        self._pump_events()
        if self._running and self._timer is not None:
            # While frames wait it is due at once: each loop turn handles a share of
            # them after the reads, where a critical frame is handled as it is read.
            self._timer.arm(endpoint.get_timer())

    def _end_probation(self, endpoint: Endpoint) -> None:
        """A connection accepted over the limit finished its handshake: evict the peer
        that makes room for it, or, when none does any more, close it instead."""
        for link in list(self._probation):
            if link not in self._protocols:
                del self._probation[link]  # its handshake failed, or it went away
            elif endpoint.established(link):
                del self._probation[link]
                open_inbound = sum(p.dialled_address is None and not endpoint.closing(p.link)
                                   for p in self._protocols.values())
                if open_inbound <= self._config.max_connections:
                    continue  # a slot freed meanwhile: nobody needs to go
                victim = endpoint.eviction_candidate(now=self._loop.time(),
                                                     sparing={link, *self._probation})
                if victim is not None:
                    endpoint.evict(victim)
                else:
                    endpoint.evict(link, "connection_limit")

    def _pump_events(self) -> None:
        endpoint = self._endpoint
        if endpoint is None:
            return
        host = self._host
        deliver, from_envelope = host.deliver, Message.from_envelope
        for envelope, payload, from_peer, _, direct in endpoint.take_deliveries():
            deliver(from_envelope(envelope, payload), from_peer, direct=direct)
        for event in endpoint.take_events():
            host.report(event)

    def _on_timer(self) -> None:
        if self._running and self._endpoint is not None:
            self._endpoint.handle_timer(now=self._loop.time())
            self._pump()
