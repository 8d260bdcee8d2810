"""The control channel between the supervisor and a worker: typed messages over
SOCK_SEQPACKET.

Low-rate traffic only (adopting a connection, events, statistics, rewiring, stop); the
hot path goes through the rings. SOCK_SEQPACKET keeps message boundaries and carries
file descriptors (``SCM_RIGHTS``), which is how accepted connections reach their owner.
What a message may say is :mod:`somasync.workers.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence

from .protocol import ControlError, ControlMessage, decode, encode

__all__ = ["MAX_CONTROL", "ControlError", "pair", "receive", "send", "send_soon"]

MAX_CONTROL = 1 << 20


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected (supervisor end, worker end) pair."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, message: ControlMessage, fds: Sequence[int] = ()) -> bool:
    """Send one message (and descriptors); False when it could not be sent now (the other
    end's queue is full, or it is gone).

    Raises:
        ControlError: ``message`` is not a control message (a bug, never dropped).
    """
    data = encode(message)
    try:
        _send(sock, data, fds)
    except OSError:
        return False
    return True


def _send(sock: socket.socket, data: bytes, fds: Sequence[int]) -> None:
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


async def send_soon(sock: socket.socket, message: ControlMessage,
                    fds: Sequence[int] = (), *, within: float = 2.0) -> bool:
    """Like :func:`send`, but while the other end's queue is full it waits (up to
    ``within`` seconds) for the socket to become writable, instead of giving up: a
    connection being handed over must not be dropped because a worker was briefly busy.
    The wait is the event loop's writer callback, not a polling loop."""
    data = encode(message)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            _send(sock, data, fds)
        except BlockingIOError:
            remaining = deadline - loop.time()
            if remaining <= 0 or not await _writable(loop, sock, remaining):
                return False
        except OSError:
            return False
        else:
            return True


# Senders waiting for each socket to drain. One writer callback per socket serves them
# all: a second add_writer on the same descriptor would silently replace the first.
_waiting: dict[int, list[asyncio.Future[None]]] = {}


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                    within: float) -> bool:
    """Wait until ``sock`` can take more, at most ``within`` seconds; False on timeout."""
    fd = sock.fileno()
    waiters = _waiting.get(fd)
    if waiters is None:
        waiters = _waiting[fd] = []
        loop.add_writer(fd, _wake, loop, fd)
    future: asyncio.Future[None] = loop.create_future()
    waiters.append(future)
    try:
        await asyncio.wait_for(asyncio.shield(future), within)
    except TimeoutError:
        if future in waiters:
            waiters.remove(future)
        if not waiters and _waiting.get(fd) is waiters:
            del _waiting[fd]
            loop.remove_writer(fd)
        return False
    return True


def _wake(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    loop.remove_writer(fd)
    for future in _waiting.pop(fd, []):
        if not future.done():
            future.set_result(None)


def receive(sock: socket.socket) -> list[tuple[ControlMessage | ControlError, list[int]]] | None:
    """Every message ready on a non-blocking socket, decoded; None when the other end
    closed. A message that does not decode comes back as its :class:`ControlError`, in
    order, for the caller to act on (its descriptors, if any, are returned too)."""
    messages: list[tuple[ControlMessage | ControlError, list[int]]] = []
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_CONTROL, 4)
        except BlockingIOError:
            return messages
        except (ConnectionResetError, OSError):
            return messages if messages else None
        if not data:
            for fd in fds:
                with contextlib.suppress(OSError):
                    socket.close(fd)
            return messages if messages else None
        try:
            messages.append((decode(data), list(fds)))
        except ControlError as exc:
            messages.append((exc, list(fds)))
