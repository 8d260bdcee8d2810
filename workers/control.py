"""Control messages between the supervisor and a worker: JSON over SOCK_SEQPACKET.

Low-rate traffic only (adopting a connection, events, statistics, rewiring, stop); the
hot path goes through the rings. SOCK_SEQPACKET keeps message boundaries and carries
file descriptors (``SCM_RIGHTS``), which is how accepted connections reach their owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["MAX_CONTROL", "pair", "receive", "send", "send_soon"]

MAX_CONTROL = 1 << 20


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected (supervisor end, worker end) pair."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, message: dict[str, Any],
         fds: Sequence[int] = ()) -> bool:
    """Send one message (and descriptors); False when it could not be sent now.

    Raises:
        BlockingIOError: only through :func:`send_soon`, which retries.
    """
    try:
        _send(sock, message, fds)
    except OSError:
        return False
    return True


def _send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int]) -> None:
    if fds:
        socket.send_fds(sock, [orjson.dumps(message)], list(fds))
    else:
        sock.send(orjson.dumps(message))


async def send_soon(sock: socket.socket, message: dict[str, Any],
                    fds: Sequence[int] = (), *, within: float = 2.0) -> bool:
    """Like :func:`send`, but waits (up to ``within`` seconds) while the other end's
    queue is full, instead of giving up: a connection being handed over must not be
    dropped because a worker was briefly busy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            _send(sock, message, fds)
        except BlockingIOError:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.001)
        except OSError:
            return False
        else:
            return True


def receive(sock: socket.socket) -> list[tuple[dict[str, Any], list[int]]] | None:
    """Every message ready on a non-blocking socket; None when the other end closed."""
    messages: list[tuple[dict[str, Any], list[int]]] = []
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
        messages.append((orjson.loads(data), list(fds)))
