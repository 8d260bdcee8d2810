"""The sharded runtime's supervisor: the user's process, with ``n`` workers behind it.

:class:`ShardedRuntime` is the runtime the :class:`~somasync.aio.node.SynapseNode`
facade drives when ``workers`` > 0; the facade keeps the control part (membership,
overlay, which addresses to dial), and this runtime executes its dials and closes. It
listens and dials, runs each new connection's handshake (which proves the peer's key)
to find the owning worker, and hands the socket over with ``SCM_RIGHTS``, together with
the session's keys and counters: every connection to one peer lands in the same worker,
so per-peer state is per identity. It creates (and
alone unlinks) the shared-memory rings: one per ordered pair of processes that talk.
Deliveries arrive through rings and are handed to the application exactly once, even
across worker restarts (the supervisor records, per stream, the sequence numbers it
delivered, and a restarted worker starts from that record). A worker that
dies is restarted with fresh rings; its peers reconnect and anti-entropy refills it.

Theory of operation
-------------------
State. ``_workers`` holds each worker's process, the supervisor's end of its control
socket (:mod:`.protocol` messages, descriptors beside them) and its pending requests.
``_segments[(source, target)]`` is every ring, for each ordered pair of processes that
talk (supervisor <-> each worker, worker <-> worker); only this process creates and
unlinks them. ``_readers`` are the rings from workers (deliveries), ``_writers`` the
rings to them (the application's broadcasts). ``_connected`` is the peers as the
workers reported them (``PeerConnected``/``PeerDisconnected`` on the control socket),
with the worker that owns each. Every process has a doorbell (a datagram socket); a
writer rings it only when the reader said it is going to sleep, so nobody polls a ring.

Hand-offs, each in one direction:

* A connection, accepted or dialled here (a dial the control part asked for): the
  supervisor runs the handshake (:mod:`somasync.core.handshake`) under
  ``handshake_timeout``, picks the owner from the proven key
  (:func:`~somasync.core.shard.peer_owner`), sends it ``Adopt`` with the descriptor, the
  exported session (keys, counters, the peer) and the record bytes already read, and
  closes its own copy. A connection whose handshake fails is closed here and counted
  by reason (``handshake_failures`` in the stats). From then on only the owner touches
  the socket. A dial's outcome (the peer's key, or a failure) goes to the control part.
* Link events: a worker's ``PeerConnected``/``PeerDisconnected`` update ``_connected``
  and go to the facade, which tells the control part (``link_up``/``link_down``).
* An application broadcast goes to the ring of the worker that owns its stream; when
  that ring is full the call waits for room instead of dropping the message.
* A delivery comes back on the owner's ring, de-duplicated and verified there; the
  supervisor records its stream and sequence number in ``_delivered`` (intervals per
  stream, not ids) and hands it to the facade, which puts it on the application's
  streams. A worker (re)started later gets the intervals of the streams it owns in its
  spec, so what anti-entropy refills is never delivered twice.
* Statistics: ``StatsRequest`` to every worker, ``StatsReport`` back in order, summed.
* Corruption: a worker that finds a corrupt record in a ring it reads sends
  ``CorruptRing`` with the ring's name, and reads that ring no more.

Crashes. A worker that exits (its process sentinel becomes readable) or that sends a
control message that does not decode (it is killed first) is replaced: pending stats
requests resolve empty, fresh rings to and from its index replace the old ones (which
may hold a torn record), every other worker gets ``Rewire`` and forgets the links the
dead one owned, its peers are reported ``PeerDisconnected("worker_died")``, and a new
process starts. Peers redial (or the control part redials them); what was in flight is refilled by
anti-entropy; the successor starts from ``_delivered``, so the application sees
nothing twice. The dead worker's ring is drained first (up to a torn record), so
deliveries it completed before dying still reach the application.

A corrupt record in a ring whose producer is alive (a bug, a stray write) means that
producer can no longer be trusted: whoever reads it (this process, or a worker through
``CorruptRing``) sets the ring aside (reading on would spin on it forever), the
supervisor counts it (``ring_corrupted``), logs it once and kills the producer, and the
exit above rebuilds its rings. The supervisor cannot restart itself: a ring it wrote
costs the worker reading it instead, whose restart replaces every ring to it. A report
naming a ring replaced meanwhile (its producer died, which is what tore the record) is
counted and nothing more. If the
supervisor itself dies, every worker reads end-of-file on its control socket and stops;
only a SIGKILL of the whole process group leaves segments behind
(``tools/shm_gc.py`` finds and removes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from somasync.aio.fair import reader_slice
from somasync.aio.once import LogOnce
from somasync.aio.runtime import RuntimeHost, RuntimeStatistics, WorkerStats
from somasync.aio.timing import TaskSet
from somasync.config import NodeConfig, parse_address
from somasync.core import wire
from somasync.core.antientropy import StreamTable
from somasync.core.broadcast import TreeStatistics
from somasync.core.crypto import Identity
from somasync.core.endpoint import EndpointStatistics
from somasync.core.events import (
    DirectAcked,
    DirectFailed,
    FrameRejected,
    PeerConnected,
    PeerDisconnected,
    PeerRevoked,
    RouteDiscovered,
)
from somasync.core.handshake import Handshake
from somasync.core.shard import direct_owner, peer_owner, stream_owner
from somasync.core.sizing import Sizing
from somasync.core.wire import StreamKey
from somasync.errors import DecodeError, NodeStateError, TransportError
from somasync.message import Message

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
    decode_deliveries,
    encode_envelope_item,
    encode_item,
)
from .ring import RingCorrupted, RingReader, RingWriter, ring_size
from .worker import SUPERVISOR, WorkerSpec, worker_main

__all__ = ["ShardedRuntime"]

log = logging.getLogger("somasync.workers")

STOP_GRACE = 5.0  # seconds a worker gets to exit after "stop" before it is killed
STATS_TIMEOUT = 2.0
WATCH_INTERVAL = 0.5  # seconds between two checks that every worker answers
_NOT_HANDSHAKE_FAILURES = frozenset({"connection_limit", "host_limit", "evicted"})
EVICTION_TRIALS = 4  # connections accepted over the limit at once (see _accept_loop)
ADOPTION_GRACE = 2.0  # seconds a handed-over peer may take to be reported connected
HUNG_AFTER = 1.0  # seconds a worker may leave a check unanswered while using no CPU


@dataclass(eq=False)
class _Worker:
    index: int
    process: Any
    control: socket.socket
    ready: asyncio.Future[int]
    exited: asyncio.Future[None]
    stats_waiters: list[asyncio.Future[StatsReport | None]] = field(default_factory=list)
    """Pending StatsRequests, oldest first (a worker answers in order); None: it died."""


class ShardedRuntime:
    """A node's sockets and data part spread over ``config.workers`` worker processes
    (see the module docstring). The :class:`~somasync.aio.node.SynapseNode` facade
    drives it when ``workers`` > 0; build one with
    ``SynapseNodeBuilder().with_workers(n)``.
    """

    def __init__(self, config: NodeConfig, identity: Identity, host: RuntimeHost) -> None:
        if config.workers < 1:
            raise ValueError("a sharded node needs at least one worker")
        self.config = config
        self.identity = identity
        self._host = host
        self._count = config.workers
        self._tag = secrets.token_hex(3)
        self._context = multiprocessing.get_context("forkserver")
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._running = False
        self._listen_address = ""
        self._workers: dict[int, _Worker] = {}
        self._segments: dict[tuple[int, int], shm.Segment] = {}
        self._readers: dict[int, RingReader] = {}
        self._writers: dict[int, BatchWriter] = {}
        self._doorbell: Doorbell | None = None
        self._ringer: Ringer | None = None
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.hung_restarts = 0
        """Workers killed (then restarted) because they stopped answering while using no
        CPU: stopped, deadlocked, or blocked in a call that never returns."""
        self._dials = TaskSet()
        self._connected: dict[bytes, tuple[str, str, int]] = {}
        self._delivered = StreamTable(config.gossip.max_streams)
        self._connection_errors = 0  # sockets that failed during the handshake
        self._refused: dict[str, int] = {}  # connections refused here, by reason
        self._refusals = LogOnce(log)
        self._inbound_pending = 0  # accepted connections still in their handshake
        # Peers whose link this node accepted: key -> (their host, admitted at).
        self._inbound: dict[bytes, tuple[str, float]] = {}
        # Inbound peers handed to a worker, until it reports them connected:
        # key -> (host, handed over at, accepted over the limit)
        self._adopting: dict[bytes, tuple[str, float, bool]] = {}
        self._pending_hosts: dict[str, int] = {}  # host -> connections in their handshake
        self._sizing: Sizing | None = None  # adaptive fanout's latest, for new workers
        self._peer_scores: dict[str, float] = {}  # the workers' last reported, summed
        self._send_backlog = 0  # the fullest live link's queue, as the workers last reported
        self._probation = 0  # inbound connections accepted over the limit, in handshake
        self._handover_failures = 0
        self._room = asyncio.Event()  # set whenever a ring to a worker may have room
        self._restarts = 0
        self._ring_corrupted = 0  # corrupt rings found, here or by workers
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> int:
        self._loop = loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                           flags=socket.AI_PASSIVE)
            family, kind, proto, _, sockaddr = infos[0]
            listener = socket.socket(family, kind, proto)
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(sockaddr)
                listener.listen(512)
                listener.setblocking(False)
            except BaseException:
                listener.close()
                raise
        except OSError as exc:
            raise TransportError(f"cannot listen on {host}:{port}: {exc}") from exc
        self._listener = listener
        return int(listener.getsockname()[1])

    def close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def restore_delivered(self, streams: Mapping[StreamKey, Sequence[tuple[int, int]]]
                          ) -> None:
        # The record each worker's spec starts from, first start and restarts alike.
        now = time.monotonic()
        for stream, intervals in streams.items():
            self._delivered.restore(stream, intervals, now=now)

    async def start(self, listen_address: str) -> None:
        loop = self._loop
        self._stopping = False
        self._listen_address = listen_address
        # What a SIGKILL of a whole node left in /dev/shm goes now, not at reboot.
        for name in shm.remove_abandoned():
            log.warning("removed shared-memory segment %s, abandoned by a killed node", name)
        self._doorbell = Doorbell(self._doorbell_address(SUPERVISOR))
        self._ringer = Ringer()
        loop.add_reader(self._doorbell.fileno(), self._on_bell)
        try:
            processes = [SUPERVISOR, *range(self._count)]
            for source in processes:
                for target in processes:
                    if source != target:
                        self._new_ring(source, target)
            self._on_bell()  # marks our rings as sleeping, so workers ring when they write
            for index in range(self._count):
                self._spawn(index)
            await asyncio.wait_for(
                asyncio.gather(*(w.ready for w in self._workers.values())), 60.0)
        except BaseException:
            await self._shutdown()
            raise
        self._running = True
        self._accept_task = loop.create_task(self._accept_loop())
        self._watch_task = loop.create_task(self._watch())

    async def stop(self) -> None:
        self._running = False
        self._room.set()  # broadcasts waiting for room give up
        if self._accept_task is not None:
            self._accept_task.cancel()
            await asyncio.gather(self._accept_task, return_exceptions=True)
            self._accept_task = None
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
            self._watch_task = None
        await self._dials.cancel_all()
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop every worker, then close and unlink every segment (also on failed start)."""
        self._stopping = True
        loop = self._loop
        self.close_listener()
        workers = list(self._workers.values())
        for worker in workers:
            control.send(worker.control, Stop())
        if workers:
            await asyncio.wait([w.exited for w in workers], timeout=STOP_GRACE)
        for worker in workers:
            if not worker.exited.done():
                worker.process.kill()
        if workers:
            await asyncio.wait([w.exited for w in workers], timeout=STOP_GRACE)
        for worker in workers:
            if worker.ready.done() and not worker.ready.cancelled():
                worker.ready.exception()  # a failed start was reported to the caller already
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(worker.control.fileno())
            worker.control.close()
            worker.process.join(timeout=1.0)
        self._workers.clear()
        self._drain_rings()
        self._readers.clear()
        self._writers.clear()
        for segment in self._segments.values():
            self._release(segment)
        self._segments.clear()
        if self._doorbell is not None:
            loop.remove_reader(self._doorbell.fileno())
            self._doorbell.close()
            self._doorbell = None
        if self._ringer is not None:
            self._ringer.close()
            self._ringer = None
        connected, self._connected = self._connected, {}
        for key, (peer_id, address, _owner) in connected.items():
            self._host.report(PeerDisconnected(peer_id, address, "stopped", key))

    # --- rings and workers -----------------------------------------------------------

    def _doorbell_address(self, index: int) -> str:
        return f"{shm.PREFIX}{self._tag}-{_label(index)}"

    def _new_ring(self, source: int, target: int) -> shm.Segment:
        segment = shm.create(ring_size(self.config.ring_capacity),
                             f"{self._tag}-{_label(source)}{_label(target)}")
        old = self._segments.get((source, target))
        self._segments[(source, target)] = segment
        if old is not None:
            self._release(old)
        buffer = segment.buf
        assert buffer is not None
        if target == SUPERVISOR:
            self._readers[source] = RingReader(buffer)
        elif source == SUPERVISOR:
            previous = self._writers.get(target)
            writer = self._writers[target] = BatchWriter(RingWriter(buffer))
            if previous is not None:
                # Broadcasts still waiting for room in the dead worker's ring go to its
                # successor (what it had read but not handled is lost with it).
                for item in previous.take_pending():
                    writer.add(item)
        return segment

    @staticmethod
    def _release(segment: shm.Segment) -> None:
        with contextlib.suppress(BufferError):
            segment.close()
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()

    def _spawn(self, index: int) -> None:
        loop = self._loop
        others = [SUPERVISOR, *(i for i in range(self._count) if i != index)]
        spec = WorkerSpec(
            index=index, count=self._count, seed=bytes(self.identity.signing_key),
            node_id=self.config.node_id, gossip=self.config.gossip,
            security=self.config.security, read_slice=reader_slice(self.config),
            bindings=self._host.trust.bindings(),
            revocations=self._host.trust.revocations(),
            handshake_timeout=self.config.handshake_timeout,
            frame_timeout=self.config.frame_timeout,
            listen_address=self._listen_address,
            doorbells={i: self._doorbell_address(i) for i in [SUPERVISOR, *range(self._count)]},
            rings_in={i: self._segments[(i, index)].name for i in others},
            rings_out={i: self._segments[(index, i)].name for i in others},
            pin_cpu=(index % (psutil.cpu_count() or 1)) if self.config.pin_workers else None,
            delivered={stream: tracker.intervals()
                       for stream, tracker in self._delivered.items()
                       if stream_owner(stream[0], stream[1].encode(), self._count) == index},
        )
        parent_end, child_end = control.pair()
        process = self._context.Process(target=worker_main, args=(spec, child_end),
                                        name=f"somasync-worker-{index}", daemon=True)
        process.start()
        child_end.close()
        parent_end.setblocking(False)
        worker = _Worker(index, process, parent_end, loop.create_future(),
                         loop.create_future())
        self._workers[index] = worker
        loop.add_reader(parent_end.fileno(), self._on_control, worker)
        loop.add_reader(process.sentinel, self._on_worker_exit, worker)

    async def _watch(self) -> None:
        """Every worker must answer a stats request within HUNG_AFTER seconds, or at least
        use CPU meanwhile (a busy worker is slow, not hung); one that does neither is
        killed, and its exit restarts it like any crash."""
        loop = self._loop
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            checks = []
            for worker in list(self._workers.values()):
                if not worker.ready.done() or worker.exited.done():
                    continue
                waiter: asyncio.Future[StatsReport | None] = loop.create_future()
                worker.stats_waiters.append(waiter)
                control.send(worker.control, StatsRequest())
                checks.append((worker, waiter, _cpu_seconds(worker.process.pid)))
            if not checks:
                continue
            await asyncio.wait([waiter for _, waiter, _ in checks], timeout=HUNG_AFTER)
            self._note_scores([waiter.result() for _, waiter, _ in checks
                               if waiter.done() and not waiter.cancelled()])
            self._forget_unadopted(loop.time())
            for worker, waiter, cpu_before in checks:
                if waiter.done() or worker.exited.done():
                    continue
                cpu_after = _cpu_seconds(worker.process.pid)
                if cpu_after is not None and cpu_before is not None \
                        and cpu_after > cpu_before:
                    continue  # busy: it will answer
                log.warning("worker %d (pid %s) stopped making progress; killing it",
                            worker.index, worker.process.pid)
                self.hung_restarts += 1
                with contextlib.suppress(OSError):
                    worker.process.kill()

    def _on_worker_exit(self, worker: _Worker) -> None:
        loop = self._loop
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(worker.process.sentinel)
        if not worker.exited.done():
            worker.exited.set_result(None)
        if not worker.ready.done():
            worker.ready.set_exception(NodeStateError(
                f"worker {worker.index} exited during start (code {worker.process.exitcode})"))
        if self._stopping or self._workers.get(worker.index) is not worker:
            return
        log.warning("worker %d (pid %s) exited with code %s; restarting it", worker.index,
                    worker.process.pid, worker.process.exitcode)
        self._restart(worker)

    def _restart(self, dead: _Worker) -> None:
        """Replace a dead worker: fresh rings to and from it, the others rewired."""
        index = dead.index
        loop = self._loop
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(dead.control.fileno())
        dead.control.close()
        dead.process.join(timeout=0)
        for waiter in dead.stats_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._restarts += 1
        if index in self._readers:
            self._drain(index, self._readers[index])
        for other in [SUPERVISOR, *range(self._count)]:
            if other != index:
                self._new_ring(index, other)
                self._new_ring(other, index)
        for other, worker in self._workers.items():
            if other != index:
                control.send(worker.control, Rewire(
                    peer=index, ring_in=self._segments[(index, other)].name,
                    ring_out=self._segments[(other, index)].name))
        for key, (peer_id, address, owner) in list(self._connected.items()):
            if owner == index:
                del self._connected[key]
                self._forget_inbound(key)
                self._host.report(PeerDisconnected(peer_id, address, "worker_died", key))
        self._on_bell()  # arms the fresh ring from the new worker
        self._spawn(index)

    def _on_control(self, worker: _Worker) -> None:
        messages = control.receive(worker.control)
        if messages is None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(worker.control.fileno())
            return
        for message, fds in messages:
            for fd in fds:
                socket.close(fd)
            match message:
                case Ready(pid=pid) if not worker.ready.done():
                    worker.ready.set_result(pid)
                    self._send_sizing(worker)  # a replacement runs on them too
                case StatsReport() if worker.stats_waiters:
                    worker.stats_waiters.pop(0).set_result(message)
                case PeerConnected() | PeerDisconnected() | FrameRejected() | PeerRevoked():
                    self._on_worker_event(worker.index, message)
                case DirectAcked() | DirectFailed() | RouteDiscovered():
                    self._host.report(message)
                case CorruptRing(ring=name, detail=detail):
                    self._on_corrupt_report(worker, name, detail)
                case Ready() | StatsReport():
                    pass  # a late answer to a request that timed out
                case _:
                    # A worker that speaks garbage (or out of turn) is broken: kill it;
                    # the exit watcher restarts it with fresh rings (worker_restarts).
                    log.error("worker %d sent a control message it must not (%s); "
                              "killing it", worker.index,
                              message if isinstance(message, Exception)
                              else type(message).__name__)
                    with contextlib.suppress(OSError, ValueError):
                        worker.process.kill()

    def _on_worker_event(self, index: int,
                         event: PeerConnected | PeerDisconnected | FrameRejected
                         | PeerRevoked) -> None:
        if isinstance(event, PeerConnected):
            self._connected[event.public_key] = (event.peer_id, event.address, index)
            adopted = self._adopting.pop(event.public_key, None)
            if adopted is not None:
                self._on_adopted(event.public_key, *adopted)
        elif isinstance(event, PeerDisconnected):
            entry = self._connected.get(event.public_key)
            if entry is None or entry[2] != index:
                return  # a late report from a worker that no longer owns the peer
            del self._connected[event.public_key]
            self._forget_inbound(event.public_key)
        self._host.report(event)

    def _on_bell(self) -> None:
        assert self._doorbell is not None
        self._doorbell.clear()
        # The bell also rings when a worker freed room in a ring this process writes.
        for index, writer in self._writers.items():
            if writer.pending:
                self._flush(index)
        self._room.set()
        while True:
            got_any = False
            for reader in self._readers.values():
                reader.set_sleeping(False)
            for index, reader in list(self._readers.items()):
                if reader.corrupted:
                    continue
                try:
                    records = reader.read()
                except RingCorrupted as exc:
                    self._corrupt(index, SUPERVISOR, str(exc))
                    continue
                for record in records:
                    got_any = True
                    self._deliver(index, record)
                if reader.room_wanted() and self._ringer is not None:
                    self._ringer.ring(self._doorbell_address(index))
            for reader in self._readers.values():
                reader.set_sleeping(True)
            # What a corrupt ring holds is nobody's: waiting for it would spin forever.
            if not got_any and not any(r.used for r in self._readers.values()
                                       if not r.corrupted):
                return

    def _drain_rings(self) -> None:
        for index, reader in list(self._readers.items()):
            self._drain(index, reader)

    def _drain(self, index: int, reader: RingReader) -> None:
        """Deliver what the ring from worker ``index`` holds, up to a torn record (its
        writer died mid-write)."""
        try:
            while not reader.corrupted and (records := reader.read()):
                for record in records:
                    self._deliver(index, record)
        except RingCorrupted as exc:
            self._corrupt(index, SUPERVISOR, str(exc))

    def _corrupt(self, source: int, target: int, detail: str) -> None:
        """The ring from ``source`` to ``target`` holds a corrupt record: count it, say so
        once, and restart the worker that can no longer be trusted (the producer; the
        consumer where the producer is this process, which cannot be restarted)."""
        self._ring_corrupted += 1
        if self._stopping:
            log.warning("the ring from %s to %s holds a corrupt record (%s)",
                        _process_name(source), _process_name(target), detail)
            return
        distrusted = target if source == SUPERVISOR else source
        log.warning("the ring from %s to %s holds a corrupt record (%s); restarting "
                    "worker %d", _process_name(source), _process_name(target), detail,
                    distrusted)
        worker = self._workers.get(distrusted)
        if worker is not None and not worker.exited.done():
            # By its PID, a process this node started; its exit restarts it (_restart),
            # which replaces every ring to and from it.
            with contextlib.suppress(OSError, ValueError):
                worker.process.kill()

    def _on_corrupt_report(self, reporter: _Worker, ring: str, detail: str) -> None:
        for (source, target), segment in self._segments.items():
            if target == reporter.index and segment.name == ring:
                self._corrupt(source, target, detail)
                return
        # Replaced since: its producer died (which tore the record) and was restarted.
        self._ring_corrupted += 1
        log.warning("worker %d found a corrupt record (%s) in ring %s, replaced since",
                    reporter.index, detail, ring)

    def _deliver(self, source: int, record: bytes) -> None:
        """Hand the application what a record from worker ``source`` delivers, up to a
        torn item: what came before it is kept (the worker acknowledged its direct
        messages already: dropped here, they would be lost for good), the tear counted
        as a corrupt ring."""
        # The owning worker already de-duplicated and verified: this only records what
        # the application has (per stream, as intervals), for that worker's successor.
        record_delivered = self._delivered.add
        deliver = self._host.deliver
        now = self._loop.time()
        from_envelope = Message.from_envelope
        direct: list[tuple[str, wire.Envelope]] = []
        torn: DecodeError | None = None
        try:
            for from_peer, envelope in decode_deliveries(record, direct):
                record_delivered(envelope.stream, envelope.sequence, now=now)
                deliver(from_envelope(envelope), from_peer)
        except DecodeError as exc:
            torn = exc
        for from_peer, envelope in direct:
            # In no stream: nothing to record for a successor.
            try:
                deliver(from_envelope(envelope), from_peer, direct=True)
            except DecodeError as exc:
                torn = exc
        if torn is not None:
            self._corrupt(source, SUPERVISOR, f"a torn delivery: {torn.detail}")

    # --- connections -------------------------------------------------------------------

    async def _accept_loop(self) -> None:
        loop = self._loop
        while True:
            assert self._listener is not None
            sock, peer = await loop.sock_accept(self._listener)
            host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
            config = self.config
            if self._connections_from(host) >= config.max_connections_per_host:
                self._refuse(sock, "host_limit")
                continue
            probation = False
            if self._inbound_count() >= config.max_connections:
                # Outbound dials never count: inbound load cannot cut our own links.
                # Over the limit only on probation: a peer is evicted for the newcomer
                # once its handshake proves it, never for a socket that may not finish.
                if self._probation >= EVICTION_TRIALS or self._eviction_candidate() is None:
                    self._refuse(sock, "connection_limit")
                    continue
                probation = True
                self._probation += 1
            sock.setblocking(False)
            address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
            self._inbound_pending += 1
            self._pending_hosts[host] = self._pending_hosts.get(host, 0) + 1
            loop.create_task(self._accepted(sock, address, host, probation))

    async def _accepted(self, sock: socket.socket, address: str, host: str,
                        probation: bool) -> None:
        try:
            key = await self._hand_over(sock, address, dialled=None)
        finally:
            self._probation -= probation
            self._inbound_pending -= 1
            if self._pending_hosts[host] > 1:
                self._pending_hosts[host] -= 1
            else:
                del self._pending_hosts[host]
        if key is not None:
            self._adopting[key] = (host, self._loop.time(), probation)

    def _on_adopted(self, key: bytes, host: str, _since: float, probation: bool) -> None:
        """The worker admitted an inbound peer: its slot counts from now, and one
        accepted over the limit evicts a peer that never proved useful, if the node is
        still over it (a slot may have freed meanwhile), or goes itself."""
        self._inbound[key] = (host, self._loop.time())
        if probation and self._inbound_count() > self.config.max_connections:
            victim = self._eviction_candidate(sparing=key)
            if victim is not None:
                self._evict(victim)
            else:
                self._refused["connection_limit"] = \
                    self._refused.get("connection_limit", 0) + 1
                self._forget_inbound(key)
                self.close_peer(key, "connection_limit")

    def _inbound_count(self) -> int:
        return self._inbound_pending + len(self._adopting) + len(self._inbound)

    def _connections_from(self, host: str) -> int:
        return self._pending_hosts.get(host, 0) \
            + sum(1 for h, _, _ in self._adopting.values() if h == host) \
            + sum(1 for h, _ in self._inbound.values() if h == host)

    def _forget_unadopted(self, now: float) -> None:
        """Inbound peers handed to a worker that never reported them connected (it
        refused the session: a peer it disconnected for its score, the losing one of two
        links to the same peer) do not keep a slot."""
        for key, (_, since, _) in list(self._adopting.items()):
            if now - since > ADOPTION_GRACE:
                del self._adopting[key]

    def _forget_inbound(self, key: bytes) -> None:
        self._inbound.pop(key, None)

    def _eviction_candidate(self, sparing: bytes | None = None) -> bytes | None:
        """As :meth:`Endpoint.eviction_candidate <somasync.core.endpoint.Endpoint.
        eviction_candidate>`, from the scores the workers last reported (their stats,
        asked every WATCH_INTERVAL): the inbound peer with the lowest score if it is 0
        or less, the most recent among equals."""
        best: tuple[float, float, bytes] | None = None
        for key, (_, since) in self._inbound.items():
            entry = self._connected.get(key)
            if key == sparing or entry is None:
                continue
            score = self._peer_scores.get(entry[0], 0.0)
            if score <= 0 and (best is None or (score, -since) < best[:2]):
                best = (score, -since, key)
        return None if best is None else best[2]

    def _evict(self, key: bytes) -> None:
        self._refused["evicted"] = self._refused.get("evicted", 0) + 1
        self._forget_inbound(key)  # its slot is the newcomer's from now
        self.close_peer(key, "evicted")

    async def _hand_over(self, sock: socket.socket, address: str, *,
                         dialled: str | None) -> bytes | None:
        """Run the handshake, pick the owning worker, pass the socket and session on.

        Returns the peer's proven public key when the owner took the socket (None
        otherwise: the handshake failed, timed out, or no worker could take it).
        """
        try:
            return await self._handshake_and_adopt(sock, address, dialled=dialled)
        except BaseException:
            sock.close()  # cancelled (the node is stopping): the socket must not leak
            raise

    async def _handshake_and_adopt(self, sock: socket.socket, address: str, *,
                                   dialled: str | None) -> bytes | None:
        loop = self._loop
        handshake = Handshake(self.identity, self.config.node_id, self._listen_address,
                              dialer=dialled is not None,
                              credential=self.config.security.certificate,
                              plaintext=not self.config.security.encrypt_links)
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                # Both ends speak first, so two sharded nodes never wait on each other.
                await loop.sock_sendall(sock, handshake.initial_bytes())
                while handshake.session is None:
                    chunk = await loop.sock_recv(sock, 16384)
                    if not chunk:
                        sock.close()
                        return None
                    reply = handshake.receive(chunk)
                    if reply:
                        await loop.sock_sendall(sock, reply)
        except TimeoutError:
            self._refuse(sock, "handshake_timeout", address, "no handshake in time")
            return None
        except OSError:
            self._connection_errors += 1
            sock.close()
            return None
        except DecodeError as exc:
            self._refuse(sock, exc.reason, address, exc.detail)
            return None
        session = handshake.session
        key = session.peer.public_key
        peer = session.peer
        refused = None if key == self.identity.public_key else self._host.trust.admit(
            key, peer.node_id, peer.credential, wall=time.time())
        if refused is not None:
            # No worker ever sees it: no link, no PeerConnected, nothing sealed to it.
            self._refuse(sock, refused, address, f"peer {peer.node_id!r} refused: {refused}")
            return None
        worker = self._workers.get(peer_owner(key, self._count))
        handed = worker is not None and await control.send_soon(
            worker.control, Adopt(address=dialled or address, outbound=dialled is not None,
                                  initial=handshake.leftover, session=session.export()),
            [sock.fileno()])
        if not handed:
            self._handover_failures += 1
        sock.close()
        return key if handed else None

    def _refuse(self, sock: socket.socket, reason: str, address: str | None = None,
                detail: str = "") -> None:
        """Close a connection no worker gets, count it by reason, and report it as a
        ``FrameRejected`` (unless it was refused before anything was read from it; that
        one is logged here, once per host and reason)."""
        self._refused[reason] = self._refused.get(reason, 0) + 1
        if address is not None:
            self._host.report(FrameRejected(None, address, reason, detail, True))
        else:
            try:
                host = sock.getpeername()[0]
            except OSError:
                host = "?"
            self._refusals.warning((reason, host), "refused a connection from %s: %s",
                                   host, reason)
        sock.close()

    def dial(self, address: str) -> None:
        if self._running:
            self._dials.spawn(self._loop, self._connect(address))

    async def _connect(self, address: str) -> None:
        """One dial: connect, then hand the socket over (which reports the outcome)."""
        loop = self._loop
        try:
            host, port = parse_address(address, "peer address")
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, kind, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, sockaddr),
                                       self.config.connect_timeout)
            except BaseException:
                sock.close()
                raise
        except (OSError, TimeoutError, ValueError):
            self._host.control.dial_failed(address)
            return
        key = await self._hand_over(sock, address, dialled=address)
        if key is None:
            self._host.control.dial_failed(address)
        else:
            self._host.control.dial_succeeded(address, key)

    def learn(self, bindings: list[tuple[str, bytes, bytes]], released: list[bytes]) -> None:
        for worker in self._workers.values():
            for key in released:
                control.send(worker.control, Bind("", key, b""))  # no name: released
            for name, key, credential in bindings:
                control.send(worker.control, Bind(name, key, credential))

    def revoke(self, public_key: bytes, notice: bytes) -> None:
        for worker in self._workers.values():
            control.send(worker.control, Revoke(public_key, notice))

    def retune(self, sizing: Sizing) -> None:
        self._sizing = sizing
        for worker in self._workers.values():
            self._send_sizing(worker)

    def _send_sizing(self, worker: _Worker) -> None:
        sizing = self._sizing
        if sizing is not None:
            control.send(worker.control, Retune(
                sizing.estimate, sizing.degree, sizing.fanout, sizing.ihave_fanout,
                sizing.anti_entropy_interval))

    def send_backlog(self) -> int:
        pending = sum(writer.pending for writer in self._writers.values())
        return self._send_backlog + pending

    def close_peer(self, public_key: bytes, reason: str) -> None:
        entry = self._connected.get(public_key)
        worker = None if entry is None else self._workers.get(entry[2])
        if worker is not None:
            control.send(worker.control, Disconnect(public_key, reason))

    def score_at(self, address: str) -> float:
        for peer_id, peer_address, _ in self._connected.values():
            if peer_address == address:
                return self._peer_scores.get(peer_id, 0.0)
        return 0.0

    def connected_peers(self) -> dict[str, str]:
        return {peer_id: address for peer_id, address, _ in self._connected.values()}

    # --- application side --------------------------------------------------------------

    async def broadcast(self, message: Message) -> None:
        if not self._running:
            raise NodeStateError("the node is not running")
        origin = message.signer_public_key or wire.ZERO_KEY
        owner = stream_owner(origin, message.source.encode(), self._count)
        writer = self._writers[owner]
        assert self._ringer is not None
        writer.add(encode_item(SupervisorKind.BROADCAST, 0, message.priority,
                               encode_envelope_item(message.signature,
                                                    message.envelope_bytes)))
        self._flush(owner)
        # The owner is behind: wait for room rather than drop the user's message. The
        # owner rings this doorbell once it has read (the ring's room-wanted flag), and
        # a restarted owner's writer inherits what was pending.
        while self._running:
            writer = self._writers[owner]
            if not writer.pending:
                break
            self._room.clear()
            await self._room.wait()
            self._flush(owner)

    def send_direct(self, message: Message, target: bytes, node_id: str, timeout: float,
                    via: Sequence[bytes]) -> None:
        if not self._running:
            raise NodeStateError("the node is not running")
        assert message.signature is not None
        owner = direct_owner(self.identity.public_key, target, self._count)
        control.send(self._workers[owner].control, SendDirect(
            message.signature + message.envelope_bytes, target, b"".join(via), node_id,
            timeout))

    def _flush(self, index: int) -> None:
        writer = self._writers.get(index)
        if writer is not None and writer.flush() and self._ringer is not None:
            self._ringer.ring(self._doorbell_address(index))

    async def statistics(self) -> RuntimeStatistics:
        if not self._workers:
            raise NodeStateError("the node has not been started")
        loop = self._loop
        waiters = []
        for worker in self._workers.values():
            waiter: asyncio.Future[StatsReport | None] = loop.create_future()
            worker.stats_waiters.append(waiter)
            waiters.append((worker, waiter))
            control.send(worker.control, StatsRequest())
        done, _ = await asyncio.wait([w for _, w in waiters], timeout=STATS_TIMEOUT)
        per_worker: list[WorkerStats] = []
        cores: list[EndpointStatistics] = []
        backlogs: list[int] = []
        for worker, waiter in waiters:
            if waiter not in done:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    worker.stats_waiters.remove(waiter)
                continue
            report = waiter.result()
            if report is None:
                continue
            cores.append(report.core)
            backlogs.append(report.send_backlog)
            per_worker.append(_worker_stats(worker.index, report))
        dropped_here = sum(writer.dropped for writer in self._writers.values())
        core = _sum_core(cores, peers=len(self._connected))
        if len(cores) == len(waiters):
            self._peer_scores = dict(core.peer_scores)
        if backlogs:
            self._send_backlog = max(backlogs)
        rejected = dict(core.rejected)
        for reason, count in self._refused.items():
            rejected[reason] = rejected.get(reason, 0) + count
        return RuntimeStatistics(
            core=dataclasses.replace(core, rejected=rejected), workers=tuple(per_worker),
            worker_restarts=self._restarts,
            ring_dropped=dropped_here + sum(w.ring_dropped for w in per_worker),
            ring_corrupted=self._ring_corrupted,
            handshake_failures=(self._connection_errors + self._handover_failures
                                + sum(n for reason, n in self._refused.items()
                                      if reason not in _NOT_HANDSHAKE_FAILURES)))

    def _note_scores(self, reports: list[StatsReport | None]) -> None:
        """Keep the peer scores of a complete round of worker reports, and the send
        backlog of any round."""
        got = [report for report in reports if report is not None]
        if got and len(got) == len(self._workers):
            self._peer_scores = _sum_core([r.core for r in got],
                                          peers=len(self._connected)).peer_scores
        if got:
            self._send_backlog = max(report.send_backlog for report in got)

    @property
    def segment_tag(self) -> str:
        """The tag in the names of this node's shared-memory segments (``somasync-<tag>-*``),
        for monitoring and leak checks."""
        return self._tag

    def peer_workers(self) -> dict[str, int]:
        """Node id -> index of the worker owning the connection to that peer."""
        return {peer_id: owner for peer_id, _, owner in self._connected.values()}

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> process id (for monitoring, or for fault-injection tests)."""
        return {i: w.process.pid for i, w in self._workers.items()}


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, or None when it cannot be read."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def _label(index: int) -> str:
    return "S" if index == SUPERVISOR else str(index)


def _process_name(index: int) -> str:
    return "the supervisor" if index == SUPERVISOR else f"worker {index}"


def _worker_stats(index: int, report: StatsReport) -> WorkerStats:
    try:
        process = psutil.Process(report.pid)
        rss = process.memory_info().rss
        age = max(1e-6, time.time() - process.create_time())
    except psutil.Error:
        rss, age = 0, 1.0
    return WorkerStats(
        index=index, pid=report.pid, messages_verified=report.core.signatures_verified,
        messages_delivered=report.core.messages_delivered,
        ring_in_used=sum(report.ring_in_used.values()),
        ring_out_pending=sum(report.ring_out_pending.values()),
        cpu_percent=round(100.0 * report.cpu_seconds / age, 1), rss_bytes=rss,
        ring_dropped=report.ring_dropped, ring_corrupted=report.ring_corrupted,
    )


def _sum_core(cores: list[EndpointStatistics], *, peers: int) -> EndpointStatistics:
    totals: dict[str, Any] = {}
    for name in EndpointStatistics.__dataclass_fields__:
        if name in ("rejected", "peer_scores", "lazy_streams"):
            # Refusals by reason; peer scores by peer, each worker scoring what it saw
            # of a peer (its links, its streams), so the sum is what the node holds;
            # lazy streams by peer, each worker's tree over its own streams.
            merged: dict[str, float] = {}
            for core in cores:
                for label, value in getattr(core, name).items():
                    merged[label] = merged.get(label, 0) + value
            totals[name] = merged
        elif name == "verify_seconds":
            totals[name] = tuple(sum(counts) for counts in zip(
                *(core.verify_seconds for core in cores), strict=True)) if cores else ()
        elif name == "verify_seconds_total":
            totals[name] = sum(core.verify_seconds_total for core in cores)
        elif name == "tree":
            # Each worker grows its own tree over its own streams: sum the counters.
            trees = [core.tree for core in cores if core.tree is not None]
            totals[name] = TreeStatistics(**{
                field: sum(int(getattr(tree, field)) for tree in trees)
                for field in TreeStatistics.__dataclass_fields__}) if trees else None
        else:
            totals[name] = sum(int(getattr(core, name)) for core in cores)
    totals["peers"] = peers
    return EndpointStatistics(**totals)
