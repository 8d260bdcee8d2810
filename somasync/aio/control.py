"""The asyncio side of a node's control part: one UDP socket and one timer.

:class:`ControlDriver` moves datagrams between a UDP socket (bound to the same
``host:port`` as the node's TCP listener) and the sans-IO
:class:`~somasync.core.node.NodeControl`, arms its timer, hands its membership events to
the application, and passes its decisions to the runtime it serves: which addresses to
dial and which peers' links to close (:class:`ControlHost`). Both runtimes (one process,
or a supervisor with workers) use it unchanged; they report what their sockets did
through :meth:`ControlDriver.link_up`, :meth:`~ControlDriver.link_down`,
:meth:`~ControlDriver.dial_succeeded` and :meth:`~ControlDriver.dial_failed`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import random
import socket
import time
from typing import TYPE_CHECKING, Protocol

from somasync.aio.channel import Stream
from somasync.aio.timing import DeadlineTimer
from somasync.config import DNS_SEED, DiscoveryMethod, NodeConfig, parse_address, parse_seed
from somasync.core.crypto import Identity
from somasync.core.events import (
    PartitionDetected,
    PartitionHealed,
    PeerFailed,
    PeerJoined,
    PeerLeft,
    PeerRecovered,
    PeerUnreachable,
)
from somasync.core.membership import Member
from somasync.core.node import ControlStatistics, NodeControl
from somasync.core.sizing import Sizing
from somasync.core.trust import Trust
from somasync.errors import TransportError

if TYPE_CHECKING:
    from somasync.aio.mdns import MdnsDiscovery

__all__ = ["ControlDriver", "ControlHost"]

log = logging.getLogger("somasync.control")
UNREACHABLE_REMEMBERED = 1024  # addresses whose failed dial was logged, until reached


class ControlHost(Protocol):
    """What the driver needs of the runtime it serves."""

    def dial(self, address: str) -> None:
        """Open a connection to ``address`` and report how it went to the driver."""

    def close_peer(self, public_key: bytes, reason: str) -> None:
        """Close every link to the peer ``public_key``."""

    def learn(self, bindings: list[tuple[str, bytes, bytes]], released: list[bytes]) -> None:
        """Names, keys and certificates the trust policy admitted (membership learned
        them), and keys whose names it released: the data part must know too."""

    def score_at(self, address: str) -> float:
        """The peer score of the linked peer listening at ``address`` (0 if none)."""

    def retune(self, sizing: Sizing) -> None:
        """Adaptive fanout changed the values the data part runs on
        (:meth:`~somasync.core.endpoint.Endpoint.retune`)."""


MAX_SEED_ADDRESSES = 64
"""Addresses taken from one DNS seed at most (a seed is a way in, not the member list)."""


async def resolve_seeds(names: list[str], family: int, *, lookup_timeout: float = 5.0
                        ) -> dict[str, list[str]]:
    """Per ``dns:NAME[:PORT]`` seed, the ``host:port`` of every address it resolves to
    now in ``family`` (the node's own: a socket bound to IPv4 cannot reach IPv6), written
    as the node writes addresses (no brackets). A name that does not resolve (yet), or
    not within ``lookup_timeout`` seconds, gives none, logged at debug."""
    loop = asyncio.get_running_loop()
    resolved: dict[str, list[str]] = {}
    for seed in names:
        name, port = parse_seed(seed)
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(name, port, family=family, type=socket.SOCK_DGRAM), lookup_timeout)
        except (OSError, UnicodeError, TimeoutError) as exc:
            log.debug("seed %s does not resolve: %r", seed, exc)
            resolved[seed] = []
            continue
        addresses = dict.fromkeys(f"{info[4][0]}:{port}" for info in infos)
        resolved[seed] = list(addresses)[:MAX_SEED_ADDRESSES]
    return resolved


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, driver: ControlDriver) -> None:
        self.driver = driver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.driver._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable...) for earlier sends: the probe timeout decides.
        self.driver.send_errors += 1


class ControlDriver:
    """Runs a node's :class:`~somasync.core.node.NodeControl` in the event loop."""

    def __init__(self, host: ControlHost, config: NodeConfig, identity: Identity,
                 events: Stream[object], *, trust: Trust | None = None) -> None:
        self._host = host
        self._trust = trust
        self._config = config
        self._identity = identity
        self._events = events
        self._control: NodeControl | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: DeadlineTimer | None = None
        self._addresses: dict[str, tuple[str, int]] = {}
        self._unreachable: dict[str, None] = {}
        self._open = False
        self._resolving: asyncio.Task[None] | None = None
        self._resolved: dict[str, list[str]] = {}  # DNS seed -> addresses at the last lookup
        self._given: set[str] = set()  # the seeds given as addresses
        self._mdns: MdnsDiscovery | None = None
        self.send_errors = 0

    @property
    def control(self) -> NodeControl | None:
        """The sans-IO control part (None before the first start)."""
        return self._control

    @property
    def mdns(self) -> MdnsDiscovery | None:
        """The mDNS announcement and browser while the node runs with mDNS discovery."""
        return self._mdns

    async def start(self, host: str, port: int, address: str, seeds: list[str],
                    static: list[str]) -> None:
        """Bind UDP on ``host:port`` (the TCP listener's), then join through ``seeds``
        and keep links to ``static`` addresses, and, with mDNS discovery, announce the
        node and join through the nodes it finds. Nothing is sent, dialled or closed
        until :meth:`open` says the runtime is ready.

        Raises:
            TransportError: the UDP port, or the mDNS sockets, cannot be bound.
            ConfigError: mDNS discovery without the ``mdns`` extra (removed after the
                configuration was checked).
        """
        self._loop = loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port))
        except OSError as exc:
            raise TransportError(f"cannot bind UDP {host}:{port} for membership: {exc}") \
                from exc
        self._transport = transport
        self._timer = DeadlineTimer(loop, self._on_timer)
        self._open = False
        names = [seed for seed in seeds if seed.startswith(DNS_SEED)]
        seeds = [seed for seed in seeds if not seed.startswith(DNS_SEED)]
        self._given = set(seeds)
        family = transport.get_extra_info("socket").family
        self._resolved = {}
        if names:
            try:
                self._resolved = await resolve_seeds(
                    names, family, lookup_timeout=self._config.connect_timeout)
            except BaseException:
                transport.close()  # cancelled meanwhile: nothing may stay bound
                self._transport = None
                raise
            seeds += [address for found in self._resolved.values() for address in found]
        now = loop.time()
        if self._control is None or self._control.address != address:
            self._control = NodeControl(self._config, self._identity, address,
                                        rng=random.Random(os.urandom(16)), now=now,
                                        wall_offset=time.time() - now, trust=self._trust)
            self._control.start(seeds, static, now=now)
            if self._control.overlay is not None:
                self._control.overlay.score_of = self._host.score_at
        else:
            self._control.rejoin(now=now)
            found = [address for found in self._resolved.values() for address in found]
            if found:
                self._control.add_seeds(found, now=now)
        if DiscoveryMethod.MDNS in self._config.discovery:
            try:
                await self._start_mdns(host, port)
            except BaseException:
                transport.close()  # nothing may stay bound
                self._transport = None
                raise
        if names:
            self._resolving = loop.create_task(self._resolve_again(names, family))

    async def _start_mdns(self, host: str, port: int) -> None:
        # Loaded lazily: only a node configured for mDNS needs the zeroconf library.
        mdns = importlib.import_module("somasync.aio.mdns")
        discovery: MdnsDiscovery = mdns.MdnsDiscovery(
            node_id=self._config.node_id, public_key=self._identity.public_key, host=host,
            port=port, interfaces=self._config.mdns_interfaces, found=self._mdns_found,
            lost=self._mdns_lost)
        await discovery.start()
        self._mdns = discovery

    def _mdns_found(self, seeds: list[str]) -> None:
        """Nodes announced on the local network: joined through like DNS seeds."""
        if self._control is not None and self._loop is not None:
            self._control.add_seeds(seeds, now=self._loop.time())
            self.pump()

    def _mdns_lost(self, seeds: list[str]) -> None:
        """Announcements gone: their seeds are no longer retried, unless given or a DNS
        seed's too (a member that is up stays a member: membership decides)."""
        gone = self._not_given(seeds)
        if gone and self._control is not None and self._loop is not None:
            self._control.drop_seeds(gone, now=self._loop.time())
            self.pump()

    def _not_given(self, seeds: list[str]) -> list[str]:
        still = self._given.union(*self._resolved.values())
        return [seed for seed in seeds if seed not in still]

    async def _resolve_again(self, names: list[str], family: int) -> None:
        """Resolve the DNS seeds each reconnect interval: addresses that appeared since
        (a pod that became ready) are joined through like the first ones, and those that
        vanished (a pod that went away) are no longer retried. A failed lookup changes
        nothing (a resolver hiccup must not forget every seed)."""
        while True:
            await asyncio.sleep(self._config.membership.reconnect_interval)
            resolved = await resolve_seeds(names, family,
                                           lookup_timeout=self._config.connect_timeout)
            control, loop = self._control, self._loop
            if control is None or loop is None:
                continue
            added: list[str] = []
            gone: list[str] = []
            for name, addresses in resolved.items():
                if not addresses:
                    continue
                before = self._resolved.get(name, [])
                added += [a for a in addresses if a not in before]
                gone += [a for a in before if a not in addresses]
                self._resolved[name] = addresses
            still = {a for found in self._resolved.values() for a in found}
            still.update(self._given, self._mdns.seeds if self._mdns is not None else ())
            gone = [a for a in gone if a not in still]
            if added:
                control.add_seeds(added, now=loop.time())
            if gone:
                control.drop_seeds(gone, now=loop.time())
            if added or gone:
                self.pump()

    def open(self) -> None:
        """The runtime can dial and close links now: the control part's outputs flow."""
        self._open = True
        self.pump()

    async def stop(self) -> None:
        """Announce a graceful leave, send it, and close the socket; withdraw the mDNS
        announcement and close its sockets."""
        control, loop = self._control, self._loop
        mdns, self._mdns = self._mdns, None
        if mdns is not None and control is not None and loop is not None:
            # A restarted node finds the others anew: what it found is not kept as seeds.
            control.drop_seeds(self._not_given(mdns.seeds), now=loop.time())
        if control is not None and loop is not None and self._transport is not None:
            control.leave(now=loop.time())
            self._send_pending(control)
        if self._timer is not None:
            self._timer.cancel()
        if self._resolving is not None:
            self._resolving.cancel()
            self._resolving = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._open = False
        if mdns is not None:
            await mdns.stop()

    # --- what the runtime reports --------------------------------------------------------

    def keep(self, address: str) -> None:
        """Keep a link to ``address`` (a peer the application added)."""
        if self._control is not None and self._loop is not None:
            self._control.keep(address, now=self._loop.time())
            self.pump()

    def release(self, address: str) -> None:
        """Stop keeping a link to ``address`` (``NodeControl.release``)."""
        if self._control is not None and self._loop is not None:
            self._control.release(address, now=self._loop.time())
            self.pump()

    def link_up(self, public_key: bytes, address: str) -> None:
        """A peer's first link completed its handshake (``NodeControl.link_up``)."""
        if self._control is not None and self._loop is not None:
            self._control.link_up(public_key, address, now=self._loop.time())
            self.pump()

    def revoke(self, public_key: bytes) -> None:
        """An operator revoked ``public_key`` (``NodeControl.revoke``)."""
        if self._control is not None and self._loop is not None:
            self._control.revoke(public_key, now=self._loop.time())
            self.pump()

    def link_down(self, public_key: bytes) -> None:
        """A peer's last link closed (``NodeControl.link_down``)."""
        if self._control is not None and self._loop is not None:
            self._control.link_down(public_key, now=self._loop.time())
            self.pump()

    def dial_succeeded(self, address: str, public_key: bytes) -> None:
        """A dial to ``address`` reached ``public_key`` (``NodeControl.dial_succeeded``)."""
        if self._unreachable.pop(address, 0) is None:
            log.info("reached %s again", address)
        if self._control is not None and self._loop is not None:
            self._control.dial_succeeded(address, public_key, now=self._loop.time())
            self.pump()

    def dial_failed(self, address: str) -> None:
        """A dial to ``address`` failed or its connection closed
        (``NodeControl.dial_failed``)."""
        if self._control is None or self._loop is None:
            return
        failed = self._control.dial_failed(address, now=self._loop.time())
        if failed and address not in self._unreachable:
            # Once per address until it is reached: the dialler retries with back-off.
            log.warning("cannot reach %s (retried while it is wanted)", address)
            self._events.put_nowait(PeerUnreachable(address))
            if len(self._unreachable) >= UNREACHABLE_REMEMBERED:
                del self._unreachable[next(iter(self._unreachable))]
            self._unreachable[address] = None
        self.pump()

    # --- queries -----------------------------------------------------------------------

    def members(self, wall_offset: float) -> list[Member]:
        """Every known member; ``last_seen`` converted to wall-clock seconds."""
        if self._control is None:
            return []
        return [_with_wall_clock(m, wall_offset) for m in self._control.members()]

    def statistics(self) -> ControlStatistics | None:
        """The control part's counters (None before the first start)."""
        return None if self._control is None else self._control.statistics()

    # --- the pump --------------------------------------------------------------------

    def pump(self) -> None:
        """Send the control part's datagrams, hand out its events, dials and closes,
        and re-arm the timer (after every input)."""
        control, loop = self._control, self._loop
        if control is None or loop is None or self._transport is None or not self._open:
            return
        self._send_pending(control)
        for event in control.take_events():
            self._events.put_nowait(event)
            _log_verdict(event)
        for public_key, reason in control.take_closes():
            self._host.close_peer(public_key, reason)
        learned, released = control.trust.take_learned(), control.trust.take_released()
        if learned or released:
            self._host.learn(learned, released)
        for address in control.take_dials():
            self._host.dial(address)
        sizing = control.take_sizing()
        if sizing is not None:
            self._host.retune(sizing)
        if self._timer is not None:
            self._timer.arm(control.get_timer())

    def _send_pending(self, control: NodeControl) -> None:
        transport = self._transport
        assert self._loop is not None
        for address, data in control.datagrams_to_send(now=self._loop.time()):
            target = self._addresses.get(address)
            if target is None:
                try:
                    target = parse_address(address, "member address")
                except ValueError:
                    continue  # a member announced an address we cannot use
                if len(self._addresses) > 100_000:
                    self._addresses.clear()
                self._addresses[address] = target
            if transport is not None:
                try:
                    transport.sendto(data, target)
                except OSError:
                    self.send_errors += 1

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._control is None or self._loop is None:
            return
        self._control.receive_datagram(f"{addr[0]}:{addr[1]}", data, now=self._loop.time())
        self.pump()

    def _on_timer(self) -> None:
        if self._control is not None and self._loop is not None:
            self._control.handle_timer(now=self._loop.time())
            self.pump()


def _log_verdict(event: object) -> None:
    """Membership's verdicts, once each (suspicions are left to the events: most are
    refuted within a probe interval)."""
    if isinstance(event, PeerFailed):
        log.warning("member %s at %s failed (incarnation %d)", event.peer_id, event.address,
                    event.incarnation)
    elif isinstance(event, PeerLeft):
        log.info("member %s at %s left", event.peer_id, event.address)
    elif isinstance(event, PeerJoined):
        log.info("member %s joined at %s", event.peer_id, event.address)
    elif isinstance(event, PeerRecovered):
        log.info("member %s at %s is alive again (incarnation %d)", event.peer_id,
                 event.address, event.incarnation)
    elif isinstance(event, PartitionDetected):
        log.warning("partition: %d of %d members lost at once (%s)", len(event.lost),
                    event.members, ", ".join(event.lost))
    elif isinstance(event, PartitionHealed):
        log.warning("partition healed: %s back", ", ".join(event.returned))


def _with_wall_clock(member: Member, wall_offset: float) -> Member:
    return dataclasses.replace(member, last_seen=member.last_seen + wall_offset)
