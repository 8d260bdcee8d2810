"""The agent's private RPC endpoint and its client: JSON lines over a Unix socket, and
optionally over TCP with a token.

The agent listens on a Unix socket created with mode 0600 in a directory of mode 0700
(``$XDG_RUNTIME_DIR/somasync-<uid>/agent-<port>.sock`` by default, or ``--rpc PATH``), so
only its own user can talk to it; nothing listens on the network. Protocol, one JSON
object per line each way (a request line is at most 64 KiB)::

    -> {"id": 1, "command": "members"}
    <- {"id": 1, "ok": true, "event": "members", "result": {"members": [...]}}
    -> {"id": 2, "command": "publish", "argument": "{\\"type\\": \\"data\\", \\"text\\": \\"x\\"}"}
    <- {"id": 2, "ok": true, "event": "published", "result": {"id": "...", ...}}
    -> {"id": 3, "command": "nonsense"}
    <- {"id": 3, "ok": false, "error": "unknown command 'nonsense'"}
    -> {"id": 4, "command": "monitor"}
    <- {"id": 4, "ok": true, "event": "monitoring", "result": {}}
    <- {"event": "message", ...}        every event and message the agent reports, until
                                          the client hangs up (a client that reads too
                                          slowly loses lines, counted in "dropped")

Commands: ``members``, ``stats``, ``publish <payload>``, ``revoke <file>``, ``leave``
(the agent leaves gracefully and exits), ``monitor``.

With ``--rpc-addr HOST:PORT`` the agent serves the same protocol on TCP too (``--rpc off``:
TCP only). HOST must be a loopback address (127.0.0.1, ::1) unless ``--rpc-allow-network``
is given. Who connects must first prove it holds the agent's token::

    -> {"auth": "<token>"}
    <- {"ok": true, "event": "authorized", "result": {}}      then requests as above
    or <- {"ok": false, "error": "unauthorized"}              and the agent hangs up

The token is generated at each start and written to ``rpc-<host>-<port>.token`` (mode
0600, created afresh, never through a link) in the private directory above, or read from
``--rpc-token-file FILE`` (refused when group or other users may access it). A client
that sends anything else first, or nothing within :data:`AUTH_TIMEOUT` seconds, is
refused; at most :data:`MAX_UNAUTHENTICATED` connections may wait for their first line
(more are refused at once, ``"error": "too many unauthenticated connections"``).
Refusals are counted by reason (``stats``: ``rpc_refused``) and logged at warning level
on the ``somasync.cli.rpc`` logger: the first at once, the rest of a flood as one summary
line per :data:`REFUSAL_LOG_INTERVAL` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import secrets
import socket
import stat
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from somasync.config import parse_address
from somasync.errors import ConfigError, KeyFileError
from somasync.keys import require_private

__all__ = ["AUTH_TIMEOUT", "MAX_REQUEST", "MAX_UNAUTHENTICATED", "REFUSAL_LOG_INTERVAL",
           "RpcError", "RpcRefused", "RpcServer", "TcpTarget", "default_directory",
           "find_endpoint", "parse_rpc_addr", "private_directory", "read_token", "request",
           "stream", "token_path"]

MAX_REQUEST = 64 * 1024
MONITOR_QUEUE = 10_000
AUTH_TIMEOUT = 5.0
"""Seconds a TCP client has to send its auth line (an idle connection holds nothing longer)."""
MAX_UNAUTHENTICATED = 32
"""TCP connections that may wait for their auth line at once."""
REFUSAL_LOG_INTERVAL = 60.0
"""After a logged refusal, further ones are summed up in one line this many seconds later."""

REFUSALS = {"bad_token": "wrong token", "no_token": "no auth line",
            "timeout": "no auth line in time",
            "too_many": "too many unauthenticated connections"}
"""Why a TCP connection was refused (the keys of ``stats``' ``rpc_refused``)."""

logger = logging.getLogger(__name__)

Handler = Callable[[str, str], Awaitable[tuple[str, dict[str, Any]]]]
"""(command, argument) -> (event kind, result); raises ValueError for a bad request."""


class RpcError(Exception):
    """The agent could not be reached, or refused the request (the message says which)."""


class RpcRefused(RpcError):
    """The agent refused the connection: a wrong or missing token, or too many clients
    waiting to authenticate."""


@dataclass(frozen=True)
class TcpTarget:
    """An agent's TCP RPC endpoint and the token it wants."""

    host: str
    port: int
    token: str

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def default_directory() -> Path:
    """Where agents put their sockets and tokens: private to this user."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"somasync-{os.getuid()}"


def private_directory() -> Path:
    """:func:`default_directory`, created with mode 0700 if missing.

    Raises:
        RpcError: it exists but is a link, belongs to another user or is open to others
            (in a shared /tmp someone may have made it first).
    """
    directory = default_directory()
    directory.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() \
            or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RpcError(f"{directory} is not a private directory of this user (mode "
                       f"{stat.S_IMODE(info.st_mode):04o}, owner {info.st_uid}); remove it")
    return directory


def _trusted_directory() -> Path:
    """:func:`default_directory` for a client to look in: refused unless it is this
    user's own and private (in a shared /tmp another user could have made it first and
    left a socket or token there for the client to talk to)."""
    directory = default_directory()
    try:
        info = directory.lstat()
    except FileNotFoundError:
        return directory
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() \
            or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RpcError(f"{directory} is not a private directory of this user (mode "
                       f"{stat.S_IMODE(info.st_mode):04o}, owner {info.st_uid}); not "
                       f"looking for agents there")
    return directory


def token_path(directory: Path, host: str, port: int) -> Path:
    """The token file of the TCP endpoint ``host:port`` in ``directory``, where an agent
    writes a generated token and a client looks for it."""
    return directory / f"rpc-{host.replace(':', '_')}-{port}.token"


def read_token(path: Path, *, private: bool = True) -> str:
    """The token in ``path`` (surrounding whitespace stripped).

    Raises:
        KeyFileError: it cannot be read, holds no token, or (``private``) other users may
            access it.
    """
    if private:
        require_private(path)
    try:
        token = path.read_text(errors="replace").strip()
    except OSError as exc:
        raise KeyFileError(path, exc.strerror or str(exc)) from None
    if not token:
        raise KeyFileError(path, "holds no token")
    return token


def _write_token(path: Path, token: str) -> None:
    # Only this user writes in the private directory, so a file already there is a dead
    # agent's: replace it, but with a file of our own (O_EXCL: never through a link).
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")


def parse_rpc_addr(text: str, *, allow_network: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` of a TCP RPC endpoint, as ``(host, port)``.

    Raises:
        ConfigError: naming ``rpc_addr`` when the text is no address, or HOST is not a
            loopback address and ``allow_network`` is false.
    """
    host, port = parse_address(text, "rpc_addr")
    if not allow_network:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError("rpc_addr", f"{host} is not a loopback IP address (such as "
                                          f"127.0.0.1); the RPC endpoint is open to the "
                                          f"network only with --rpc-allow-network")
    return host, port


def find_endpoint(rpc: str | None = None, rpc_addr: str | None = None,
                  token_file: str | None = None, *,
                  environ: Mapping[str, str] = os.environ) -> Path | TcpTarget:
    """The endpoint a client should use: ``rpc`` (a socket) or ``rpc_addr`` (TCP), else
    ``$SOMASYNC_RPC`` or ``$SOMASYNC_RPC_ADDR``, else the one agent socket in
    :func:`default_directory`. TCP takes its token from ``token_file``, else
    ``$SOMASYNC_RPC_TOKEN_FILE``, else the agent's generated one in
    :func:`default_directory`.

    Raises:
        ValueError: both kinds given, a bad address, or no readable token (a usage error;
            :class:`ConfigError` names the field).
        RpcError: no agent socket or several found (the message lists them), or the
            default directory is not this user's private one.
    """
    if rpc and rpc_addr:
        raise ConfigError("rpc_addr", "give either --rpc or --rpc-addr")
    if not rpc and not rpc_addr:
        rpc, rpc_addr = environ.get("SOMASYNC_RPC"), environ.get("SOMASYNC_RPC_ADDR")
        if rpc and rpc_addr:
            raise ConfigError("rpc_addr", "both $SOMASYNC_RPC and $SOMASYNC_RPC_ADDR are "
                                          "set; pick one with --rpc or --rpc-addr")
    if rpc_addr:
        host, port = parse_rpc_addr(rpc_addr, allow_network=True)
        if port == 0:
            raise ConfigError("rpc_addr", f"expected the agent's port, got {rpc_addr!r}")
        given = token_file or environ.get("SOMASYNC_RPC_TOKEN_FILE")
        path = Path(given) if given else token_path(_trusted_directory(), host, port)
        if not given and not path.exists():
            raise ConfigError("rpc_token_file", f"no token for {rpc_addr} (no {path}); "
                                                f"give --rpc-token-file")
        try:
            return TcpTarget(host, port, read_token(path, private=False))
        except KeyFileError as exc:
            raise ConfigError("rpc_token_file", str(exc)) from None
    if rpc:
        return Path(rpc)
    directory = _trusted_directory()
    sockets = sorted(directory.glob("agent-*.sock")) if directory.is_dir() else []
    if len(sockets) == 1:
        return sockets[0]
    if not sockets:
        raise RpcError(f"no running agent found in {directory}; give --rpc PATH")
    raise RpcError("several agents run here; pick one with --rpc: "
                   + ", ".join(str(s) for s in sockets))


class RpcServer:
    """Serves one agent's RPC socket, and its TCP endpoint if given (see the module
    docstring).

    Args:
        path: the Unix socket (None: none).
        handler: answers commands; may be set later, before :meth:`start`.
        tcp_address: ``(host, port)`` to serve on TCP too (port 0: any free port); the
            caller has checked the host (:func:`parse_rpc_addr`).
        token: the token TCP clients must send; None: one is generated and written to
            :func:`token_path` in :func:`private_directory`, removed again at :meth:`close`.
        token_file: where a given ``token`` came from (reported as :attr:`token_file`).
    """

    def __init__(self, path: Path | None, handler: Handler | None = None, *,
                 tcp_address: tuple[str, int] | None = None, token: str | None = None,
                 token_file: Path | None = None, auth_timeout: float = AUTH_TIMEOUT,
                 max_unauthenticated: int = MAX_UNAUTHENTICATED,
                 log_interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self.path = path
        self.handler = handler
        """Answers commands; set before :meth:`start`."""
        self.tcp_address: str | None = None
        """The bound TCP endpoint, ``host:port``, once started."""
        self.token_file = token_file
        """The file holding the TCP token (generated: once started)."""
        self.refused: Counter[str] = Counter()
        """TCP connections refused, by reason (:data:`REFUSALS`)."""
        self._tcp_wanted = tcp_address
        self._token = token or ""
        self._own_token_file = False
        self._auth_timeout = auth_timeout
        self._max_unauthenticated = max_unauthenticated
        self._log_interval = log_interval
        self._unauthenticated = 0
        self._quiet_until = float("-inf")
        self._unlogged: Counter[str] = Counter()
        self._summary: asyncio.TimerHandle | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._monitors: dict[asyncio.Queue[bytes], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._monitoring: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on TCP (if asked), then on the socket; what started is closed again
        when a part fails.

        Raises:
            ConfigError: naming ``rpc_addr`` when TCP cannot listen there, or
                ``rpc_token_file`` when the token file cannot be written.
            RpcError: another agent serves the socket.
            OSError: the socket cannot be created.
        """
        try:
            if self._tcp_wanted is not None:
                await self._start_tcp(*self._tcp_wanted)
            if self.path is not None:
                await self._start_unix(self.path)
        except BaseException:
            await self.close()
            raise

    async def _start_tcp(self, host: str, port: int) -> None:
        try:
            self._tcp = await asyncio.start_server(
                lambda r, w: self._connection(r, w, authenticate=True), host, port,
                limit=MAX_REQUEST)
        except OSError as exc:
            raise ConfigError("rpc_addr", f"cannot listen on {host}:{port}: "
                                          f"{exc.strerror or exc}") from None
        bound = self._tcp.sockets[0].getsockname()
        target = TcpTarget(bound[0], bound[1], "")
        self.tcp_address = str(target)
        if self._token:
            return
        self._token = secrets.token_urlsafe(32)
        try:
            path = token_path(private_directory(), target.host, target.port)
            _write_token(path, self._token)
        except (OSError, RpcError) as exc:
            raise ConfigError("rpc_token_file", f"cannot write the token: "
                                                f"{getattr(exc, 'strerror', None) or exc}"
                              ) from None
        self.token_file, self._own_token_file = path, True

    async def _start_unix(self, path: Path) -> None:
        _clear_stale_socket(path)
        previous = os.umask(0o177)  # the socket is created 0600: no window for others
        try:
            self._server = await asyncio.start_unix_server(
                lambda r, w: self._connection(r, w, authenticate=False), str(path),
                limit=MAX_REQUEST)
        finally:
            os.umask(previous)

    async def close(self) -> None:
        """Stop listening, end every monitor (its client sees the end of the stream),
        wait for every connection's handler and remove the socket and a generated token
        file; logs what refusals the last summary has not told yet."""
        servers = [server for server in (self._server, self._tcp) if server is not None]
        for server in servers:
            server.close()
        for queue in self._monitors:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(b"")
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            if not task.done() and task not in self._monitoring:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in servers:
            await server.wait_closed()
        if self._server is not None and self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self._own_token_file and self.token_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.token_file.unlink()
        if self._summary is not None:
            self._summary.cancel()
        self._log_unlogged()

    def publish(self, kind: str, fields: dict[str, Any]) -> None:
        """Hand one reported event to every monitoring client."""
        if not self._monitors:
            return
        line = orjson.dumps({"event": kind, **fields}, default=_jsonable) + b"\n"
        for queue in self._monitors:
            try:
                queue.put_nowait(line)
            except asyncio.QueueFull:
                self._monitors[queue] += 1

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          *, authenticate: bool) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if authenticate and not await self._authenticate(reader, writer):
                return
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _authenticate(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> bool:
        """Whether the first line is ``{"auth": <the token>}``; if not, the refusal is
        written, counted and logged (the caller hangs up)."""
        if self._unauthenticated >= self._max_unauthenticated:
            self._refuse(writer, "too_many")
            return False
        self._unauthenticated += 1
        try:
            line = await asyncio.wait_for(reader.readline(), self._auth_timeout)
        except TimeoutError:
            reason: str | None = "timeout"
        except (ValueError, asyncio.LimitOverrunError):
            reason = "no_token"  # a line past 64 KiB is no auth line
        else:
            reason = self._check_token(line)
        finally:
            self._unauthenticated -= 1
        if reason is not None:
            self._refuse(writer, reason)
            return False
        await _send(writer, {"ok": True, "event": "authorized", "result": {}})
        return True

    def _check_token(self, line: bytes) -> str | None:
        """None for the right auth line, else the reason to refuse it."""
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            return "no_token"
        given = message.get("auth") if isinstance(message, dict) else None
        if not isinstance(given, str):
            return "no_token"
        # Bytes: compare_digest takes only ASCII str, and a token is whatever was sent.
        if hmac.compare_digest(given.encode(), self._token.encode()):
            return None
        return "bad_token"

    def _refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        self.refused[reason] += 1
        error = REFUSALS[reason] if reason == "too_many" else "unauthorized"
        # One short line, not awaited: a peer that does not read cannot hold this task.
        writer.write(orjson.dumps({"ok": False, "error": error}) + b"\n")
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self._quiet_until:
            # A flood is summed up once the interval is over, not logged line by line.
            self._unlogged[reason] += 1
            if self._summary is None:
                self._summary = loop.call_at(self._quiet_until, self._log_unlogged)
            return
        self._quiet_until = now + self._log_interval
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        logger.warning("RPC: refused a TCP connection from %s (%s)", where, REFUSALS[reason])

    def _log_unlogged(self) -> None:
        self._summary = None
        if not self._unlogged:
            return
        total = sum(self._unlogged.values())
        reasons = ", ".join(f"{REFUSALS[reason]}: {count}"
                            for reason, count in sorted(self._unlogged.items()))
        self._unlogged.clear()
        logger.warning("RPC: refused %d more TCP connection%s (%s)", total,
                       "" if total == 1 else "s", reasons)

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                await _send(writer, {"ok": False, "error": "request line too long"})
                return
            if not line:
                return
            try:
                request_ = orjson.loads(line)
                if not isinstance(request_, dict) or not isinstance(
                        request_.get("command"), str):
                    raise ValueError("a request is an object with a command")
                command = request_["command"]
                argument = request_.get("argument", "")
                if not isinstance(argument, str):
                    raise ValueError("argument must be a string")
            except (orjson.JSONDecodeError, ValueError) as exc:
                await _send(writer, {"ok": False, "error": f"bad request: {exc}"})
                continue
            ident = request_.get("id")
            if command == "monitor":
                await _send(writer, {"id": ident, "ok": True, "event": "monitoring",
                                     "result": {}})
                await self._monitor(writer)
                return
            try:
                if self.handler is None:
                    raise ValueError("the agent is starting")
                kind, result = await self.handler(command, argument)
            except ValueError as exc:
                await _send(writer, {"id": ident, "ok": False, "error": str(exc)})
                continue
            await _send(writer, {"id": ident, "ok": True, "event": kind, "result": result})

    async def _monitor(self, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue(MONITOR_QUEUE)
        self._monitors[queue] = 0
        task = asyncio.current_task()
        assert task is not None
        self._monitoring.add(task)
        try:
            while True:
                line = await queue.get()
                if not line:
                    return  # the agent is stopping
                writer.write(line)
                dropped = self._monitors[queue]
                if dropped:
                    self._monitors[queue] = 0
                    writer.write(orjson.dumps({"event": "dropped", "count": dropped}) + b"\n")
                await writer.drain()
        except ConnectionError:
            return
        finally:
            del self._monitors[queue]
            self._monitoring.discard(task)


def _clear_stale_socket(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists():
        # A socket left by an agent that died: nobody answers on it any more.
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()
            else:
                raise RpcError(f"another agent serves {path}")


async def _send(writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
    writer.write(orjson.dumps(body, default=_jsonable) + b"\n")
    await writer.drain()


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError


def request(target: Path | TcpTarget, command: str, argument: str = "", *,
            timeout: float = 30.0) -> dict[str, Any]:
    """One request to the agent at ``target`` (its socket, or its TCP endpoint with the
    token); its answer.

    Raises:
        RpcRefused: the agent refused the token.
        RpcError: the agent cannot be reached, or its answer is not valid.
    """
    with _connect(target, timeout) as sock:
        sock.sendall(orjson.dumps({"id": 1, "command": command, "argument": argument})
                     + b"\n")
        answer = _answer(target, _read_line(sock))
    return answer


def stream(target: Path | TcpTarget, *,
           timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """``monitor``: every event the agent reports, as it reports them.

    Raises:
        RpcRefused: the agent refused the token.
        RpcError: the agent cannot be reached.
    """
    with _connect(target, 30.0) as sock:
        sock.sendall(b'{"id": 1, "command": "monitor"}\n')
        sock.settimeout(timeout)
        buffer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line:
                    yield orjson.loads(line)


def _connect(target: Path | TcpTarget, timeout: float) -> socket.socket:
    """A connected socket, authenticated when it is TCP."""
    try:
        if isinstance(target, TcpTarget):
            sock = socket.create_connection((target.host, target.port), timeout)
        else:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(timeout)
            try:
                sock.connect(str(target))
            except OSError:
                sock.close()
                raise
    except OSError as exc:
        raise RpcError(f"cannot reach an agent at {target}: {exc.strerror or exc}") from None
    if isinstance(target, TcpTarget):
        try:
            # The answer is awaited before the request is sent: refused, the agent hangs
            # up with nothing unread, so its refusal is not lost to a reset.
            sock.sendall(orjson.dumps({"auth": target.token}) + b"\n")
            answer = _answer(target, _read_line(sock))
        except BaseException:
            sock.close()
            raise
        if not answer.get("ok"):
            sock.close()
            error = answer.get("error")
            hint = "; check --rpc-token-file" if error == "unauthorized" else ""
            raise RpcRefused(f"the agent at {target} refused the connection: {error}{hint}")
    return sock


def _answer(target: Path | TcpTarget, line: bytes) -> dict[str, Any]:
    try:
        answer = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise RpcError(f"the agent at {target} answered something else than JSON") from None
    if not isinstance(answer, dict):
        raise RpcError(f"the agent at {target} answered {answer!r}")
    return answer


def _read_line(sock: socket.socket) -> bytes:
    buffer = b""
    while b"\n" not in buffer:
        try:
            chunk = sock.recv(65536)
        except OSError as exc:
            raise RpcError(f"the agent did not answer: {exc}") from None
        if not chunk:
            raise RpcError("the agent closed the connection without an answer")
        buffer += chunk
    return buffer.split(b"\n", 1)[0]
