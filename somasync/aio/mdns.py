"""mDNS discovery: announce this node on the local network and join the nodes found.

A node configured with :attr:`~somasync.config.DiscoveryMethod.MDNS` registers a DNS-SD
service of type :data:`~somasync.config.MDNS_SERVICE_TYPE` at its listen address
(instance ``"<node id> [<key prefix>]"``, TXT records ``id`` and ``key``: its node id
and public key in hex) and browses for the same type. Every address another node
announces becomes a seed, handed to the control part like the addresses of a ``dns:``
seed; a service that goes away (its goodbye, or its records expiring) takes its
addresses out of the seeds again. The seeds are only a way in: who a peer is, and
whether it is admitted, is decided by the handshake and the trust policy, never by
what an unauthenticated announcement claims.

Multicast DNS itself is the ``zeroconf`` library's (the ``mdns`` extra), run in the
node's own event loop: no thread, and every socket is closed when the node stops.
Importing this module without the extra raises :class:`~somasync.errors.ConfigError`
naming it; the control part imports it only for a node configured for mDNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import unicodedata
from collections.abc import Callable, Coroutine
from typing import Any

from somasync.config import MDNS_EXTRA, MDNS_SERVICE_TYPE
from somasync.errors import ConfigError, TransportError

try:
    from zeroconf import (
        Error as ZeroconfError,
        IPVersion,
        NonUniqueNameException,
        ServiceStateChange,
        Zeroconf,
    )
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf
except ImportError:
    raise ConfigError("discovery", MDNS_EXTRA) from None

__all__ = ["MdnsDiscovery", "instance_name"]

log = logging.getLogger("somasync.mdns")

RESOLVE_TIMEOUT_MS = 3000
"""Milliseconds to wait for a found service's address and port (zeroconf's default)."""

MAX_SERVICE_ADDRESSES = 16
"""Addresses taken from one announcement at most (a node listens on one)."""
MAX_SERVICES = 256
"""Services followed at once (each a seed to dial): a flood of announcements on the LAN
is capped here."""

_INSTANCE_LIMIT = 63  # bytes of a DNS label, and so of a DNS-SD instance name


def instance_name(node_id: str, public_key: bytes) -> str:
    """The DNS-SD instance name of a node: its node id (shortened to fit one DNS label,
    control characters left out) and the first 8 hex digits of its key, so that nodes
    sharing a node id (the library's default one) do not collide on the network."""
    suffix = f" [{public_key[:4].hex()}]"
    text = "".join(c for c in node_id if unicodedata.category(c) != "Cc")
    room = _INSTANCE_LIMIT - len(suffix)
    encoded = text.encode()[:room].decode(errors="ignore")  # whole characters only
    return f"{encoded or 'somasync'}{suffix}"


class MdnsDiscovery:
    """One node's mDNS announcement and browser (see the module docstring).

    Args:
        node_id: the node's id, announced (TXT ``id``) and in the instance name.
        public_key: the node's Ed25519 public key, announced (TXT ``key``, hex).
        host: the address the node listens on; the interface mDNS uses, and the address
            it announces, unless ``interfaces`` names others.
        port: the node's port (TCP and UDP).
        interfaces: IP addresses of the interfaces to announce and browse on, which are
            then the announced addresses; empty: ``host``'s.
        found: called with the ``host:port`` seeds another node's announcement added.
        lost: called with the seeds no announcement holds any longer.
    """

    def __init__(self, *, node_id: str, public_key: bytes, host: str, port: int,
                 interfaces: tuple[str, ...], found: Callable[[list[str]], None],
                 lost: Callable[[list[str]], None]) -> None:
        self.name = f"{instance_name(node_id, public_key)}.{MDNS_SERVICE_TYPE}"
        """This node's full service name."""
        self._node_id = node_id
        self._key = public_key.hex()
        self._host = host
        self._port = port
        self._interfaces = list(interfaces)
        self._found = found
        self._lost = lost
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._services: dict[str, list[str]] = {}  # service name -> its seeds
        self._ignored = 0  # services announced past MAX_SERVICES

    @property
    def seeds(self) -> list[str]:
        """Every ``host:port`` the services found now announce (this node's own left out)."""
        return list(dict.fromkeys(a for found in self._services.values() for a in found))

    def _announced(self) -> list[str]:
        # NodeConfig made sure that host is an IP address when no interface is named.
        return self._interfaces or [self._host]

    async def start(self) -> None:
        """Open the mDNS sockets, then register and browse in the background (probing
        for a unique name takes about a second; the node need not wait for it).

        Raises:
            TransportError: the mDNS sockets cannot be opened on those interfaces.
        """
        announced = self._announced()
        version = IPVersion.V6Only if ipaddress.ip_address(announced[0]).version == 6 \
            else IPVersion.V4Only
        try:
            zc = AsyncZeroconf(interfaces=list(announced), ip_version=version)
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot open mDNS on {', '.join(announced)}: {exc}") \
                from exc
        self._zc = zc
        try:
            info = AsyncServiceInfo(
                MDNS_SERVICE_TYPE, self.name, port=self._port, parsed_addresses=announced,
                properties={"id": self._node_id.encode()[:250], "key": self._key},
                server=f"somasync-{self._key[:16]}.local.")
            self._browser = AsyncServiceBrowser(
                zc.zeroconf, MDNS_SERVICE_TYPE, handlers=[self._on_change])
        except BaseException:
            await self.stop()  # the sockets are open already
            raise
        log.info("mDNS: announcing %s at %s port %d", self.name, ", ".join(announced),
                 self._port)
        self._spawn(self._register(zc, info))

    async def stop(self) -> None:
        """Stop browsing, withdraw the announcement (goodbye packets, so the others drop
        this node's seeds at once) and close every mDNS socket. Idempotent."""
        zc, browser, self._zc, self._browser = self._zc, self._browser, None, None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._resolving.clear()
        self._services.clear()
        if browser is not None:
            await browser.async_cancel()
        if zc is not None:
            await zc.async_close()

    # --- inside ------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _register(self, zc: AsyncZeroconf, info: AsyncServiceInfo) -> None:
        try:
            announcing = await zc.async_register_service(info)
            await announcing
        except NonUniqueNameException:
            log.warning("mDNS: another node announces %s already; not announcing this "
                        "node (it still finds the others)", self.name)
        except (OSError, ZeroconfError) as exc:
            log.warning("mDNS: cannot announce %s: %r", self.name, exc)

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        """The browser's callback (in the event loop): a service appeared, changed or
        went away."""
        if name == self.name:
            return
        pending = self._resolving.pop(name, None)
        if pending is not None:
            pending.cancel()  # superseded: only the latest state of a service counts
        if state_change is ServiceStateChange.Removed:
            self._forget(name)
        elif name in self._services or len(self._services) + len(self._resolving) \
                < MAX_SERVICES:
            self._resolving[name] = self._spawn(self._resolve(zeroconf, name))
        else:
            # Anyone on the LAN may announce: a flood of names must not become a flood
            # of seeds (each one dialled and sent state to) or of lookups.
            self._ignored += 1
            if self._ignored == 1:
                log.warning("mDNS: more than %d services announced; ignoring the rest",
                            MAX_SERVICES)

    async def _resolve(self, zc: Zeroconf, name: str) -> None:
        """Ask for a found service's address and port; its seeds replace what it
        announced before."""
        info = AsyncServiceInfo(MDNS_SERVICE_TYPE, name)
        try:
            if not await info.async_request(zc, RESOLVE_TIMEOUT_MS):
                log.debug("mDNS: %s did not answer", name)
                return
        finally:
            if self._resolving.get(name) is asyncio.current_task():
                del self._resolving[name]
        if info.properties.get(b"key") == self._key.encode() or info.port is None:
            return  # this node under another name (a restart), or no port to dial
        family = ipaddress.ip_address(self._announced()[0]).version
        addresses = [a for a in info.parsed_addresses()
                     if ipaddress.ip_address(a).version == family]
        seeds = [f"{a}:{info.port}" for a in addresses[:MAX_SERVICE_ADDRESSES]]
        before = self.seeds
        if seeds:
            self._services[name] = seeds
        else:
            self._services.pop(name, None)
        self._report(before)

    def _forget(self, name: str) -> None:
        before = self.seeds
        if self._services.pop(name, None) is not None:
            self._report(before)

    def _report(self, before: list[str]) -> None:
        now = self.seeds
        added = [a for a in now if a not in before]
        gone = [a for a in before if a not in now]
        if added:
            log.info("mDNS: found %s", ", ".join(added))
            self._found(added)
        if gone:
            log.info("mDNS: %s went away", ", ".join(gone))
            self._lost(gone)
