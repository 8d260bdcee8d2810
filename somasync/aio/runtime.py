"""What the node facade drives: a runtime that owns the sockets and the data part.

:class:`~somasync.aio.node.SynapseNode` owns what a node is (configuration, identity,
the control part, the application's streams, statistics, signals) and hands the rest to
one of two runtimes, neither of which knows the other:

* :class:`~somasync.aio.local.LocalRuntime`: one :class:`~somasync.core.endpoint.Endpoint`
  in the caller's event loop;
* ``somasync.workers.supervisor.ShardedRuntime``: a supervisor in the caller's process
  with an endpoint shard in each worker process.

A runtime listens on TCP, dials and closes links as the control part asks, carries
the application's broadcasts to the endpoint(s), and reports back through
:class:`RuntimeHost`: every message to deliver and every endpoint event (the host passes
link events on to the control part itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from somasync.core.endpoint import EndpointStatistics

if TYPE_CHECKING:
    from somasync.aio.control import ControlDriver
    from somasync.core.sizing import Sizing
    from somasync.core.trust import Trust
    from somasync.core.wire import StreamKey
    from somasync.message import Message

__all__ = ["Runtime", "RuntimeHost", "RuntimeStatistics", "WorkerStats"]


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One worker process of a sharded node."""

    index: int
    pid: int
    messages_verified: int
    """Message signatures this worker checked."""
    messages_delivered: int
    ring_in_used: int
    """Bytes waiting in the rings this worker reads."""
    ring_out_pending: int
    """Bytes this worker could not yet publish because a ring was full."""
    cpu_percent: float
    """Average CPU use since the worker started (100 = one core)."""
    rss_bytes: int
    ring_dropped: int = 0
    """Items this worker dropped because a ring stayed full past its pending bound."""
    ring_corrupted: int = 0
    """Rings in which this worker found a corrupt record (see ``NodeStats.ring_corrupted``)."""


@dataclass(frozen=True, slots=True)
class RuntimeStatistics:
    """What a runtime counts (the facade adds the control part's and its own)."""

    core: EndpointStatistics
    """Every counter of the protocol core (summed over workers in a sharded node)."""
    workers: tuple[WorkerStats, ...] = ()
    worker_restarts: int = 0
    ring_dropped: int = 0
    ring_corrupted: int = 0
    handshake_failures: int = 0


class RuntimeHost(Protocol):
    """What a runtime needs of the node it runs: the facade."""

    @property
    def control(self) -> ControlDriver:
        """The node's control part, told of dial outcomes."""

    def deliver(self, message: Message, from_peer: str, *, direct: bool = False) -> None:
        """Hand a message (first copy, already verified) to the application; ``direct``:
        one sent to this node alone."""

    def report(self, event: object) -> None:
        """Hand an endpoint event to the application (link events also to the control
        part)."""

    @property
    def trust(self) -> Trust:
        """The node's trust policy (a runtime in the same process shares it)."""


class Runtime(Protocol):
    """The sockets and the data part of a node (see the module docstring)."""

    async def listen(self, host: str, port: int) -> int:
        """Listen on TCP ``host:port`` (0: any free port) and return the bound port.

        Raises:
            TransportError: the address cannot be used.
        """

    def close_listener(self) -> None:
        """Stop listening (the port could not be had for UDP too; another is tried)."""

    def restore_delivered(self, streams: Mapping[StreamKey, Sequence[tuple[int, int]]]
                          ) -> None:
        """Before :meth:`start`: take these sequence numbers (per stream, closed
        intervals) as delivered, as a node's data directory kept them: none is
        delivered again, and digests ask neighbours for what lies past them."""

    async def start(self, listen_address: str) -> None:
        """Start the data part (accept links, start workers) announcing
        ``listen_address``. On failure, everything started is stopped before raising."""

    async def stop(self) -> None:
        """Close every link (each reported) and the listener; stop the data part."""

    def dial(self, address: str) -> None:
        """Open a link to ``address``; report the outcome to the control part."""

    def close_peer(self, public_key: bytes, reason: str) -> None:
        """Close every link to the peer ``public_key``."""

    def send_backlog(self) -> int:
        """Bytes queued to the fullest peer still taking bytes, about (a large sender
        paces itself by it; a sharded node reports its workers' queues together, up to
        one stats round old)."""

    def learn(self, bindings: list[tuple[str, bytes, bytes]], released: list[bytes]) -> None:
        """Bindings the node's trust policy admitted (name, key, certificate), and keys
        whose names it released: every part of the data part must judge messages by
        them."""

    def revoke(self, public_key: bytes, notice: bytes) -> None:
        """An operator revoked ``public_key``: every part of the data part refuses it and
        keeps ``notice`` (the revocation message) for new neighbours."""

    async def broadcast(self, message: Message) -> None:
        """Send a signed message to the mesh (waits while a sharded owner is full)."""

    def send_direct(self, message: Message, target: bytes, node_id: str, timeout: float,
                    via: Sequence[bytes]) -> None:
        """Start sending a signed direct message to the node with key ``target`` (see
        :meth:`somasync.core.endpoint.Endpoint.send_direct`); the verdict comes back as
        a ``DirectAcked`` or ``DirectFailed`` event through :meth:`RuntimeHost.report`."""

    def connected_peers(self) -> dict[str, str]:
        """Node id -> listening address of every linked peer."""

    def score_at(self, address: str) -> float:
        """The peer score of the linked peer listening at ``address`` (0 with none; a
        sharded node answers from its workers' last reports)."""

    def retune(self, sizing: Sizing) -> None:
        """Adaptive fanout changed the values the data part runs on (every worker's,
        and a replacement worker's when it starts)."""

    async def statistics(self) -> RuntimeStatistics:
        """The runtime's counters now."""
