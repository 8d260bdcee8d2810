"""HyParView peer sampling: a small symmetric random overlay with O(log N) state. Sans-IO.

Theory of operation
-------------------
HyParView (Leitao, Pereira, Rodrigues, DSN 2007) gives every node two views of the
mesh. The *active view* (``active_size``, 5 by default: fanout + 1 with fanout =
log10(10,000)) holds the node's neighbours: links are symmetric (a in b's active view
iff b in a's) and broadcast runs over them. The *passive view* (``passive_size``, 30:
the paper's 6 x (log10(N) + 1)) holds backup addresses, refreshed by shuffling, from
which failed neighbours are replaced. State per node stays O(log N) whatever the mesh
size, and the paper keeps the overlay connected after 80 % of the nodes fail at once.

Messages (every one carries the sender's own address; the receiver checks it against
the address the transport saw, and uses that):

* ``JOIN`` (joiner -> contact). The joiner puts the contact in its active view at once.
  The contact adds the joiner to its active view (a full view drops a random member:
  DISCONNECT, and into the passive view), acknowledges with a NEIGHBOR_REPLY, and sends
  FORWARD_JOIN to every other active neighbour. The joiner resends JOIN every
  ``neighbor_timeout`` until acknowledged, and drops the contact after three tries.
* ``FORWARD_JOIN(joiner, ttl)``: a random walk of ``active_walk_length`` hops (ARWL, 6)
  along active links. At hop ``passive_walk_length`` (PRWL, 3) the joiner also enters a
  passive view. Where the walk ends (ttl 0, or no neighbour but the one it came from)
  the node asks the joiner to become its neighbour with a high-priority NEIGHBOR; a
  JOIN thus gives the joiner up to ``active_size`` neighbours spread over the mesh.
* ``NEIGHBOR(priority)``: "add me to your active view". High priority (sent by a node
  with no neighbour at all, at the end of a FORWARD_JOIN walk, and by a full node asking
  a failed neighbour back, see *Reconnecting* below) is always accepted;
  low priority only when the active view has room. The requester adds the peer once
  the ``NEIGHBOR_REPLY(accepted)`` arrives. A refusal leaves the peer in the passive
  view (not asked again for ``shuffle_interval``) and the next entry is tried; no reply
  within ``neighbor_timeout`` removes it from the passive view, and a DISCONNECT cancels
  the request in case only the reply was lost.
* ``DISCONNECT``: "you are no longer my neighbour". The receiver moves the sender from
  its active to its passive view.
* ``SHUFFLE(origin, ttl, entries)``: every ``shuffle_interval`` a node sends itself,
  ``shuffle_active`` (ka, 3) active and ``shuffle_passive`` (kp, 4) passive entries on a
  random walk of ``active_walk_length`` hops. The node where it ends answers the origin
  directly with ``SHUFFLE_REPLY(entries)``, as many of its own passive entries, and
  both merge what they received into their passive views, evicting first the entries
  they sent (so the two views exchange rather than duplicate addresses).

A node with fewer than ``active_size`` neighbours keeps asking passive entries (one
request per missing neighbour at a time); one with none asks with high priority, and one
with neither neighbours nor passive entries joins its contact again. The transport
reports broken links with :meth:`HyParView.neighbour_down`; the peer is dropped at once
(a crash costs no timeout) and replaced from the passive view.

Reconnecting (not in the paper). A partition breaks every link across the cut; each side
refills its active views from its own passive entries (those across the cut do not
answer, and leave the passive views), so when the cut heals, full active views would
never take a peer from the other side again and the overlay would stay split. So a
neighbour dropped through ``neighbour_down`` is remembered for ``reconnect_timeout``
(at most ``passive_size`` of them, the oldest forgotten first), and every
``reconnect_interval`` the node asks the one it tried least recently to become its
neighbour again: with low priority while its active view has room, with high priority
(always accepted; the receiver evicts a random neighbour, which refills from its passive
view as after any eviction) when it is full or empty. One such request is outstanding
at a time. A peer that answers, or becomes a neighbour any other way, is forgotten (one
that refuses enters the passive view); one that does not answer stays remembered (it
may still be cut off) until its time runs out. A node with nothing to retry sets no
reconnect timer.

Datagrams may be lost (UDP) but are assumed to arrive in order between one pair of
nodes. Where a loss leaves a link one-sided, the first random walk the one side sends
over it is answered with a DISCONNECT (or, when a NEIGHBOR request to that peer is
outstanding, taken as its acceptance), so views become symmetric again.

Wire format (all integers unsigned, an ``addr`` is ``u8 length`` + 1-255 bytes of UTF-8)::

    u8 kind                 OverlayKind (append-only)
    u8 version              OVERLAY_VERSION
    addr sender             the sender's own address
    JOIN:                   zero padding to JOIN_SIZE bytes (the joiner pays for the
                            FORWARD_JOINs its JOIN causes: see _on_join)
    DISCONNECT:             nothing more
    FORWARD_JOIN:           addr joiner, u8 ttl
    NEIGHBOR:               u8 priority (0 low, 1 high)
    NEIGHBOR_REPLY:         u8 accepted (0 or 1)
    SHUFFLE:                addr origin, u8 ttl, u8 count, count x addr
    SHUFFLE_REPLY:          u8 count, count x addr

Like the membership protocol, this object never blocks, sleeps or touches a socket: the
driver passes datagrams in (:meth:`HyParView.receive`), sends what
:meth:`HyParView.messages_to_send` returns, opens and closes links as
:meth:`HyParView.take_changes` says, and calls :meth:`HyParView.handle_timer` at
:meth:`HyParView.get_timer`. Time is the driver's monotonic ``now``; all randomness
comes from the injected ``random.Random``, so one seed gives one run.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from somasync.config import OverlayConfig
from somasync.core.budget import AMPLIFICATION_LIMIT
from somasync.errors import DecodeError

__all__ = [
    "JOIN_SIZE",
    "MAX_ADDRESS",
    "OVERLAY_VERSION",
    "HyParView",
    "OverlayKind",
    "OverlayMessage",
    "OverlayStatistics",
    "decode_message",
    "encode_message",
]

OVERLAY_VERSION = 1
"""Version byte of every overlay datagram."""

MAX_ADDRESS = 255
"""Longest address in bytes (UTF-8): one length byte on the wire."""

JOIN_ATTEMPTS = 3  # JOINs sent to a contact before it counts as unreachable
# Bytes of a JOIN, padded; a shorter one is refused. It pays for what a JOIN makes its
# contact send (at most AMPLIFICATION_LIMIT bytes per byte): a FORWARD_JOIN to each of the
# other active neighbours (sealed, addresses of ~20 bytes), and the steps of those walks
# that come back through the contact (in a small mesh, a walk of six hops returns about
# 1.5 times).
JOIN_SIZE = 128


class OverlayKind(enum.IntEnum):
    """What an overlay datagram asks or answers. WARNING: append only."""

    JOIN = 1
    """A new node asks its contact to take it in."""
    FORWARD_JOIN = 2
    """A random walk announcing a joiner."""
    NEIGHBOR = 3
    """A request to enter the receiver's active view (low or high priority)."""
    NEIGHBOR_REPLY = 4
    """The answer to NEIGHBOR (accepted or refused), or a JOIN's acknowledgement."""
    DISCONNECT = 5
    """The sender dropped the receiver from its active view."""
    SHUFFLE = 6
    """A random walk carrying a sample of the origin's views."""
    SHUFFLE_REPLY = 7
    """A sample of the passive view, sent straight back to a shuffle's origin."""


@dataclass(frozen=True, slots=True)
class OverlayMessage:
    """A decoded overlay datagram. Fields a kind does not carry keep their defaults."""

    kind: OverlayKind
    sender: str
    """The address the sender gives as its own."""
    node: str = ""
    """FORWARD_JOIN: the joiner; SHUFFLE: the node that started the walk."""
    ttl: int = 0
    """FORWARD_JOIN and SHUFFLE: hops the walk may still take."""
    high_priority: bool = False
    """NEIGHBOR: the request must be accepted even by a full active view."""
    accepted: bool = False
    """NEIGHBOR_REPLY: the request was accepted."""
    entries: tuple[str, ...] = ()
    """SHUFFLE and SHUFFLE_REPLY: the addresses exchanged."""


def _address(text: str, what: str) -> bytes:
    raw = text.encode()
    if not 0 < len(raw) <= MAX_ADDRESS:
        raise ValueError(f"{what} must be 1-{MAX_ADDRESS} bytes of UTF-8, got {text!r}")
    return bytes((len(raw),)) + raw


def encode_message(kind: OverlayKind, sender: str, *, node: str = "", ttl: int = 0,
                   high_priority: bool = False, accepted: bool = False,
                   entries: Sequence[str] = ()) -> bytes:
    """Encode one overlay datagram (layout in the module docstring).

    Raises:
        ValueError: an address is empty or longer than :data:`MAX_ADDRESS` bytes, or
            ``ttl`` or the number of entries does not fit in one byte. (Only the caller's
            own mistakes: input from the network goes through :func:`decode_message`.)
    """
    parts = [bytes((kind, OVERLAY_VERSION)), _address(sender, "sender")]
    if kind in (OverlayKind.FORWARD_JOIN, OverlayKind.SHUFFLE):
        if not 0 <= ttl <= 255:
            raise ValueError(f"ttl must be 0-255, got {ttl}")
        parts += [_address(node, "node"), bytes((ttl,))]
    elif kind == OverlayKind.NEIGHBOR:
        parts.append(b"\x01" if high_priority else b"\x00")
    elif kind == OverlayKind.NEIGHBOR_REPLY:
        parts.append(b"\x01" if accepted else b"\x00")
    if kind in (OverlayKind.SHUFFLE, OverlayKind.SHUFFLE_REPLY):
        if len(entries) > 255:
            raise ValueError(f"at most 255 entries, got {len(entries)}")
        parts.append(bytes((len(entries),)))
        parts.extend(_address(entry, "entry") for entry in entries)
    return b"".join(parts)


def _read_address(data: bytes, offset: int, what: str) -> tuple[str, int]:
    if offset >= len(data):
        raise DecodeError("truncated", f"{what} length missing")
    length = data[offset]
    if length == 0:
        raise DecodeError("bad_address", f"empty {what}")
    end = offset + 1 + length
    if end > len(data):
        raise DecodeError("truncated", f"{what} cut short")
    try:
        return data[offset + 1 : end].decode(), end
    except UnicodeDecodeError:
        raise DecodeError("bad_address", f"{what} is not UTF-8") from None


def _read_byte(data: bytes, offset: int, what: str) -> int:
    if offset >= len(data):
        raise DecodeError("truncated", f"{what} missing")
    return data[offset]


def _read_flag(data: bytes, offset: int, what: str) -> bool:
    value = _read_byte(data, offset, what)
    if value > 1:
        raise DecodeError("bad_message", f"{what} must be 0 or 1, got {value}")
    return value == 1


def decode_message(data: bytes, *, max_entries: int = 255) -> OverlayMessage:
    """Decode one overlay datagram; a list longer than ``max_entries`` is refused before
    any entry is read.

    Raises:
        DecodeError: for any malformed input (``truncated``, ``bad_version``,
            ``unknown_kind``, ``bad_address``, ``bad_message``, ``too_many``,
            ``bad_length``), and nothing else.
    """
    if len(data) < 2:
        raise DecodeError("truncated", "datagram shorter than its header")
    kind_value, version = data[0], data[1]
    if version != OVERLAY_VERSION:
        raise DecodeError("bad_version", f"overlay version {version}")
    try:
        kind = OverlayKind(kind_value)
    except ValueError:
        raise DecodeError("unknown_kind", f"overlay kind {kind_value}") from None
    sender, offset = _read_address(data, 2, "sender")
    node, ttl, high_priority, accepted = "", 0, False, False
    entries: list[str] = []
    if kind in (OverlayKind.FORWARD_JOIN, OverlayKind.SHUFFLE):
        node, offset = _read_address(data, offset, "node")
        ttl = _read_byte(data, offset, "ttl")
        offset += 1
    elif kind == OverlayKind.NEIGHBOR:
        high_priority = _read_flag(data, offset, "priority")
        offset += 1
    elif kind == OverlayKind.NEIGHBOR_REPLY:
        accepted = _read_flag(data, offset, "accepted flag")
        offset += 1
    if kind in (OverlayKind.SHUFFLE, OverlayKind.SHUFFLE_REPLY):
        count = _read_byte(data, offset, "entry count")
        offset += 1
        if count > max_entries:
            raise DecodeError("too_many", f"{count} entries > {max_entries}")
        for _ in range(count):
            entry, offset = _read_address(data, offset, "entry")
            entries.append(entry)
    if offset != len(data) and (kind != OverlayKind.JOIN or data.count(0, offset) !=
                                len(data) - offset):
        raise DecodeError("bad_length", "trailing bytes")  # a JOIN's padding is zeros
    return OverlayMessage(kind, sender, node, ttl, high_priority, accepted, tuple(entries))


@dataclass(frozen=True, slots=True)
class OverlayStatistics:
    """Counters of one node's overlay."""

    active: int
    """Neighbours in the active view now."""
    passive: int
    """Entries in the passive view now."""
    pending: int
    """NEIGHBOR requests and JOINs waiting for an answer now."""
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    rejected: int
    """Datagrams refused: malformed, oversized, claiming another sender than the
    transport saw, from this node itself, or a SHUFFLE_REPLY with no shuffle of ours
    outstanding (``unsolicited``)."""
    reject_reasons: dict[str, int]
    """``rejected`` by reason (``oversize``, ``truncated``, ``sender_mismatch``...)."""
    joins: int
    """JOINs this node accepted as a contact."""
    promotions: int
    """Passive entries that became neighbours on this node's NEIGHBOR request."""
    neighbor_requests: int
    """NEIGHBOR requests sent (passive promotions, ends of join walks, reconnects)."""
    neighbor_refusals: int
    """Of those, refused by a full peer."""
    neighbor_timeouts: int
    """Of those (and JOINs), unanswered within ``neighbor_timeout``."""
    evictions: int
    """Neighbours dropped (with a DISCONNECT) to make room for a new one."""
    failures: int
    """Neighbours the transport reported down."""
    repairs: int
    """DISCONNECTs sent to a peer that behaved as our neighbour but was not one."""
    shuffles: int
    """Shuffles this node started."""
    reconnecting: int
    """Failed neighbours remembered for reconnecting now (at most ``passive_size``)."""
    reconnect_requests: int
    """NEIGHBOR requests sent to failed neighbours (also in ``neighbor_requests``)."""
    reconnects: int
    """Failed neighbours that became neighbours again while remembered."""


@dataclass(slots=True)
class _Request:
    deadline: float
    high: bool
    join: bool = False
    """A JOIN to the contact (already an active neighbour) rather than a NEIGHBOR."""
    attempts: int = 1
    reconnect: bool = False
    """A NEIGHBOR request to a remembered failed neighbour."""


@dataclass(slots=True)
class _Lost:
    """A neighbour whose link failed, remembered for reconnecting."""

    until: float
    """Forgotten after this time."""
    tried: float = float("-inf")
    """Last reconnect request sent to it."""


@dataclass(slots=True)
class _Counters:
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    joins: int = 0
    promotions: int = 0
    requests: int = 0
    refusals: int = 0
    timeouts: int = 0
    evictions: int = 0
    failures: int = 0
    repairs: int = 0
    shuffles: int = 0
    reconnect_requests: int = 0
    reconnects: int = 0


class HyParView:
    """The HyParView state of one node.

    Args:
        me: this node's address, as others reach it (1-255 bytes of UTF-8).
        config: view sizes, walk lengths and timings.
        rng: the only source of randomness.
        now: the driver's monotonic clock at creation (seconds).

    Raises:
        ValueError: ``me`` is empty or longer than 255 bytes.
    """

    def __init__(self, me: str, config: OverlayConfig, *, rng: random.Random,
                 now: float, datagram_overhead: int = 0) -> None:
        _address(me, "me")
        self.config = config
        self._me = me
        self._overhead = datagram_overhead  # what the driver's seal adds to a datagram
        self._rng = rng
        self.score_of: Callable[[str], float] | None = None
        """The data part's peer score of the neighbour at an address (see
        :mod:`somasync.core.scoring`), when the driver provides it: a full active view
        drops a neighbour with a negative score before any other."""
        self.active_size = config.active_size
        """Neighbours the active view holds at most: ``config.active_size`` until
        :meth:`resize` (adaptive fanout) changes it."""
        self._active: dict[str, None] = {}
        self._passive: dict[str, None] = {}
        self._pending: dict[str, _Request] = {}
        self._backoff: dict[str, float] = {}  # passive entry -> not asked again before
        self._lost: dict[str, _Lost] = {}  # failed neighbours to reconnect, oldest first
        self._next_reconnect = now  # meaningful only while _lost is not empty
        self._shuffle_sent: list[str] | None = None
        self._contact: str | None = None
        self._outgoing: list[tuple[str, bytes]] = []
        self._changes: list[tuple[str, bool]] = []
        self._counters = _Counters()
        self._max_entries = config.shuffle_active + config.shuffle_passive + 1
        self._next_shuffle = now + config.shuffle_interval * (0.5 + rng.random())

    @property
    def me(self) -> str:
        """This node's own address."""
        return self._me

    # --- inputs --------------------------------------------------------------------

    def join(self, contact: str, *, now: float) -> None:
        """Join the overlay through ``contact``: it becomes an active neighbour at once
        and is sent JOIN (resent until acknowledged, at most three times). A node left
        with no neighbour and no passive entry joins ``contact`` again at its next
        shuffle time.

        Raises:
            ValueError: ``contact`` is empty or longer than 255 bytes.
        """
        _address(contact, "contact")
        if contact == self._me:
            return
        self._contact = contact
        self._add_active(contact)
        self._pending[contact] = _Request(now + self.config.neighbor_timeout, high=True,
                                          join=True)
        self._send(contact, OverlayKind.JOIN, padding=JOIN_SIZE)

    def receive(self, sender: str, data: bytes, *, now: float) -> None:
        """Handle one datagram from ``sender`` (the address the transport saw). Never
        raises on bad input: it is counted in ``statistics().rejected`` and dropped."""
        counters = self._counters
        counters.messages_in += 1
        counters.bytes_in += len(data)
        if len(data) > self.config.max_message:
            self._reject("oversize")
            return
        try:
            message = decode_message(data, max_entries=self._max_entries)
        except DecodeError as exc:
            self._reject(exc.reason)
            return
        if message.sender != sender:
            self._reject("sender_mismatch")
            return
        if sender == self._me:
            self._reject("from_self")
            return
        kind = message.kind
        if kind == OverlayKind.JOIN:
            self._on_join(sender, len(data))
        elif kind == OverlayKind.FORWARD_JOIN:
            self._on_walk_from(sender, now)
            self._on_forward_join(sender, message.node, message.ttl, now)
        elif kind == OverlayKind.NEIGHBOR:
            self._on_neighbor(sender, message.high_priority)
        elif kind == OverlayKind.NEIGHBOR_REPLY:
            self._on_neighbor_reply(sender, message.accepted, now)
        elif kind == OverlayKind.DISCONNECT:
            self._on_disconnect(sender, now)
        elif kind == OverlayKind.SHUFFLE:
            self._on_walk_from(sender, now)
            self._on_shuffle(sender, message)
        else:
            self._on_shuffle_reply(message.entries)
        self._fill(now)

    def neighbour_down(self, peer: str, *, now: float) -> None:
        """The transport saw the link to ``peer`` fail. An active neighbour is dropped (it
        is sent a DISCONNECT, should only the link have failed), replaced from the
        passive view (high priority when no neighbour is left, low otherwise), and
        remembered for reconnecting (see the module docstring). A peer with a request
        outstanding counts as not answering; a passive entry is removed."""
        request = self._pending.get(peer)
        if peer in self._active:
            self._counters.failures += 1
            self._remove_active(peer)
            self._pending.pop(peer, None)
            self._send(peer, OverlayKind.DISCONNECT)
            self._remember_lost(peer, now)
        elif request is not None:
            self._on_request_timeout(peer, request, now, failed=True)
        else:
            self._remove_passive(peer)
        self._fill(now)

    def learn(self, peer: str, *, now: float) -> None:
        """``peer`` is a live member by another protocol's word (SWIM saw it join or come
        back): a passive entry while the passive view has room, so a node whose JOIN was
        lost, or whose passive view ran dry, still finds neighbours. A full passive view
        is left alone: shuffles keep it a random sample, which a flood of joins would not.

        Raises:
            ValueError: ``peer`` is empty or longer than 255 bytes.
        """
        _address(peer, "peer")
        if len(self._passive) < self.config.passive_size:
            self._add_passive(peer)
        self._fill(now)

    def forget(self, peer: str, *, now: float) -> None:
        """``peer`` left the mesh on purpose (a signed leave): it is dropped from every
        view without a DISCONNECT and is not remembered for reconnecting, unlike a
        failure (:meth:`neighbour_down`), which may only be a partition."""
        if peer in self._active:
            self._remove_active(peer)
        self._pending.pop(peer, None)
        self._lost.pop(peer, None)
        self._remove_passive(peer)
        self._fill(now)

    def resize(self, size: int, *, now: float) -> None:
        """Hold ``size`` neighbours from now on (the adaptive degree). A larger view asks
        passive entries for the new slots at once; a smaller one drops neighbours at
        random (one its peer score holds something against first), each sent a
        DISCONNECT and kept as a passive entry, as a full view drops one for a newcomer.

        Raises:
            ValueError: ``size`` is below 1.
        """
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.active_size = size
        while len(self._active) > size:
            victim = self._victim(list(self._active))
            self._counters.evictions += 1
            self._remove_active(victim)
            self._pending.pop(victim, None)
            self._send(victim, OverlayKind.DISCONNECT)
            self._add_passive(victim)
        self._fill(now)

    def handle_timer(self, *, now: float) -> None:
        """Run whatever is due: request timeouts (and JOIN retries), the periodic
        shuffle (or a rejoin when isolated), a reconnect attempt, and refilling the
        active view."""
        for peer, request in list(self._pending.items()):
            if request.deadline <= now and self._pending.get(peer) is request:
                self._on_request_timeout(peer, request, now)
        if self._lost and now >= self._next_reconnect:
            self._next_reconnect = now + self.config.reconnect_interval
            self._reconnect(now)
        if now >= self._next_shuffle:
            self._next_shuffle = now + self.config.shuffle_interval
            if self._active:
                self._start_shuffle()
            elif (not self._passive and self._contact is not None
                  and all(r.reconnect for r in self._pending.values())):
                # Isolated: a reconnect request (sent every reconnect_interval, so it
                # could be outstanding at every shuffle time) must not hold the rejoin up.
                self.join(self._contact, now=now)
        self._fill(now)

    def get_timer(self) -> float:
        """The next time :meth:`handle_timer` must be called."""
        deadline = self._next_shuffle
        for request in self._pending.values():
            deadline = min(deadline, request.deadline)
        if self._lost:
            deadline = min(deadline, self._next_reconnect)
        if len(self._active) + len(self._pending) < self.active_size:
            for peer, until in self._backoff.items():
                if peer not in self._pending:
                    deadline = min(deadline, until)
        return deadline

    # --- outputs -------------------------------------------------------------------

    def messages_to_send(self) -> list[tuple[str, bytes]]:
        """(destination address, datagram) pairs the driver must send, in order; drains.
        Destinations are not only neighbours (NEIGHBOR goes to passive entries, a
        SHUFFLE_REPLY to the shuffle's origin)."""
        out, self._outgoing = self._outgoing, []
        return out

    def take_changes(self) -> list[tuple[str, bool]]:
        """Changes of the active view since the last call, in order; drains.

        ``(peer, True)``: ``peer`` became a neighbour, open a link to it; ``(peer,
        False)``: it stopped being one, close the link. Both ends of a link report it
        (each when it adds the other), so a driver dialling on ``True`` must accept that
        the peer may be dialling too."""
        changes, self._changes = self._changes, []
        return changes

    def active(self) -> list[str]:
        """The active view (neighbours), oldest first."""
        return list(self._active)

    def passive(self) -> list[str]:
        """The passive view (backup addresses), oldest first."""
        return list(self._passive)

    def statistics(self) -> OverlayStatistics:
        """A snapshot of the counters and view sizes."""
        c = self._counters
        return OverlayStatistics(
            active=len(self._active), passive=len(self._passive), pending=len(self._pending),
            messages_in=c.messages_in, messages_out=c.messages_out, bytes_in=c.bytes_in,
            bytes_out=c.bytes_out, rejected=sum(c.rejected.values()),
            reject_reasons=dict(c.rejected), joins=c.joins, promotions=c.promotions,
            neighbor_requests=c.requests, neighbor_refusals=c.refusals,
            neighbor_timeouts=c.timeouts, evictions=c.evictions, failures=c.failures,
            repairs=c.repairs, shuffles=c.shuffles, reconnecting=len(self._lost),
            reconnect_requests=c.reconnect_requests, reconnects=c.reconnects,
        )

    # --- message handlers ----------------------------------------------------------

    def _on_join(self, joiner: str, size: int) -> None:
        if size < JOIN_SIZE:
            self._reject("join_underpaid")
            return
        if joiner in self._active:  # a resent JOIN whose acknowledgement was lost
            self._send(joiner, OverlayKind.NEIGHBOR_REPLY, accepted=True)
            return
        self._counters.joins += 1
        self._add_active(joiner)
        self._send(joiner, OverlayKind.NEIGHBOR_REPLY, accepted=True)
        # At most AMPLIFICATION_LIMIT bytes go out per byte of the JOIN: the reply, the
        # DISCONNECT to a neighbour the joiner displaced, the walks, and one step more
        # for a walk that comes back through this node. A JOIN padded to JOIN_SIZE pays
        # for the walks of a full active view.
        walk = len(encode_message(OverlayKind.FORWARD_JOIN, self._me, node=joiner,
                                  ttl=self.config.active_walk_length)) + self._overhead
        reply = len(encode_message(OverlayKind.NEIGHBOR_REPLY, self._me)) \
            + len(encode_message(OverlayKind.DISCONNECT, self._me)) + 2 * self._overhead
        paid = (AMPLIFICATION_LIMIT * (size + self._overhead) - reply) // walk - 1
        peers = [peer for peer in self._active if peer != joiner]
        if len(peers) > paid:  # an active view larger than JOIN_SIZE pays for
            self._reject("join_underpaid")
            peers = self._rng.sample(peers, max(0, paid))
        for peer in peers:
            self._send(peer, OverlayKind.FORWARD_JOIN, node=joiner,
                       ttl=self.config.active_walk_length)

    def _on_walk_from(self, sender: str, now: float) -> None:
        """A random walk arrived over a link only a neighbour would use."""
        if sender in self._active:
            request = self._pending.get(sender)
            if request is not None and request.join:  # the contact took our JOIN
                del self._pending[sender]
            return
        request = self._pending.get(sender)
        if request is not None and not request.join:
            # It treats us as a neighbour, so it took our request: the reply was lost.
            self._on_neighbor_reply(sender, True, now)
            return
        self._counters.repairs += 1
        self._send(sender, OverlayKind.DISCONNECT)

    def _on_forward_join(self, sender: str, joiner: str, ttl: int, now: float) -> None:
        if joiner == self._me:
            return
        ttl = min(ttl, self.config.active_walk_length)
        candidates = [p for p in self._active if p != sender and p != joiner]
        if ttl == 0 or not candidates:
            if joiner not in self._active and joiner not in self._pending:
                self._request(joiner, now, high=True)
            return
        if ttl == self.config.passive_walk_length:
            self._add_passive(joiner)
        self._send(self._rng.choice(candidates), OverlayKind.FORWARD_JOIN, node=joiner,
                   ttl=ttl - 1)

    def _on_neighbor(self, sender: str, high: bool) -> None:
        if sender in self._active or high or len(self._active) < self.active_size:
            self._add_active(sender)
            self._send(sender, OverlayKind.NEIGHBOR_REPLY, accepted=True)
        else:
            self._add_passive(sender)
            self._send(sender, OverlayKind.NEIGHBOR_REPLY, accepted=False)

    def _on_neighbor_reply(self, sender: str, accepted: bool, now: float) -> None:
        request = self._pending.get(sender)
        if request is None or request.join:
            if request is not None and accepted:  # the contact acknowledged our JOIN
                del self._pending[sender]
            elif accepted and sender not in self._active:
                # Too late (we gave up on it): it added us, so undo that.
                self._send(sender, OverlayKind.DISCONNECT)
            return
        del self._pending[sender]
        if accepted:
            if sender in self._passive:
                self._counters.promotions += 1
            self._add_active(sender)
        else:
            self._counters.refusals += 1
            if request.reconnect and self._lost.pop(sender, None) is not None:
                # Reachable again, only full: keep it as a backup like any refusal.
                self._add_passive(sender)
            if sender in self._passive:
                self._backoff[sender] = now + self.config.shuffle_interval

    def _on_disconnect(self, sender: str, now: float) -> None:
        if self._lost.pop(sender, None) is not None:
            # Its link closed before this datagram arrived (TCP and UDP race), so we took
            # it for a failure; it dropped us on purpose and is not to be asked back.
            self._add_passive(sender)
        elif sender not in self._active:
            return
        else:
            self._remove_active(sender)
            self._add_passive(sender)
        if sender in self._passive:  # it just dropped us: do not ask it straight back
            self._backoff[sender] = now + self.config.shuffle_interval

    def _on_shuffle(self, sender: str, message: OverlayMessage) -> None:
        origin = message.node
        if origin == self._me:
            return
        ttl = min(message.ttl, self.config.active_walk_length) - 1
        candidates = [p for p in self._active if p != sender and p != origin]
        if ttl > 0 and candidates:
            self._send(self._rng.choice(candidates), OverlayKind.SHUFFLE, node=origin,
                       ttl=ttl, entries=self._fit(message.entries, origin=origin))
            return
        received = [origin, *message.entries]
        pool = [p for p in self._passive if p != origin]
        reply = self._rng.sample(pool, min(len(received), len(pool)))
        reply = self._fit(reply)
        self._send(origin, OverlayKind.SHUFFLE_REPLY, entries=reply)
        self._merge(received, sent=reply)

    def _on_shuffle_reply(self, entries: tuple[str, ...]) -> None:
        sent = self._shuffle_sent
        if sent is None:
            self._reject("unsolicited")
            return
        self._shuffle_sent = None
        self._merge(list(entries), sent=sent)

    def _on_request_timeout(self, peer: str, request: _Request, now: float, *,
                            failed: bool = False) -> None:
        if request.join:
            if not failed and request.attempts < JOIN_ATTEMPTS and peer in self._active:
                request.attempts += 1
                request.deadline = now + self.config.neighbor_timeout
                self._send(peer, OverlayKind.JOIN)
                return
            del self._pending[peer]
            self._counters.timeouts += 1
            if peer in self._active:
                self._remove_active(peer)
            self._send(peer, OverlayKind.DISCONNECT)
            return
        del self._pending[peer]
        self._counters.timeouts += 1
        self._remove_passive(peer)
        # Only the reply may have been lost: make sure the peer does not keep us.
        self._send(peer, OverlayKind.DISCONNECT)

    # --- views ---------------------------------------------------------------------

    def _add_active(self, peer: str) -> None:
        if peer == self._me or peer in self._active:
            return
        self._remove_passive(peer)
        if len(self._active) >= self.active_size:
            victims = [p for p in self._active if p != self._contact_pending()] \
                or list(self._active)
            victim = self._victim(victims)
            self._counters.evictions += 1
            self._remove_active(victim)
            self._pending.pop(victim, None)
            self._send(victim, OverlayKind.DISCONNECT)
            self._add_passive(victim)
        self._active[peer] = None
        request = self._pending.get(peer)
        if request is not None and not request.join:
            del self._pending[peer]
        if self._lost.pop(peer, None) is not None:
            self._counters.reconnects += 1
        self._changes.append((peer, True))

    def _victim(self, victims: list[str]) -> str:
        score_of = self.score_of
        scored = [(score_of(p), p) for p in victims] if score_of is not None else []
        misbehaving = [entry for entry in scored if entry[0] < 0]
        # A neighbour its peer score holds something against goes first; among the
        # others the choice stays random, as HyParView's resilience needs.
        return min(misbehaving)[1] if misbehaving else self._rng.choice(victims)

    def _contact_pending(self) -> str | None:
        """The contact while its JOIN is unacknowledged: not evicted before it knows us."""
        contact = self._contact
        if contact is not None and contact in self._pending:
            return contact
        return None

    def _remove_active(self, peer: str) -> None:
        del self._active[peer]
        self._changes.append((peer, False))

    def _add_passive(self, peer: str, *, evict_first: Sequence[str] = ()) -> None:
        if peer == self._me or peer in self._active or peer in self._passive:
            return
        if len(self._passive) >= self.config.passive_size:
            victim = next((p for p in evict_first if p in self._passive), None)
            if victim is None:
                victim = self._rng.choice(list(self._passive))
            self._remove_passive(victim)
        self._passive[peer] = None

    def _remove_passive(self, peer: str) -> None:
        self._passive.pop(peer, None)
        self._backoff.pop(peer, None)

    def _merge(self, entries: Sequence[str], *, sent: Sequence[str]) -> None:
        """Add shuffled ``entries`` to the passive view, evicting first what was sent."""
        for entry in dict.fromkeys(entries):
            self._add_passive(entry, evict_first=sent)

    def _request(self, peer: str, now: float, *, high: bool, reconnect: bool = False) -> None:
        self._counters.requests += 1
        self._pending[peer] = _Request(now + self.config.neighbor_timeout, high=high,
                                       reconnect=reconnect)
        self._send(peer, OverlayKind.NEIGHBOR, high_priority=high)

    def _remember_lost(self, peer: str, now: float) -> None:
        """Remember a neighbour whose link failed, to ask it back (module docstring)."""
        timeout = self.config.reconnect_timeout
        if timeout <= 0 or peer in self._lost:  # an entry keeps its first deadline
            return
        if not self._lost:
            self._next_reconnect = now + self.config.reconnect_interval
        elif len(self._lost) >= self.config.passive_size:
            del self._lost[next(iter(self._lost))]  # the oldest
        self._lost[peer] = _Lost(now + timeout)

    def _reconnect(self, now: float) -> None:
        """Forget expired failed neighbours; ask the one tried least recently to become a
        neighbour again, unless a reconnect request is already outstanding."""
        lost = self._lost
        for peer in [p for p, entry in lost.items() if entry.until <= now]:
            del lost[peer]
        if any(r.reconnect for r in self._pending.values()):
            return
        candidates = [p for p in lost if p not in self._pending and p not in self._active]
        if not candidates:
            return
        peer = min(candidates, key=lambda p: lost[p].tried)  # ties: the oldest
        lost[peer].tried = now
        # A full view must ask with high priority to be heard, and so must an empty one
        # (as in _fill); with room, a low-priority request costs the peer no neighbour.
        high = not self._active or len(self._active) >= self.active_size
        self._counters.reconnect_requests += 1
        self._backoff.pop(peer, None)
        self._request(peer, now, high=high, reconnect=True)

    def _fill(self, now: float) -> None:
        """Ask passive entries until requests cover every free active slot."""
        missing = self.active_size - len(self._active) - len(self._pending)
        if missing <= 0 or not self._passive:
            return
        candidates = [p for p in self._passive if p not in self._pending
                      and self._backoff.get(p, now) <= now]
        for peer in self._rng.sample(candidates, min(missing, len(candidates))):
            # High priority only with no neighbour at all, and one such request at once:
            # each acceptance by a full peer costs that peer a neighbour.
            high = not self._active and not any(r.high for r in self._pending.values())
            self._backoff.pop(peer, None)
            self._request(peer, now, high=high)

    def _start_shuffle(self) -> None:
        config = self.config
        active = list(self._active)
        target = self._rng.choice(active)
        others = [p for p in active if p != target]
        sample = self._rng.sample(others, min(config.shuffle_active, len(others)))
        passive = list(self._passive)
        sample += self._rng.sample(passive, min(config.shuffle_passive, len(passive)))
        sample = self._fit(sample, origin=self._me)
        self._counters.shuffles += 1
        self._shuffle_sent = sample
        self._send(target, OverlayKind.SHUFFLE, node=self._me,
                   ttl=config.active_walk_length, entries=sample)

    def _fit(self, entries: Sequence[str], *, origin: str | None = None) -> list[str]:
        """The leading ``entries`` that fit in ``max_message`` (with a SHUFFLE's
        ``origin`` and ttl when given, else as a SHUFFLE_REPLY)."""
        size = 2 + 1 + len(self._me.encode()) + 1
        if origin is not None:
            size += 1 + len(origin.encode()) + 1
        kept: list[str] = []
        for entry in entries:
            size += 1 + len(entry.encode())
            if size > self.config.max_message:
                break
            kept.append(entry)
        return kept

    # --- plumbing ------------------------------------------------------------------

    def _send(self, peer: str, kind: OverlayKind, *, node: str = "", ttl: int = 0,
              high_priority: bool = False, accepted: bool = False,
              entries: Sequence[str] = (), padding: int = 0) -> None:
        data = encode_message(kind, self._me, node=node, ttl=ttl,
                              high_priority=high_priority, accepted=accepted, entries=entries)
        if len(data) < padding:
            data += bytes(padding - len(data))
        self._counters.messages_out += 1
        self._counters.bytes_out += len(data)
        self._outgoing.append((peer, data))

    def _reject(self, reason: str) -> None:
        rejected = self._counters.rejected
        rejected[reason] = rejected.get(reason, 0) + 1
