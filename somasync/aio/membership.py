"""The asyncio side of membership: one UDP socket, one timer, and the broadcast overlay.

:class:`MembershipDriver` moves datagrams between a UDP socket (bound to the same
``host:port`` as the node's TCP listener) and the sans-IO
:class:`~somasync.core.membership.Membership`, arms its timer, hands its events to the
application, and keeps the node's broadcast links pointed at live members: it dials up to
``overlay_degree`` members, stops dialling members that failed or left and closes their
links, and dials a live member in their place. The node it serves (single-process or
sharded) provides four small hooks, :class:`OverlayHost`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from typing import Protocol

from somasync.aio.channel import Stream
from somasync.config import DiscoveryMethod, NodeConfig, parse_address
from somasync.core.crypto import Identity
from somasync.core.events import PeerFailed, PeerLeft
from somasync.core.membership import Member, Membership, MembershipStatistics, PeerState
from somasync.errors import TransportError

__all__ = ["MembershipDriver", "OverlayHost"]

OVERLAY_CHECK = 1.0  # seconds between overlay top-ups when membership is quiet


class OverlayHost(Protocol):
    """What the driver needs of the node it serves."""

    def _start_dialer(self, address: str) -> bool: ...

    def _stop_dialer(self, address: str) -> None: ...

    def _connected_keys(self) -> Iterable[bytes]: ...

    def _disconnect_peer(self, public_key: bytes, reason: str) -> None: ...


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, driver: MembershipDriver) -> None:
        self.driver = driver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.driver._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable...) for earlier sends: the probe timeout decides.
        self.driver.send_errors += 1


class MembershipDriver:
    """Runs a node's membership protocol in the event loop (see the module docstring)."""

    def __init__(self, host: OverlayHost, config: NodeConfig, identity: Identity,
                 events: Stream[object], *, trusted_keys: frozenset[bytes] | None) -> None:
        self._host = host
        self._config = config
        self._identity = identity
        self._events = events
        self._trusted = trusted_keys
        self._rng = random.Random()
        self._membership: Membership | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._overlay: dict[bytes, str] = {}
        self._next_overlay_check = 0.0
        self._addresses: dict[str, tuple[str, int]] = {}
        self.send_errors = 0

    @property
    def membership(self) -> Membership | None:
        return self._membership

    async def start(self, host: str, port: int, address: str, seeds: list[str]) -> None:
        """Bind UDP on ``host:port`` (the TCP listener's), then join through ``seeds``."""
        self._loop = loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port))
        except OSError as exc:
            raise TransportError(f"cannot bind UDP {host}:{port} for membership: {exc}") \
                from exc
        self._transport = transport
        now = loop.time()
        if self._membership is None:
            self._membership = Membership(
                self._config.membership, self._identity, self._config.node_id, address,
                rng=random.Random(self._rng.random()), now=now, trusted_keys=self._trusted)
            self._membership.join(seeds, now=now)
        else:
            self._membership.rejoin(address, now=now)
        self.pump()

    def stop(self) -> None:
        """Announce a graceful leave, send it, and close the socket."""
        membership = self._membership
        if membership is not None and self._loop is not None and self._transport is not None:
            membership.leave(now=self._loop.time())
            self._send_pending()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_deadline = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._overlay.clear()

    def link_lost(self, public_key: bytes) -> None:
        """The connection to a member broke: probe it out of turn."""
        if self._membership is not None and self._loop is not None \
                and self._transport is not None:
            self._membership.report_unreachable(public_key, now=self._loop.time())
            self.pump()

    def members(self, wall_offset: float) -> list[Member]:
        """Every known member; ``last_seen`` converted to wall-clock seconds."""
        if self._membership is None:
            return []
        return [_with_wall_clock(m, wall_offset) for m in self._membership.members()]

    def statistics(self) -> MembershipStatistics | None:
        return None if self._membership is None else self._membership.statistics()

    # --- the pump --------------------------------------------------------------------

    def pump(self) -> None:
        membership, loop = self._membership, self._loop
        if membership is None or loop is None or self._transport is None:
            return
        self._send_pending()
        events = membership.take_events()
        for event in events:
            self._events.put_nowait(event)
            if isinstance(event, PeerFailed | PeerLeft):
                self._host._disconnect_peer(event.public_key, type(event).__name__)
        now = loop.time()
        if events or now >= self._next_overlay_check:
            self._next_overlay_check = now + OVERLAY_CHECK
            self._maintain_overlay()
        deadline = min(membership.get_timer(), self._next_overlay_check)
        if deadline != self._timer_deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_deadline = deadline
            self._timer = loop.call_at(deadline, self._on_timer)

    def _send_pending(self) -> None:
        assert self._membership is not None
        transport = self._transport
        for address, data in self._membership.datagrams_to_send():
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
        if self._membership is None or self._loop is None:
            return
        self._membership.receive_datagram(f"{addr[0]}:{addr[1]}", data, now=self._loop.time())
        self.pump()

    def _on_timer(self) -> None:
        self._timer = self._timer_deadline = None
        if self._membership is not None and self._loop is not None:
            self._membership.handle_timer(now=self._loop.time())
            self.pump()

    def _maintain_overlay(self) -> None:
        """Keep ``overlay_degree`` broadcast links to live members (gossip discovery)."""
        membership = self._membership
        if membership is None or DiscoveryMethod.GOSSIP not in self._config.discovery:
            return
        host = self._host
        alive = {m.public_key: m for m in membership.live_members()
                 if m.state == PeerState.ALIVE}
        for key, address in list(self._overlay.items()):
            member = membership.member(key)
            if member is None or member.state in (PeerState.FAILED, PeerState.LEFT) \
                    or member.address != address:
                del self._overlay[key]
                host._stop_dialer(address)
        linked = {key for key in host._connected_keys() if key in alive} | set(self._overlay)
        missing = self._config.overlay_degree - len(linked)
        if missing <= 0:
            return
        candidates = [m for key, m in alive.items() if key not in linked]
        for member in self._rng.sample(candidates, min(missing, len(candidates))):
            if host._start_dialer(member.address):
                self._overlay[member.public_key] = member.address


def _with_wall_clock(member: Member, wall_offset: float) -> Member:
    return Member(member.node_id, member.address, member.public_key, member.state,
                  member.incarnation, member.last_seen + wall_offset)
