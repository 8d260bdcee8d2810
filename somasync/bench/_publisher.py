"""One bench publisher in its own process; the runner starts it, users do not.

    python -m somasync.bench._publisher '<json spec>'

It joins one node as a peer (it runs the link handshake), waits for ``go <start monotonic ns>`` on
stdin, then signs and sends its planned messages: on an open-loop schedule at ``rate``
messages/s (each message stamped with the time it was *due*), or as fast as the
connection takes them when ``rate`` is 0. Whatever the node sends back (gossip, digests)
is read and counted, never processed. It prints one ``done`` JSON line and keeps the
connection open until stdin closes.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from somasync.bench import payload
from somasync.bench._link import secure_link
from somasync.config import GossipConfig
from somasync.core import wire
from somasync.core.crypto import Identity
from somasync.core.handshake import Session
from somasync.core.payload import Binary
from somasync.errors import DecodeError
from somasync.message import Message, sign_batch
from somasync.priority import HIGH

__all__ = ["main"]

_BATCH_BYTES = 64 * 1024
_REPAIR_BATCH = 1024
_RECONNECT_ATTEMPTS = 50
#: Frames kept for repairs: a bench runs for hours, so the publisher keeps a window
#: (as a node's store does) rather than everything it ever sent. 100,000 frames cover
#: every burst preset whole, and minutes of any steady rate a 2-core host carries.
_REPAIR_WINDOW = 100_000


def _priorities(mix: list[list[int]], count: int, seed: int) -> list[int]:
    values = [int(priority) for priority, _ in mix]
    weights = [int(weight) for _, weight in mix]
    return random.Random(seed).choices(values, weights, k=count)


class _Connection:
    """The publisher's link to its node: sends batches, reads everything the node says,
    answers its anti-entropy digests from this publisher's own messages (as any origin's
    store does), and reconnects when the node drops the link (a worker killed under it),
    so that nothing the publisher planned is lost for the mesh."""

    def __init__(self, address: str, identity: Identity, origin: str) -> None:
        host, port = address.rsplit(":", 1)
        self._address = (host, int(port))
        self._identity = identity
        self._stream: wire.StreamKey = (identity.public_key, origin)
        self._origin = origin
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._session: Session | None = None
        self._max_frame = GossipConfig().max_frame
        self.sent: deque[bytes] = deque(maxlen=_REPAIR_WINDOW)
        """The latest frames handed to the node, oldest first (repairs come from here)."""
        self.total = 0
        """Frames handed to the node so far: ``sent[0]`` is message ``total - len(sent)``."""
        self.received = 0
        self.repairs = 0
        self.reconnects = 0

    def open(self) -> None:
        sock = socket.create_connection(self._address, timeout=30)
        # Without it, Nagle holds each small frame until the previous one is ACKed, and
        # delayed ACKs turn that into 40 ms stalls (asyncio's transports set it too).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            session, leftover = secure_link(sock, self._identity, self._origin)
        except (OSError, DecodeError):
            sock.close()
            raise ConnectionError(f"no handshake with the node at {self._address}") from None
        self._sock, self._session = sock, session
        threading.Thread(target=self._read, args=(sock, session, leftover),
                         daemon=True).start()

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()

    def send(self, frames: list[bytes]) -> None:
        data = b"".join(frames)
        with self._lock:
            self.sent.extend(frames)
            self.total += len(frames)
            self._send_locked(data)

    def _send_locked(self, data: bytes) -> None:
        for attempt in range(_RECONNECT_ATTEMPTS):
            sock, session = self._sock, self._session
            assert sock is not None
            assert session is not None
            try:
                sock.sendall(session.seal(data))
                return
            except OSError:
                # The node closed the link; what it lost is repaired through digests
                # on the new one (resending a whole batch only makes duplicates).
                sock.close()
                time.sleep(0.05 * (attempt + 1))
                with contextlib.suppress(OSError):
                    self.open()
                    self.reconnects += 1
        raise ConnectionError(f"node at {self._address} unreachable")

    def _read(self, sock: socket.socket, session: Session, leftover: bytes) -> None:
        buffer = wire.FrameBuffer(self._max_frame)
        chunk = leftover
        try:
            while True:
                self.received += len(chunk)
                for raw in buffer.feed(session.open(chunk)):
                    frame = wire.decode_frame(raw)
                    if frame.kind == wire.FrameKind.DIGEST:
                        self._answer(frame)
                chunk = sock.recv(1 << 16)
                if not chunk:
                    return
        except (OSError, DecodeError):
            return

    def _answer(self, frame: wire.Frame) -> None:
        intervals = wire.decode_digest(frame).streams.get(self._stream)
        if intervals is None and frame.flags & wire.FLAG_PARTIAL:
            return  # a worker that does not own our stream spoke for its own only
        with self._lock:
            first = self.total - len(self.sent)
            numbers = itertools.islice(_uncovered(intervals or (), self.total, start=first),
                                       _REPAIR_BATCH)
            missing = [self.sent[number - first] for number in numbers]
            if missing:
                self.repairs += len(missing)
                with contextlib.suppress(ConnectionError):
                    self._send_locked(b"".join(missing))


def _uncovered(intervals: Sequence[tuple[int, int]], sent: int, *,
               start: int = 0) -> Iterator[int]:
    """Message numbers (sequence - 1) from ``start`` to below ``sent`` outside the sorted
    closed sequence ``intervals`` of a digest: a walk over the holes, not over every
    message sent."""
    sequence = start + 1
    for lo, hi in intervals:
        yield from range(sequence - 1, min(lo - 1, sent))
        sequence = max(sequence, hi + 1)
        if sequence > sent:
            return
    yield from range(sequence - 1, sent)


def _say(kind: str, body: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps({kind: body}).decode() + "\n")
    sys.stdout.flush()


def publish(spec: dict[str, Any]) -> None:
    index, count, rate, size = spec["index"], spec["count"], spec["rate"], spec["size"]
    batch_size = spec["batch_size"]
    origin = f"bench-pub-{index}-{spec['run']}"
    priorities = spec.get("priorities") or _priorities(spec["priority_mix"], count,
                                                       spec["seed"] + index)
    identity = Identity.generate()
    connection = _Connection(spec["address"], identity, origin)
    connection.open()
    try:
        _say("ready", {"origin": origin})
        go = sys.stdin.readline().split()
        if not go or go[0] != "go":
            return
        start_ns = int(go[1]) + int(spec.get("start_delay", 0.0) * 1e9)
        interval_ns = int(1e9 / rate) if rate > 0 else 0
        while time.monotonic_ns() < start_ns:
            time.sleep(min(0.01, (start_ns - time.monotonic_ns()) / 1e9))
        batch: list[bytes] = []
        batch_bytes = 0
        behind_ns = 0
        number = 0
        # Batch signing (batch_size > 1): messages wait, unsigned, until batch_size are
        # due or the first has waited batch_window, as a node's BatchSigner holds them;
        # critical ones (HIGH and up) are signed alone at once, as there.
        unsigned: list[Message] = []
        window_ns = int(spec["batch_window"] * 1e9)
        sign_by_ns = 0

        def sign_waiting() -> None:
            nonlocal batch_bytes
            for signed in sign_batch(unsigned, identity):
                batch.append(wire.encode_message_frame(signed.to_envelope(), hops=0))
                batch_bytes += len(batch[-1])
            unsigned.clear()

        while number < count:
            due_ns = start_ns + number * interval_ns if interval_ns else time.monotonic_ns()
            now_ns = time.monotonic_ns()
            if unsigned and (sign_by_ns <= now_ns or due_ns > sign_by_ns):
                # The batch's window ends before the next message is due: sign it then.
                if sign_by_ns > now_ns:
                    time.sleep((sign_by_ns - now_ns) / 1e9)
                sign_waiting()
                continue
            if due_ns > now_ns:
                if batch:  # nothing more is due yet: send what is
                    connection.send(batch)
                    batch, batch_bytes = [], 0
                    continue
                time.sleep((due_ns - now_ns) / 1e9)
            behind_ns = max(behind_ns, now_ns - due_ns)
            message = Message(Binary(payload.encode(index, number, due_ns, size)), origin,
                              sequence=number + 1).with_priority(priorities[number])
            number += 1
            if batch_size > 1 and priorities[number - 1] < HIGH:
                if not unsigned:
                    sign_by_ns = max(due_ns, now_ns) + window_ns
                unsigned.append(message)
                if len(unsigned) >= batch_size:
                    sign_waiting()
            else:
                envelope = message.sign_with_ed25519(identity).to_envelope()
                batch.append(wire.encode_message_frame(envelope, hops=0))
                batch_bytes += len(batch[-1])
            if batch_bytes >= _BATCH_BYTES:
                connection.send(batch)
                batch, batch_bytes = [], 0
        if unsigned:
            sign_waiting()
        if batch:
            connection.send(batch)
        _say("done", {"sent": number, "start_ns": start_ns,
                      "finished_ns": time.monotonic_ns(), "max_behind_ms": behind_ns / 1e6,
                      "bytes_in": connection.received, "repairs": connection.repairs,
                      "reconnects": connection.reconnects})
        sys.stdin.readline()  # keep answering digests until the runner is done
        _say("closed", {"bytes_in": connection.received, "repairs": connection.repairs,
                        "reconnects": connection.reconnects})
    finally:
        connection.close()


def main() -> int:
    publish(orjson.loads(sys.argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
