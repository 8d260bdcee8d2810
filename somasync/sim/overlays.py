"""Who links to whom: the overlays the simulator can run underneath the endpoints.

* ``node`` (the default): the production control part of a node,
  :class:`somasync.core.node.NodeControl`, per virtual node: HyParView picks the links,
  its dialler opens them, and SWIM membership runs beside them (on meshes of up to
  ``MEMBERSHIP_AUTO_LIMIT`` nodes, or as asked), its crash verdicts repairing the overlay
  as in a deployed node. Overlay and membership datagrams travel over the simulated
  network (latency, loss and partitions apply); view changes open and close endpoint
  links; a link that fails (crash, partition timeout, failed connect) is reported to
  the control part as the runtime would.
* ``random`` (a baseline to compare with): each node keeps at least
  ``degree`` links to uniformly random nodes, dialled at start. When a link fails the node
  dials another random node at once, and redials the lost neighbour every
  ``reconnect_interval`` seconds for five minutes (as the asyncio node retries failed
  members), which is how the halves of a healed partition find each other again. The
  random choice stands for "a member it knows of": it includes nodes that are dead but
  not yet known to be, whose connects fail.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from somasync.errors import ConfigError

if TYPE_CHECKING:
    from somasync.sim.engine import Simulation, VirtualNode

__all__ = ["LOST_PEER_RETRY_LIMIT", "MEMBERSHIP_AUTO_LIMIT", "NodeOverlay", "Overlay",
           "RandomOverlay", "make"]

LOST_PEER_RETRY_LIMIT = 300.0
"""Seconds a random-overlay node keeps redialling a lost neighbour."""


class Overlay(Protocol):
    """What the engine tells an overlay, and when."""

    name: str

    def start(self) -> None: ...
    def link_up(self, node: VirtualNode, peer: VirtualNode) -> None: ...
    def link_down(self, node: VirtualNode, peer: VirtualNode, *, failed: bool) -> None: ...
    def connect_failed(self, node: VirtualNode, peer: VirtualNode) -> None: ...
    def crashed(self, node: VirtualNode) -> None: ...
    def recovered(self, node: VirtualNode) -> None: ...
    def resumed(self, node: VirtualNode) -> None: ...
    def datagram(self, node: VirtualNode, source: VirtualNode, data: bytes) -> None: ...
    def timer(self, node: VirtualNode) -> None: ...


MEMBERSHIP_AUTO_LIMIT = 2000
"""Largest mesh whose virtual nodes run SWIM unless told otherwise: every node holds
every member, so memory grows with the square of the size (about 0.3 GB at 1,000
nodes, 30 GB at 10,000)."""


def make(sim: Simulation, name: str, config: Any = None, *, membership: Any = None,
         run_membership: bool | None = None, adaptive: Any = None) -> Overlay:
    """The overlay called ``name`` for ``sim``: ``node`` (the production control part;
    SWIM on up to ``MEMBERSHIP_AUTO_LIMIT`` nodes unless ``run_membership`` says; with
    ``adaptive``, adaptive fanout) or ``random`` (a stand-in, fixed degree)."""
    if name == "random":
        if adaptive is not None and adaptive.enabled:
            raise ConfigError("sim.adaptive", "needs the node overlay (the control part "
                              "that estimates the mesh's size)")
        return RandomOverlay(sim)
    if name == "node":
        if run_membership is None:
            run_membership = len(sim.nodes) <= MEMBERSHIP_AUTO_LIMIT
        return NodeOverlay(sim, config, membership=membership,
                           run_membership=run_membership, adaptive=adaptive)
    raise ConfigError("sim.overlay", f"must be 'node' or 'random', got {name!r}")


class RandomOverlay:
    """Random links, refilled on failure, lost neighbours redialled (see module doc)."""

    name = "random"

    def __init__(self, sim: Simulation) -> None:
        from somasync.sim.engine import derive_seed

        self.sim = sim
        self.rng = random.Random(derive_seed(sim.seed, "overlay"))

    def start(self) -> None:
        """Dial an initial graph in which every node has about ``degree`` links: each
        node in turn links to random nodes that have fewer than ``degree + 2``."""
        sim = self.sim
        nodes = sim.nodes
        size = len(nodes)
        planned = [0] * size
        for node in nodes:
            for _ in range(8 * sim.degree):
                if planned[node.index] >= sim.degree:
                    break
                target = nodes[self.rng.randrange(size)]
                if target is node or planned[target.index] >= sim.degree + 2:
                    continue
                if sim.dial(node, target):
                    planned[node.index] += 1
                    planned[target.index] += 1

    def _fill(self, node: VirtualNode) -> None:
        sim = self.sim
        if not node.alive:
            return
        need = sim.degree - len(node.conns) - len(node.dialing)
        nodes = sim.nodes
        size = len(nodes)
        for _ in range(4 * sim.degree):
            if need <= 0:
                break
            target = nodes[self.rng.randrange(size)]
            if target is not node and sim.dial(node, target):
                need -= 1

    def link_up(self, node: VirtualNode, peer: VirtualNode) -> None:
        node.lost.pop(peer.index, None)

    def link_down(self, node: VirtualNode, peer: VirtualNode, *, failed: bool) -> None:
        if failed:
            node.lost.setdefault(peer.index, self.sim.now)
            self._arm_retry(node)
        self._fill(node)

    def connect_failed(self, node: VirtualNode, peer: VirtualNode) -> None:
        self._fill(node)

    def crashed(self, node: VirtualNode) -> None:
        node.retry_armed = False

    def recovered(self, node: VirtualNode) -> None:
        node.retry_armed = False
        self._fill(node)

    def resumed(self, node: VirtualNode) -> None:
        pass

    def datagram(self, node: VirtualNode, source: VirtualNode, data: bytes) -> None:
        pass

    def timer(self, node: VirtualNode) -> None:
        pass

    def _arm_retry(self, node: VirtualNode) -> None:
        if not node.retry_armed:
            node.retry_armed = True
            sim = self.sim
            sim.schedule(sim.now + sim.reconnect_interval, self._retry, node,
                         node.incarnation)

    def _retry(self, node: VirtualNode, incarnation: int) -> None:
        if not node.alive or node.incarnation != incarnation or not node.retry_armed:
            return
        node.retry_armed = False
        sim = self.sim
        for peer_index, since in list(node.lost.items()):
            if peer_index in node.conns or sim.now - since > LOST_PEER_RETRY_LIMIT:
                del node.lost[peer_index]
                continue
            sim.dial(node, sim.nodes[peer_index])
        if node.lost:
            self._arm_retry(node)


class NodeOverlay:
    """The production control part, :class:`somasync.core.node.NodeControl`, one per
    virtual node: HyParView picks the links, the dialler opens them, and (with
    ``membership``) SWIM runs beside them on the same datagram network, detecting
    crashes and feeding its verdicts to the overlay, as in a deployed node.

    Nodes join one after another, ``join_spacing`` seconds apart, each through its only
    seed: node ``contact`` when set, else a random node that joined before it. Membership
    events are counted for the scenarios: the first failure verdict about each crashed
    node, and failure verdicts about nodes that were alive (false failures); a
    ``listener`` sees every event with the index of the node that observed it.
    """

    name = "node"

    def __init__(self, sim: Simulation, config: Any = None, *,
                 membership: Any = None, run_membership: bool = True,
                 adaptive: Any = None) -> None:
        from somasync.config import (
            AdaptiveConfig,
            MembershipConfig,
            NodeConfig,
            OverlayConfig,
            SecurityConfig,
        )
        from somasync.sim.engine import derive_seed

        self.sim = sim
        self.config = config if config is not None else OverlayConfig()
        self.membership_config = membership if membership is not None \
            else MembershipConfig.lan()
        self.run_membership = run_membership
        # Datagrams travel unsealed here: thousands of virtual nodes agreeing pair keys
        # would dominate the run, and sealing changes no protocol decision.
        self._node_config = NodeConfig(gossip=sim.config, membership=self.membership_config,
                                       overlay=self.config,
                                       security=SecurityConfig(seal_datagrams=False),
                                       adaptive=adaptive if adaptive is not None
                                       else AdaptiveConfig())
        self.rng = random.Random(derive_seed(sim.seed, "overlay"))
        self.join_spacing = min(0.002, 5.0 / len(sim.nodes))
        self.contact: int | Callable[[int], int] | None = None
        """Each joiner's seed: this node, or this function of the joiner's index; None:
        a random node that joined before it."""
        self.listener: Callable[[int, Any], None] | None = None
        self.retired: list[Any] = []
        """Control statistics of crashed incarnations."""
        self.crashed_at: dict[int, float] = {}
        self.first_detection: dict[int, float] = {}
        """Crashed node -> seconds from its crash to the first failure verdict about it."""
        self.detections = 0
        """Failure verdicts about crashed nodes (one per observer and crash)."""
        self.false_failures = 0
        """Failure verdicts about nodes that were alive."""
        self._by_key: dict[bytes, int] = {}

    @property
    def join_time(self) -> float:
        """Seconds until the last node has sent its join."""
        return self.join_spacing * len(self.sim.nodes)

    def _new(self, node: VirtualNode) -> Any:
        from somasync.core.node import NodeControl
        from somasync.sim.engine import derive_seed

        rng = random.Random(derive_seed(self.sim.seed, "control", node.index,
                                        node.incarnation))
        config = self._node_config.replace(node_id=node.name)
        node.overlay = NodeControl(config, node.identity, node.address, rng=rng,
                                   now=self.sim.now, verify=self.sim.verifier,
                                   run_membership=self.run_membership)
        self._by_key[node.identity.public_key] = node.index
        return node.overlay

    def start(self) -> None:
        sim = self.sim
        for node in sim.nodes:
            self._new(node)
        sim.nodes[0].overlay.start([], [], now=sim.now)
        self._pump(sim.nodes[0])
        for node in sim.nodes[1:]:
            if self.contact is None:
                contact = sim.nodes[self.rng.randrange(node.index)]
            elif callable(self.contact):
                contact = sim.nodes[self.contact(node.index)]
            else:
                contact = sim.nodes[self.contact]
            sim.schedule(sim.now + node.index * self.join_spacing, self._join, node,
                         node.incarnation, contact)

    def _join(self, node: VirtualNode, incarnation: int, contact: VirtualNode) -> None:
        if node.alive and node.incarnation == incarnation and node.overlay is not None:
            node.overlay.start([contact.address], [], now=self.sim.now)
            self._pump(node)

    def _pump(self, node: VirtualNode) -> None:
        sim = self.sim
        control = node.overlay
        if control is None or not node.alive:
            return
        for destination, data in control.datagrams_to_send(now=sim.now):
            sim.send_datagram(node, destination, data)
        sizing = control.take_sizing()
        if sizing is not None and node.endpoint is not None:
            node.endpoint.retune(sizing)
        if self.run_membership:
            for event in control.take_events():
                self._on_event(event)
                if self.listener is not None:
                    self.listener(node.index, event)
        for public_key, _reason in control.take_closes():
            linked = self._by_key.get(public_key)
            if linked is not None:
                sim.hang_up(node, sim.nodes[linked])
        for address in control.take_dials():
            peer = sim.node_named(address)
            if peer is None:
                control.dial_failed(address, now=sim.now)
            elif peer.index in node.conns:
                control.dial_succeeded(address, peer.identity.public_key, now=sim.now)
            else:
                # When the peer is dialling this node already, dial() does nothing: the
                # peer's link settles this dial, or its failure, reported to both ends.
                sim.dial(node, peer)
        sim.arm_overlay_timer(node, control.get_timer())

    def _on_event(self, event: Any) -> None:
        from somasync.core.events import PeerFailed

        if not isinstance(event, PeerFailed):
            return
        subject = self._by_key.get(event.public_key)
        if subject is None:
            return
        crashed = self.crashed_at.get(subject)
        if crashed is None:
            self.false_failures += 1
            return
        self.detections += 1
        self.first_detection.setdefault(subject, self.sim.now - crashed)

    def link_up(self, node: VirtualNode, peer: VirtualNode) -> None:
        control = node.overlay
        if control is None:
            return
        now = self.sim.now
        key = peer.identity.public_key
        conn = node.conns.get(peer.index)
        if conn is not None and conn.a is node:  # this node dialled
            control.dial_succeeded(peer.address, key, now=now)
        control.link_up(key, peer.address, now=now)
        self._pump(node)

    def link_down(self, node: VirtualNode, peer: VirtualNode, *, failed: bool) -> None:
        if node.overlay is not None:
            node.overlay.link_down(peer.identity.public_key, now=self.sim.now)
            self._pump(node)

    def connect_failed(self, node: VirtualNode, peer: VirtualNode) -> None:
        # Both ends: the peer may have waited on this dial instead of dialling itself.
        for side, other in ((node, peer), (peer, node)):
            if side.alive and side.overlay is not None:
                side.overlay.dial_failed(other.address, now=self.sim.now)
                self._pump(side)

    def crashed(self, node: VirtualNode) -> None:
        if node.overlay is not None:
            self.retired.append(node.overlay.statistics())
        node.overlay = None
        self.crashed_at[node.index] = self.sim.now

    def recovered(self, node: VirtualNode) -> None:
        self.crashed_at.pop(node.index, None)
        self._new(node)
        contact = self.sim.random_live_node(self.rng)
        seeds = [contact.address] if contact is not None and contact is not node else []
        node.overlay.start(seeds, [], now=self.sim.now)
        self._pump(node)

    def resumed(self, node: VirtualNode) -> None:
        if node.overlay_armed is not None and node.overlay_armed <= self.sim.now:
            self.timer(node)
        else:
            self._pump(node)

    def datagram(self, node: VirtualNode, source: VirtualNode, data: bytes) -> None:
        if node.overlay is not None:
            node.overlay.receive_datagram(source.address, data, now=self.sim.now)
            self._pump(node)

    def timer(self, node: VirtualNode) -> None:
        if node.overlay is not None:
            node.overlay_armed = None
            node.overlay.handle_timer(now=self.sim.now)
            self._pump(node)
