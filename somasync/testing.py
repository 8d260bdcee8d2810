"""Deterministic test harness: endpoints joined by in-memory links and a stepped clock.

For SomaSync's own tests and for users who want to check a configuration without
sockets or sleeps::

    mesh = Mesh(GossipConfig.local())
    for name in ("a", "b", "c"):
        mesh.add(name)
    mesh.connect("a", "b"); mesh.connect("b", "c"); mesh.settle()
    mesh.nodes["a"].broadcast(envelope, now=mesh.now); mesh.settle()
    mesh.step(5.0)   # fire every timer due in the next 5 virtual seconds

A node added with ``shards=k`` is a sharded node: ``k`` endpoints with one identity, as
the worker processes of one host would be, with routed items moved between them in
memory. ``mesh.nodes[name]`` is then its shard 0, and ``mesh.shards[name]`` lists all.

:class:`MembershipNet` is the same for SWIM membership alone; it is a preset over the
simulator's engine (:class:`somasync.sim.engine.Simulation`), whose network (latency,
loss, partitions, crashes, pauses) every multi-node harness shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from somasync.config import GossipConfig, MembershipConfig
from somasync.core.crypto import Identity
from somasync.core.endpoint import Endpoint
from somasync.core.events import MembershipEvent
from somasync.core.membership import Membership
from somasync.core.shard import Shard, peer_owner
from somasync.core.trust import Trust

if TYPE_CHECKING:
    from somasync.aio.channel import Stream
    from somasync.aio.node import SynapseNode
    from somasync.message import Message

__all__ = ["WALL", "MembershipNet", "Mesh", "RunningNodes", "Wire", "wait_until"]

WALL = 1_800_000_000.0
"""The harness's wall clock at virtual time ``Mesh.now``'s start: fixed, so origin
timestamps and TTL checks are deterministic."""


async def wait_until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Poll ``condition`` on the running event loop until it holds.

    For integration tests over real sockets: ends as soon as the condition holds, and
    fails with ``AssertionError`` naming ``what`` after ``within`` seconds (be generous:
    the deadline only matters when something is broken).
    """
    import asyncio  # only this helper needs an event loop; the harness above does not

    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class RunningNodes:
    """Real nodes in the running event loop, each one's ``messages`` and ``events``
    drained into ``received[i]`` and ``events[i]`` until it stops (a test reads what
    arrived without consuming the streams itself). ``close()`` stops every node and ends
    the draining."""

    def __init__(self) -> None:
        self.nodes: list[SynapseNode] = []
        self.received: list[list[Message]] = []
        self.events: list[list[object]] = []
        self._streams: list[tuple[Stream[Message], Stream[Any]]] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, node: SynapseNode, messages: Stream[Message],
                    events: Stream[Any]) -> int:
        """Start ``node`` and drain its streams; returns its index."""
        self.nodes.append(node)
        self.received.append([])
        self.events.append([])
        self._streams.append((messages, events))
        index = len(self.nodes) - 1
        await self.restart(index)
        return index

    async def restart(self, index: int) -> None:
        """Start node ``index`` (again, after a stop) and drain its streams, which reopen
        with it, into the same lists."""
        await self.nodes[index].start()
        messages, events = self._streams[index]
        self._tasks += [asyncio.create_task(self._drain(messages, self.received[index])),
                        asyncio.create_task(self._drain(events, self.events[index]))]

    @staticmethod
    async def _drain(stream: Stream[Any], into: list[Any]) -> None:
        with contextlib.suppress(EOFError):
            while True:
                into.append(await stream.recv())

    async def close(self) -> None:
        for node in self.nodes:
            await node.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class Wire:
    """One in-memory connection between two endpoints."""

    a: str
    b: str
    link_a: int
    link_b: int
    drop: bool = False
    """While True, bytes sent over this wire vanish (a lossy or dead link)."""
    received: dict[str, int] = field(default_factory=dict)
    """Bytes that arrived at each end (by node name), handshake and records, injected
    ones included: what amplification is measured against."""


class Mesh:
    """Endpoints joined by in-memory links; ``settle()`` moves bytes until quiet."""

    def __init__(self, config: GossipConfig | None = None, seed: int = 1) -> None:
        self.config = config or GossipConfig.local()
        self.now = 100.0
        self.rng = random.Random(seed)
        self.shards: dict[str, list[Endpoint]] = {}
        self.wires: dict[tuple[str, int], Wire] = {}
        self.delivered: dict[str, list[bytes]] = {}
        self.events: dict[str, list[object]] = {}
        self._next_link = 0

    @property
    def nodes(self) -> dict[str, Endpoint]:
        return {name: shards[0] for name, shards in self.shards.items()}

    def add(self, name: str, config: GossipConfig | None = None, *, shards: int = 1,
            identity: Identity | None = None, trust: Trust | None = None,
            credential: bytes = b"") -> Endpoint:
        """A node of ``shards`` endpoints; ``trust`` (shared by its shards) and its
        ``credential`` as the node would have them."""
        identity = identity or Identity(self.rng.randbytes(32))
        trust = trust if trust is not None else Trust()
        endpoints = [
            Endpoint(config or self.config, identity, name,
                     rng=random.Random(self.rng.random()), now=self.now,
                     wall_offset=WALL - self.now, listen_address=f"{name}:1",
                     shard=Shard(i, shards) if shards > 1 else None, trust=trust,
                     credential=credential)
            for i in range(shards)
        ]
        self.shards[name] = endpoints
        self.delivered[name] = []
        self.events[name] = []
        return endpoints[0]

    def _endpoint_for(self, name: str, peer: str) -> tuple[Endpoint, int]:
        """The shard of ``name`` that owns the connection to ``peer``, and a fresh link id."""
        shards = self.shards[name]
        count = len(shards)
        index = peer_owner(self.shards[peer][0].identity.public_key, count) if count > 1 else 0
        link = self._next_link * count + index
        self._next_link += 1
        return shards[index], link

    def endpoint_of(self, name: str, link: int) -> Endpoint:
        shards = self.shards[name]
        return shards[link % len(shards)]

    def connect(self, a: str, b: str) -> Wire:
        endpoint_a, link_a = self._endpoint_for(a, b)
        endpoint_b, link_b = self._endpoint_for(b, a)
        w = Wire(a, b, link_a, link_b)
        self.wires[(a, link_a)] = w
        self.wires[(b, link_b)] = w
        endpoint_a.open_link(link_a, outbound=True, address=f"{b}:1", now=self.now)
        endpoint_b.open_link(link_b, outbound=False, address=f"{a}:9", now=self.now)
        return w

    def disconnect(self, w: Wire, reason: str = "closed") -> None:
        for name, link in ((w.a, w.link_a), (w.b, w.link_b)):
            if self.wires.pop((name, link), None) is not None:
                self.endpoint_of(name, link).close_link(link, now=self.now, reason=reason)

    def inject(self, name: str, link: int, data: bytes) -> None:
        """Frames arriving at ``name`` on ``link``, sent by the peer inside the link's
        sealed records (as a hostile peer that finished the handshake would send them)."""
        w = self.wires[(name, link)]
        peer, peer_link = (w.b, w.link_b) if (w.a, w.link_a) == (name, link) else (w.a, w.link_a)
        session = self.endpoint_of(peer, peer_link).session_of(peer_link)
        if session is None:
            raise RuntimeError("the link's handshake has not finished: call settle() first")
        self.inject_raw(name, link, session.seal(data))

    def inject_raw(self, name: str, link: int, data: bytes) -> None:
        """Bytes arriving at ``name`` on ``link`` as they are (handshake or records)."""
        w = self.wires.get((name, link))
        if w is not None:
            w.received[name] = w.received.get(name, 0) + len(data)
        self.endpoint_of(name, link).receive_bytes(link, data, now=self.now)

    def settle(self, max_rounds: int = 500) -> None:
        """Move bytes and routed items until nothing moves (at most ``max_rounds``)."""
        for _ in range(max_rounds):
            moved = False
            for name, shards in self.shards.items():
                for endpoint in shards:
                    moved |= self._pump(name, endpoint)
            if not moved:
                return
        raise AssertionError("the mesh did not settle")

    def _pump(self, name: str, endpoint: Endpoint) -> bool:
        moved = False
        for link, reason in endpoint.links_to_close():
            w = self.wires.get((name, link))
            if w is not None:
                self.disconnect(w, reason)
                moved = True
        for link, data in endpoint.frames_to_send():
            w = self.wires.get((name, link))
            if w is None:
                continue
            other, other_link = (w.b, w.link_b) if name == w.a else (w.a, w.link_a)
            if w.drop:
                # Frames lost on the way (a crashed worker's, in the tests that use it):
                # the receiver's records still advance, as if the loss were above them.
                session = self.endpoint_of(other, other_link).session_of(other_link)
                if session is not None:
                    session.open(data)
                continue
            self.inject_raw(other, other_link, data)
            moved = True
        for index, items in endpoint.take_routed().items():
            sibling = self.shards[name][index]
            for item in items:
                sibling.receive_routed(item, now=self.now)
            moved = True
        while endpoint.has_backlog:
            endpoint.process_backlog(now=self.now)
            moved = True
        self.delivered[name].extend(d.envelope.id for d in endpoint.take_deliveries())
        self.events[name].extend(endpoint.take_events())
        return moved

    def step(self, seconds: float) -> None:
        """Advance the clock, firing every timer that falls due, in deadline order."""
        end = self.now + seconds
        endpoints = [e for shards in self.shards.values() for e in shards]
        while True:
            due = min(e.get_timer() for e in endpoints)
            if due > end:
                break
            self.now = max(self.now, due)
            for endpoint in endpoints:
                if endpoint.get_timer() <= self.now:
                    endpoint.handle_timer(now=self.now)
            self.settle()
        self.now = end

    def link_of(self, name: str, other: str) -> int:
        """The link id ``name`` uses for its connection to ``other``."""
        for (owner, link), w in self.wires.items():
            if owner == name and other in (w.a, w.b) and other != name:
                return link
        raise KeyError(other)


class MembershipNet:
    """Membership protocols on the simulator's one engine, with a stepped clock.

    A thin preset over :class:`~somasync.sim.engine.Simulation`: each node is a virtual
    node running one :class:`~somasync.core.membership.Membership` and nothing else,
    addressed by its name. Datagrams take ``latency`` virtual seconds; a node can be
    crashed (its timers stop and everything to or from it is dropped), paused and resumed
    (like SIGSTOP/SIGCONT: the datagrams sent to it meanwhile wait for it, its timers
    fire late), or cut off (a partition: the engine's, where nodes in no listed group
    form one more group)::

        net = MembershipNet(MembershipConfig.local())
        for i in range(5):
            net.add(f"n{i}", seeds=["n0"] if i else [])
        net.run(3.0)
        net.crash("n4"); net.run(5.0)
        assert net.events_of("n0", PeerFailed)
    """

    def __init__(self, config: MembershipConfig, *, seed: int = 1,
                 latency: float = 0.001) -> None:
        # The engine imports this module (for WALL): import it only when a net is made.
        from somasync.sim.engine import Simulation
        from somasync.sim.network import Latency, NetworkModel

        self.config = config
        self.nodes: dict[str, Membership] = {}
        self.events: dict[str, list[MembershipEvent]] = {}
        self.crashed: set[str] = set()
        self._rng = random.Random(seed)
        self._virtual: dict[str, Any] = {}  # name -> its virtual node
        self.sim = Simulation(0, seed=seed, overlay=lambda sim: _MembershipHosts(sim, self),
                              network=NetworkModel(latency=Latency.constant(latency)))
        self.sim.start()

    @property
    def now(self) -> float:
        return self.sim.now

    @property
    def dropped(self) -> int:
        """Datagrams lost: to or from a crashed node, across a cut, to no one."""
        return self.sim.datagrams_lost

    def add(self, name: str, *, seeds: list[str] = (),  # type: ignore[assignment]
            identity: Identity | None = None,
            config: MembershipConfig | None = None) -> Membership:
        """Start node ``name`` (its address is its name) and join through ``seeds``; a
        crashed node's name starts a new node (a restart, with ``identity`` kept when
        given)."""
        if identity is None:
            identity = Identity(self._rng.randbytes(32))
        node = Membership(config or self.config, identity, name, name,
                          rng=random.Random(self._rng.random()), now=self.now)
        virtual = self.sim.add_node(identity, name=name, address=name, endpoint=False)
        virtual.overlay = node
        self._virtual[name] = virtual
        self.nodes[name] = node
        self.events[name] = []
        self.crashed.discard(name)
        node.join(list(seeds), now=self.now)
        self._collect(name)
        return node

    def crash(self, name: str) -> None:
        self.crashed.add(name)
        self.sim.crash([self._virtual[name].index])

    def pause(self, name: str) -> None:
        self.sim.pause([self._virtual[name].index])

    def resume(self, name: str) -> None:
        """Deliver what queued up while ``name`` was paused, then run its late timers."""
        self.sim.resume([self._virtual[name].index])

    def partition(self, *groups: list[str]) -> None:
        """Drop every datagram between nodes of different groups."""
        self.sim.partition([[self._virtual[name].index for name in group]
                            for group in groups])

    def heal(self) -> None:
        self.sim.heal()

    def run(self, seconds: float) -> None:
        """Advance the clock by ``seconds``, delivering datagrams and firing timers in
        time order."""
        self.sim.run(seconds)

    def events_of(self, name: str, kind: type) -> list[MembershipEvent]:
        return [e for e in self.events[name] if isinstance(e, kind)]

    def states(self, name: str) -> dict[str, str]:
        """Node id -> state, as ``name`` sees the mesh."""
        return {m.node_id: m.state for m in self.nodes[name].members()}

    def _collect(self, name: str) -> None:
        """Send what ``name`` queued, keep its events, arm its timer (call after driving
        a node's Membership directly)."""
        virtual = self._virtual[name]
        node = self.nodes[name]
        for address, data in node.datagrams_to_send():
            self.sim.send_datagram(virtual, address, data)
        self.events[name].extend(node.take_events())
        self.sim.arm_overlay_timer(virtual, node.get_timer())


class _MembershipHosts:
    """The engine's overlay slot, filled with the harness's Membership objects."""

    name = "membership"

    def __init__(self, sim: Any, net: MembershipNet) -> None:
        self.sim = sim
        self.net = net

    def start(self) -> None:
        pass

    def link_up(self, node: Any, peer: Any) -> None:
        pass

    def link_down(self, node: Any, peer: Any, *, failed: bool) -> None:
        pass

    def connect_failed(self, node: Any, peer: Any) -> None:
        pass

    def crashed(self, node: Any) -> None:
        pass

    def recovered(self, node: Any) -> None:
        pass

    def resumed(self, node: Any) -> None:
        if node.overlay_armed is not None and node.overlay_armed <= self.sim.now:
            self.timer(node)
        else:
            self.net._collect(node.name)

    def datagram(self, node: Any, source: Any, data: bytes) -> None:
        node.overlay.receive_datagram(source.address, data, now=self.sim.now)
        self.net._collect(node.name)

    def timer(self, node: Any) -> None:
        node.overlay_armed = None
        node.overlay.handle_timer(now=self.sim.now)
        self.net._collect(node.name)
