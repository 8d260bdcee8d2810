"""The control part of a node: membership, the overlay that picks links, and dialling. Sans-IO.

A node is two parts. The *data part* is the :class:`~somasync.core.endpoint.Endpoint`
(one per process, or one shard per worker): links, frames, signatures, broadcast. The
*control part* is :class:`NodeControl`, one per node whatever the runtime: it decides
which links should exist and tells the runtime, which only moves bytes and opens and
closes sockets. The single-process runtime, the sharded runtime's supervisor and every
virtual node of the simulator drive this same object, so all three run one policy.

What it composes
----------------
* :class:`~somasync.core.membership.Membership` (SWIM): who is in the mesh, who failed,
  who left. Its verdicts feed the overlay: a member that joins or comes back becomes a
  passive candidate (:meth:`HyParView.learn`), one that fails is treated as a broken
  link (:meth:`HyParView.neighbour_down`: dropped, replaced, retried later in case it
  was a partition), one that leaves is forgotten. The links of a failed or departed
  member are closed.
* :class:`~somasync.core.overlay.HyParView` (with gossip discovery): the active view is
  the set of broadcast links this node keeps. Every node of every size runs it: in a
  mesh of up to ``active_size + 1`` nodes the active view is every other node (a full
  mesh), beyond that each node keeps ``active_size`` symmetric random links and the
  overlay stays connected as nodes fail (see :class:`~somasync.config.OverlayConfig`).
* The dialler: for every address the node should be linked to, whether to dial now, wait
  (exponential back-off with jitter), or do nothing because a link to that peer exists
  (also one the peer dialled). A lost link is dialled again after the back-off.
  *Static* addresses (peers added by the application, and the bootstrap peers when
  discovery is static) are redialled forever; for an *overlay* neighbour a failed dial
  is a failed neighbour for HyParView, which picks another (so a crashed peer costs one
  refused dial, and a link that merely dropped comes back without disturbing the
  overlay).

* Adaptive fanout (``config.adaptive.enabled``, :mod:`somasync.core.sizing`): an
  estimate of the mesh's size (membership's live members, or, where membership is off,
  a size sketch gossiped to the overlay neighbours) drives the overlay's degree
  (:meth:`HyParView.resize`) and the values the runtime gives its data part
  (:meth:`take_sizing`, for :meth:`Endpoint.retune`), re-derived with hysteresis.

Datagrams: membership and overlay share the node's one UDP port. Overlay datagrams go
out behind one channel byte, ``OVERLAY_CHANNEL`` (0x80), size sketches behind
``SIZE_CHANNEL`` (0x81); membership datagrams start with their version byte (1), so the
first byte tells them apart and no format changes.
Unless ``security.seal_datagrams`` is off, every datagram travels sealed to its
recipient (:mod:`somasync.core.datagrams`): authenticated, encrypted, replay-protected;
membership then judges ACKs and accusations by the key the seal proved.

Inputs: :meth:`start`, :meth:`receive_datagram`, :meth:`handle_timer`, :meth:`link_up`,
:meth:`link_down`, :meth:`dial_succeeded`, :meth:`dial_failed`, :meth:`keep`,
:meth:`leave`, :meth:`rejoin`.
Outputs, drained by the runtime after each input: :meth:`datagrams_to_send`,
:meth:`take_dials`, :meth:`take_closes`, :meth:`take_events`, :meth:`take_sizing` and
:meth:`get_timer`.
Time is the runtime's monotonic ``now``; randomness comes from the injected
``random.Random`` only.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

from somasync.config import DiscoveryMethod, NodeConfig
from somasync.core import crypto
from somasync.core.crypto import Identity
from somasync.core.datagrams import OVERHEAD as SEAL_OVERHEAD, DatagramSealer, SealerStatistics
from somasync.core.events import (
    MembershipEvent,
    PeerFailed,
    PeerJoined,
    PeerLeft,
    PeerRecovered,
)
from somasync.core.membership import Member, Membership, MembershipStatistics
from somasync.core.overlay import HyParView, OverlayStatistics
from somasync.core.sizing import AdaptiveSizer, MeshSizeSketch, Sizing, SketchStatistics
from somasync.core.trust import Trust

__all__ = ["OVERLAY_CHANNEL", "SIZE_CHANNEL", "ControlStatistics", "NodeControl"]

OVERLAY_CHANNEL = 0x80
"""First byte of an overlay datagram on the node's UDP port (membership's is its version)."""
SIZE_CHANNEL = 0x81
"""First byte of a size-sketch datagram (adaptive fanout without membership)."""

_OVERLAY_PREFIX = bytes([OVERLAY_CHANNEL])
_SIZE_PREFIX = bytes([SIZE_CHANNEL])
_IDLE, _DIALING, _LINKED = 0, 1, 2


@dataclass(slots=True)
class _Target:
    """An address the node wants a link to."""

    static: bool
    """Kept whatever the overlay says (redialled with back-off forever)."""
    overlay: bool
    """In HyParView's active view."""
    state: int = _IDLE
    due: float = 0.0
    """_IDLE: when to dial next."""
    delay: float = 0.0
    """The back-off the next failure waits (before jitter)."""
    linked_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ControlStatistics:
    """A snapshot of the control part's counters."""

    dials: int
    """Connections the node asked its runtime to open."""
    connect_failures: int
    """Of those, the ones that failed (refused, timed out, failed handshake)."""
    links: int
    """Peers linked now (either side dialled)."""
    overlay: OverlayStatistics | None
    """HyParView's counters (None with static discovery)."""
    membership: MembershipStatistics | None
    """SWIM's counters (None where membership is off: large simulations)."""
    datagrams: SealerStatistics | None = None
    """The datagram seal's counters (None where datagrams travel unsealed)."""
    sizing: Sizing | None = None
    """The adaptive values in force (None with adaptive fanout off)."""
    size_estimate: float | None = None
    """The latest estimate of the mesh's size (None with adaptive fanout off)."""
    sizing_changes: int = 0
    """Times the adaptive values changed after the first."""
    sketch: SketchStatistics | None = None
    """The size sketch's counters (None unless adaptive fanout runs without
    membership)."""


class NodeControl:
    """The control part of one node (see the module docstring).

    Args:
        config: the node's configuration (membership, overlay, discovery, back-off).
        identity: the node's key pair (membership claims are signed with it).
        address: ``host:port`` this node is reached at, TCP and UDP.
        rng: the only source of randomness.
        now: the runtime's monotonic clock at creation (seconds).
        verify: the signature check for membership claims (the simulator shares a
            cache here, as it does with the endpoints).
        wall_offset: wall-clock seconds minus ``now`` (sealed datagrams carry the
            sender's clock, for replay protection; certificates have validity times).
        trust: the node's trust policy, shared with its endpoint where they live in one
            process (membership admits members by it, the seal opens datagrams only
            from keys it admits). An open policy of its own when not given.
        run_membership: False runs the overlay alone (the simulator's large meshes,
            where a full membership list per node would not fit in memory).
    """

    def __init__(self, config: NodeConfig, identity: Identity, address: str, *,
                 rng: random.Random, now: float, verify: crypto.Verifier = crypto.verify,
                 run_membership: bool = True, wall_offset: float = 0.0,
                 trust: Trust | None = None) -> None:
        self.config = config
        self._rng = rng
        self._address = address
        self._wall_offset = wall_offset
        security = config.security
        self.trust = trust = trust if trust is not None else Trust()
        self._sealer = DatagramSealer(
            identity, resolve=self._key_at, admit=trust.admits_key,
            max_age=security.datagram_max_age,
            max_size=config.membership.max_datagram + SEAL_OVERHEAD,
        ) if security.seal_datagrams else None
        self._membership = Membership(
            config.membership, identity, config.node_id, address,
            rng=random.Random(rng.getrandbits(64)), now=now,
            trusted_keys=config.gossip.trusted_keys, verify=verify,
            datagram_overhead=SEAL_OVERHEAD if self._sealer is not None else 0,
            trust=trust, credential=security.certificate, wall_offset=wall_offset,
        ) if run_membership else None
        self._overlay = HyParView(address, config.overlay,
                                  rng=random.Random(rng.getrandbits(64)), now=now,
                                  datagram_overhead=SEAL_OVERHEAD if self._sealer is not None
                                  else 0) \
            if DiscoveryMethod.GOSSIP in config.discovery else None
        self._targets: dict[str, _Target] = {}
        self._linked: dict[bytes, str] = {}  # peer key -> its listen address
        self._by_address: dict[str, bytes] = {}  # listen or dialled address -> peer key
        self._closing: set[bytes] = set()
        self._stale_dials: set[bytes] = set()  # dialled, then no longer wanted
        self._datagrams: list[tuple[str, bytes]] = []
        self._dials: list[str] = []
        self._closes: list[tuple[bytes, str]] = []
        self._events: list[MembershipEvent] = []
        self._dial_count = 0
        self._connect_failures = 0
        self._running = False
        adaptive = config.adaptive
        self._sizer = AdaptiveSizer(
            adaptive, anti_entropy_interval=config.gossip.anti_entropy_interval) \
            if adaptive.enabled else None
        # Membership counts the members; without it, the sketch estimates them.
        self._sketch = MeshSizeSketch(identity.public_key, adaptive, now=now,
                                      wall_offset=wall_offset) \
            if self._sizer is not None and self._membership is None else None
        self._estimate = 1.0
        self._next_sizing = now
        self._new_sizing: Sizing | None = None

    # --- queries -----------------------------------------------------------------------

    @property
    def address(self) -> str:
        """This node's ``host:port``."""
        return self._address

    @property
    def membership(self) -> Membership | None:
        """SWIM (None where membership is off)."""
        return self._membership

    @property
    def overlay(self) -> HyParView | None:
        """HyParView (None with static discovery)."""
        return self._overlay

    def members(self) -> list[Member]:
        """Every member known to membership, this node first (empty when it is off)."""
        return [] if self._membership is None else self._membership.members()

    def wanted(self) -> list[str]:
        """Addresses this node keeps (or tries to keep) a link to."""
        return list(self._targets)

    @property
    def sizing(self) -> Sizing | None:
        """The adaptive values in force (None with adaptive fanout off, or before the
        node started)."""
        return None if self._sizer is None else self._sizer.current

    def size_estimate(self) -> float:
        """The mesh's size as this node estimates it now (itself included): live
        members where membership runs, else the size sketch's estimate; 1 with adaptive
        fanout off and no membership."""
        if self._membership is not None:
            stats = self._membership.statistics()
            return float(stats.alive + stats.suspect)
        if self._sketch is not None:
            return max(1.0, self._sketch.estimate())
        return 1.0

    def statistics(self) -> ControlStatistics:
        """A snapshot of the counters."""
        sizer = self._sizer
        return ControlStatistics(
            dials=self._dial_count, connect_failures=self._connect_failures,
            links=len(self._linked),
            overlay=None if self._overlay is None else self._overlay.statistics(),
            membership=None if self._membership is None else self._membership.statistics(),
            datagrams=None if self._sealer is None else self._sealer.statistics(),
            sizing=None if sizer is None else sizer.current,
            size_estimate=None if sizer is None else self._estimate,
            sizing_changes=0 if sizer is None else sizer.changes,
            sketch=None if self._sketch is None else self._sketch.statistics(),
        )

    # --- inputs ------------------------------------------------------------------------

    def start(self, seeds: list[str], static: list[str], *, now: float) -> None:
        """Join the mesh through ``seeds`` and keep links to ``static`` addresses.

        With gossip discovery the overlay joins through the first seed and learns the
        others as candidates; with static discovery the seeds are static links too.
        """
        self._running = True
        seeds = [s for s in dict.fromkeys(seeds) if s != self._address]
        if self._membership is not None:
            self._membership.join(seeds, now=now)
        overlay = self._overlay
        if overlay is None:
            static = [*seeds, *static]
        elif seeds:
            overlay.join(seeds[0], now=now)
            for seed in seeds[1:]:
                overlay.learn(seed, now=now)
        for address in static:
            self.keep(address, now=now)
        if self._sizer is not None:
            # The first values at once (the lower bounds, for a mesh of one so far), so
            # the runtime's data part and the overlay start on them.
            self._next_sizing = now + self.config.adaptive.sketch_interval
            self._adapt(now, initial=True)
        self._settle(now)

    def add_seeds(self, seeds: list[str], *, now: float) -> None:
        """Seed addresses learned after the start (a DNS seed resolved anew): joined
        through like the first ones (static links too, with static discovery)."""
        seeds = [s for s in dict.fromkeys(seeds) if s != self._address]
        if self._membership is not None:
            self._membership.add_seeds(seeds, now=now)
        overlay = self._overlay
        for seed in seeds:
            if overlay is None:
                self.keep(seed, now=now)
            else:
                overlay.learn(seed, now=now)
        self._settle(now)

    def drop_seeds(self, seeds: list[str], *, now: float) -> None:
        """Seeds no longer wanted (a DNS seed stopped resolving to them: a pod that went
        away): not retried, and with static discovery no longer a kept link (one that is
        up stays until it fails)."""
        if self._membership is not None:
            self._membership.drop_seeds(seeds)
        if self._overlay is None:
            for seed in seeds:
                target = self._targets.get(seed)
                if target is not None and target.static and seed not in self._by_address:
                    del self._targets[seed]
        self._settle(now)

    def keep(self, address: str, *, now: float) -> None:
        """Keep a link to ``address`` whatever membership and the overlay say."""
        if address == self._address:
            return
        target = self._targets.get(address)
        if target is None:
            self._targets[address] = _Target(static=True, overlay=False, due=now,
                                             delay=self.config.reconnect_initial_delay)
        else:
            target.static = True
        self._settle(now)

    def release(self, address: str, *, now: float) -> bool:
        """Stop keeping a link to ``address`` (the undoing of :meth:`keep`): it is no
        longer a seed either, and its link is closed unless the overlay picked the peer
        as a neighbour. Returns whether ``address`` was kept."""
        if self._membership is not None:
            self._membership.drop_seeds([address])
        target = self._targets.get(address)
        if target is None or not target.static:
            return False
        target.static = False
        if not target.overlay:
            del self._targets[address]
            key = self._by_address.get(address)
            if key is not None and key in self._linked:
                self._close(key, "removed")
        self._settle(now)
        return True

    def leave(self, *, now: float) -> None:
        """The node stops: members are told it leaves; links are the runtime's to close
        (each then reported with :meth:`link_down`). Targets are kept for a restart."""
        self._running = False
        if self._membership is not None:
            self._membership.leave(now=now)
        self._drain(now)

    def rejoin(self, *, now: float) -> None:
        """Start again after :meth:`leave`: membership rejoins with a higher
        incarnation, and every target is dialled again now."""
        self._running = True
        if self._membership is not None:
            self._membership.rejoin(self._address, now=now)
        for target in self._targets.values():
            target.state, target.due = _IDLE, now
            target.delay = self.config.reconnect_initial_delay
        self._settle(now)

    def revoke(self, public_key: bytes, *, now: float) -> None:
        """The operator revoked ``public_key`` (the trust policy already knows): expel the
        member and close its links."""
        if self._membership is not None:
            self._membership.expel(public_key, now=now)
        if public_key in self._linked:
            self._close(public_key, "revoked")
        self._settle(now)

    def receive_datagram(self, source: str, data: bytes, *, now: float) -> None:
        """One datagram from ``source`` (``host:port``) on the node's UDP port."""
        sender: bytes | None = None
        if self._sealer is not None:
            opened = self._sealer.open(source, data, now=now, wall=now + self._wall_offset)
            if opened is None:
                return  # refused and counted, or a key exchange answered
            sender, data = opened
        if data[:1] == _OVERLAY_PREFIX:
            if self._overlay is not None:
                self._overlay.receive(source, data[1:], now=now)
        elif data[:1] == _SIZE_PREFIX and self._sketch is not None:
            self._sketch.receive(source, data[1:])
        elif self._membership is not None:
            # Membership's (a size sketch where none is kept is bad input it counts).
            self._membership.receive_datagram(source, data, now=now, sealed_by=sender)
        self._settle(now)

    def _key_at(self, address: str) -> bytes | None:
        """The key behind ``address`` as an authenticated source says: a link's handshake,
        or a member's signed ALIVE claim."""
        key = self._by_address.get(address)
        if key is None and self._membership is not None:
            key = self._membership.key_at(address)
        return key

    def handle_timer(self, *, now: float) -> None:
        """Run what is due: membership's and the overlay's timers, and dials whose
        back-off has passed."""
        if self._membership is not None and self._membership.get_timer() <= now:
            self._membership.handle_timer(now=now)
        if self._overlay is not None and self._overlay.get_timer() <= now:
            self._overlay.handle_timer(now=now)
        if self._sizer is not None and self._running and now >= self._next_sizing:
            self._next_sizing = now + self.config.adaptive.sketch_interval
            self._adapt(now, initial=True)
        self._settle(now)

    def link_up(self, public_key: bytes, address: str, *, now: float) -> None:
        """The peer ``public_key``, listening at ``address`` (as its handshake says), is
        linked: its first link completed the handshake, whoever dialled."""
        self._linked[public_key] = address
        self._by_address[address] = public_key
        self._take_link(public_key, now)
        if self._membership is not None and self._running:
            self._membership.contact(address, public_key, now=now)
        self._settle(now)

    def dial_succeeded(self, address: str, public_key: bytes, *, now: float) -> None:
        """The connection this node dialled to ``address`` finished the handshake with
        ``public_key`` (which may announce another address than the one dialled). The
        link counts once :meth:`link_up` reports the peer linked (at once if it is)."""
        self._by_address[address] = public_key
        if address not in self._targets:
            self._stale_dials.add(public_key)
        if public_key in self._linked:
            self._take_link(public_key, now)
        self._settle(now)

    def _take_link(self, public_key: bytes, now: float) -> None:
        """The peer is linked: every target naming it is satisfied. A link this node
        dialled for a neighbour the overlay dropped before the link was up is wanted by
        nobody here: closed (the peer redials if it wants it)."""
        wanted = False
        for name, key in self._by_address.items():
            target = self._targets.get(name)
            if key == public_key and target is not None:
                wanted = True
                if target.state != _LINKED:
                    target.state, target.linked_at = _LINKED, now
        if public_key in self._stale_dials:
            self._stale_dials.discard(public_key)
            if not wanted:
                self._close(public_key, "unwanted")

    def dial_failed(self, address: str, *, now: float) -> bool:
        """The connection this node dialled to ``address`` failed or closed. Counts as a
        failure only while the dial is outstanding for an address still wanted (a link
        that was up, or a duplicate closed because the peer's own dial won, is not one).
        Returns whether it counted as a failure."""
        key = self._by_address.get(address)
        if key is not None and key not in self._linked:
            del self._by_address[address]
        target = self._targets.get(address)
        if target is None or target.state != _DIALING:
            return False  # not wanted any more, or linked after all
        self._connect_failures += 1
        if target.overlay and self._overlay is not None:
            self._overlay.neighbour_down(address, now=now)
            self._drain(now)  # the overlay drops the target, or keeps it for a retry
            target = self._targets.get(address)
            if target is None:
                self._settle(now)
                return True
        self._back_off(address, target, now, lived=0.0)
        self._settle(now)
        return True

    def link_down(self, public_key: bytes, *, now: float) -> None:
        """The peer ``public_key`` is no longer linked (its last link closed, whoever
        closed it)."""
        address = self._linked.pop(public_key, None)
        asked = public_key in self._closing
        self._closing.discard(public_key)
        self._stale_dials.discard(public_key)
        names = [name for name, key in self._by_address.items() if key == public_key]
        for name in names:
            del self._by_address[name]
        if address is None:
            return
        if not self._running:
            # Closed because the node stops: nothing failed, and a restart dials again.
            for name in names:
                target = self._targets.get(name)
                if target is not None:
                    target.state = _IDLE
            return
        for name in names:
            target = self._targets.get(name)
            if target is None or target.state != _LINKED:
                continue
            # Dialled again (after the back-off) before anything counts as failed: a link
            # can drop and come straight back (two ends settling which of two connections
            # to keep, a sharded node still handing one over). A neighbour that is really
            # gone refuses or times out the dial, and dial_failed tells the overlay.
            self._back_off(name, target, now, lived=now - target.linked_at)
        if not asked and self._membership is not None:
            # A strong hint, which membership confirms the SWIM way before anyone is
            # suspected.
            self._membership.report_unreachable(public_key, now=now)
        self._settle(now)

    # --- outputs -----------------------------------------------------------------------

    def datagrams_to_send(self, *, now: float) -> list[tuple[str, bytes]]:
        """(address, datagram) pairs to send on the node's UDP port; drains. Sealed (the
        seal carries the clock, hence ``now``); a datagram whose recipient's key is not
        known yet waits for the answer to a WHOIS."""
        out, self._datagrams = self._datagrams, []
        sealer = self._sealer
        if sealer is None:
            return out
        wall = now + self._wall_offset
        for address, data in out:
            sealer.seal(address, data, now=now, wall=wall)
        return sealer.take()

    def take_dials(self) -> list[str]:
        """Addresses to dial now; drains. Report each outcome: :meth:`link_up` (with
        ``dialled``) or :meth:`dial_failed`."""
        out, self._dials = self._dials, []
        # A dial queued by an earlier input may have been overtaken since (the overlay
        # dropped the neighbour, or the peer linked first): only what is still wanted.
        return [address for address in dict.fromkeys(out)
                if (target := self._targets.get(address)) is not None
                and target.state == _DIALING]

    def take_closes(self) -> list[tuple[bytes, str]]:
        """(peer key, reason) of links to close; drains."""
        out, self._closes = self._closes, []
        return out

    def take_events(self) -> list[MembershipEvent]:
        """Membership events for the application; drains."""
        out, self._events = self._events, []
        return out

    def take_sizing(self) -> Sizing | None:
        """The adaptive values, when they changed since the last call (the first at the
        start), for the runtime to give its data part
        (:meth:`~somasync.core.endpoint.Endpoint.retune`); the overlay already runs on
        them. None: nothing new."""
        out, self._new_sizing = self._new_sizing, None
        return out

    def get_timer(self) -> float:
        """The next time :meth:`handle_timer` must be called."""
        deadline = float("inf")
        if self._membership is not None:
            deadline = self._membership.get_timer()
        if self._overlay is not None:
            deadline = min(deadline, self._overlay.get_timer())
        if self._sizer is not None and self._running:
            deadline = min(deadline, self._next_sizing)
        if self._running:
            for target in self._targets.values():
                if target.state == _IDLE and target.due < deadline:
                    deadline = target.due
        return deadline

    # --- internals ---------------------------------------------------------------------

    def _adapt(self, now: float, *, initial: bool = False) -> None:
        """Send the size sketch where it is due, and re-derive the adaptive values from
        the latest estimate (the sizer's hysteresis decides whether they change);
        ``initial``: the first values, for ``adaptive.initial_estimate`` when the node
        knows of no more than that yet."""
        sizer = self._sizer
        assert sizer is not None
        sketch, overlay = self._sketch, self._overlay
        if sketch is not None:
            neighbours = overlay.active() if overlay is not None else list(self._linked.values())
            for address, data in sketch.tick(neighbours, now=now):
                self._datagrams.append((address, _SIZE_PREFIX + data))
        self._estimate = self.size_estimate()
        estimate = self._estimate
        if initial and sizer.current is None:
            estimate = max(estimate, float(self.config.adaptive.initial_estimate))
        sizing = sizer.update(estimate, now=now)
        if sizing is None:
            return
        self._new_sizing = sizing
        if overlay is not None and overlay.active_size != sizing.degree:
            overlay.resize(sizing.degree, now=now)

    def _close(self, public_key: bytes, reason: str) -> None:
        if public_key not in self._closing:
            self._closing.add(public_key)
            self._closes.append((public_key, reason))

    def _back_off(self, address: str, target: _Target, now: float, *, lived: float) -> None:
        """A target lost its link or its dial: forget it, or wait and dial again."""
        if not target.static and not target.overlay:
            del self._targets[address]
            return
        config = self.config
        if lived > config.reconnect_max_delay:
            target.state, target.due = _IDLE, now
            target.delay = config.reconnect_initial_delay
            return
        target.state = _IDLE
        target.due = now + target.delay * (0.5 + self._rng.random())
        target.delay = min(target.delay * 2, config.reconnect_max_delay)

    def _settle(self, now: float) -> None:
        """Move what the protocols produced to the outputs, feed membership's verdicts to
        the overlay, apply the overlay's view changes to the targets, and collect the
        dials that are due."""
        self._drain(now)
        if not self._running:
            return
        for address, target in self._targets.items():
            if target.state != _IDLE or target.due > now:
                continue
            if address in self._by_address:
                target.state, target.linked_at = _LINKED, now
                continue
            target.state = _DIALING
            self._dial_count += 1
            self._dials.append(address)

    def _drain(self, now: float) -> None:
        membership, overlay = self._membership, self._overlay
        # Membership's verdicts may change the overlay, whose changes may not touch
        # membership: one pass over each suffices.
        if membership is not None:
            self._datagrams += membership.datagrams_to_send()
            for event in membership.take_events():
                self._events.append(event)
                self._on_verdict(event, now)
        if overlay is not None:
            for address, data in overlay.messages_to_send():
                self._datagrams.append((address, _OVERLAY_PREFIX + data))
            for address, up in overlay.take_changes():
                self._on_view_change(address, up, now)
        if membership is not None:
            self._datagrams += membership.datagrams_to_send()

    def _on_verdict(self, event: MembershipEvent, now: float) -> None:
        overlay = self._overlay
        if isinstance(event, PeerFailed | PeerLeft):
            if event.public_key in self._linked:
                self._close(event.public_key, type(event).__name__)
            if overlay is not None and event.address != self._address:
                if isinstance(event, PeerLeft):
                    overlay.forget(event.address, now=now)
                else:
                    overlay.neighbour_down(event.address, now=now)
        elif (isinstance(event, PeerJoined | PeerRecovered) and overlay is not None
              and event.address != self._address):
            # An address the overlay cannot carry stays a member only.
            with contextlib.suppress(ValueError):
                overlay.learn(event.address, now=now)

    def _on_view_change(self, address: str, up: bool, now: float) -> None:
        target = self._targets.get(address)
        if up and self._sketch is not None:
            self._sketch.neighbour_up(address)
        if up:
            if target is None:
                self._targets[address] = _Target(
                    static=False, overlay=True, due=now,
                    delay=self.config.reconnect_initial_delay)
            else:
                target.overlay = True
            return
        if target is None:
            return
        target.overlay = False
        if target.static:
            return
        del self._targets[address]
        key = self._by_address.get(address)
        if key is not None and key in self._linked:
            self._close(key, "overlay")
