"""Wake-ups between processes: one Unix datagram socket per consumer process.

A consumer that found all its rings empty marks itself sleeping in each ring and waits
for its doorbell to become readable. A producer that publishes into a ring whose consumer
sleeps rings the bell: one tiny datagram to the consumer's abstract-namespace address
(Linux), so no file descriptor has to be passed between processes. A full socket buffer
means a wake-up is already pending, so a failed send loses nothing.
"""

from __future__ import annotations

import contextlib
import socket

__all__ = ["Doorbell", "Ringer"]


class Doorbell:
    """The consumer's end: a non-blocking datagram socket at ``address``."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind("\0" + address)
        self.socket.setblocking(False)

    def fileno(self) -> int:
        return self.socket.fileno()

    def clear(self) -> None:
        """Drain pending rings (call when readable)."""
        with contextlib.suppress(BlockingIOError):
            while self.socket.recv(64):
                pass

    def close(self) -> None:
        self.socket.close()


class Ringer:
    """The producers' end: rings any consumer's doorbell by address."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setblocking(False)

    def ring(self, address: str) -> None:
        with contextlib.suppress(BlockingIOError, ConnectionRefusedError, FileNotFoundError):
            self.socket.sendto(b"\x01", "\0" + address)

    def close(self) -> None:
        self.socket.close()
