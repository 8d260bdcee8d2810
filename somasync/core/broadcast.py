"""The epidemic broadcast tree (Plumtree): which neighbour gets a whole message, and which
only its id.

Theory of operation (Leitão, Pereira, Rodrigues, "Epidemic Broadcast Trees", SRDS 2007)
-----------------------------------------------------------------------------------
Every neighbour link is either *eager* or *lazy*, per stream (origin): each origin gets
its own tree, rooted at it, as riak_core's broadcast keeps one per root. A new message goes
whole to its stream's eager links and as a 25-byte announcement, batched into one IHAVE
frame per link and turn, to the lazy ones. Links start eager, so a stream's first message
floods the overlay; each duplicate copy then PRUNEs the link it came on for that stream
(the sender turns it lazy), until about one copy reaches each node: a spanning tree made
of the links that delivered first from that origin, that is, its fastest paths. One
tree shared by every origin would be cheaper to keep but deeper: a message from a leaf
climbs up and down it (the simulator measured last-delivery hops of 24 median, 36 max at
10,000 nodes with a shared tree).

A node keeps only the pruned (lazy) links of each stream, for at most ``max_trees``
streams, least recently used first out; a forgotten stream floods once and prunes again.

A push can cross the PRUNE that ends it: b prunes c, and c's copy of the next message,
sent before the PRUNE reached c, arrives before the copy from b's parent a. Taken as
Plumtree takes it, c becomes b's parent again (c no longer pushes to b), b passes the
message on to a (a prunes b for that duplicate), and b prunes a for the tree copy that
follows: no neighbour pushes that stream to b any more, and every message of the stream
comes by GRAFT, one ``lazy_timeout`` late, until a GRAFT turns a link eager again, so a
stream at 750 msg/s cost about 190 GRAFTs and repairs each time. Such a *stale push*
(on a link this node pruned less than :data:`STALE_PUSH_WINDOW` ago) is delivered and
passed on, but only announced to the parent, and neither it nor the tree copy behind it
changes the tree.

When an announced message does not arrive within ``lazy_timeout`` (the tree above us
broke: a crash, a partition), the node GRAFTs the announcer: asks it for the message and
makes the link eager again, so the tree repairs itself where it broke. Should the answer
not come within ``graft_retry``, the next announcer is asked. Anti-entropy digests stay
underneath as the last line of defence, for what neither path carried.

This class holds only the per-node state and decisions; the
:class:`~somasync.core.endpoint.Endpoint` moves the frames. A sharded node keeps one tree
per worker: each worker handles its own streams, so each tree is consistent for the
messages it carries.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["BroadcastTree", "TreeStatistics"]

LINK_SHARE = 4
"""One link's announcements may hold at most ``max_missing / LINK_SHARE`` (at least 16)
of the missing messages at once."""
ANNOUNCE_BAND = 6
"""IHAVE entries are batched per send band, ``priority >> 6`` (the four bands of
:class:`~somasync.core.outbox.Outbox`, first in first out within each)."""
STALE_PUSH_WINDOW = 2.0
"""Seconds after this node pruned a link during which a push on that link is taken for
one sent before the PRUNE arrived (see the module): a round trip, under load. Later, the
neighbour pushes on purpose (it forgot the stream's tree, or its link came back): its
pushes count as usual, and prune or graft as Plumtree's do."""
RECENT_REPAIRS = 256
"""Messages that arrived by repair (GRAFT answer or anti-entropy) or as a stale push,
remembered so that a tree copy trailing them is not taken for a duplicate from a
redundant link. The tree copy trails by at most the repair time or a round trip (about
a second), so a short memory suffices."""


@dataclass(frozen=True, slots=True)
class TreeStatistics:
    """Counters and sizes of one node's broadcast tree."""

    streams: int
    """Streams (origins) with a tree of their own here."""
    eager_links: int
    """Over the streams with a tree (or all links, with none): links that push."""
    lazy_links: int
    """Over the streams with a tree: links that only announce."""
    missing: int
    """Messages announced to this node but not yet received."""
    announcements_sent: int
    """IHAVE entries queued (one per message per lazy link)."""
    grafts_sent: int
    prunes_sent: int
    grafts_received: int
    prunes_received: int
    missing_dropped: int
    """Announced messages forgotten: ``max_missing`` was full, or every announcer went
    away before answering. Anti-entropy still repairs them."""
    announcements_refused: int
    """Announcements of missing messages not taken because their link already had its
    share (:data:`LINK_SHARE`) of ``max_missing`` waiting: one neighbour announcing ids
    that exist nowhere cannot push the others' missing messages out."""
    broken_promises: int
    """GRAFTs a neighbour left unanswered within ``graft_retry``: it announced a message
    and did not send it when asked."""
    grafts_held: int
    """GRAFTs not sent when due because a copy of the message waited, read but not yet
    handled, in this node's own backlog (overload here, not a break in the tree); each
    is due again ``graft_retry`` later, and no promise counts as broken meanwhile."""
    trees_dropped: int
    """Stream trees forgotten beyond ``max_trees`` (their next message floods)."""
    stale_pushes: int = 0
    """First copies pushed on a link this node had just pruned (a push crossing the
    PRUNE, see the module): delivered and passed on, leaving the tree as it was."""


@dataclass(slots=True)
class _Missing:
    tag: bytes
    introducer: int
    """The link that announced it first: the one whose share it counts against."""
    deadline: float
    """When it is GRAFTed next (its current entry in the deadline heap)."""
    announcers: list[int] = field(default_factory=list)
    """Links that announced the message, oldest first; the next GRAFT goes to the first."""
    grafted: int | None = None
    """The link asked last; if the message is still missing at the next deadline, that
    neighbour broke its promise."""


@dataclass(slots=True)
class _Counters:
    announcements: int = 0
    grafts_sent: int = 0
    prunes_sent: int = 0
    grafts_received: int = 0
    prunes_received: int = 0
    missing_dropped: int = 0
    trees_dropped: int = 0
    announcements_refused: int = 0
    broken_promises: int = 0
    grafts_held: int = 0
    stale_pushes: int = 0


class BroadcastTree:
    """Eager and lazy neighbour links, pending announcements, and missing messages.

    Also the :class:`~somasync.core.strategy.ForwardingStrategy` of a tree-forwarding
    endpoint: ``targets`` are a stream's eager links.

    Args:
        lazy_timeout: seconds from the first announcement of a missing message to its
            GRAFT.
        graft_retry: seconds from one GRAFT to the next, to another announcer.
        max_missing: announced-but-missing messages remembered at most.
        max_trees: streams whose tree is remembered at most.
    """

    __slots__ = ("_broken", "_counters", "_deadlines", "_introduced", "_links", "_missing",
                 "_parents", "_pending", "_pruned", "_pruned_at", "_repaired", "_rotation",
                 "graft_retry", "lazy_fanout", "lazy_timeout", "max_missing", "max_trees")

    def __init__(self, *, lazy_timeout: float, graft_retry: float, max_missing: int,
                 max_trees: int = 4096) -> None:
        self.lazy_timeout = lazy_timeout
        self.graft_retry = graft_retry
        self.max_missing = max_missing
        self.max_trees = max_trees
        self.lazy_fanout: int | None = None
        """Lazy links each message is announced to at most (the adaptive IHAVE fanout);
        None: all of them, as Plumtree does."""
        self._rotation = 0
        # Dicts as ordered sets: iteration order (and so every choice) is deterministic.
        self._links: dict[int, None] = {}
        self._pruned: OrderedDict[bytes, dict[int, None]] = OrderedDict()
        self._pending: dict[int, dict[int, list[bytes]]] = {}  # link -> band -> entries
        self._missing: OrderedDict[bytes, _Missing] = OrderedDict()
        self._deadlines: list[tuple[float, bytes]] = []
        self._introduced: dict[int, int] = {}  # link -> missing messages it announced first
        self._broken: list[int] = []
        self._repaired: OrderedDict[bytes, None] = OrderedDict()
        # Per stream, the link its last first copy was pushed on (the parent); and when
        # this node pruned a (stream, link), recent ones only: what tells a stale push.
        self._parents: OrderedDict[bytes, int] = OrderedDict()
        self._pruned_at: OrderedDict[tuple[bytes, int], float] = OrderedDict()
        self._counters = _Counters()

    # --- ForwardingStrategy ------------------------------------------------------------

    def link_up(self, link: int) -> None:
        """A new neighbour starts eager in every stream: messages flood onto it, and
        duplicates prune it where it is redundant."""
        self._links[link] = None

    def link_down(self, link: int) -> None:
        if self._links.pop(link, 0) is None:
            for pruned in self._pruned.values():
                pruned.pop(link, None)
            for tag in [tag for tag, parent in self._parents.items() if parent == link]:
                del self._parents[tag]
            for key in [key for key in self._pruned_at if key[1] == link]:
                del self._pruned_at[key]
        self._pending.pop(link, None)

    def links(self) -> list[int]:
        """Every neighbour link, eager or lazy."""
        return list(self._links)

    def targets(self, tag: bytes, *, received_from: int | None,
                rng: random.Random | None = None) -> list[int]:
        """The links stream ``tag``'s messages go to whole (all of them for a stream
        with no tree yet), but the one the message came on."""
        pruned = self._pruned.get(tag)
        if pruned is None:
            return [link for link in self._links if link != received_from]
        self._pruned.move_to_end(tag)
        return [link for link in self._links if link != received_from and link not in pruned]

    # --- tree shape, per stream ----------------------------------------------------------

    def split_targets(self, tag: bytes, *, received_from: int | None, skip: int | None = None
                      ) -> tuple[list[int], list[int]]:
        """``targets``, and the links only announced to, at once (one lookup of the tree, for
        every message forwarded); ``skip``: an eager link only announced to, besides the
        sender (the parent, for a stale push: its own copy should be on its way, and
        should it have lost its own way to the origin, the announcement lets it GRAFT)."""
        if skip is not None:
            eager, lazy = self.split_targets(tag, received_from=received_from)
            if skip not in eager:
                return eager, lazy
            return [link for link in eager if link != skip], [*lazy, skip]
        pruned = self._pruned.get(tag)
        if pruned is None:
            return [link for link in self._links if link != received_from], []
        self._pruned.move_to_end(tag)
        lazy = [link for link in pruned if link != received_from]
        if self.lazy_fanout is not None and len(lazy) > self.lazy_fanout:
            lazy = self._rotate(lazy)
        return ([link for link in self._links if link != received_from and link not in pruned],
                lazy)

    def _rotate(self, lazy: list[int]) -> list[int]:
        """``lazy_fanout`` of ``lazy``, starting one further at each message: every lazy
        link is announced an equal share of the messages, and a node that misses the
        tree's copy hears of it from about ``lazy_fanout`` neighbours."""
        count = self.lazy_fanout
        assert count is not None
        start = self._rotation % len(lazy)
        self._rotation += 1
        return (lazy[start:] + lazy[:start])[:count]

    def is_eager(self, link: int, tag: bytes) -> bool:
        pruned = self._pruned.get(tag)
        return link in self._links and (pruned is None or link not in pruned)

    def make_eager(self, link: int, tag: bytes) -> None:
        """The neighbour on ``link`` sent us a new message of stream ``tag``, or GRAFTed
        us: push that stream to it."""
        pruned = self._pruned.get(tag)
        if pruned is not None:
            pruned.pop(link, None)

    def make_lazy(self, link: int, tag: bytes) -> None:
        """A duplicate of stream ``tag`` came on ``link`` (we PRUNE it), or its neighbour
        PRUNEd us for that stream."""
        if link not in self._links:
            return
        pruned = self._pruned.get(tag)
        if pruned is None:
            pruned = self._pruned[tag] = {}
            if len(self._pruned) > self.max_trees:
                self._pruned.popitem(last=False)
                self._counters.trees_dropped += 1
        pruned[link] = None

    def prune(self, link: int, tag: bytes, *, now: float) -> None:
        """A duplicate of stream ``tag`` came on ``link``: it goes lazy (this node PRUNEs
        it), and pushes on it for a while after are stale (:meth:`stale_push`)."""
        self.make_lazy(link, tag)
        self._counters.prunes_sent += 1
        key = (tag, link)
        self._pruned_at.pop(key, None)
        self._pruned_at[key] = now
        if len(self._pruned_at) > self.max_trees:
            self._pruned_at.popitem(last=False)

    def stale_push(self, link: int, tag: bytes, *, now: float) -> bool:
        """Whether a push of stream ``tag`` on ``link`` was most likely sent before this
        node's PRUNE of it arrived (see the module)."""
        pruned = self._pruned.get(tag)
        return pruned is not None and link in pruned and self._pruned_lately(tag, link, now)

    def _pruned_lately(self, tag: bytes, link: int, now: float) -> bool:
        at = self._pruned_at.get((tag, link))
        return at is not None and now - at < STALE_PUSH_WINDOW

    def pushed(self, link: int, tag: bytes, *, now: float) -> bool:
        """A first copy of stream ``tag`` was pushed on ``link`` (not a repair): that link
        is the stream's parent, eager; unless the push was stale (returns True), which
        leaves the tree as it was. One lookup of the stream's tree, once per message."""
        pruned = self._pruned.get(tag)
        if pruned is not None and link in pruned:
            if self._pruned_lately(tag, link, now):
                self._counters.stale_pushes += 1
                return True
            del pruned[link]  # it pushes to us: our parent in this tree
        parents = self._parents
        if parents.get(tag) == link:
            parents.move_to_end(tag)
        else:
            parents.pop(tag, None)
            parents[tag] = link
            if len(parents) > self.max_trees:
                parents.popitem(last=False)
        return False

    def parent(self, tag: bytes) -> int | None:
        """The link stream ``tag``'s last first copy was pushed on, if still up."""
        return self._parents.get(tag)

    def count_prune_received(self) -> None:
        self._counters.prunes_received += 1

    def count_graft_received(self) -> None:
        self._counters.grafts_received += 1

    # --- announcements ---------------------------------------------------------------

    def announce(self, link: int, entry: bytes, priority: int = 255) -> None:
        """Queue one IHAVE entry for ``link``, for a message of ``priority``; sent with
        the link's next batch of that priority's send band (:data:`ANNOUNCE_BAND`)."""
        bands = self._pending.get(link)
        if bands is None:
            bands = self._pending[link] = {}
        band = priority >> ANNOUNCE_BAND
        entries = bands.get(band)
        if entries is None:
            bands[band] = [entry]
        else:
            entries.append(entry)
        self._counters.announcements += 1

    @property
    def has_announcements(self) -> bool:
        return bool(self._pending)

    def take_announcements(self) -> dict[int, dict[int, list[bytes]]]:
        """Per link, per send band (priority >> :data:`ANNOUNCE_BAND`): the IHAVE entries
        gathered since the last call. Each batch goes in its messages' band, behind
        what the link already queued there or above, as the messages themselves go.
        At 255, ahead of everything, a flood of bulk announcements went before critical
        alerts, and a bulk message was announced long before its copy, which waited
        behind other bulk. At most one frame per band and link: the send queue orders
        no finer."""
        pending, self._pending = self._pending, {}
        return pending

    # --- missing messages ----------------------------------------------------------------

    def heard(self, message_id: bytes, tag: bytes, link: int, *, now: float) -> bool:
        """``link`` announced a message this node has not received. False: refused, the
        link already has its share of the missing messages waiting."""
        missing = self._missing.get(message_id)
        if missing is None:
            introduced = self._introduced.get(link, 0)
            if introduced >= max(16, self.max_missing // LINK_SHARE):
                self._counters.announcements_refused += 1
                return False
            if len(self._missing) >= self.max_missing:
                _, oldest = self._missing.popitem(last=False)
                self._forget(oldest)
                self._counters.missing_dropped += 1
            deadline = now + self.lazy_timeout
            missing = self._missing[message_id] = _Missing(tag, link, deadline)
            self._introduced[link] = introduced + 1
            self._push_deadline(deadline, message_id)
        if link not in missing.announcers:
            missing.announcers.append(link)
        return True

    def _forget(self, missing: _Missing) -> None:
        count = self._introduced.get(missing.introducer, 0)
        if count > 1:
            self._introduced[missing.introducer] = count - 1
        else:
            self._introduced.pop(missing.introducer, None)

    def _push_deadline(self, deadline: float, message_id: bytes) -> None:
        deadlines = self._deadlines
        heapq.heappush(deadlines, (deadline, message_id))
        if len(deadlines) > 4 * len(self._missing) + 64:
            # Entries of messages received or forgotten meanwhile are skipped when due;
            # rebuilt from the live ones, the heap stays a few times ``max_missing``
            # however fast announcements come.
            self._deadlines = [(m.deadline, key) for key, m in self._missing.items()]
            heapq.heapify(self._deadlines)

    def take_broken_promises(self) -> list[int]:
        """Links that left a GRAFT unanswered since the last call (one per GRAFT)."""
        broken, self._broken = self._broken, []
        return broken

    def received(self, message_id: bytes, *, repaired: bool = False,
                 stale: bool = False) -> None:
        """The message arrived (``repaired``: as a GRAFT answer or an anti-entropy
        repair; ``stale``: as a stale push): no GRAFT for it (its deadline is skipped when
        due), and for either, the tree copy that may trail it prunes nothing."""
        missing = self._missing.pop(message_id, None)
        if missing is not None:
            self._forget(missing)
        if repaired or stale:
            self._repaired[message_id] = None
            if len(self._repaired) > RECENT_REPAIRS:
                self._repaired.popitem(last=False)

    def arrived_by_repair(self, message_id: bytes) -> bool:
        """Whether the first copy of this (recent) message was a repair or a stale
        push: a tree copy trailing it is no redundant path."""
        return message_id in self._repaired

    def due(self, *, now: float, waiting: Callable[[bytes], bool] | None = None
            ) -> list[tuple[int, bytes, bytes]]:
        """GRAFTs to send now, as (link, message id, stream tag). Each link chosen here
        is made eager, as Plumtree's GRAFT does on both ends.

        ``waiting``: whether a copy of a message id waits in the node's own backlog (read
        ahead, not yet handled). Such a message is not missing: its GRAFT is held, due
        again ``graft_retry`` later, and the neighbour asked last broke no promise (its
        answer may be that copy). Only those ids wait: any other GRAFT, a critical
        message's included, goes on time however much bulk waits."""
        grafts: list[tuple[int, bytes, bytes]] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, message_id = heapq.heappop(deadlines)
            missing = self._missing.get(message_id)
            if missing is None or missing.deadline != deadline:
                continue  # received meanwhile, forgotten, or a superseded deadline
            if waiting is not None and waiting(message_id):
                missing.grafted = None
                missing.deadline = now + self.graft_retry
                self._push_deadline(missing.deadline, message_id)
                deadlines = self._deadlines  # rebuilt, maybe
                self._counters.grafts_held += 1
                continue
            if missing.grafted is not None:
                self._broken.append(missing.grafted)
                self._counters.broken_promises += 1
            link = None
            while missing.announcers:
                candidate = missing.announcers.pop(0)
                if candidate in self._links:
                    link = candidate
                    break
            if link is None:
                del self._missing[message_id]
                self._forget(missing)
                self._counters.missing_dropped += 1
                continue
            self.make_eager(link, missing.tag)
            grafts.append((link, message_id, missing.tag))
            self._counters.grafts_sent += 1
            missing.grafted = link
            missing.deadline = now + self.graft_retry
            self._push_deadline(missing.deadline, message_id)
            deadlines = self._deadlines  # rebuilt, maybe
        return grafts

    def next_deadline(self) -> float | None:
        """When ``due`` next has work (a stale deadline may make it return nothing)."""
        return self._deadlines[0][0] if self._deadlines else None

    def lazy_streams(self) -> dict[int, int]:
        """Per neighbour link, the streams it only announces to (0: eager in all);
        ``statistics().streams`` is how many streams there are."""
        counts = dict.fromkeys(self._links, 0)
        for pruned in self._pruned.values():
            for link in pruned:
                counts[link] += 1
        return counts

    def statistics(self) -> TreeStatistics:
        c = self._counters
        lazy = sum(len(pruned) for pruned in self._pruned.values())
        eager = (len(self._links) * len(self._pruned) - lazy) if self._pruned \
            else len(self._links)
        return TreeStatistics(
            streams=len(self._pruned), eager_links=eager, lazy_links=lazy,
            missing=len(self._missing), announcements_sent=c.announcements,
            grafts_sent=c.grafts_sent, prunes_sent=c.prunes_sent,
            grafts_received=c.grafts_received, prunes_received=c.prunes_received,
            missing_dropped=c.missing_dropped, trees_dropped=c.trees_dropped,
            announcements_refused=c.announcements_refused, broken_promises=c.broken_promises,
            grafts_held=c.grafts_held, stale_pushes=c.stale_pushes,
        )
