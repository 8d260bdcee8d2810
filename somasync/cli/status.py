"""``somasync agent --http-addr HOST:PORT``: a live, read-only status page of the node.

``GET /`` is a page (``status.html`` with ``status.js`` and ``status.css``, shipped with
the package, no external resource) that polls ``GET /api/status`` every second and
draws the members, per-peer health and score, message rates, the delivery latency
histogram and the overlay with its broadcast tree. Nothing here changes the node: the
server answers GET (and HEAD) only, and the page renders every string from the network
as text.

``/api/status`` is one JSON object (the ``status`` definition of ``schema.json``):

``node_id``, ``address``, ``public_key``
    This node: its name, its ``host:port``, its key (hex).
``t``, ``uptime``
    Wall-clock seconds since the epoch when the snapshot was taken; seconds since the
    node started. Rates are counter differences between two snapshots over their ``t``.
``members``
    Every member this node knows, itself first: ``node_id``, ``address``,
    ``public_key``, ``state`` (alive, suspect, failed, left), ``incarnation``,
    ``last_seen`` (wall clock), ``rtt`` (seconds of its last answered direct probe, or
    null), ``score`` (its link's score, or null: no link), ``linked`` (a link is up now)
    and ``lazy_streams`` (of ``tree.streams``, the streams its link only announces to;
    null: no link or no tree).
``counters``
    Monotonic counters: ``delivered`` (messages delivered to the application),
    ``originated``, ``sent`` (message frames queued to neighbours: forwards, own
    broadcasts, repairs), ``duplicates``, ``frames_in``, ``frames_out``, ``bytes_in``,
    ``bytes_out`` and ``rejected`` (refused frames, all reasons).
``latency``
    The delivery latency histogram: ``bounds`` (bucket upper bounds, seconds; one more
    bucket above the last), ``counts`` (per bucket, not cumulative), ``total`` (seconds)
    and ``count``.
``overlay``
    ``active`` and ``passive`` (HyParView's views, addresses), or null with static
    discovery.
``tree``
    ``streams`` (origins with a broadcast tree here), ``eager_links`` and ``lazy_links``
    (summed over those streams), or null with plain push forwarding.
``membership``
    ``alive``, ``suspect``, ``failed``, ``left`` and ``local_health``, or null where
    membership is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from importlib import resources
from typing import Any

import orjson

from somasync.config import parse_address
from somasync.errors import ConfigError, NodeStateError

__all__ = ["StatusServer", "status_document"]

MAX_REQUEST_LINE = 2048
"""Bytes of a request line at most (a longer one gets 414)."""
MAX_HEADER_BYTES = 8192
"""Bytes of all header lines together at most (more gets 431)."""
MAX_HEADERS = 64
REQUEST_TIMEOUT = 10.0
"""Seconds a client has to send its whole request (a trickling one is closed)."""
MAX_CONNECTIONS = 32
"""Connections served at once; more are closed at once (a page opens one a second)."""

SECURITY_HEADERS = (
    # Nothing inline runs: the page's script and style are files of their own.
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
ASSETS = {"/": ("status.html", "text/html; charset=utf-8"),
          "/status.js": ("status.js", "text/javascript; charset=utf-8"),
          "/status.css": ("status.css", "text/css; charset=utf-8")}
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 414: "URI Too Long",
           421: "Misdirected Request", 431: "Request Header Fields Too Large",
           503: "Service Unavailable", 505: "HTTP Version Not Supported"}


async def status_document(node: Any) -> dict[str, Any]:
    """What ``/api/status`` answers for ``node`` (a started
    :class:`~somasync.aio.node.SynapseNode`; see the module docstring for the fields).

    Raises:
        NodeStateError: the node has never been started.
    """
    stats = await node.get_stats()
    core = stats.core
    connected = node.connected_peers()
    tree = core.tree
    members = []
    for member in node.members():
        linked = member.node_id in connected
        members.append({
            "node_id": member.node_id, "address": member.address,
            "public_key": member.public_key.hex(), "state": str(member.state),
            "incarnation": member.incarnation, "last_seen": member.last_seen,
            "rtt": member.rtt, "score": core.peer_scores.get(member.node_id),
            "linked": linked,
            "lazy_streams": core.lazy_streams.get(member.node_id, 0)
            if linked and tree is not None else None})
    latency = stats.delivery_latency
    membership = stats.membership
    return {
        "node_id": node.node_id, "address": node.listen_address,
        "public_key": node.public_key.hex(), "t": time.time(), "uptime": stats.uptime,
        "members": members,
        "counters": {"delivered": stats.messages_processed,
                     "originated": stats.messages_originated,
                     "sent": core.messages_forwarded, "duplicates": stats.duplicates,
                     "frames_in": stats.frames_in, "frames_out": stats.frames_out,
                     "bytes_in": stats.bytes_in, "bytes_out": stats.bytes_out,
                     "rejected": sum(stats.rejected.values())},
        "latency": {"bounds": list(latency.bounds), "counts": list(latency.counts),
                    "total": latency.total, "count": latency.count},
        "overlay": None if stats.active_view is None else {
            "active": list(stats.active_view), "passive": list(stats.passive_view or ())},
        "tree": None if tree is None else {"streams": tree.streams,
                                           "eager_links": tree.eager_links,
                                           "lazy_links": tree.lazy_links},
        "membership": None if membership is None else {
            "alive": membership.alive, "suspect": membership.suspect,
            "failed": membership.failed, "left": membership.left,
            "local_health": membership.local_health},
    }


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class StatusServer:
    """The status page's HTTP server, on the node's own event loop.

    On the loop rather than in a thread (as the metrics server is): every answer reads
    the node's statistics, which only the loop may gather (a sharded node asks its
    workers), and the page asks once a second, so a snapshot refreshed behind its back
    would be as costly and older. Each request is small and bounded (its line, its
    headers, its time, the connections at once), so a client cannot hold the loop.

    Args:
        node: the node to describe.
        address: ``host:port`` to listen on (port 0: any free port).
    """

    def __init__(self, node: Any, address: str, *, allow_network: bool = False) -> None:
        self.node = node
        self._host, self._port = parse_address(address, "http_addr")
        try:
            loopback = ipaddress.ip_address(self._host).is_loopback
        except ValueError:
            loopback = self._host == "localhost"
        if not loopback and not allow_network:
            # The page names every member, its address, key and score: not for the
            # network unless the operator says so.
            raise ConfigError("http_addr", f"{self._host} is not a loopback address; the "
                                           f"status page is open to the network only with "
                                           f"--http-allow-network")
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._assets: dict[str, bytes] = {}
        self.address = ""
        """``host:port`` actually listened on (set by :meth:`start`)."""

    async def start(self) -> None:
        """Listen.

        Raises:
            ConfigError: naming ``http_addr`` when the address cannot be listened on.
        """
        files = resources.files("somasync.cli")
        self._assets = {name: files.joinpath(name).read_bytes()
                        for name, _ in ASSETS.values()}
        try:
            self._server = await asyncio.start_server(
                self._serve, self._host, self._port, limit=MAX_REQUEST_LINE + 2)
        except OSError as exc:
            raise ConfigError("http_addr", f"cannot listen on {self._host}:{self._port}: "
                                           f"{exc.strerror or exc}") from None
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def close(self) -> None:
        """Stop listening and drop the connections being served."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections.add(task)
        try:
            try:
                method, path, host = await asyncio.wait_for(_read_request(reader),
                                                            REQUEST_TIMEOUT)
                status, content_type, body, extra = await self._answer(method, path, host)
            except _Refused as refused:
                status, content_type, extra = refused.status, "text/plain; charset=utf-8", ()
                body, method = f"{refused}\n".encode(), "GET"
            except TimeoutError:
                status, content_type, extra = 408, "text/plain; charset=utf-8", ()
                body, method = b"request not received in time\n", "GET"
            head = [f"HTTP/1.1 {status} {REASONS[status]}",
                    f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
                    "Connection: close", *(f"{k}: {v}" for k, v in (*SECURITY_HEADERS,
                                                                   *extra))]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            if method != "HEAD":
                writer.write(body)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
            if status >= 400:
                # Closing over unread bytes (the rest of an oversized request) resets
                # the connection, which may destroy the answer before the client reads
                # it: say we are done, then read a bounded remainder.
                with contextlib.suppress(OSError, RuntimeError, TimeoutError, ValueError):
                    writer.write_eof()
                    await asyncio.wait_for(reader.read(1 << 16), 1.0)
        except (OSError, TimeoutError):
            pass  # the client went away, or stopped reading
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(OSError, TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _answer(self, method: str, path: str, host: str | None
                      ) -> tuple[int, str, bytes, tuple[tuple[str, str], ...]]:
        if not self._host_allowed(host):
            # A page elsewhere whose name was made to resolve to this loopback address
            # (DNS rebinding) would otherwise read the status as same-origin.
            raise _Refused(421, "this server answers to its own address only")
        if path not in ASSETS and path != "/api/status":
            raise _Refused(404, "not found")
        if method not in ("GET", "HEAD"):
            body = b"read-only: GET and HEAD only\n"
            return 405, "text/plain; charset=utf-8", body, (("Allow", "GET, HEAD"),)
        if path == "/api/status":
            try:
                document = await status_document(self.node)
            except NodeStateError:
                return 503, "text/plain; charset=utf-8", b"the node is not running\n", ()
            return 200, "application/json", orjson.dumps(document), ()
        name, content_type = ASSETS[path]
        return 200, content_type, self._assets[name], ()

    def _host_allowed(self, host: str | None) -> bool:
        """Whether a request naming ``host`` (its Host header) may be answered. On
        loopback: a loopback name or address. On the network: an IP address (the bound
        one, or any for a wildcard bind), never a name, so that a page elsewhere whose
        name was made to resolve to this host (DNS rebinding) gets nothing."""
        if host is None:
            return False
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        try:
            bound = ipaddress.ip_address(self._host)
        except ValueError:
            bound = None  # "localhost"
        if bound is None or bound.is_loopback:
            if name == "localhost":
                return True
            try:
                return ipaddress.ip_address(name).is_loopback
            except ValueError:
                return False
        try:
            asked = ipaddress.ip_address(name)
        except ValueError:
            return False
        return bound.is_unspecified or asked == bound


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, str | None]:
    """The method, path (query dropped) and Host header of one request; a malformed or
    oversized one raises :class:`_Refused` with its status."""
    line = await _read_line(reader, 414, "request line too long")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper():
        raise _Refused(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _Refused(505 if version.startswith("HTTP/") else 400, "HTTP/1.x only")
    if not target.startswith("/") or any(c <= " " or c == "\x7f" for c in target):
        raise _Refused(400, "malformed request target")
    headers: dict[str, str] = {}
    size = 0
    while True:
        header = await _read_line(reader, 431, "header line too long")
        if not header:
            break
        size += len(header) + 2
        if size > MAX_HEADER_BYTES or len(headers) >= MAX_HEADERS:
            raise _Refused(431, "headers too large")
        name, colon, value = header.partition(":")
        if not colon or not name or name != name.strip() or not name.isascii():
            raise _Refused(400, "malformed header")
        key = name.lower()
        if key == "host" and key in headers:
            raise _Refused(400, "more than one Host header")
        headers[key] = value.strip()
    if method in ("GET", "HEAD") and ("transfer-encoding" in headers
                                      or headers.get("content-length", "0") != "0"):
        raise _Refused(400, "a GET has no body")
    host = headers.get("host")
    if version == "HTTP/1.1" and host is None:
        raise _Refused(400, "HTTP/1.1 needs a Host header")
    return method, target.split("?", 1)[0], host


async def _read_line(reader: asyncio.StreamReader, status: int, detail: str) -> str:
    try:
        raw = await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise _Refused(status, detail) from None
    except asyncio.IncompleteReadError as exc:
        raise _Refused(400, "incomplete request") if exc.partial else \
            _Refused(400, "no request") from None
    try:
        return raw[:-2].decode("ascii")
    except UnicodeDecodeError:
        raise _Refused(400, "request not ASCII") from None
