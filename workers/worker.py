"""A worker process: one uvloop event loop hosting one shard of a node's Endpoint.

It owns the TCP connections the supervisor hands it, verifies and delivers the messages
of the streams it owns, and exchanges routed items with the other workers and the
supervisor through shared-memory rings. It never creates or unlinks a segment.

Theory of operation
-------------------
State: one :class:`~somasync.core.endpoint.Endpoint` shard (its links, the streams it
owns, their store and tree), the adopted connections in ``links``, one ring reader per
process that writes to it and one :class:`~.records.BatchWriter` per process it writes
to, its doorbell, and the control socket.

Hand-offs. In: ``Adopt`` (a connection and the bytes the supervisor already read),
``Rewire``, ``Disconnect``, ``StatsRequest`` and ``Stop`` on the control socket; on the
rings, items routed by other workers (a message of a stream this worker owns, a digest,
tree entries, a frame to send on a link it owns, a close) and the application's
broadcasts from the supervisor. Out: frames on its own links, routed items to the
owners of what it cannot handle itself, deliveries to the supervisor, and connection
events on the control socket. Everything runs in :meth:`Worker.pump` after each input,
so one input's outputs leave in batches. A ring that is full keeps its items pending
(bounded; past the bound they are dropped and counted) and asks its consumer, through the
ring's room-wanted flag, to ring this worker's doorbell once it has read: no process
polls a ring.

Crashes. A corrupt record in a ring (its writer died mid-write, or a bug scribbled
over it) raises :class:`~.ring.RingCorrupted`: this worker counts it, tells the
supervisor (``CorruptRing``, which restarts the producer, or this worker when the
supervisor wrote the ring) and reads that ring no more until ``Rewire`` brings a fresh
one; :meth:`~somasync.core.endpoint.Endpoint.drop_worker_links` forgets the restarted
worker's links. A control message that does not decode, or one out of
place, makes this worker exit: the supervisor restarts it rather than letting it guess.
End-of-file on the control socket means the supervisor is gone: the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import cast

from somasync.aio.fair import SlicedReader
from somasync.aio.local import write_and_close
from somasync.aio.timing import DeadlineTimer
from somasync.config import GossipConfig, SecurityConfig
from somasync.core import wire
from somasync.core.crypto import Identity
from somasync.core.endpoint import Endpoint
from somasync.core.events import DirectFailed
from somasync.core.handshake import Session
from somasync.core.shard import Shard
from somasync.core.sizing import Sizing
from somasync.core.trust import Trust
from somasync.core.wire import StreamKey
from somasync.errors import DecodeError

from . import control, shm
from .doorbell import Doorbell, Ringer
from .protocol import (
    Adopt,
    Bind,
    CorruptRing,
    Disconnect,
    Ready,
    Retune,
    Revoke,
    Rewire,
    SendDirect,
    StatsReport,
    StatsRequest,
    Stop,
)
from .records import (
    BatchWriter,
    SupervisorKind,
    decode_batch,
    decode_envelope_item,
    encode_delivery,
    encode_item,
)
from .ring import RingCorrupted, RingReader, RingWriter

_log = logging.getLogger("somasync.workers")

__all__ = ["EXIT_PROTOCOL_ERROR", "SUPERVISOR", "WorkerSpec", "worker_main"]

SUPERVISOR = -1
"""Index that names the supervisor in ring and doorbell maps."""

EXIT_PROTOCOL_ERROR = 70
"""A worker's exit status after a control message it could not trust, or one it could
not send (EX_SOFTWARE)."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, pickled into the new process."""

    index: int
    count: int
    seed: bytes
    node_id: str
    gossip: GossipConfig
    security: SecurityConfig
    read_slice: int
    handshake_timeout: float
    frame_timeout: float
    listen_address: str
    doorbells: dict[int, str]
    rings_in: dict[int, str]
    rings_out: dict[int, str]
    pin_cpu: int | None = None
    delivered: dict[StreamKey, list[tuple[int, int]]] = field(default_factory=dict)
    """Sequence numbers of this worker's streams the node already delivered (its
    predecessor's work, as the supervisor recorded it): never delivered twice."""
    bindings: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    """What the node's trust policy admitted so far (name, key, certificate)."""
    revocations: list[tuple[bytes, bytes]] = field(default_factory=list)
    """Revoked keys and their notices."""


def worker_main(spec: WorkerSpec, control_socket: socket.socket) -> None:
    """Process entry point (run by the supervisor through a forkserver context)."""
    # Ctrl-C reaches the whole process group; the supervisor decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if spec.pin_cpu is not None:
        import psutil

        with contextlib.suppress(psutil.Error, AttributeError):
            psutil.Process().cpu_affinity([spec.pin_cpu])
    import uvloop

    worker = Worker(spec, control_socket)
    uvloop.run(worker.run())
    if worker.exit_code:
        sys.exit(worker.exit_code)


class _WorkerLink(asyncio.Protocol):
    def __init__(self, worker: Worker, link: int) -> None:
        self.worker = worker
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.close_reason = "closed"
        self.early: list[bytes] | None = []
        """Bytes that arrived before the endpoint opened the link (records must be
        opened in order, after the ones the supervisor read); None once it did."""
        self.reader = SlicedReader(worker.loop, self.feed, slice_size=worker.spec.read_slice)
        self.paused = False  # the transport asked us to stop writing (a slow peer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.reader.transport = self.transport

    def data_received(self, data: bytes) -> None:
        if self.early is not None:
            self.early.append(data)
            return
        self.reader.data_received(data)

    def feed(self, data: bytes) -> None:
        worker = self.worker
        if self.link not in worker.links or worker.stopping:
            return  # a slice scheduled before the worker began to stop
        worker.endpoint.receive_bytes(self.link, data, now=worker.loop.time())
        worker.pump()

    def pause_writing(self) -> None:
        self.paused = True
        self.worker.endpoint.set_link_paused(self.link, True)

    def resume_writing(self) -> None:
        self.paused = False
        self.worker.endpoint.set_link_paused(self.link, False)
        self.worker.pump()

    def connection_lost(self, exc: Exception | None) -> None:
        worker = self.worker
        self.reader.discard()
        if worker.links.pop(self.link, None) is None:
            return
        worker.endpoint.close_link(self.link, now=worker.loop.time(), reason=self.close_reason)
        worker.pump()


class Worker:
    def __init__(self, spec: WorkerSpec, control_socket: socket.socket) -> None:
        self.spec = spec
        self.control = control_socket
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.endpoint: Endpoint = None  # type: ignore[assignment]
        self.links: dict[int, _WorkerLink] = {}
        self._link_ids = itertools.count()
        self._segments: dict[str, shm.Segment] = {}
        self._readers: dict[int, RingReader] = {}
        self._writers: dict[int, BatchWriter] = {}
        self._ringer = Ringer()
        self._timer: DeadlineTimer = None  # type: ignore[assignment]
        self._stopped: asyncio.Future[None] | None = None
        self.exit_code = 0
        """The process's exit status: EXIT_PROTOCOL_ERROR after a control message it
        could not trust (the supervisor logs it and restarts the worker)."""
        self._doorbell: Doorbell = None  # type: ignore[assignment]
        self._cpu_started = time.process_time()
        self._ring_corrupted = 0
        self._drain_scheduled = False  # a call to _drain_later is pending

    async def run(self) -> None:
        spec = self.spec
        self.loop = loop = asyncio.get_running_loop()
        self._timer = DeadlineTimer(loop, self._on_timer)
        self._stopped = loop.create_future()
        for source, name in spec.rings_in.items():
            self._readers[source] = RingReader(self._attach(name))
        for target, name in spec.rings_out.items():
            self._writers[target] = BatchWriter(RingWriter(self._attach(name)))
        trust = Trust.from_config(spec.security)
        for name, key, credential in spec.bindings:
            trust.learn(name, key, credential, wall=time.time())
        for key, notice in spec.revocations:
            trust.revoke(key, notice)
        trust.take_learned()  # the supervisor knows these; nothing to tell anyone
        self.endpoint = Endpoint(
            spec.gossip, Identity(spec.seed), spec.node_id,
            rng=random.Random(os.urandom(16)), now=loop.time(),
            wall_offset=time.time() - loop.time(), listen_address=spec.listen_address,
            handshake_timeout=spec.handshake_timeout, frame_timeout=spec.frame_timeout,
            shard=Shard(spec.index, spec.count),
            credential=spec.security.certificate, trust=trust, timer=time.perf_counter,
        )
        self.endpoint.restore_delivered(spec.delivered, now=loop.time())
        self._doorbell = doorbell = Doorbell(spec.doorbells[spec.index])
        loop.add_reader(doorbell.fileno(), self._on_bell, doorbell)
        self.control.setblocking(False)
        loop.add_reader(self.control.fileno(), self._on_control)
        control.send(self.control, Ready(os.getpid()))
        self._on_bell(doorbell)
        try:
            await self._stopped
        finally:
            loop.remove_reader(doorbell.fileno())
            loop.remove_reader(self.control.fileno())
            for link in list(self.links.values()):
                link.reader.discard()
                if link.transport is not None:
                    link.transport.abort()
            doorbell.close()
            self._ringer.close()
            self._readers.clear()
            self._writers.clear()
            for segment in self._segments.values():
                with contextlib.suppress(BufferError):
                    segment.close()

    def _attach(self, name: str) -> memoryview:
        segment = shm.attach(name)
        self._segments[name] = segment
        buffer = segment.buf
        assert buffer is not None
        return buffer

    # --- control channel ---------------------------------------------------------------

    def _on_control(self) -> None:
        messages = control.receive(self.control)
        if messages is None:  # the supervisor is gone: nothing left to serve
            self._stop()
            return
        for message, fds in messages:
            match message:
                case Adopt() if len(fds) == 1:
                    self._adopt(message, fds[0])
                    continue
                case StatsRequest():
                    control.send(self.control, self._stats())
                case Rewire():
                    self._rewire(message)
                case Disconnect(public_key=key, reason=reason):
                    if self.endpoint.disconnect_peer(key, reason):
                        self.pump()
                case Bind(name=name, public_key=key, credential=credential):
                    trust = self.endpoint.trust
                    if name:
                        trust.learn(name, key, credential, wall=time.time())
                    else:
                        trust.release(key)
                    trust.take_learned()
                    trust.take_released()
                case Revoke(public_key=key, notice=notice):
                    self.endpoint.revoke(key, notice)
                    self.pump()
                case Retune():
                    self.endpoint.retune(Sizing(
                        estimate=message.estimate, degree=message.degree,
                        fanout=message.fanout, ihave_fanout=message.ihave_fanout,
                        anti_entropy_interval=message.anti_entropy_interval))
                case SendDirect():
                    self._send_direct(message)
                case Stop():
                    self._stop()
                case _:
                    # Garbage from the supervisor, or a message out of place: this worker
                    # can no longer trust its state. Exit; the supervisor restarts it.
                    print(f"somasync worker {self.spec.index}: bad control message "
                          f"{message!r}; exiting", file=sys.stderr)
                    self.exit_code = EXIT_PROTOCOL_ERROR
                    self._stop()
            for fd in fds:
                os.close(fd)

    def _send_direct(self, message: SendDirect) -> None:
        via = message.via
        try:
            envelope = wire.decode_envelope(message.signed[wire.SIGNATURE_SIZE:],
                                            message.signed[: wire.SIGNATURE_SIZE])
            self.endpoint.send_direct(
                envelope, message.target, message.node_id, now=self.loop.time(),
                timeout=message.timeout,
                via=[via[i : i + wire.KEY_SIZE] for i in range(0, len(via), wire.KEY_SIZE)])
        except (DecodeError, ValueError) as exc:
            # The facade checked the message: this is a bug, told to the one waiting.
            control.send(self.control, DirectFailed(
                wire.message_id(message.signed[wire.SIGNATURE_SIZE:]), message.node_id,
                message.target, f"refused by the worker: {exc}"))
        self.pump()

    @property
    def stopping(self) -> bool:
        """True once the worker began to stop (its rings are going away)."""
        return self._stopped is not None and self._stopped.done()

    def _stop(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            self.pump()
            self._stopped.set_result(None)

    def _adopt(self, message: Adopt, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        link = next(self._link_ids) * self.spec.count + self.spec.index
        protocol = _WorkerLink(self, link)

        try:
            session = Session.restore(message.session)
        except DecodeError:
            sock.close()  # our own supervisor's bytes: unreachable unless memory is corrupt
            return

        async def adopt() -> None:
            try:
                await self.loop.connect_accepted_socket(lambda: protocol, sock)
            except OSError:
                sock.close()
                return
            self.links[link] = protocol
            now = self.loop.time()
            self.endpoint.open_link(link, outbound=message.outbound, address=message.address,
                                    now=now, session=session)
            early, protocol.early = protocol.early or [], None
            if message.initial:
                self.endpoint.receive_bytes(link, message.initial, now=now)
            for data in early:
                protocol.reader.data_received(data)
            self.pump()

        self.loop.create_task(adopt())

    def _rewire(self, message: Rewire) -> None:
        """Worker ``peer`` was restarted with fresh rings: switch to them."""
        peer = message.peer
        for old in (self.spec.rings_in.get(peer), self.spec.rings_out.get(peer)):
            segment = self._segments.pop(old, None) if old else None
            if segment is not None:
                with contextlib.suppress(BufferError):
                    segment.close()
        self.spec.rings_in[peer] = message.ring_in
        self.spec.rings_out[peer] = message.ring_out
        self._readers[peer] = RingReader(self._attach(message.ring_in))
        self._writers[peer] = BatchWriter(RingWriter(self._attach(message.ring_out)))
        self.endpoint.drop_worker_links(peer)
        # The new worker may have written (its links, frames) before we attached, when no
        # one was asleep on the ring to be woken: read now.
        self._on_bell(self._doorbell)

    def _stats(self) -> StatsReport:
        return StatsReport(
            pid=os.getpid(), core=self.endpoint.statistics(),
            ring_in_used={k: r.used for k, r in self._readers.items()},
            ring_out_pending={k: w.pending for k, w in self._writers.items()},
            ring_dropped=sum(w.dropped for w in self._writers.values()),
            cpu_seconds=time.process_time() - self._cpu_started,
            ring_corrupted=self._ring_corrupted, send_backlog=self._send_backlog())

    def _send_backlog(self) -> int:
        # As the single-process runtime measures it (LocalRuntime.send_backlog).
        endpoint = self.endpoint
        return max((endpoint.queued_bytes(link) + p.transport.get_write_buffer_size()
                    for link, p in self.links.items()
                    if p.transport is not None and not p.paused), default=0)

    # --- rings ---------------------------------------------------------------------------

    def _on_bell(self, doorbell: Doorbell) -> None:
        doorbell.clear()
        self._drain_safely()

    def _drain_later(self) -> None:
        self._drain_scheduled = False
        self._drain_safely()

    def _drain_safely(self) -> None:
        try:
            self._drain_rings()
        except Exception:
            # No input may leave this worker's rings flagged awake with nobody reading
            # them (every stream it owns would stop): say what happened, mark them
            # asleep so the next writer rings, and read on at the next bell.
            _log.exception("worker %d: handling ring records failed", self.spec.index)
            for reader in self._readers.values():
                reader.set_sleeping(True)
            self._ringer.ring(self.spec.doorbells[self.spec.index])

    def _drain_rings(self) -> None:
        endpoint = self.endpoint
        while True:
            for reader in self._readers.values():
                reader.set_sleeping(False)
            got_any = False
            for source, reader in list(self._readers.items()):
                if reader.corrupted:
                    continue
                try:
                    records = reader.read()
                except RingCorrupted as exc:
                    # Its producer crashed mid-write or cannot be trusted: the supervisor
                    # restarts it and rewires this ring; anti-entropy repairs what was lost.
                    self._ring_corrupted += 1
                    if not control.send(self.control,
                                        CorruptRing(self.spec.rings_in[source], str(exc))):
                        # Unheard, the ring would stay dead: exit instead; this worker's
                        # restart replaces every ring it reads.
                        print(f"somasync worker {self.spec.index}: cannot report a "
                              f"corrupt ring ({exc}); exiting", file=sys.stderr)
                        self.exit_code = EXIT_PROTOCOL_ERROR
                        self._stop()
                    continue
                now = self.loop.time()
                for record in records:
                    got_any = True
                    try:
                        for item in decode_batch(record):
                            if item.kind == SupervisorKind.BROADCAST:
                                endpoint.broadcast(decode_envelope_item(item.data), now=now)
                            else:
                                endpoint.receive_routed(item, now=now)
                    except DecodeError:
                        continue
                if reader.room_wanted():
                    self._ringer.ring(self.spec.doorbells[source])
            if endpoint.has_backlog:
                endpoint.process_backlog(now=self.loop.time())
            self.pump()
            if endpoint.has_backlog:
                # More routed messages to verify: let the loop read this worker's own
                # sockets first, then come back (the rings stay flagged awake, since
                # they are read again then).
                if not self._drain_scheduled:
                    self._drain_scheduled = True
                    self.loop.call_soon(self._drain_later)
                return
            for reader in self._readers.values():
                reader.set_sleeping(True)
            # Re-check after announcing sleep: a record published in between is ours now.
            # What a corrupt ring holds is nobody's: waiting for it would spin forever.
            if not got_any and not any(r.used for r in self._readers.values()
                                       if not r.corrupted):
                return

    # --- the pump ----------------------------------------------------------------------

    def pump(self) -> None:
        endpoint = self.endpoint
        write_and_close(endpoint, self.links)
        writers = self._writers
        for index, items in endpoint.take_routed().items():
            writer = writers.get(index)
            if writer is not None:
                for item in items:
                    writer.add(encode_item(item.kind, item.link, item.priority, item.data))
        deliveries = endpoint.take_deliveries()
        if deliveries:
            to_supervisor = writers[SUPERVISOR]
            for delivery in deliveries:
                to_supervisor.add(encode_item(
                    SupervisorKind.DELIVER_DIRECT if delivery.direct else SupervisorKind.DELIVER,
                    0, delivery.envelope.priority,
                    encode_delivery(delivery.from_peer, delivery.envelope)))
        for event in endpoint.take_events():
            # Every event the endpoint makes is a control message; a new kind that is
            # not raises ControlError here, loudly, instead of vanishing.
            control.send(self.control, event)
        self._flush()
        self._timer.arm(endpoint.get_timer())

    def _flush(self) -> None:
        # A ring that stays full asks its consumer to ring our doorbell once it has read;
        # the bell runs pump(), which comes back here.
        spec = self.spec
        for index, writer in self._writers.items():
            if writer.flush():
                self._ringer.ring(spec.doorbells[index])

    def _on_timer(self) -> None:
        self.endpoint.handle_timer(now=self.loop.time())
        self.pump()
