"""Who links to whom: the overlays the simulator can run underneath the endpoints.

* ``random`` (a stand-in until HyParView is measured): each node keeps at least
  ``degree`` links to uniformly random nodes, dialled at start. When a link fails the node
  dials another random node at once, and redials the lost neighbour every
  ``reconnect_interval`` seconds for five minutes (as the asyncio node retries failed
  members), which is how the halves of a healed partition find each other again. The
  random choice stands for "a member it knows of": it includes nodes that are dead but
  not yet known to be, whose connects fail.
* ``hyparview``: the real sans-IO :class:`somasync.core.overlay.HyParView` per node. Its
  datagrams travel over the simulated network (latency, loss and partitions apply), and
  its view changes open and close endpoint links: ``(peer, True)`` from either side opens
  the pair's one link, ``(peer, False)`` from either side closes it. A link that fails
  (crash, partition timeout, failed connect) is reported with ``neighbour_down``.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Protocol

from somasync.errors import ConfigError

if TYPE_CHECKING:
    from somasync.sim.engine import Simulation, VirtualNode

__all__ = ["LOST_PEER_RETRY_LIMIT", "HyParViewOverlay", "Overlay", "RandomOverlay",
           "hyparview_available", "make"]

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


def hyparview_available() -> bool:
    """True when :mod:`somasync.core.overlay` (HyParView) can be imported."""
    try:
        from somasync.core import overlay  # noqa: F401
    except ImportError:
        return False
    return True


def make(sim: Simulation, name: str, config: Any = None) -> Overlay:
    """The overlay called ``name`` for ``sim``."""
    if name == "random":
        return RandomOverlay(sim)
    if name == "hyparview":
        if not hyparview_available():
            raise ConfigError("sim.overlay", "hyparview needs somasync.core.overlay, which "
                                             "this version lacks; use 'random'")
        return HyParViewOverlay(sim, config)
    raise ConfigError("sim.overlay", f"must be 'hyparview' or 'random', got {name!r}")


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


class HyParViewOverlay:
    """The real HyParView of :mod:`somasync.core.overlay`, one per virtual node.

    Nodes join one after another, ``join_spacing`` seconds apart, each through a random
    node that joined before it.
    """

    name = "hyparview"

    def __init__(self, sim: Simulation, config: Any = None) -> None:
        from somasync.config import OverlayConfig  # type: ignore[attr-defined,unused-ignore]
        from somasync.core.overlay import HyParView  # type: ignore[import-not-found,unused-ignore]
        from somasync.sim.engine import derive_seed

        self.sim = sim
        self.config = config if config is not None else OverlayConfig()
        self._class = HyParView
        self.rng = random.Random(derive_seed(sim.seed, "overlay"))
        self.join_spacing = min(0.002, 5.0 / len(sim.nodes))

    @property
    def join_time(self) -> float:
        """Seconds until the last node has sent its join."""
        return self.join_spacing * len(self.sim.nodes)

    def _new(self, node: VirtualNode) -> Any:
        from somasync.sim.engine import derive_seed

        rng = random.Random(derive_seed(self.sim.seed, "hyparview", node.index,
                                        node.incarnation))
        node.overlay = self._class(node.name, self.config, rng=rng, now=self.sim.now)
        return node.overlay

    def start(self) -> None:
        sim = self.sim
        for node in sim.nodes:
            self._new(node)
            self._pump(node)
        for node in sim.nodes[1:]:
            contact = sim.nodes[self.rng.randrange(node.index)]
            sim.schedule(sim.now + node.index * self.join_spacing, self._join, node,
                         node.incarnation, contact)

    def _join(self, node: VirtualNode, incarnation: int, contact: VirtualNode) -> None:
        if node.alive and node.incarnation == incarnation and node.overlay is not None:
            node.overlay.join(contact.name, now=self.sim.now)
            self._pump(node)

    def _pump(self, node: VirtualNode) -> None:
        sim = self.sim
        view = node.overlay
        if view is None or not node.alive:
            return
        for destination, data in view.messages_to_send():
            sim.send_datagram(node, destination, data)
        for peer_name, up in view.take_changes():
            peer = sim.node_named(peer_name)
            if peer is None:
                continue
            if up:
                if peer.index not in node.conns:
                    sim.dial(node, peer)
            else:
                sim.hang_up(node, peer)
        sim.arm_overlay_timer(node, view.get_timer())

    def link_up(self, node: VirtualNode, peer: VirtualNode) -> None:
        pass

    def link_down(self, node: VirtualNode, peer: VirtualNode, *, failed: bool) -> None:
        if failed and node.overlay is not None:
            node.overlay.neighbour_down(peer.name, now=self.sim.now)
            self._pump(node)

    def connect_failed(self, node: VirtualNode, peer: VirtualNode) -> None:
        if node.overlay is not None:
            node.overlay.neighbour_down(peer.name, now=self.sim.now)
            self._pump(node)

    def crashed(self, node: VirtualNode) -> None:
        node.overlay = None

    def recovered(self, node: VirtualNode) -> None:
        self._new(node)
        contact = self.sim.random_live_node(self.rng)
        if contact is not None and contact is not node:
            node.overlay.join(contact.name, now=self.sim.now)
        self._pump(node)

    def resumed(self, node: VirtualNode) -> None:
        if node.overlay_armed is not None and node.overlay_armed <= self.sim.now:
            self.timer(node)
        else:
            self._pump(node)

    def datagram(self, node: VirtualNode, source: VirtualNode, data: bytes) -> None:
        if node.overlay is not None:
            node.overlay.receive(source.name, data, now=self.sim.now)
            self._pump(node)

    def timer(self, node: VirtualNode) -> None:
        if node.overlay is not None:
            node.overlay_armed = None
            node.overlay.handle_timer(now=self.sim.now)
            self._pump(node)
