"""The agent's private RPC endpoint and its client: JSON lines over a Unix socket.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

__all__ = ["MAX_REQUEST", "RpcError", "RpcServer", "default_directory", "find_socket",
           "request", "stream"]

MAX_REQUEST = 64 * 1024
MONITOR_QUEUE = 10_000

Handler = Callable[[str, str], Awaitable[tuple[str, dict[str, Any]]]]
"""(command, argument) -> (event kind, result); raises ValueError for a bad request."""


class RpcError(Exception):
    """The agent could not be reached, or refused the request (the message says which)."""


def default_directory() -> Path:
    """Where agents put their sockets: private to this user."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"somasync-{os.getuid()}"


def find_socket(given: str | None) -> Path:
    """The socket a client should use: ``given``, else ``$SOMASYNC_RPC``, else the one
    agent socket in :func:`default_directory`.

    Raises:
        RpcError: none or several agents found (the message lists them).
    """
    chosen = given or os.environ.get("SOMASYNC_RPC")
    if chosen:
        return Path(chosen)
    directory = default_directory()
    sockets = sorted(directory.glob("agent-*.sock")) if directory.is_dir() else []
    if len(sockets) == 1:
        return sockets[0]
    if not sockets:
        raise RpcError(f"no running agent found in {directory}; give --rpc PATH")
    raise RpcError("several agents run here; pick one with --rpc: "
                   + ", ".join(str(s) for s in sockets))


class RpcServer:
    """Serves one agent's RPC socket (see the module docstring)."""

    def __init__(self, path: Path, handler: Handler | None = None) -> None:
        self.path = path
        self.handler = handler
        """Answers commands; set before :meth:`start`."""
        self._server: asyncio.AbstractServer | None = None
        self._monitors: dict[asyncio.Queue[bytes], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._monitoring: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.path.exists():
            # A socket left by an agent that died: nobody answers on it any more.
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(self.path))
                except OSError:
                    self.path.unlink()
                else:
                    raise RpcError(f"another agent serves {self.path}")
        previous = os.umask(0o177)  # the socket is created 0600: no window for others
        try:
            self._server = await asyncio.start_unix_server(self._serve, str(self.path),
                                                           limit=MAX_REQUEST)
        finally:
            os.umask(previous)

    async def close(self) -> None:
        """Stop listening, end every monitor (its client sees the end of the stream) and
        wait for every connection's handler."""
        if self._server is not None:
            self._server.close()
        for queue in self._monitors:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(b"")
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            if not task.done() and task not in self._monitoring:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

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

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
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
                await _send(writer, {"id": ident, "ok": True, "event": kind,
                                     "result": result})
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            self._tasks.discard(task)
            writer.close()

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


async def _send(writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
    writer.write(orjson.dumps(body, default=_jsonable) + b"\n")
    await writer.drain()


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError


def request(path: Path, command: str, argument: str = "", *,
            timeout: float = 30.0) -> dict[str, Any]:
    """One request to the agent at ``path``; its answer.

    Raises:
        RpcError: the agent cannot be reached, or its answer is not valid.
    """
    with _connect(path, timeout) as sock:
        sock.sendall(orjson.dumps({"id": 1, "command": command, "argument": argument})
                     + b"\n")
        line = _read_line(sock)
    try:
        answer = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise RpcError(f"the agent at {path} answered something else than JSON") from None
    if not isinstance(answer, dict):
        raise RpcError(f"the agent at {path} answered {answer!r}")
    return answer


def stream(path: Path, *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """``monitor``: every event the agent reports, as it reports them."""
    with _connect(path, 30.0) as sock:
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


def _connect(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise RpcError(f"cannot reach an agent at {path}: {exc.strerror or exc}") from None
    return sock


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
