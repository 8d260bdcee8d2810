"""The Endpoint: the sans-IO protocol core of one node, and the only object drivers touch.

Theory of operation
-------------------
A driver (the asyncio node, a worker process, the simulator) owns sockets and clocks. It
tells the endpoint what happened and asks it what to do:

* inputs:  ``open_link`` / ``close_link`` when a connection comes or goes,
  ``receive_frame(link, frame, now=)`` for each frame cut from the stream,
  ``framing_error`` when the stream itself is garbage, ``broadcast(envelope, now=)`` for
  the application's own messages, and ``handle_timer(now=)`` at ``get_timer()``;
* outputs: ``frames_to_send()`` (one coalesced buffer per link), ``links_to_close()``,
  ``take_deliveries()``, ``take_events()`` and ``get_timer()``.

Time is always the driver's ``now`` (monotonic seconds); the wall clock, needed only to
compare with an origin's timestamp, is ``now + wall_offset``. Randomness comes from the
injected ``random.Random``. Nothing here blocks, sleeps or performs I/O, so the same code
runs in one process, in each worker, and thousands of times in the simulator.

Ingress order (cheap before expensive): the peer's standing (a graylisted peer's frames
are dropped unread, see :mod:`somasync.core.scoring`), frame header, kind, handshake
state, per-key budgets (digest and GRAFT answers), message id (BLAKE2b), seen cache,
envelope decode, per-stream sequence check, signature policy and trust, TTL, **verify**,
payload decode, then mark seen, store, deliver and forward. Message frames below the
critical band (192) read from a link, and in a sharded node those routed from other
workers, wait per link by priority band (:mod:`somasync.core.inbox`) and are handled
highest band first, one link after another (:meth:`Endpoint.process_backlog`); critical
and control frames are handled as they are read.
"""

from __future__ import annotations

import bisect
import random
import struct
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from somasync.config import GossipConfig
from somasync.core import crypto, wire
from somasync.core.antientropy import (
    HOLD_GAP_TIMEOUTS,
    MessageStore,
    StreamTable,
    count_lacking,
)
from somasync.core.batches import BatchVerifier
from somasync.core.broadcast import ANNOUNCE_BAND, BroadcastTree, TreeStatistics
from somasync.core.budget import AMPLIFICATION_LIMIT, KeyedBuckets, TokenBucket
from somasync.core.crypto import Identity
from somasync.core.direct import DIRECT_HEADER, QUERY_HEADER, DirectRouter
from somasync.core.events import (
    Event,
    FrameRejected,
    PeerConnected,
    PeerDisconnected,
    PeerRevoked,
    RejectReason,
)
from somasync.core.handshake import Handshake, PeerHello, Session
from somasync.core.inbox import CRITICAL, ENTRY_COST, Inbox
from somasync.core.outbox import Outbox
from somasync.core.payload import MessageType, PayloadKind, decode_payload
from somasync.core.scoring import BROKEN_PROMISE, PeerScores, ScoreThresholds
from somasync.core.seen import SeenCache
from somasync.core.shard import (
    Routed,
    RoutedKind,
    Shard,
    direct_owner,
    stream_owner,
    tag_owner,
)
from somasync.core.sizing import Sizing, retuned_config
from somasync.core.strategy import ForwardingStrategy, PushGossip
from somasync.core.trust import Trust, parse_revocation
from somasync.errors import DecodeError

__all__ = ["Delivery", "Endpoint", "EndpointStatistics"]

HOUSEKEEPING_INTERVAL = 0.5  # seconds between expiry sweeps (seen cache, store, holes)
DIGEST_BURST = 8.0  # answers with content to one neighbour back to back (a catch-up)
DIGEST_RATE = 1.0  # answers with content to one neighbour per anti-entropy interval after that
VERIFY_BOUNDS = (25e-6, 50e-6, 75e-6, 100e-6, 150e-6, 250e-6, 500e-6, 1e-3, 5e-3)
"""Upper bounds (seconds) of the signature-check duration histogram's buckets."""
ROOT_CACHE_SIZE = 4096  # verified batches kept: a few per origin sending at full rate
_VERDICTS = frozenset({"protocol_error", str(RejectReason.LOW_SCORE)})  # closes for conduct
ROUTED_ROOM = 4 * 1024 * 1024  # bytes routed messages may wait in without read-ahead
FLUSH_LIMIT = 256  # frames of a closing link handled at once (see _flush_waiting)
GRAFT_BURST = 1024.0  # messages one neighbour's GRAFTs get back to back (a tree repair)...
GRAFT_RATE = 256.0  # ...and per second after that
# AMPLIFICATION_LIMIT, on a link: answers are its handshake reply, its link-up and reply
# digests, the repairs a digest asked for and GRAFT answers; pushes, IHAVEs and its own
# rounds of digests are sent unasked. A node that expects a large answer pads its digest
# (wire.FLAG_PADDED) to pay for it.
# What a frame costs when charged against that credit beyond its own bytes: at most one
# record's length and tag each (records batch frames, so this overestimates).
ANSWER_OVERHEAD = 4 + crypto.AEAD_TAG_SIZE
CREDIT_SHARE = struct.Struct("!Q")  # a routed DIGEST's prefix: the answering worker's share
MESSAGE_SIZE_GUESS = 512.0  # bytes per message frame assumed before any is received
# Frame kinds as plain ints, compared once per frame (an enum member is a lookup).
_MESSAGE, _DIGEST = int(wire.FrameKind.MESSAGE), int(wire.FrameKind.DIGEST)
_DIRECT = int(wire.FrameKind.DIRECT)
_NO_OUTBOX = Outbox(0)  # links owned by another worker queue through it, never here
# A peer's standing, from its score (see somasync.core.scoring).
_GOOD, _IGNORED, _GRAYLISTED = 0, 1, 2


_new_tuple = tuple.__new__  # a named tuple without its Python-level constructor

_TAGS: dict[wire.StreamKey, bytes] = {}
_TAGS_KEPT = 4096  # streams whose tag is remembered (about 1 MiB), per process
_ROUTE_TAGS: dict[tuple[bytes, bytes], bytes] = {}  # the same, by the source's bytes


def _tag_of(envelope: wire.Envelope) -> bytes:
    # A hash per message otherwise, and a stream's messages come in runs: remembered for
    # the busiest streams, in one table for every endpoint of the process (the simulator
    # runs thousands, and a tag depends only on the stream). Emptied when full, so a
    # flood of new streams costs what it did without the table.
    stream = envelope.stream
    tag = _TAGS.get(stream)
    if tag is None:
        if len(_TAGS) >= _TAGS_KEPT:
            _TAGS.clear()
        tag = _TAGS[stream] = wire.stream_tag(stream[0], stream[1].encode())
    return tag


class Delivery(NamedTuple):
    """A message accepted for the application: verified, new, and not expired.

    A named tuple: one is made per message delivered."""

    envelope: wire.Envelope
    payload: MessageType
    from_peer: str
    """Node id of the neighbour whose copy arrived first."""
    hops: int = 0
    """Hops the delivered copy travelled (0: straight from its origin, or a repair)."""
    direct: bool = False
    """Sent to this node alone (:mod:`somasync.core.direct`), not broadcast: it is in no
    stream, so nothing records its sequence number."""


@dataclass(frozen=True, slots=True)
class EndpointStatistics:
    """Counters of one endpoint since it was created."""

    frames_in: int
    """Frames read from links, counted as read whatever became of them: handled, or
    dropped unhandled from the read-ahead backlog (``rejected``: ``ingress_shed``,
    ``closed_link_backlog``), or still waiting there (``backlog_bytes``). A sharded
    node's frame counts once, at the worker that read it, not where it was routed."""
    frames_out: int
    bytes_in: int
    """Bytes of those frames, each with its 4-byte length prefix: what peers sent this
    node in frames (not the handshake, nor the sealed records' overhead)."""
    bytes_out: int
    messages_delivered: int
    messages_originated: int
    messages_forwarded: int
    """Message frames queued to neighbours (forwards, own broadcasts and repairs)."""
    duplicates: int
    signatures_verified: int
    """Ed25519 checks of messages: one per signed message, one per batch root."""
    batch_proofs: int
    """Batch-signed messages accepted by their proof against a root this endpoint had
    already verified, without an Ed25519 check of their own."""
    rejected: dict[str, int]
    """Refused frames by :class:`~somasync.core.events.RejectReason`."""
    send_queue_dropped: int
    """Frames dropped because a slow peer's send queue was full."""
    send_queue_bytes: int
    """Bytes queued to peers now, not yet handed to their connections (a gauge)."""
    digests_sent: int
    """Anti-entropy digests queued to neighbours. A periodic one queued behind frames
    already waiting for a slow peer goes in the lowest band (see ``_send_digest``) and,
    like bulk, may be pushed out of that peer's full queue (``send_queue_dropped``)."""
    repairs_sent: int
    """Messages sent to a neighbour because its digest showed it lacked them."""
    digest_entries_scanned: int
    """Gaps and stored messages examined to answer digests, and holes and intervals
    compared for digests that said their sender defers repairs (``FLAG_DEFERRED``):
    grows with what the askers lacked, never with how much the store holds."""
    frames_routed: int
    """Sharded node: items handed to other workers (frames, digests, peer changes)."""
    control_frames_out: int
    """Broadcast tree control frames sent: IHAVE, GRAFT and PRUNE."""
    control_bytes_out: int
    """Bytes of those frames, length prefix included."""
    tree: TreeStatistics | None
    """The broadcast tree's state and counters; None with plain push forwarding."""
    verify_seconds: tuple[int, ...]
    """Signature checks by duration: counts per bucket of :data:`VERIFY_BOUNDS` (seconds,
    upper bounds) and one more above the last; all zero unless the driver gave the
    endpoint a ``timer``."""
    verify_seconds_total: float
    """Seconds spent in those signature checks."""
    peer_scores: dict[str, float]
    """Score of each connected peer, by node id (see :mod:`somasync.core.scoring`):
    positive for peers that bring messages first, negative for invalid frames and
    budget violations; a sharded node sums what each worker saw."""
    lazy_streams: dict[str, int]
    """Of the broadcast tree's ``tree.streams``, how many each connected peer (by node id)
    only gets announcements of: 0 is an eager link in every stream, ``tree.streams`` a
    lazy one in all. Empty with plain push forwarding (every link eager); a sharded node
    sums its workers' trees, as ``tree.streams`` does."""
    stored_messages: int
    seen_ids: int
    streams: int
    links: int
    peers: int


@dataclass(slots=True, eq=False)
class _Link:
    id: int
    outbound: bool
    address: str
    opened_at: float
    outbox: Outbox
    hello: PeerHello | None = None
    """Who the peer proved to be; None until the handshake finished."""
    handshake: Handshake | None = None
    session: Session | None = None
    """The sealed record layer, once the handshake finished."""
    raw_out: bytes = b""
    """Handshake bytes still to send (they precede every record)."""
    partial_since: float | None = None
    """When the link began holding an incomplete frame or record (None: it holds none)."""
    standing: int = _GOOD
    """What the peer's score still allows (good, ignored for gossip, graylisted)."""
    first_copies: int = 0
    """Messages this peer brought first since its score was last credited with them."""
    broken_promise_at: float = float("-inf")
    """When a broken promise of this peer last counted against its score."""
    credit: int = 0
    """Bytes this node may still send the peer in answers: ``AMPLIFICATION_LIMIT`` per
    byte received on the link, less what answers took (see :meth:`Endpoint._answer`)."""
    peer_lead: int = 0
    """Messages the peer's last digest listed that this node lacks: the next digest to
    it is padded so the peer can afford to answer with them."""
    peer_withheld: int = 0
    """Bytes of answers the peer said it holds back until this node pays for them."""
    deferring: bool = False
    """This node's last answer to the peer's digest deferred repairs on a shaped link
    (``repair_deferred``): its digests to the peer say so (``FLAG_DEFERRED``)."""
    told_deferring_at: float = float("-inf")
    """When a digest last told the peer so."""
    shaper: TokenBucket | None = None
    """``max_link_send_rate``'s bucket (bytes), or None without that limit."""
    paused: bool = False
    closing: bool = False
    owner: int | None = None
    """Sharded node: the worker that owns this peer's connection (None: this one)."""
    frames: wire.FrameBuffer | None = None

    @property
    def peer_label(self) -> str | None:
        return None if self.hello is None else self.hello.node_id

    @property
    def peer_address(self) -> str:
        if self.hello is not None and self.hello.listen_address:
            return self.hello.listen_address
        return self.address


@dataclass(slots=True)
class _Counters:
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    delivered: int = 0
    originated: int = 0
    forwarded: int = 0
    duplicates: int = 0
    verified: int = 0
    queue_dropped: int = 0
    digests_sent: int = 0
    repairs_sent: int = 0
    routed: int = 0
    control_frames: int = 0
    control_bytes: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class Endpoint:
    """The protocol state of one node.

    Args:
        config: gossip settings.
        identity: this node's key pair; it signs this side of every handshake.
        node_id: this node's human-readable name.
        rng: the only source of randomness.
        now: the driver's monotonic clock at creation (seconds).
        wall_offset: wall-clock seconds minus ``now``, to compare with origin timestamps.
        listen_address: ``host:port`` peers can dial back, announced in the handshake.
        handshake_timeout: seconds a link may stay without a finished handshake.
        frame_timeout: seconds a link may hold an incomplete frame or record (a peer
            that trickles bytes to keep a connection slot is closed after it).
        credential: this node's operator certificate, sent in the handshake (or empty).
        plaintext_links: ask peers for unsealed records after the (still authenticated)
            handshake; granted only when the peer asks too. For benchmarks that measure
            what sealing costs; never for a deployment.
        trust: the node's trust policy (who may link, which name a key may publish
            under, revocations); an open policy of its own when not given.
        shard: this endpoint's place in a sharded node (see :mod:`somasync.core.shard`);
            None for a node in one process.
        verify: the signature check, :func:`somasync.core.crypto.verify` unless a caller
            that knows better (the simulator's fast mode) swaps in a cheaper one.
        timer: a performance counter (``time.perf_counter``) to time each signature
            check with, for ``statistics().verify_seconds``; None (tests, the simulator)
            times nothing, so the core stays free of real time.
    """

    def __init__(self, config: GossipConfig, identity: Identity, node_id: str, *,
                 rng: random.Random, now: float, wall_offset: float = 0.0,
                 listen_address: str | None = None, handshake_timeout: float = 5.0,
                 frame_timeout: float = 30.0,
                 shard: Shard | None = None, credential: bytes = b"",
                 plaintext_links: bool = False, trust: Trust | None = None,
                 verify: crypto.Verifier = crypto.verify,
                 timer: Callable[[], float] | None = None) -> None:
        self.config = config
        self.identity = identity
        self.node_id = node_id
        self.listen_address = listen_address
        self.handshake_timeout = handshake_timeout
        self.frame_timeout = frame_timeout
        self._rng = rng
        self._wall_offset = wall_offset
        # The broadcast tree or plain push gossip, as ``config.forwarding`` says.
        self._tree: BroadcastTree | None = None
        self._strategy: ForwardingStrategy
        if config.forwarding == "tree":
            self._strategy = self._tree = BroadcastTree(
                lazy_timeout=config.lazy_timeout, graft_retry=config.graft_retry,
                max_missing=config.max_missing, max_trees=config.max_stream_trees)
        else:
            self._strategy = PushGossip(config.fanout)
        self._shard = shard
        self._verify_counts = [0] * (len(VERIFY_BOUNDS) + 1)
        self._verify_total = 0.0
        self._verify = verify if timer is None else self._timed(verify, timer)
        # Batches whose root signature checked out, with the tree nodes their messages
        # proved: a batch's other messages need only the rest of their proof. A copy
        # with other signature bytes is another batch, checked anew, so a relay cannot
        # pass on a corrupted signature.
        self._batches = BatchVerifier(max_batches=ROOT_CACHE_SIZE)
        self._credential = credential
        self.trust = trust if trust is not None else Trust()
        # This node's own name is its own: a message from another key claiming it, or a
        # peer calling itself so, is refused here too.
        self.trust.admit(identity.public_key, node_id, credential, wall=now + wall_offset)
        self._plaintext_links = plaintext_links
        self._routed: dict[int, list[Routed]] = {}
        # Sharded node: messages other workers routed here, by the link they came on,
        # verified round-robin across links (see receive_routed).
        self._backlog: dict[int, Inbox] = {}
        self._waiting = 0  # bytes in the backlog, all links together
        # The room read-ahead may take (0: frames handled as they are read, in order).
        self._read_ahead = config.read_ahead_bytes // (1 if shard is None else shard.count)
        # Messages routed from other workers wait whatever the read-ahead: without it,
        # in this room.
        self._room = self._read_ahead or ROUTED_ROOM
        self._links: dict[int, _Link] = {}
        self._peers: dict[bytes, _Link] = {}
        self._dirty: dict[int, None] = {}
        self._to_close: list[tuple[int, str]] = []
        self._deliveries: list[Delivery] = []
        self._events: list[Event] = []
        self._seen = SeenCache(config.seen_cache_size, config.seen_ttl)
        self._streams = StreamTable(config.max_streams)
        self._store = MessageStore(config.max_stored_messages, config.max_message_age)
        self._scores = PeerScores(ScoreThresholds())
        # Per peer key, not per link: reconnecting does not buy a fresh budget.
        self._digest_budget = KeyedBuckets(DIGEST_RATE / config.anti_entropy_interval,
                                           DIGEST_BURST)
        self._graft_budget = KeyedBuckets(GRAFT_RATE, GRAFT_BURST)
        self._now = now  # the latest driver time seen: for scores touched between inputs
        # Shaping (max_send_rate, max_link_send_rate): a sharded node's workers share the
        # node's rate. Buckets hold a tenth of a second's bytes; a frame larger than what
        # is left still goes, and the bucket goes into debt for it.
        share = 1 if shard is None else shard.count
        self._node_shaper = self._bucket(config.max_send_rate / share, now)
        self._shaped_until: float | None = None  # when held-back frames may go again
        # A running mean of message frame sizes: what a digest's answer will weigh.
        self._message_size = MESSAGE_SIZE_GUESS
        self._counters = _Counters()
        self._next_anti_entropy = now + config.anti_entropy_interval
        self._digest_order: list[bytes] = []  # peers left in this anti-entropy round
        self._next_housekeeping = now + HOUSEKEEPING_INTERVAL
        self._direct = DirectRouter(self)
        self._next_announce = now  # announce_interval: when gathered IHAVEs may go

    def _timed(self, verify: crypto.Verifier, timer: Callable[[], float]) -> crypto.Verifier:
        counts = self._verify_counts

        def timed(key: bytes, signature: bytes, domain: bytes, body: bytes) -> bool:
            started = timer()
            try:
                return verify(key, signature, domain, body)
            finally:
                took = timer() - started
                counts[bisect.bisect_left(VERIFY_BOUNDS, took)] += 1
                self._verify_total += took

        return timed

    # --- links ---------------------------------------------------------------------

    def open_link(self, link: int, *, outbound: bool, address: str, now: float,
                  session: Session | None = None) -> None:
        """A transport connection is up; start the handshake on it, or, when the driver
        already finished it (a sharded node's supervisor does, before handing the socket
        over), take the established ``session``."""
        if link in self._links:
            raise ValueError(f"link {link} is already open")
        state = _Link(link, outbound, address, now, Outbox(self.config.link_queue_bytes),
                      shaper=self._bucket(self.config.max_link_send_rate, now))
        self._links[link] = state
        if session is not None:
            state.session = session
            # The driver took the peer's handshake (at least its hello) and answered it
            # with one of about the same size: the credit that leaves.
            state.credit = (AMPLIFICATION_LIMIT - 1) * len(session.peer.encode())
            self._on_peer(state, session.peer, now)
            return
        state.handshake = Handshake(self.identity, self.node_id, self.listen_address,
                                    dialer=outbound, credential=self._credential,
                                    plaintext=self._plaintext_links, verify=self._verify)
        state.raw_out = state.handshake.initial_bytes()
        self._dirty[link] = None

    def close_link(self, link: int, *, now: float, reason: str = "closed") -> None:
        """The transport connection is gone (closed by either side, or failed)."""
        if link in self._backlog:
            self._flush_waiting(link, now)
        state = self._links.pop(link, None)
        if state is None:
            return
        self._dirty.pop(link, None)
        hello = state.hello
        self._credit(state, now)  # the score outlives the link
        self._direct.link_down(link)
        if hello is not None and self._peers.get(hello.public_key) is state:
            del self._peers[hello.public_key]
            self._strategy.link_down(link)
            self._events.append(PeerDisconnected(hello.node_id, state.peer_address, reason,
                                                 hello.public_key))
            self._announce(RoutedKind.PEER_DOWN, link, b"")

    def set_link_paused(self, link: int, paused: bool) -> None:
        """The driver's transport buffer for ``link`` is full (True) or drained (False)."""
        state = self._links.get(link)
        if state is not None:
            state.paused = paused
            if not paused and state.outbox:
                self._dirty[link] = None

    def framing_error(self, link: int, error: DecodeError, *, now: float) -> None:
        """The byte stream of ``link`` could not be cut into frames; it will be closed."""
        if link in self._backlog:
            self._flush_waiting(link, now)  # the frames whole before the garbage count
        state = self._links.get(link)
        if state is not None:
            self._reject(state, error.reason, error.detail, close=True)

    def peer_links(self) -> dict[int, str]:
        """Established links and the node id of the peer on each."""
        return {s.id: s.hello.node_id for s in self._peers.values() if s.hello is not None}

    def peer_addresses(self) -> dict[str, str]:
        """Node id -> listening address of every connected peer."""
        return {s.hello.node_id: s.peer_address for s in self._peers.values()
                if s.hello is not None}

    def peer_key_of(self, link: int) -> bytes | None:
        """Public key of the peer on ``link``, once its handshake finished."""
        state = self._links.get(link)
        return None if state is None or state.hello is None else state.hello.public_key

    def queued_bytes(self, link: int | None = None) -> int:
        """Bytes in the send queues of this endpoint's links now (of ``link`` alone, if
        given)."""
        if link is not None:
            state = self._links.get(link)
            return 0 if state is None else state.outbox.size
        return sum(state.outbox.size for state in self._links.values())

    def peer_keys(self) -> list[bytes]:
        """Public keys of the peers with an established link."""
        return list(self._peers)

    def disconnect_peer(self, public_key: bytes, reason: str) -> bool:
        """Ask the driver to close the link to this peer (membership declared it failed
        or gone). Returns False when there is no such link."""
        state = self._peers.get(public_key)
        if state is None:
            return False
        self._request_close(state, reason)
        return True

    def score_at(self, address: str, *, now: float) -> float:
        """The score of the linked peer listening at ``address`` (0 with none)."""
        for key, state in self._peers.items():
            if state.peer_address == address:
                self._credit(state, now)
                return self._scores.score(key, now=now)
        return 0.0

    def established(self, link: int) -> bool:
        """True when ``link`` finished its handshake and carries an admitted peer."""
        state = self._links.get(link)
        return state is not None and not state.closing and state.hello is not None \
            and self._peers.get(state.hello.public_key) is state

    def closing(self, link: int) -> bool:
        """True when ``link`` is being closed (or is not open)."""
        state = self._links.get(link)
        return state is None or state.closing

    def eviction_candidate(self, *, now: float, sparing: Collection[int] = ()) -> int | None:
        """The inbound link to close to make room for new connections (``sparing``
        them), if any: the established inbound peer with the lowest score, provided it
        is 0 or less (it never brought a message first), the most recent among equals.
        Peers that proved useful are never chosen."""
        best: tuple[float, float, int] | None = None
        for key, state in self._peers.items():
            if state.outbound or state.owner is not None or state.closing \
                    or state.id in sparing:
                continue
            self._credit(state, now)
            score = self._scores.score(key, now=now)
            if score <= 0 and (best is None or (score, -state.opened_at) < best[:2]):
                best = (score, -state.opened_at, state.id)
        return None if best is None else best[2]

    def evict(self, link: int, reason: str = "evicted") -> None:
        """Close ``link`` for the room it takes (counted under ``reason``: ``evicted``
        for a peer making room, ``connection_limit`` for a newcomer that found none)."""
        state = self._links.get(link)
        if state is not None and not state.closing:
            self._count_reject(reason)
            self._request_close(state, reason)

    def has_peer(self, public_key: bytes) -> bool:
        """True when a peer with this key has an established link."""
        return public_key in self._peers

    # --- inputs ----------------------------------------------------------------------

    def receive_bytes(self, link: int, data: bytes, *, now: float) -> None:
        """Handle bytes read from ``link``'s stream: cut frames and handle each one.

        Frames that arrived whole before garbage are handled; the garbage is a framing
        error that closes the link.
        """
        state = self._links.get(link)
        if state is None or state.closing:
            return
        self._now = now
        session = state.session
        if session is None:
            # Frames earn their credit in receive_frame (the simulator hands them there
            # directly); the handshake's bytes earn it here.
            state.credit += AMPLIFICATION_LIMIT * len(data)
            handshake = state.handshake
            session = self._continue_handshake(state, data, now)
            if session is None or handshake is None:
                return
            data, state.handshake = handshake.leftover, None
            state.credit -= AMPLIFICATION_LIMIT * len(data)  # records: credited per frame
            if not data:
                return
        try:
            data = session.open(data)
        except DecodeError as exc:
            self.framing_error(link, exc, now=now)
            return
        if state.frames is None:
            state.frames = wire.FrameBuffer(self.config.max_frame)
        try:
            frames = state.frames.feed(data)
        except DecodeError as exc:
            self.framing_error(link, exc, now=now)
            return
        # One loop over every frame the read completed; the link's checks that
        # receive_frame makes per frame hold for all of them but ``closing``, which a
        # frame can set: the frames after it go unread, as receive_frame leaves them.
        receive = self._receive_frame
        read_ahead = self._read_ahead
        counters = self._counters
        for frame in frames:
            # Counted as read, whatever becomes of it: handled now, waiting, shed.
            counters.frames_in += 1
            counters.bytes_in += len(frame) + 4
            # Peeked, not decoded: version, kind, flags, priority (decode_frame checks
            # them all when the frame's turn comes). Direct frames wait too: each may
            # cost a signature check, so a neighbour's take its turns like its messages.
            if read_ahead and len(frame) > 3 and (frame[1] == _MESSAGE or frame[1] == _DIRECT) \
                    and frame[3] < CRITICAL:
                self._wait(state.id, frame, frame[3], routed=False)
                continue
            receive(state, frame, now)
            if state.closing:  # mypy holds it False from above; a frame may set it
                break  # type: ignore[unreachable]
        if state.frames.error is not None:
            self.framing_error(link, state.frames.error, now=now)
        elif state.frames.buffered or session.buffered:
            # A deadline for progress, not for a stream that never pauses between frames:
            # any frame completed now restarts it.
            if frames or state.partial_since is None:
                state.partial_since = now
        else:
            state.partial_since = None

    def _continue_handshake(self, state: _Link, data: bytes, now: float) -> Session | None:
        handshake = state.handshake
        if handshake is None:
            return None
        try:
            reply = handshake.receive(data)
        except DecodeError as exc:
            self._reject(state, exc.reason, exc.detail, close=True)
            return None
        if reply:
            state.raw_out += reply
            self._dirty[state.id] = None
        session = handshake.session
        if session is None:
            return None
        state.session = session
        self._on_peer(state, session.peer, now)
        return None if state.closing else session

    def session_of(self, link: int) -> Session | None:
        """The sealed record layer of ``link`` once its handshake finished (test harnesses
        use it to speak on the peer's behalf)."""
        state = self._links.get(link)
        return None if state is None else state.session

    def receive_frame(self, link: int, frame: bytes, *, now: float) -> None:
        """Handle one frame (length prefix already removed) that arrived on ``link``."""
        state = self._links.get(link)
        if state is None or state.closing:
            return
        self._now = now
        counters = self._counters
        counters.frames_in += 1
        counters.bytes_in += len(frame) + 4
        self._receive_frame(state, frame, now)

    def _receive_waiting(self, link: int, frame: bytes, now: float) -> None:
        """Handle a frame from the backlog (counted when it was read)."""
        state = self._links.get(link)
        if state is None or state.closing:
            return
        self._now = now
        self._receive_frame(state, frame, now)

    def _receive_frame(self, state: _Link, frame: bytes, now: float) -> None:
        """Handle one frame (counted in ``frames_in`` by the caller, as read)."""
        state.credit += AMPLIFICATION_LIMIT * (len(frame) + 4)
        if state.standing == _GRAYLISTED:
            # Unread: no decode, no verify. A peer that keeps sending while graylisted
            # is disconnected soon; one that pauses recovers as its score decays.
            self._count_reject("graylisted")
            self._greedy(state, now)
            return
        try:
            decoded = wire.decode_frame(frame)
            kind = decoded.kind
            if kind == _MESSAGE:
                if state.hello is None:
                    self._reject(state, RejectReason.NO_HELLO, "message before the handshake",
                                 close=True)
                elif self._shard is not None:
                    owner = self._message_owner(decoded)
                    if owner == self._shard.index:
                        self._on_message(state, decoded, now)
                    else:
                        self._route(owner, Routed(RoutedKind.MESSAGE, state.id,
                                                  decoded.priority, frame))
                else:
                    self._on_message(state, decoded, now)
            elif kind == _DIGEST:
                if state.hello is None:
                    self._reject(state, RejectReason.NO_HELLO, "digest before the handshake",
                                 close=True)
                else:
                    if self._shard is not None:
                        # Each other worker answers for its streams from an equal share
                        # of the link's credit (the owner checks again what arrives).
                        share = max(0, state.credit) // self._shard.count
                        self._announce(RoutedKind.DIGEST, state.id,
                                       CREDIT_SHARE.pack(share) + frame)
                    self._on_digest(state, decoded, now)
            elif kind in wire.TREE_KINDS:
                if state.hello is None:
                    self._reject(state, RejectReason.NO_HELLO, "tree frame before the handshake",
                                 close=True)
                else:
                    self._on_tree_frame(state, decoded, now)
            elif kind == wire.FrameKind.DIRECT:
                if state.hello is None:
                    self._reject(state, RejectReason.NO_HELLO, "direct frame before the "
                                 "handshake", close=True)
                else:
                    self._on_direct(state, decoded, frame, now)
            elif kind == wire.FrameKind.HELLO:
                # Identities are proven in the handshake; a HELLO frame inside records is
                # an old or confused peer.
                self._reject(state, RejectReason.DUPLICATE_HELLO, "HELLO after the handshake",
                             close=True)
            else:
                # A newer peer may speak kinds we do not know: skip, count, keep the link.
                self._reject(state, RejectReason.UNKNOWN_KIND, f"frame kind {kind}",
                             close=False)
        except DecodeError as exc:
            self._reject(state, exc.reason, exc.detail, close=True)

    def broadcast(self, envelope: wire.Envelope, *, now: float) -> bytes:
        """Send the application's own (already signed) message to every neighbour.

        Returns the message id. A message this node has already seen is not sent again.
        """
        if envelope.id in self._seen or self._streams.has(envelope.stream, envelope.sequence):
            return envelope.id
        if DIRECT_HEADER in envelope.headers:
            raise ValueError(f"a message with a {DIRECT_HEADER} header is for one node: "
                             "send it with send_direct")
        if (envelope.origin in self.trust.operators and envelope.signature is not None
                and self._authentic(envelope.origin, envelope.signature, envelope.id,
                                    envelope.body)):
            self._on_operator_notice(envelope, now)  # published here: it counts here too
        self._accept(envelope, now)
        self._counters.originated += 1
        self._forward(envelope, hops=0, received_from=None)
        return envelope.id

    def receive_routed(self, item: Routed, *, now: float) -> None:
        """Handle what another worker of this node routed here (sharded node only)."""
        self._now = now
        kind, link = item.kind, item.link
        if kind == RoutedKind.PEER_UP:
            self._add_remote_peer(link, item.data, now)
            return
        if kind == RoutedKind.PEER_DOWN:
            self._remove_remote_peer(link)
            return
        state = self._links.get(link)
        if state is None:
            # The connection went away while the item was in flight; anti-entropy
            # repairs whatever it carried.
            self._count_reject("routed_to_closed_link")
            return
        if kind == RoutedKind.MESSAGE:
            if item.priority >= CRITICAL:
                self._handle_routed_message(state, item.data, now)
            else:
                # Queued, not verified now: what one link floods must not delay another
                # link's messages that came through the same ring behind it.
                self._wait(link, item.data, item.priority, routed=True)
            return
        try:
            if kind == RoutedKind.SEND:
                self._queue(state, item.data, item.priority)
            elif kind == RoutedKind.ANSWER:
                if not self._answer(state, item.data, item.priority):
                    self._count_reject("answer_over_credit")
            elif kind == RoutedKind.DIGEST:
                if len(item.data) < CREDIT_SHARE.size:
                    raise DecodeError("truncated", "routed digest without its credit share")
                (state.credit,) = CREDIT_SHARE.unpack_from(item.data)
                self._on_digest(state, wire.decode_frame(item.data[CREDIT_SHARE.size :]), now)
            elif kind == RoutedKind.DIRECT:
                self._direct.on_frame(state, wire.decode_frame(item.data), now)
            elif kind == RoutedKind.TREE:
                frame = wire.decode_frame(item.data)
                self._on_tree_entries(state, frame.kind, wire.decode_tree_entries(frame), now)
            elif kind == RoutedKind.CLOSE:
                reason = item.data.decode(errors="replace")
                if reason == RejectReason.LOW_SCORE and state.hello is not None:
                    # Another worker's verdict: this one owns the peer's connections and
                    # admits its next one, so it must hold the verdict too.
                    self._scores.condemn(state.hello.public_key, now=now)
                self._request_close(state, reason)
        except DecodeError as exc:
            self._reject(state, exc.reason, exc.detail, close=True)

    def _wait(self, link: int, frame: bytes, priority: int, *, routed: bool) -> None:
        """Queue a message frame below the critical band for :meth:`process_backlog`,
        shedding the lowest band of the link holding the most when over the room."""
        backlog = self._backlog
        inbox = backlog.get(link)
        if inbox is None:
            inbox = backlog[link] = Inbox(routed)
        inbox.put(frame, priority)
        self._waiting += len(frame) + ENTRY_COST
        if self._waiting > self._room:
            self._shed(link)

    def _shed(self, link: int | None) -> None:
        """Over the room: shed the lowest band of ``link`` if it holds at least its share,
        else of the link holding the most."""
        backlog = self._backlog
        # The link with at least its share pays; one under its share (an honest link
        # beside a flood) never does.
        if link is None or backlog[link].size * len(backlog) < self._waiting:
            link = max(backlog, key=lambda other: backlog[other].size)
        victim = backlog[link]
        held = victim.size
        self._count_reject("ingress_shed", victim.shed(self._waiting - self._room))
        self._waiting -= held - victim.size
        if not victim:
            del backlog[link]

    @property
    def has_backlog(self) -> bool:
        """Message frames wait for :meth:`process_backlog`."""
        return bool(self._backlog)

    @property
    def backlog_bytes(self) -> int:
        """Bytes of message frames waiting for :meth:`process_backlog` (a gauge)."""
        return self._waiting

    def process_backlog(self, *, now: float, budget: int = 16) -> bool:
        """Handle up to ``budget`` waiting message frames, each link's highest band
        first, one per link in turn, so every link's messages advance at the same pace
        however many another link sent. Returns True while more wait (the driver calls
        again after other work: reading, where critical frames are handled at once)."""
        backlog = self._backlog
        while budget > 0 and backlog:
            for link in list(backlog):
                inbox = backlog.get(link)
                if inbox is None:
                    continue  # a frame handled in this pass closed that link
                held = inbox.size
                frame = inbox.take()
                self._waiting -= held - inbox.size
                # Settled before the frame is handled (which may close links): a link
                # served goes to the back, so the next call starts with those it did not
                # reach, however many links wait.
                del backlog[link]
                if inbox:
                    backlog[link] = inbox
                budget -= 1
                if not inbox.routed:
                    self._receive_waiting(link, frame, now)
                else:
                    state = self._links.get(link)
                    if state is None or state.closing:
                        self._count_reject("routed_to_closed_link")
                    else:
                        self._handle_routed_message(state, frame, now)
                if budget <= 0:
                    break
        return bool(backlog)

    def _flush_waiting(self, link: int, now: float) -> None:
        """Handle what ``link``'s peer sent before it went, as without read-ahead: its
        last messages (a node that publishes, then leaves), up to ``FLUSH_LIMIT``
        highest band first; more is a flood or an overload, dropped and counted
        (anti-entropy repairs it from others) rather than handled while every other
        link waits. Routed frames are their owner's to drop."""
        inbox = self._backlog.pop(link)
        self._waiting -= inbox.size
        if inbox.routed:
            self._count_reject("routed_to_closed_link", len(inbox))
            return
        for _ in range(min(len(inbox), FLUSH_LIMIT)):
            self._receive_waiting(link, inbox.take(), now)
        if inbox:
            self._count_reject("closed_link_backlog", len(inbox))

    def _handle_routed_message(self, state: _Link, data: bytes, now: float) -> None:
        if state.standing == _GRAYLISTED:
            self._count_reject("graylisted")
            return
        try:
            self._on_message(state, wire.decode_frame(data), now)
        except DecodeError as exc:
            self._reject(state, exc.reason, exc.detail, close=True)

    def take_routed(self) -> dict[int, list[Routed]]:
        """Items for other workers of this node, by worker index (sharded node only)."""
        self._flush_announcements()
        routed, self._routed = self._routed, {}
        return routed

    def restore_delivered(self, streams: Mapping[wire.StreamKey, Sequence[tuple[int, int]]],
                          *, now: float) -> None:
        """Take the sequence numbers the node already delivered to its application (its
        supervisor's record, handed to a restarted shard) as delivered here: they are
        neither delivered again nor asked for, and digests say so; holes between them
        are filled by anti-entropy as usual."""
        for stream, intervals in streams.items():
            self._streams.restore(stream, intervals, now=now)

    def drop_worker_links(self, owner: int) -> None:
        """Worker ``owner`` died and was replaced: forget the peers whose connections it
        held, and tell its replacement about the peers this worker holds (it starts
        knowing none of them)."""
        for link, state in list(self._links.items()):
            if state.owner == owner:
                self._remove_remote_peer(link)
        for state in self._peers.values():
            if state.owner is None and state.hello is not None:
                self._route(owner, Routed(RoutedKind.PEER_UP, state.id, 0,
                                          state.hello.encode()))

    def handle_timer(self, *, now: float) -> None:
        """Run what is due: anti-entropy round, expiry of caches, handshake deadlines, and
        a share of the message frames waiting (:meth:`process_backlog`)."""
        self._now = now
        if self._backlog:
            self.process_backlog(now=now)
        if self._shaped_until is not None and now >= self._shaped_until:
            self._shaped_until = None  # frames_to_send takes the held-back frames now
        if now >= self._next_anti_entropy:
            self._next_anti_entropy = now + self.config.anti_entropy_interval
            target = self._next_digest_peer()
            if target is not None:
                self._send_digest(target, reply=False)
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_INTERVAL
            self._seen.expire(now=now)
            self._direct.expire(now)
            self._store.expire(now=now, wall_now=now + self._wall_offset)
            # Not past max_message_age either: no store keeps a message longer.
            gap_timeout = self.config.gap_timeout
            self._streams.expire_gaps(
                now=now, gap_timeout=gap_timeout,
                hold_limit=min(HOLD_GAP_TIMEOUTS * gap_timeout, self.config.max_message_age))
            self._rejudge(now)
            for state in list(self._links.values()):
                if state.hello is None and now - state.opened_at > self.handshake_timeout:
                    self._reject(state, RejectReason.HANDSHAKE_TIMEOUT,
                                 f"no handshake within {self.handshake_timeout} s",
                                 close=True)
                elif state.partial_since is not None \
                        and now - state.partial_since > self.frame_timeout:
                    self._reject(state, RejectReason.FRAME_TIMEOUT,
                                 f"an incomplete frame held for {self.frame_timeout} s",
                                 close=True)
        self._direct.on_timer(now)
        tree = self._tree
        if tree is not None:
            for link, message_id, tag in tree.due(
                    now=now, waiting=self._waits_here if self._backlog else None):
                announcer = self._links.get(link)
                if announcer is not None:
                    self._send_tree_frame(announcer, wire.FrameKind.GRAFT,
                                          [wire.encode_tree_entry(message_id, tag)])
            for link in tree.take_broken_promises():
                promised = self._links.get(link)
                # At most one broken promise a second counts: an honest neighbour past
                # its own GRAFT budget, or one whose answer waits where _waits_here does
                # not look (its send queue; on a sharded node, the backlog of the worker
                # that read it), misses a burst of them at once; one that never answers
                # still sinks in a minute.
                if promised is not None and now - promised.broken_promise_at >= 1.0:
                    promised.broken_promise_at = now
                    self._greedy(promised, now, BROKEN_PROMISE)

    def _waits_here(self, message_id: bytes) -> bool:
        """A copy of the message waits in the backlog (read, not yet handled). The
        frames' ids are read only now, when a GRAFT is due while frames wait: the
        common path, a frame that waits and is handled before any GRAFT, pays nothing."""
        backlog = self._backlog
        added = sum(inbox.index() for inbox in backlog.values())
        if added:
            self._waiting += added
            if self._waiting > self._room:
                self._shed(None)  # the ids kept take room too
        return any(message_id in inbox.ids for inbox in backlog.values())

    def _next_digest_peer(self) -> _Link | None:
        """The neighbour for this anti-entropy round: each one once per round, in an order
        shuffled anew every round. A hole that only one neighbour can fill (the origin,
        after the others lost the message with a crashed worker) is therefore asked of
        it within ``neighbours x anti_entropy_interval``, where a random pick each time
        could miss it until ``gap_timeout`` gave the hole up."""
        order = self._digest_order
        while True:
            if not order:
                order.extend(self._peers)
                if not order:
                    return None
                self._rng.shuffle(order)
            state = self._peers.get(order.pop())
            if state is not None:
                return state

    def _bucket(self, rate: float, now: float) -> TokenBucket | None:
        if rate <= 0:
            return None
        return TokenBucket(rate, max(rate / 10, 1.0), now=now)

    def get_timer(self) -> float:
        """The next time ``handle_timer`` must be called: at once (the latest time the
        driver gave) while message frames wait, so that a driver that only arms this
        timer also works through them (:meth:`process_backlog`)."""
        if self._backlog:
            return self._now
        deadline = min(self._next_anti_entropy, self._next_housekeeping)
        if self._shaped_until is not None:
            deadline = min(deadline, self._shaped_until)
        direct = self._direct.next_deadline()
        if direct is not None:
            deadline = min(deadline, direct)
        if self._tree is not None:
            if self.config.announce_interval and self._next_announce < deadline \
                    and self._tree.has_announcements:
                deadline = self._next_announce
            graft = self._tree.next_deadline()
            if graft is not None and graft < deadline:
                return graft
        return deadline

    # --- outputs ---------------------------------------------------------------------

    def frames_to_send(self) -> Iterator[tuple[int, bytes]]:
        """Per link with queued frames (and a transport that is not paused), one buffer."""
        self._flush_announcements()
        dirty = self._dirty
        self._dirty = {}
        counters = self._counters
        for link in dirty:
            state = self._links.get(link)
            if state is None:
                continue
            if state.paused:
                self._dirty[link] = None
                continue
            raw = state.raw_out
            if raw and not state.outbound:
                state.credit -= len(raw)  # our side of a handshake the peer opened
            session = state.session
            if session is None:
                # Frames wait for the handshake; its own bytes go now.
                if state.outbox:
                    self._dirty[link] = None
                if raw:
                    state.raw_out = b""
                    yield link, raw
                continue
            if self._node_shaper is None and state.shaper is None:
                data, frames = state.outbox.drain()
            else:
                data, frames = state.outbox.drain(self._allowance(state))
                self._spend(state, len(data))
            if data:
                counters.bytes_out += len(data)
                counters.frames_out += frames
                data = session.seal(data)
            if raw:
                state.raw_out = b""
                data = raw + data
            if data:
                yield link, data

    def _allowance(self, state: _Link) -> int:
        """Bytes the shapers let ``state``'s link send now (it has at least one)."""
        buckets = [b for b in (self._node_shaper, state.shaper) if b is not None]
        for bucket in buckets:
            bucket.has(now=self._now, cost=0.0)  # refill to now
        return max(0, int(min(bucket.tokens for bucket in buckets)))

    def _spend(self, state: _Link, sent: int) -> None:
        """Charge ``sent`` bytes to the shapers; if frames were held back, keep the link
        dirty and ask for a timer when the slower bucket has a frame's worth again."""
        waits = []
        for bucket in (self._node_shaper, state.shaper):
            if bucket is not None:
                bucket.tokens -= sent
                waits.append(max(0.0, -bucket.tokens) / bucket.rate)
        if state.outbox:
            self._dirty[state.id] = None
            due = self._now + max(max(waits), 0.001)
            if self._shaped_until is None or due < self._shaped_until:
                self._shaped_until = due

    def links_to_close(self) -> list[tuple[int, str]]:
        """Links the driver must close (after sending what is queued), with a reason."""
        closing, self._to_close = self._to_close, []
        return closing

    def take_deliveries(self) -> list[Delivery]:
        deliveries, self._deliveries = self._deliveries, []
        return deliveries

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def statistics(self) -> EndpointStatistics:
        c = self._counters
        for state in self._peers.values():
            self._credit(state, self._now)
        return EndpointStatistics(
            frames_in=c.frames_in, frames_out=c.frames_out, bytes_in=c.bytes_in,
            bytes_out=c.bytes_out, messages_delivered=c.delivered,
            messages_originated=c.originated, messages_forwarded=c.forwarded,
            duplicates=c.duplicates, signatures_verified=c.verified,
            batch_proofs=self._batches.proven_from_cache,
            rejected=dict(c.rejected), send_queue_dropped=c.queue_dropped,
            send_queue_bytes=self.queued_bytes(),
            digests_sent=c.digests_sent, repairs_sent=c.repairs_sent,
            digest_entries_scanned=self._store.scanned + self._streams.scanned,
            frames_routed=c.routed,
            control_frames_out=c.control_frames, control_bytes_out=c.control_bytes,
            tree=None if self._tree is None else self._tree.statistics(),
            verify_seconds=tuple(self._verify_counts),
            verify_seconds_total=self._verify_total,
            peer_scores={state.hello.node_id: round(self._scores.score(key, now=self._now), 3)
                         for key, state in self._peers.items() if state.hello is not None},
            lazy_streams=self._lazy_streams(),
            stored_messages=len(self._store), seen_ids=len(self._seen),
            streams=len(self._streams), links=len(self._links), peers=len(self._peers),
        )

    def _lazy_streams(self) -> dict[str, int]:
        if self._tree is None:
            return {}
        counts = self._tree.lazy_streams()
        return {state.hello.node_id: counts.get(state.id, 0)
                for state in self._peers.values() if state.hello is not None}

    # --- frame handlers ----------------------------------------------------------------

    def _on_peer(self, state: _Link, hello: PeerHello, now: float) -> None:
        """The handshake proved who the peer is: admit it (or not) as a peer."""
        if hello.public_key == self.identity.public_key:
            self._request_close(state, "self")
            return
        refused = self.trust.admit(hello.public_key, hello.node_id, hello.credential,
                                   wall=now + self._wall_offset)
        score = self._scores.score(hello.public_key, now=now)
        if refused is None and score < self._scores.thresholds.graylist:
            # It misbehaved, recently: back once it would be heard, not to be cut again.
            refused = RejectReason.LOW_SCORE
        if refused is not None:
            # No link: no PeerConnected, no digest, nothing of ours is ever sealed to it.
            self._reject(state, refused, f"peer {hello.node_id!r} refused: {refused}",
                         close=True)
            return
        state.hello = hello
        state.standing = self._standing(score)
        existing = self._peers.get(hello.public_key)
        if existing is not None and not self._prefer(state, existing):
            self._request_close(state, "duplicate")
            return
        self._peers[hello.public_key] = state
        if existing is not None:
            # The same peer over a better link: swap quietly, no disconnect/connect events.
            self._strategy.link_down(existing.id)
            self._request_close(existing, "duplicate")
            self._announce(RoutedKind.PEER_DOWN, existing.id, b"")
        else:
            self._events.append(PeerConnected(hello.node_id, state.peer_address,
                                              hello.public_key))
        self._strategy.link_up(state.id)
        self._announce(RoutedKind.PEER_UP, state.id, hello.encode())
        # Revocations are kept and handed on, so a node that joins late refuses the
        # revoked keys too.
        for revocation in self.trust.revocation_frames():
            self._queue(state, revocation, 255)
        # Both ends send a digest on link-up, so neither needs to answer the other's.
        self._send_digest(state, reply=True)

    def _prefer(self, new: _Link, old: _Link) -> bool:
        """Of two links to one peer keep the one dialled by the smaller key (both ends
        decide alike); when the same side dialled both, the newer link wins."""
        def dialer(link: _Link) -> bytes:
            assert link.hello is not None
            return self.identity.public_key if link.outbound else link.hello.public_key
        new_dialer, old_dialer = dialer(new), dialer(old)
        if new_dialer == old_dialer:
            return True
        return new_dialer < old_dialer

    def _on_message(self, state: _Link, frame: wire.Frame, now: float) -> None:
        signature, body = wire.split_signed(frame.payload, frame.flags)
        message_id = wire.message_id(body)
        if message_id in self._seen:
            self._on_duplicate(state, frame, message_id, body)
            return
        envelope = wire.decode_envelope(body, signature, message_id)
        if frame.priority != envelope.priority:
            # The header's copy of the signed priority orders read-ahead; a neighbour
            # that changes it jumps the queue or holds back another origin's alert.
            self._reject(state, RejectReason.BAD_PRIORITY,
                         f"header priority {frame.priority}, signed {envelope.priority}",
                         close=True)
            return
        if self._streams.has(envelope.stream, envelope.sequence):
            self._on_duplicate(state, frame, message_id, body)
            return
        if DIRECT_HEADER in envelope.headers:
            # Signed for one node: a relay that broadcasts it does so against its sender.
            self._reject(state, "direct_as_broadcast", "a direct message broadcast",
                         close=False)
            return
        config = self.config
        if signature is None:
            if config.require_signatures:
                self._reject(state, RejectReason.UNSIGNED, "unsigned message refused",
                             close=False)
                return
            if envelope.origin != wire.ZERO_KEY:
                self._reject(state, RejectReason.BAD_ENVELOPE,
                             "unsigned message names an origin key", close=True)
                return
        elif config.trusted_keys is not None and envelope.origin not in config.trusted_keys:
            self._reject(state, RejectReason.UNTRUSTED, "origin key not trusted", close=False)
            return
        wall_now = now + self._wall_offset
        verified = False
        if signature is not None:
            trust = self.trust
            if envelope.origin in trust.operators:
                # An operator's notice (a revocation) counts whatever its age: check it
                # now, apply it, then treat it as any message.
                if not self._authentic(envelope.origin, signature, message_id, body):
                    self._reject(state, RejectReason.BAD_SIGNATURE, "operator signature",
                                 close=True)
                    return
                verified = True
                self._on_operator_notice(envelope, now)
            else:
                refused = trust.check_source(envelope.origin, envelope.source, wall=wall_now)
                if refused is not None:
                    # The neighbour may be an honest relay: refuse the message, keep the link.
                    self._reject(state, refused, f"source {envelope.source!r}: {refused}",
                                 close=False)
                    return
        if envelope.expires_at < wall_now:
            self._count_reject(RejectReason.EXPIRED)
            return
        if envelope.timestamp_ms / 1000.0 < wall_now - config.max_message_age:
            # Whatever its TTL says: the replay bound (older copies also meet the
            # per-origin sequence intervals, which outlive the seen cache).
            self._count_reject(RejectReason.TOO_OLD)
            return
        if envelope.timestamp_ms / 1000.0 > wall_now + config.max_clock_skew:
            self._reject(state, RejectReason.FUTURE_TIMESTAMP, "timestamp in the future",
                         close=False)
            return
        if signature is not None and not verified \
                and not self._authentic(envelope.origin, signature, message_id, body):
            self._reject(state, RejectReason.BAD_SIGNATURE, "message signature", close=True)
            return
        try:
            payload = decode_payload(envelope.payload_kind, envelope.payload)
        except DecodeError as exc:
            # Validly signed garbage: the origin is at fault, not this neighbour. Remember
            # it so the other copies are not verified again, and never pass it on.
            self._seen.add(message_id, now=now)
            self._streams.add(envelope.stream, envelope.sequence, now=now)
            self._reject(state, exc.reason, exc.detail, close=False)
            return
        self._accept(envelope, now, frame.hops + 1)
        self._counters.delivered += 1
        state.first_copies += 1  # credited to its score at the next sweep, off this path
        self._message_size += (len(frame.payload) + wire.FRAME_HEADER.size
                               - self._message_size) / 64
        if state.peer_lead and frame.flags & wire.FLAG_REPAIR:
            state.peer_lead -= 1
        assert state.hello is not None
        if signature is not None and QUERY_HEADER in envelope.headers:
            self._direct.learn_route(state, envelope.origin, query=True)
        # The tuple's own __new__ is a Python function around this, once per delivery.
        self._deliveries.append(_new_tuple(Delivery, (envelope, payload, state.hello.node_id,
                                                      frame.hops, False)))
        tree = self._tree
        tag = _tag_of(envelope)
        skip = None
        if tree is not None:
            repaired = bool(frame.flags & wire.FLAG_REPAIR)
            stale = not repaired and tree.pushed(state.id, tag, now=now)
            tree.received(message_id, repaired=repaired, stale=stale)
            if stale:
                # Only announced to the parent, whose own copy is on its way: pushed, it
                # would be a duplicate there, and the parent would prune this node.
                skip = tree.parent(tag)
        if frame.hops + 1 < config.max_hops:
            # A repair travels on as a repair: where it meets the tree's own copy of the
            # message, neither copy may look like a redundant path and prune the tree.
            self._forward(envelope, hops=frame.hops + 1, received_from=state.id,
                          repair=bool(frame.flags & wire.FLAG_REPAIR), tag=tag, skip=skip)
        elif tree is not None:
            # The hop count is the sender's word, not the origin's: a neighbour that sets
            # it at the limit must not keep a verified message from the rest of the mesh.
            # No more pushes past the limit (the loop backstop), but every other
            # neighbour hears of it and GRAFTs it if it lacks it.
            self._count_reject("hop_limit")
            entry = wire.encode_tree_entry(envelope.id, tag, min(frame.hops + 1, 255))
            for link in tree.links():
                if link != state.id:
                    tree.announce(link, entry, envelope.priority)

    def _authentic(self, origin: bytes, signature: bytes, message_id: bytes,
                   body: bytes) -> bool:
        """Check a message's authenticator: its own signature, or its batch's root
        signature (an Ed25519 check once per batch) and the part of its proof no earlier
        message of the batch proved (:mod:`somasync.core.batches`)."""
        if len(signature) == wire.SIGNATURE_SIZE:
            self._counters.verified += 1
            return self._verify(origin, signature, wire.MESSAGE_DOMAIN, body)
        return self._batches.check(origin, message_id, signature, self._verify_root)

    def _verify_root(self, origin: bytes, signature: bytes, signed: bytes) -> bool:
        self._counters.verified += 1
        return self._verify(origin, signature, wire.BATCH_DOMAIN, signed)

    def _on_operator_notice(self, envelope: wire.Envelope, now: float) -> None:
        if envelope.payload_kind != PayloadKind.BINARY:
            return
        revoked = parse_revocation(envelope.payload)
        if revoked is None:
            return
        kept = wire.encode_message_frame(envelope, hops=0, repair=True)
        name = self.trust.name_of(revoked)
        if self.trust.revoke(revoked, kept):
            self._events.append(PeerRevoked(revoked, name, kept))
        self.disconnect_peer(revoked, "revoked")

    def retune(self, sizing: Sizing) -> None:
        """Run on adaptive values from now on (:mod:`somasync.core.sizing`): push fanout,
        IHAVE fanout and the anti-entropy interval (the next round waits the new one).
        The overlay degree is the control part's to apply."""
        self.config = retuned_config(self.config, sizing.fanout,
                                     sizing.anti_entropy_interval)
        if isinstance(self._strategy, PushGossip):
            self._strategy.fanout = sizing.fanout
        if self._tree is not None:
            self._tree.lazy_fanout = sizing.ihave_fanout

    def revoke(self, public_key: bytes, frame: bytes) -> None:
        """Another part of this node applied an operator's revocation (a sharded node's
        other worker): refuse the key here too, keep ``frame`` for new neighbours, and
        close its link."""
        self.trust.revoke(public_key, frame)
        self.disconnect_peer(public_key, "revoked")

    def _on_digest(self, state: _Link, frame: wire.Frame, now: float) -> None:
        # Answering costs up to anti_entropy_batch stored messages: a neighbour gets a
        # few answers that send something per anti-entropy round (it asks about once),
        # never one per frame. A digest whose answer is empty (the neighbour lacks
        # nothing) is free: a sharded neighbour sends one per worker. Not a violation
        # either way: an honest node catching up on a large backlog asks this often.
        assert state.hello is not None
        key = state.hello.public_key
        if not self._digest_budget.has(key, now=now):
            self._count_reject("digest_limited")
            return
        digest = wire.decode_digest(frame)
        # Holes a peer that defers its repairs to us lists as held are not given up while
        # it may still send them: its rate-limited queue can take longer than gap_timeout
        # to drain. Only then: every digest lists given-up holes as held too. Work done
        # for the digest, so it is paid for like an answer.
        heard = self._streams.heard(digest.streams, now=now) if digest.deferred else 0
        complete = not frame.flags & wire.FLAG_PARTIAL
        wall_now = now + self._wall_offset
        missing = self._store.missing_for(digest.streams, complete=complete,
                                          limit=self.config.anti_entropy_batch,
                                          wall_now=wall_now)
        deferring = False
        if missing and (self._node_shaper or state.shaper):
            answer = self._shaped_answer(state, missing)
            deferring = len(answer) < len(missing)
            missing = answer
        state.deferring = deferring
        if missing or heard:
            self._digest_budget.take(key, now=now)
        sent = 0
        for frame_bytes, priority in missing:
            if not self._answer(state, frame_bytes, priority):
                # The peer has not paid for more: say how much waits, so that its next
                # digest pays for it (the notice itself is paid from the credit left).
                held = missing[sent:]
                self._count_reject("answer_over_credit", len(held))
                self._send_digest(state, reply=True,
                                  withheld=sum(len(f) for f, _ in held) + ANSWER_OVERHEAD)
                break
            sent += 1
        lead, unknown = self._lacking(digest)
        if lead and state.id in self._backlog:
            # Read behind this peer's own waiting messages (read-ahead handles control
            # frames at once): what it holds and we lack is likely among them, and asking
            # would bring every one twice while the node is busiest. Its next digest, or
            # ours, asks for what is still lacking then.
            lead = 0
        state.peer_lead = lead
        state.peer_withheld = digest.withheld
        if digest.withheld or (lead and not digest.reply and sent == len(missing)):
            # Asked for what it lacks, or (the peer holds answers back) paid for them now:
            # each exchange grows both sides' credit tenfold until the answers go.
            self._send_digest(state, reply=True, unknown=unknown)
        elif deferring and not digest.reply \
                and now - state.told_deferring_at >= self.config.gap_timeout / 4:
            # The peer keeps its holes past gap_timeout only on our word, and our own
            # digests reach it about once in as many rounds as we have neighbours: a few
            # times a gap_timeout, it gets the word in reply.
            self._send_digest(state, reply=True)

    def _shaped_answer(self, state: _Link,
                       missing: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
        """What of ``missing`` to send a peer on a shaped link. Nothing while frames are
        held back for it: they are what its digest lacks, and copies would only queue
        behind them; what its full queue dropped waits too (its holes are kept while
        this node lists them as held, see ``heard``). Once the queue is empty, only what
        fits in it, oldest first: the shaper sends no faster, and the queue would drop
        the rest, to be sent again for the next digest.

        A sharded node's other workers do not see the owner's queue (their link has no
        outbox of its own): they send up to what a queue holds, and the owner's queue
        drops what does not fit, as it would its own frames."""
        if state.outbox:
            self._count_reject("repair_deferred", len(missing))
            return []
        room = self.config.link_queue_bytes if state.owner is not None \
            else state.outbox.capacity
        fits = 0
        for frame_bytes, _ in missing:
            room -= len(frame_bytes)
            if room < 0:
                break
            fits += 1
        if fits < len(missing):
            self._count_reject("repair_deferred", len(missing) - fits)
        return missing[:fits]

    def _lacking(self, digest: wire.Digest) -> tuple[int, list[wire.StreamKey]]:
        """How many messages the digest's sender holds that this endpoint's streams lack
        (counted up to ``anti_entropy_batch``), and which of the lacking streams this
        endpoint has never seen."""
        lead = 0
        cap = self.config.anti_entropy_batch
        unknown: list[wire.StreamKey] = []
        for stream, intervals in digest.streams.items():
            if not intervals or not self._owns_stream(stream):
                continue
            tracker = self._streams.get(stream)
            if tracker is None:
                unknown.append(stream)
                lead += sum(hi - lo + 1 for lo, hi in intervals)
            elif lead < cap:
                lead += count_lacking(tracker.intervals(), intervals, cap - lead)
        return min(lead, cap), unknown

    # --- direct messages (somasync.core.direct) ------------------------------------------

    def send_direct(self, envelope: wire.Envelope, target: bytes, node_id: str, *,
                    now: float, timeout: float, via: Sequence[bytes] = ()) -> bytes:
        """Send the application's own signed ``envelope`` (its ``somasync-direct-to``
        header naming ``target``) to the node ``target`` alone, through ``via`` (relays'
        keys, in order) when given; retried until it is acknowledged or ``timeout``
        seconds pass. Returns the message id; the outcome comes as a
        :class:`~somasync.core.direct.DirectAcked` or
        :class:`~somasync.core.direct.DirectFailed` event (and a
        :class:`~somasync.core.direct.RouteDiscovered` when a route was learned). A
        sharded node calls it on the worker :func:`~somasync.core.shard.direct_owner`
        names for the two keys."""
        self._now = now
        return self._direct.send(envelope, target, node_id, now=now, timeout=timeout,
                                 via=tuple(via))

    @property
    def direct_pending(self) -> int:
        """Direct messages sent and not yet acknowledged or failed."""
        return self._direct.pending

    def _on_direct(self, state: _Link, decoded: wire.Frame, frame: bytes,
                   now: float) -> None:
        shard = self._shard
        if shard is not None:
            payload = decoded.payload
            if len(payload) < 66:
                raise DecodeError("truncated", "direct frame shorter than its header")
            owner = direct_owner(payload[2:34], payload[34:66], shard.count)
            if owner != shard.index:
                self._route(owner, Routed(RoutedKind.DIRECT, state.id, 0, frame))
                return
        self._direct.on_frame(state, decoded, now)

    def _deliver_direct(self, envelope: wire.Envelope, payload: MessageType,
                        from_peer: str) -> None:
        self._counters.delivered += 1
        self._deliveries.append(Delivery(envelope, payload, from_peer, direct=True))

    # --- sharding ----------------------------------------------------------------------

    def _owns_stream(self, stream: wire.StreamKey) -> bool:
        shard = self._shard
        return shard is None or stream_owner(
            stream[0], stream[1].encode(), shard.count) == shard.index

    def _message_owner(self, frame: wire.Frame) -> int:
        assert self._shard is not None
        _, body = wire.split_message_payload(frame)
        stream = wire.envelope_stream_bytes(body)
        # Asked for every message a sharded node receives: the tag, remembered as
        # _tag_of remembers it, spares a hash.
        tag = _ROUTE_TAGS.get(stream)
        if tag is None:
            if len(_ROUTE_TAGS) >= _TAGS_KEPT:
                _ROUTE_TAGS.clear()
            tag = _ROUTE_TAGS[stream] = wire.stream_tag(*stream)
        return tag_owner(tag, self._shard.count)

    def _route(self, owner: int, item: Routed) -> None:
        self._routed.setdefault(owner, []).append(item)
        self._counters.routed += 1

    def _announce(self, kind: RoutedKind, link: int, data: bytes) -> None:
        """Tell every other worker (no-op in a single-process node)."""
        shard = self._shard
        if shard is None:
            return
        for index in range(shard.count):
            if index != shard.index:
                self._route(index, Routed(kind, link, 0, data))

    def _add_remote_peer(self, link: int, hello_payload: bytes, now: float) -> None:
        assert self._shard is not None
        hello = PeerHello.decode(hello_payload)  # proven to the owning worker
        old = self._peers.get(hello.public_key)
        if old is not None:
            self._remove_remote_peer(old.id)
        state = _Link(link, False, hello.listen_address or "", now, _NO_OUTBOX, hello=hello,
                      owner=self._shard.link_owner(link),
                      # A share of what the peer's handshake earned, for the link-up
                      # digest below (the owner checks again what arrives).
                      credit=(AMPLIFICATION_LIMIT - 1) * len(hello_payload)
                      // self._shard.count)
        state.standing = self._standing(self._scores.score(hello.public_key, now=now))
        self._links[link] = state
        self._peers[hello.public_key] = state
        self._strategy.link_up(link)
        self._send_digest(state, reply=True)

    def _remove_remote_peer(self, link: int) -> None:
        state = self._links.get(link)
        if state is None or state.owner is None:
            return
        del self._links[link]
        self._direct.link_down(link)
        self._credit(state, self._now)
        dropped = self._backlog.pop(link, None)
        if dropped:
            self._waiting -= dropped.size
            self._count_reject("routed_to_closed_link", len(dropped))
        if state.hello is not None and self._peers.get(state.hello.public_key) is state:
            del self._peers[state.hello.public_key]
            self._strategy.link_down(link)

    # --- helpers -----------------------------------------------------------------------

    def _accept(self, envelope: wire.Envelope, now: float, hops: int = 0) -> None:
        """Mark seen and store; ``hops``: what a neighbour would see in our copy."""
        self._seen.add(envelope.id, now=now)
        self._streams.add(envelope.stream, envelope.sequence, now=now)
        self._store.add(envelope, now=now, wall_now=now + self._wall_offset, hops=hops)

    def _forward(self, envelope: wire.Envelope, *, hops: int, received_from: int | None,
                 repair: bool = False, tag: bytes | None = None,
                 skip: int | None = None) -> None:
        """Push to the stream's targets, and announce to the tree's lazy links; ``tag``:
        the stream's, when the caller already has it; ``skip``: a tree link to push
        nothing to (see :meth:`BroadcastTree.split_targets`)."""
        if tag is None:
            tag = _tag_of(envelope)
        tree = self._tree
        if tree is not None:
            targets, lazy = tree.split_targets(tag, received_from=received_from, skip=skip)
            if lazy:
                entry = wire.encode_tree_entry(envelope.id, tag, hops)
                priority = envelope.priority
                for link in lazy:
                    tree.announce(link, entry, priority)
        else:
            targets = self._strategy.targets(tag, received_from=received_from, rng=self._rng)
        if not targets:
            return
        frame = wire.encode_message_frame(envelope, hops=hops, repair=repair)
        for link in targets:
            state = self._links.get(link)
            if state is not None:
                self._queue(state, frame, envelope.priority)
        self._counters.forwarded += len(targets)

    # --- the broadcast tree ------------------------------------------------------------

    def _on_duplicate(self, state: _Link, frame: wire.Frame, message_id: bytes,
                      body: bytes) -> None:
        """A copy of a message already seen. A tree push (not a repair) means two paths
        lead here: PRUNE the later one."""
        self._counters.duplicates += 1
        tree = self._tree
        if tree is None or frame.flags & wire.FLAG_REPAIR:
            return
        origin, source = wire.envelope_stream_bytes(body)
        tag = wire.stream_tag(origin, source)
        if tree.arrived_by_repair(message_id):
            # The repair (or a stale push) overtook this tree copy: the link is sound,
            # keep it; unless this is a second stale push, on a link just pruned.
            if not tree.stale_push(state.id, tag, now=self._now):
                tree.make_eager(state.id, tag)
            return
        tree.prune(state.id, tag, now=self._now)
        self._send_tree_frame(state, wire.FrameKind.PRUNE,
                              [wire.encode_tree_entry(message_id, tag)])

    def _on_tree_frame(self, state: _Link, frame: wire.Frame, now: float) -> None:
        """An IHAVE, GRAFT or PRUNE from a neighbour. A sharded node hands each entry to
        the worker owning its stream, whose tree the entry concerns."""
        entries = wire.decode_tree_entries(frame)
        shard = self._shard
        if shard is not None:
            mine: list[wire.TreeEntry] = []
            theirs: dict[int, list[bytes]] = {}
            for entry in entries:
                owner = tag_owner(entry.tag, shard.count)
                if owner == shard.index:
                    mine.append(entry)
                else:
                    theirs.setdefault(owner, []).append(wire.encode_tree_entry(*entry))
            for owner, encoded in theirs.items():
                part = wire.encode_tree_frame(frame.kind, encoded)
                self._route(owner, Routed(RoutedKind.TREE, state.id, 0, part[4:]))
            entries = mine
        self._on_tree_entries(state, frame.kind, entries, now)

    def _on_tree_entries(self, state: _Link, kind: int, entries: list[wire.TreeEntry],
                         now: float) -> None:
        tree = self._tree
        if tree is None:
            # A push-forwarding node ignores the tree but keeps the link: mixed meshes
            # (during an upgrade) still deliver through pushes and anti-entropy.
            self._count_reject("tree_frame_ignored")
            return
        if kind == wire.FrameKind.IHAVE:
            if state.standing != _GOOD:
                self._count_reject("ihave_ignored")  # its score lost it that right
                return
            seen = self._seen
            refused = 0
            for entry in entries:
                if entry.message_id not in seen \
                        and not tree.heard(entry.message_id, entry.tag, state.id, now=now):
                    refused += 1
            if refused:
                # Over its share of the missing messages: most likely ids that exist
                # nowhere. Anti-entropy still brings any real one.
                self._count_reject("ihave_over_share", refused)
        elif kind == wire.FrameKind.GRAFT:
            tree.count_graft_received()
            answered: set[bytes] = set()
            repeated = False
            for entry in entries:
                tree.make_eager(state.id, entry.tag)
                if entry.message_id in answered:
                    # One copy per id, however often a GRAFT names it: a request never
                    # buys more than it asks for.
                    self._count_reject("graft_repeated_id")
                    repeated = True
                    continue
                answered.add(entry.message_id)
                stored = self._store.get(entry.message_id)
                if stored is not None:
                    assert state.hello is not None
                    if not self._graft_budget.take(state.hello.public_key, now=now):
                        # Past a tree repair's worth: anti-entropy, at its own pace,
                        # serves a neighbour that needs this much.
                        self._count_reject("graft_limited")
                        continue
                    if not self._answer(state, stored[0], stored[1]):
                        self._count_reject("answer_over_credit")
            if repeated:
                self._greedy(state, now)
        else:
            tree.count_prune_received()
            for entry in entries:
                tree.make_lazy(state.id, entry.tag)

    def _send_tree_frame(self, state: _Link, kind: int, entries: list[bytes],
                         priority: int = 255) -> None:
        step = min(wire.MAX_TREE_ENTRIES,
                   (self.config.max_frame - wire.FRAME_HEADER.size) // wire.TREE_ENTRY.size)
        for start in range(0, len(entries), step):
            frame = wire.encode_tree_frame(kind, entries[start : start + step])
            self._queue(state, frame, priority)
            self._counters.control_frames += 1
            self._counters.control_bytes += len(frame)

    def _flush_announcements(self) -> None:
        """Send each lazy link its batch of IHAVE entries, one frame per turn."""
        tree = self._tree
        if tree is None or not tree.has_announcements:
            return
        interval = self.config.announce_interval
        if interval:
            if self._now < self._next_announce:
                return  # gathered until then (get_timer asks for a wake-up)
            self._next_announce = self._now + interval
        for link, bands in tree.take_announcements().items():
            state = self._links.get(link)
            if state is not None and not state.closing:
                for band, entries in bands.items():
                    self._send_tree_frame(state, wire.FrameKind.IHAVE, entries,
                                          band << ANNOUNCE_BAND)

    def _send_digest(self, state: _Link, *, reply: bool,
                     unknown: list[wire.StreamKey] = (),  # type: ignore[assignment]
                     withheld: int = 0) -> None:
        """Describe this endpoint's streams to ``state``'s peer. Streams in ``unknown``
        are listed with no intervals: "send me all you hold of these". In a sharded node
        each worker describes only its own streams, so its digest is partial.

        A digest that answers the peer (at link-up, or a reply) is charged to the link's
        credit and shrinks to a sample of the streams where the credit is short. One this
        node sends to ask is padded for the answer it expects (``peer_lead``)."""
        items = self._streams.items()
        limit = self.config.max_digest_streams
        answer = reply
        if answer:
            # About 60 bytes a stream: a short credit is not spent encoding in vain.
            limit = min(limit, max(0, state.credit - 64) // 60)
        partial = self._shard is not None or len(items) > limit
        if len(items) > limit:
            items = self._rng.sample(items, limit)
        streams = {stream: t.intervals() for stream, t in items}
        for stream in unknown[: max(0, limit - len(streams))]:
            streams[stream] = []
        bare = wire.encode_digest(streams, reply=reply, partial=partial, withheld=withheld,
                                  deferred=state.deferring)
        if state.deferring:
            state.told_deferring_at = self._now
        # Padding pays for what this node expects: the messages the peer's digest listed,
        # or the answers it said it holds back; once per claim (the peer's next digest
        # renews it), and never past a frame.
        expected = max(state.peer_lead * self._message_size, state.peer_withheld, withheld)
        state.peer_lead = state.peer_withheld = 0
        padding = min(int(expected) // AMPLIFICATION_LIMIT - len(bare),
                      self.config.max_frame - len(bare) - wire.FRAME_HEADER.size)
        frame = wire.pad_digest(bare, padding)
        # A reply answers the peer; padding, in any digest, exists because of what the
        # peer's digest claimed: both are paid from the credit that peer earned, so a
        # digest claiming much that never comes buys little. An honest exchange grows it
        # a hundredfold each round trip (its answers earn the next padding).
        if not (reply or padding > 0):
            # Behind what waits for this peer when something does: the digest lists those
            # messages as held, and read first, it would have the peer ask for every one
            # of them (the receiver does not ask while that peer's messages wait in its
            # own backlog). In the lowest band, a full queue may drop it as bulk: that
            # peer is behind, and its own digests still ask us for what it lacks. Not on
            # a shaped link: there the higher bands take the whole allowance under load
            # and the digest would never go, and what it would bring twice is held back
            # anyway (repair_deferred, while frames wait for that peer).
            shaped = self._node_shaper is not None or state.shaper is not None
            self._queue(state, frame, 0 if state.outbox and not shaped else 255)
        elif not self._answer(state, frame, 255):
            self._count_reject("answer_over_credit")
            return
        self._counters.digests_sent += 1

    def _answer(self, state: _Link, frame: bytes, priority: int) -> bool:
        """Queue ``frame`` in answer to the peer, if the link's credit pays for it (see
        ``AMPLIFICATION_LIMIT``). A sharded node's other workers answer from the share
        of it the owner handed them with the digest, and hand their answers to the owner,
        which holds the credit and checks again."""
        cost = len(frame) + ANSWER_OVERHEAD
        if cost > state.credit and frame[wire.LENGTH_PREFIX.size + 1] == wire.FrameKind.DIGEST:
            # A padded digest sheds what the credit does not pay for.
            padded = wire.decode_digest(wire.decode_frame(frame[wire.LENGTH_PREFIX.size :])
                                        ).padding
            frame = wire.pad_digest(frame, padded - (cost - state.credit), padded=padded)
            cost = len(frame) + ANSWER_OVERHEAD
        if cost > state.credit:
            return False
        state.credit -= cost
        if state.owner is not None:
            self._route(state.owner, Routed(RoutedKind.ANSWER, state.id, priority, frame))
        else:
            self._queue(state, frame, priority)
            if frame[wire.LENGTH_PREFIX.size + 1] == wire.FrameKind.MESSAGE:
                # Counted where it is queued to the connection: a sharded node's other
                # workers' answers count once the owner took them.
                self._counters.repairs_sent += 1
                self._counters.forwarded += 1
        return True

    def _queue(self, state: _Link, frame: bytes, priority: int) -> None:
        if state.owner is not None:
            self._route(state.owner, Routed(RoutedKind.SEND, state.id, priority, frame))
            return
        self._counters.queue_dropped += state.outbox.push(frame, priority)
        self._dirty[state.id] = None

    def _count_reject(self, reason: str, count: int = 1) -> None:
        reason = str(reason)  # plain str keys, whether a RejectReason or a decode reason
        rejected = self._counters.rejected
        rejected[reason] = rejected.get(reason, 0) + count

    def _reject(self, state: _Link, reason: str, detail: str, *, close: bool) -> None:
        self._count_reject(reason)
        self._events.append(FrameRejected(state.peer_label, state.address, str(reason),
                                          detail, close))
        if close:
            self._request_close(state, "protocol_error")
            if state.hello is not None:
                # A proven peer that breaks the protocol: remembered past this link, so
                # reconnecting to do it again stops working.
                self._scores.invalid(state.hello.public_key, now=self._now)

    # --- scores --------------------------------------------------------------------------

    def _standing(self, score: float) -> int:
        thresholds = self._scores.thresholds
        if score < thresholds.graylist:
            return _GRAYLISTED
        return _IGNORED if score < thresholds.gossip else _GOOD

    def _greedy(self, state: _Link, now: float, amount: float = 1.0) -> None:
        """``state``'s peer broke a budget (or a promise): score it, and act on it."""
        if state.hello is not None:
            self._credit(state, now)
            self._judge(state, self._scores.greedy(state.hello.public_key, now=now,
                                                   amount=amount))

    def _judge(self, state: _Link, score: float) -> None:
        state.standing = self._standing(score)
        if score < self._scores.thresholds.disconnect and not state.closing:
            assert state.hello is not None
            self._scores.invalid(state.hello.public_key, now=self._now)  # and it stays out
            self._count_reject(RejectReason.LOW_SCORE)
            self._events.append(FrameRejected(state.peer_label, state.address,
                                              str(RejectReason.LOW_SCORE),
                                              f"score {score:.1f}", True))
            self._request_close(state, str(RejectReason.LOW_SCORE))

    def _credit(self, state: _Link, now: float) -> None:
        """Add the messages ``state``'s peer brought first since the last call to its
        score (counted on the link, so the per-message path touches no score)."""
        if state.first_copies and state.hello is not None:
            self._scores.useful(state.hello.public_key, now=now, count=state.first_copies)
            state.first_copies = 0

    def _rejudge(self, now: float) -> None:
        """Scores decay: lift (or lower) every peer's standing to what it is now."""
        scores = self._scores
        for key, state in list(self._peers.items()):
            self._credit(state, now)
            self._judge(state, scores.score(key, now=now))
        scores.forget_idle(set(self._peers), now=now)

    def _request_close(self, state: _Link, reason: str) -> None:
        if state.id in self._backlog:
            if reason not in _VERDICTS:
                # What a peer that leaves, or that another link replaces, sent before is
                # handled, as it would have been without read-ahead.
                self._flush_waiting(state.id, self._now)
            else:
                # A peer closed for its behaviour loses what waits, counted.
                dropped = self._backlog.pop(state.id)
                self._waiting -= dropped.size
                self._count_reject("closed_link_backlog", len(dropped))
        if not state.closing:
            state.closing = True
            if state.owner is not None:
                self._route(state.owner, Routed(RoutedKind.CLOSE, state.id, 0, reason.encode()))
            else:
                self._to_close.append((state.id, reason))
