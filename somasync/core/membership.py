"""SWIM membership with Lifeguard: who is in the mesh, and who has failed. Sans-IO.

Theory of operation
-------------------
Every ``probe_interval`` (scaled by local health) a node probes the next member of a
shuffled round-robin list with a PING datagram. Without an ACK within ``probe_timeout``
it asks ``indirect_checks`` other members to probe for it (PING_REQ); they answer with
the target's ACK, or a NACK when they could not reach it either. A probe that ends with
no ACK makes the prober *suspect* the target. A suspicion turns into *failed* after a
timeout that starts long (``suspicion_max_mult`` x the minimum) and shrinks towards the
minimum as other members independently confirm it (Lifeguard's dynamic suspicion). The
suspect itself, on hearing of it, *refutes* by announcing itself alive with a higher
incarnation, which beats every older claim.

Lifeguard's local health: a node that misses NACKs (so it is likely the slow one) or had
to refute raises a score that stretches its own probe interval, probe timeout and
suspicion timeouts; a node whose own timer fired far too late (CPU starvation, SIGSTOP)
does not blame the members it could not hear from meanwhile.

Claims (ALIVE, SUSPECT, DEAD, LEAVE) are signed by their author. ALIVE and LEAVE can only
be signed by their subject, so nobody can announce, refute or leave for another node.
New claims are piggybacked on probes and acks and sent in dedicated gossip rounds, each
at most ``retransmit_mult x ceil(log10(N + 1))`` times. Every ``push_pull_interval`` a
node exchanges its full state with one random member; every ``reconnect_interval`` it
sends its state to one failed member (or a seed), which is how the halves of a healed
partition find each other again.

Like the endpoint, this object never blocks, sleeps or touches a socket: the driver
passes datagrams in (``receive_datagram``), sends what ``datagrams_to_send`` returns,
and calls ``handle_timer`` at ``get_timer``. Time is the driver's monotonic ``now``.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import math
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from somasync.config import MembershipConfig
from somasync.core import crypto
from somasync.core.budget import AMPLIFICATION_LIMIT, KeyedBuckets
from somasync.core.crypto import Identity
from somasync.core.events import (
    MembershipEvent,
    PartitionDetected,
    PartitionHealed,
    PeerFailed,
    PeerJoined,
    PeerLeft,
    PeerRecovered,
    PeerSuspected,
    RejectReason,
)
from somasync.core.membership_wire import (
    CLAIM_DOMAIN,
    Claim,
    ClaimType,
    DatagramKind,
    decode_datagram,
    encode_claim_body,
    encode_datagram,
    fixed_size,
)
from somasync.core.trust import Trust
from somasync.errors import DecodeError

__all__ = ["Member", "Membership", "MembershipStatistics", "PeerState"]

VERIFIED_CACHE = 16_384  # claims whose signature was already checked (each ~8 x relayed)
REFUSED_CACHE = 4_096  # claims whose signature failed: never checked twice
MAX_INCARNATION = 2**62  # far below u64: a refutation (+1) can never overflow the wire
MAX_INCARNATION_JUMP = 1 << 16  # past what we know of a member: an absurd claim, refused
INTRODUCTION_SHARE = 4  # one host may introduce at most max_members / 4 of the members known
SUSPICION_BURST = 3.0  # suspicions one author may raise back to back (then one a probe interval)
HINT_HOLDOFF = 1.0  # probe intervals between two out-of-turn probes of one member
PIGGYBACK_CANDIDATES = 64  # least-sent queued claims one datagram chooses from (it holds
# about ten; the rest are only skipped when too long for the room left)
FORGET_SWEEP_INTERVAL = 1.0  # seconds between sweeps for failed/left members to forget


class PeerState(enum.StrEnum):
    """A member's health as this node sees it."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    """Missed a probe; it may still refute."""
    FAILED = "failed"
    """Declared dead after an unrefuted suspicion (retried for ``reconnect_timeout``)."""
    LEFT = "left"
    """Announced a graceful leave."""


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the mesh, as seen by this node."""

    node_id: str
    address: str
    """``host:port`` the member listens on (TCP for messages, UDP for membership)."""
    public_key: bytes
    state: PeerState
    incarnation: int
    """The member's own counter; a higher one beats every claim about a lower one."""
    last_seen: float
    """When this node last heard from the member directly (the core's monotonic clock;
    ``SynapseNode.members()`` reports wall-clock seconds since the epoch)."""
    rtt: float | None = None
    """Seconds between this node's last answered direct probe of the member and its
    ACK (None: none answered yet, or this node itself)."""


@dataclass(frozen=True, slots=True)
class MembershipStatistics:
    """Counters of one node's membership protocol."""

    members: int
    """Known members, this node included, in any state."""
    alive: int
    suspect: int
    failed: int
    left: int
    local_health: int
    """Lifeguard score: 0 is healthy; n scales this node's timeouts by n + 1."""
    incarnation: int
    probes: int
    probes_failed: int
    indirect_probes: int
    """PING_REQs sent after a missed direct ack."""
    suspicions: int
    """Suspicions this node raised itself."""
    refutations: int
    stalls: int
    """Times this node's own timer fired far too late (it was starved or stopped)."""
    datagrams_in: int
    datagrams_out: int
    bytes_in: int
    bytes_out: int
    claims_applied: int
    """Claims that changed this node's view."""
    stale_claims: int
    """Claims about an incarnation older than the one known (ignored)."""
    rejected: dict[str, int]
    """Refused datagrams and claims, by reason (``bad_signature``, ``self_accusation``...)."""


@dataclass(slots=True, eq=False)
class _Member:
    key: bytes
    node_id: str
    address: str
    incarnation: int
    state: PeerState
    state_since: float
    last_seen: float
    alive_claim: bytes
    """The member's own signed ALIVE claim for its current incarnation (relayed)."""
    rtt: float | None = None
    state_claim: bytes | None = None
    """The SUSPECT/DEAD/LEAVE claim that put it in its current state."""
    introduced_by: str = ""
    """The host (IP) whose datagram first told this node of it: its share of
    ``max_members`` is budgeted (:data:`INTRODUCTION_SHARE`)."""


@dataclass(slots=True, eq=False)
class _Suspicion:
    started: float
    confirmations: set[bytes]
    accuser: str


@dataclass(slots=True, eq=False)
class _Probe:
    target: bytes
    address: str
    direct_deadline: float
    end_deadline: float
    relay_to: tuple[str, int] | None = None
    """PING_REQ: (requester's address, requester's nonce) to answer."""
    helpers: int = 0
    nacks: int = 0
    helper_keys: frozenset[bytes] = frozenset()
    """The members asked to probe for us: an indirect ACK or a NACK counts only from
    them, a direct ACK only from the target."""
    sent_at: float = 0.0


_QueueKey = tuple[bytes, int, bytes]  # (subject, claim type, author)


class _ClaimQueue:
    """Claims waiting to be piggybacked, least transmitted first (memberlist's
    TransmitLimitedQueue). One bucket per transmit count and an index by subject, so
    taking the next claims and replacing a member's claims cost what they touch, not
    the queue's length (a mesh of thousands queues thousands of claims as it forms)."""

    __slots__ = ("_buckets", "_by_subject", "_transmits")

    def __init__(self) -> None:
        self._buckets: list[dict[_QueueKey, bytes]] = []
        self._transmits: dict[_QueueKey, int] = {}
        self._by_subject: dict[bytes, set[_QueueKey]] = {}

    def __bool__(self) -> bool:
        return bool(self._transmits)

    def __len__(self) -> int:
        return len(self._transmits)

    def put(self, key: _QueueKey, claim: bytes) -> None:
        """Queue ``claim`` (replacing the claim under ``key``) as never transmitted."""
        self.remove(key)
        if not self._buckets:
            self._buckets.append({})
        self._buckets[0][key] = claim
        self._transmits[key] = 0
        self._by_subject.setdefault(key[0], set()).add(key)

    def remove(self, key: _QueueKey) -> None:
        transmits = self._transmits.pop(key, None)
        if transmits is None:
            return
        del self._buckets[transmits][key]
        keys = self._by_subject[key[0]]
        keys.discard(key)
        if not keys:
            del self._by_subject[key[0]]

    def remove_subject(self, subject: bytes) -> None:
        """Drop every claim about ``subject``."""
        for key in list(self._by_subject.get(subject, ())):
            self.remove(key)

    def least_transmitted(self, count: int) -> list[tuple[_QueueKey, bytes]]:
        """The first ``count`` claims, least transmitted first (then oldest first)."""
        items = itertools.chain.from_iterable(bucket.items() for bucket in self._buckets)
        return list(itertools.islice(items, count))

    def transmitted(self, key: _QueueKey, limit: int) -> None:
        """``key``'s claim went out once more; drop it once sent ``limit`` times."""
        transmits = self._transmits[key] + 1
        if transmits >= limit:
            self.remove(key)
            return
        claim = self._buckets[transmits - 1].pop(key)
        if transmits == len(self._buckets):
            self._buckets.append({})
        self._buckets[transmits][key] = claim
        self._transmits[key] = transmits


@dataclass(slots=True)
class _Counters:
    probes: int = 0
    probes_failed: int = 0
    indirect: int = 0
    suspicions: int = 0
    refutations: int = 0
    stalls: int = 0
    datagrams_in: int = 0
    datagrams_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    applied: int = 0
    stale: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class Membership:
    """The membership protocol state of one node.

    Args:
        config: timings and limits.
        identity: this node's key pair; its claims are signed with it.
        node_id: this node's human-readable name.
        address: ``host:port`` others reach this node at (TCP and UDP).
        rng: the only source of randomness.
        now: the driver's monotonic clock at creation (seconds).
        trusted_keys: when set, claims whose subject or author is not in it are refused.
        verify: the signature check, :func:`somasync.core.crypto.verify` unless a caller
            that knows better (the simulator's shared cache) swaps in a cheaper one, as
            the :class:`~somasync.core.endpoint.Endpoint` takes it.
    """

    def __init__(self, config: MembershipConfig, identity: Identity, node_id: str,
                 address: str, *, rng: random.Random, now: float,
                 trusted_keys: frozenset[bytes] | None = None,
                 verify: crypto.Verifier = crypto.verify, datagram_overhead: int = 0,
                 trust: Trust | None = None, credential: bytes = b"",
                 wall_offset: float = 0.0) -> None:
        self.config = config
        self._overhead = datagram_overhead
        self._trust = trust
        self._credential = credential
        self._wall_offset = wall_offset
        self._signature_ok = verify
        self.identity = identity
        self.node_id = node_id
        self._key = identity.public_key
        self._rng = rng
        self._trusted = trusted_keys
        self._members: dict[bytes, _Member] = {}
        self._addresses: dict[str, bytes] = {}  # a member's signed address -> its key
        self._incarnation = 0
        self._left = False
        self._self = self._new_self(address, now)
        self._suspicions: dict[bytes, _Suspicion] = {}
        self._probes: dict[int, _Probe] = {}
        self._probing: dict[bytes, int] = {}  # target -> nonce of our own probe of it
        self._hinted: dict[bytes, float] = {}
        self._round_robin: list[bytes] = []
        self._queue = _ClaimQueue()
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._refused: OrderedDict[bytes, None] = OrderedDict()
        self._last_refutation_raise = float("-inf")
        self._outgoing: list[tuple[str, bytes]] = []
        self._events: list[MembershipEvent] = []
        self._seeds: list[str] = []
        self._health = 0
        self._live_members = 0  # members alive or suspect: kept as states change, since
        # the formulas need it per datagram and counting costs O(members) each time
        self._next_forget = now
        self._now = now
        self._counters = _Counters()
        # Full state answers per sender: three back to back (a join and its retries),
        # then four per push/pull interval; a member asking faster is refused.
        self._push_budget = KeyedBuckets(4.0 / config.push_pull_interval, 3.0)
        # An honest member suspects at most the one member it probes each interval: a
        # member that accuses many at once is refused past that (each accusation makes
        # the accused refute, and counts against its Lifeguard health).
        self._suspicion_budget = KeyedBuckets(1.0 / config.probe_interval, SUSPICION_BURST)
        self._introductions: dict[str, int] = {}  # host -> members it introduced, known now
        self._recent_failures: deque[tuple[float, bytes]] = deque()  # (when, key)
        # The members a reported partition took: key -> still missing (empty: none).
        self._partition_lost: dict[bytes, bool] = {}
        self._next_probe = now + rng.random() * config.probe_interval
        self._next_gossip = now + config.gossip_interval
        self._next_push_pull = now + config.push_pull_interval * (0.5 + rng.random())
        self._next_reconnect = now + config.reconnect_interval
        self._next_join: float | None = None
        self._join_delay = config.probe_interval

    # --- lifecycle -----------------------------------------------------------------

    @property
    def address(self) -> str:
        return self._self.address

    @property
    def incarnation(self) -> int:
        return self._incarnation

    @property
    def local_health(self) -> int:
        return self._health

    @property
    def seeds(self) -> list[str]:
        """Seed addresses joined through, retried until each is an alive member (given,
        resolved from a DNS seed, or found by mDNS)."""
        return list(self._seeds)

    def join(self, seeds: list[str] | tuple[str, ...], *, now: float) -> None:
        """Send this node's state to each seed address, and again (backing off from
        ``probe_interval`` to ``reconnect_interval``) to every seed that is not an alive
        member, also after the node joined through another: any one reachable seed is
        enough to learn the whole mesh, and a seed that comes up late is merged in."""
        self._seeds = [s for s in dict.fromkeys(seeds) if s != self._self.address]
        self._join_delay = self.config.probe_interval
        if self._seeds:
            for seed in self._seeds:
                self._send_state(seed, DatagramKind.PUSH, reply_wanted=True)
            self._next_join = now + self._join_delay

    def add_seeds(self, seeds: list[str], *, now: float) -> None:
        """More seed addresses (a DNS seed resolved to new ones): asked at once, then
        retried like the first ones until each is an alive member."""
        self._now = now
        for seed in seeds:
            if seed in self._seeds or seed == self._self.address:
                continue
            self._seeds.append(seed)
            self._send_state(seed, DatagramKind.PUSH, reply_wanted=True)
            if self._next_join is None:
                self._join_delay = self.config.probe_interval
                self._next_join = now + self._join_delay

    def drop_seeds(self, seeds: list[str]) -> None:
        """Seed addresses no longer wanted (a DNS seed stopped resolving to them)."""
        gone = set(seeds)
        self._seeds = [seed for seed in self._seeds if seed not in gone]

    def contact(self, address: str, public_key: bytes, *, now: float) -> None:
        """A link to ``public_key`` at ``address`` came up (its handshake proved the key):
        if it is not an alive member here, exchange full state with it. That is how two
        clusters that formed apart merge as soon as any link joins them."""
        self._now = now
        member = self._members.get(public_key)
        if self._left or public_key == self._key or (
                member is not None and member.state in _LIVE):
            return
        self._send_state(address, DatagramKind.PUSH, reply_wanted=True)

    def _unanswered_seeds(self) -> list[str]:
        """Seeds whose address is not an alive (or suspected) member's."""
        pending = []
        for seed in self._seeds:
            key = self._addresses.get(seed)
            member = None if key is None else self._members.get(key)
            if member is None or member.state not in _LIVE:
                pending.append(seed)
        return pending

    def leave(self, *, now: float) -> None:
        """Announce a graceful leave (signed) to the live members; they drop this node at
        once instead of suspecting it. The node stops probing until ``rejoin``."""
        if self._left:
            return
        self._left = True
        claim = self._sign(encode_claim_body(ClaimType.LEAVE, self._key, self._incarnation))
        live = [m for m in self._members.values() if m.state in _LIVE]
        for member in self._rng.sample(live, min(len(live), 3 * self.config.gossip_nodes + 5)):
            self._send(member.address, encode_datagram(DatagramKind.GOSSIP, self._key, 0,
                                                       [claim]))
        self._probes.clear()
        self._probing.clear()

    def rejoin(self, address: str, *, now: float) -> None:
        """Come back after ``leave`` (or with a new address): a higher incarnation beats
        the leave everywhere; then join through the seeds and known members."""
        self._left = False
        self._incarnation += 1
        self._self = self._new_self(address, now)
        self._enqueue(self._self.alive_claim, self._key, ClaimType.ALIVE, self._key)
        known = [m.address for m in self._members.values()]
        self.join([*self._seeds, *self._rng.sample(known, min(len(known), 5))], now=now)

    # --- inputs --------------------------------------------------------------------

    def key_at(self, address: str) -> bytes | None:
        """The key of the member whose signed ALIVE claim names ``address``."""
        return self._addresses.get(address)

    def receive_datagram(self, source: str, data: bytes, *, now: float,
                         sealed_by: bytes | None = None) -> None:
        """Handle one datagram that arrived from ``source`` (``host:port``).

        ``sealed_by`` is the key the datagram's seal proved (see
        :mod:`somasync.core.datagrams`); the key the datagram names must be the same.
        Without a seal (``None``) that key is only a hint, and ACKs, NACKs and PING_REQs
        are judged by it all the same."""
        self._now = now
        counters = self._counters
        counters.datagrams_in += 1
        counters.bytes_in += len(data)
        if len(data) > self.config.max_datagram:
            self._reject(RejectReason.OVERSIZE)  # before anything is decoded
            return
        try:
            datagram = decode_datagram(data)
        except DecodeError as exc:
            self._reject(exc.reason)
            return
        if datagram.sender == self._key:
            self._reject("from_self")
            return
        if sealed_by is not None and datagram.sender != sealed_by:
            self._reject("sender_mismatch")
            return
        sender = self._members.get(datagram.sender)
        if sender is not None and sender.address == source:
            sender.last_seen = now
            if sender.state == PeerState.FAILED and sender.state_claim is not None \
                    and not self._left:
                # A member we declared dead is talking (it was stopped, or cut off): show
                # it the verdict so it refutes now, not when gossip happens to reach it.
                self._send(source, encode_datagram(DatagramKind.GOSSIP, self._key, 0,
                                                   [sender.state_claim]))
        # Claims first: an ACK or PULL carrying a refutation must count before the probe
        # result is judged, and a joiner's ALIVE must be known before we answer its PUSH.
        kind = datagram.kind
        full_state = kind in (DatagramKind.PUSH, DatagramKind.PULL)
        for claim in datagram.claims:
            self._on_claim(claim, now, full_state=full_state, source=source)
        if self._left and kind != DatagramKind.PUSH:
            return
        if kind == DatagramKind.PING:
            self._on_ping(source, datagram.sender, datagram.nonce, datagram.target)
        elif kind == DatagramKind.ACK:
            self._on_ack(datagram.nonce, datagram.sender, now)
        elif kind == DatagramKind.NACK:
            probe = self._probes.get(datagram.nonce)
            if probe is not None and datagram.sender in probe.helper_keys:
                probe.nacks += 1
        elif kind == DatagramKind.PING_REQ:
            self._on_ping_request(source, datagram.sender, datagram.nonce, datagram.target,
                                  datagram.target_address, now)
        elif kind == DatagramKind.PUSH and datagram.reply_wanted and not self._left:
            # Answer only to the address the sender signed for itself, never to the
            # datagram's (spoofable) source: full state must not be reflected at a victim.
            # A failed member is answered too: that is how a healed partition merges.
            member = self._members.get(datagram.sender)
            if member is not None and member.state != PeerState.LEFT:
                if self._push_budget.take(datagram.sender, now=now):
                    # Paid for by the request (a PUSH asking for a reply is padded):
                    # a larger state goes out in part, the rest at later push/pulls.
                    self._send_state(member.address, DatagramKind.PULL, limit=
                                     AMPLIFICATION_LIMIT * (len(data) + self._overhead))
                else:
                    self._reject("push_limited")

    def expel(self, public_key: bytes, *, now: float) -> None:
        """The trust policy revoked this member: it is gone for good here (``PeerLeft``),
        and its claims are refused from now on."""
        self._now = now
        member = self._members.get(public_key)
        if member is None or member.state == PeerState.LEFT:
            return
        self._live_members -= member.state in _LIVE
        member.state, member.state_claim, member.state_since = PeerState.LEFT, None, now
        self._suspicions.pop(public_key, None)
        self._cancel_probe_of(public_key)
        self._queue.remove_subject(public_key)
        self._events.append(PeerLeft(member.node_id, member.address, member.key,
                                     member.incarnation))

    def report_unreachable(self, public_key: bytes, *, now: float) -> None:
        """A hint from the transport: the connection to this member broke. Probe it now
        (out of turn) rather than at its round-robin slot; suspicion still needs the
        probe and the indirect probes to fail."""
        self._now = now
        member = self._members.get(public_key)
        if member is None or member.state not in _LIVE or self._left:
            return
        if public_key in self._probing:
            return
        last = self._hinted.get(public_key)
        if last is not None and now - last < HINT_HOLDOFF * self.config.probe_interval:
            return
        self._hinted[public_key] = now
        self._start_probe(member, now)

    def handle_timer(self, *, now: float) -> None:
        """Run whatever is due: probe phases, the next probe, gossip, push-pull,
        reconnect attempts, join retries, suspicion timeouts and forgetting."""
        config = self.config
        self._now = now
        if now >= self._next_probe:
            late = now - self._next_probe
            scale = self._scale()
            if late > 2 * config.probe_interval * scale:
                self._on_stall(late, now)
            self._next_probe = now + config.probe_interval * self._scale()
            if not self._left:
                target = self._next_probe_target()
                if target is not None:
                    self._start_probe(target, now)
        self._check_probes(now)
        self._check_suspicions(now)
        if now >= self._next_gossip:
            self._next_gossip = now + config.gossip_interval
            self._gossip_round()
        if now >= self._next_push_pull:
            self._next_push_pull = now + config.push_pull_interval * self._push_pull_scale()
            live = self._live_others()
            if live and not self._left:
                target = live[self._rng.randrange(len(live))]
                self._send_state(target.address, DatagramKind.PUSH, reply_wanted=True)
        if now >= self._next_reconnect:
            self._next_reconnect = now + config.reconnect_interval
            self._reconnect_round(now)
        if self._next_join is not None and now >= self._next_join:
            pending = self._unanswered_seeds()
            if not pending or self._left:
                self._next_join = None
            else:
                # Every seed not (or no longer) an alive member is asked again, also once
                # this node joined through another: a seed that came up late, alone, would
                # otherwise start a cluster of its own (memberlist's retry_join; Serf
                # re-contacts its seeds the same way).
                for seed in pending:
                    self._send_state(seed, DatagramKind.PUSH, reply_wanted=True)
                self._join_delay = min(self._join_delay * 2, config.reconnect_interval)
                self._next_join = now + self._join_delay
        self._forget(now)

    def get_timer(self) -> float:
        """The next time ``handle_timer`` must be called."""
        deadline = min(self._next_probe, self._next_push_pull, self._next_reconnect)
        if self._queue:
            deadline = min(deadline, self._next_gossip)
        if self._next_join is not None:
            deadline = min(deadline, self._next_join)
        for probe in self._probes.values():
            indirect_due = probe.helpers == 0 and probe.relay_to is None
            deadline = min(deadline, probe.direct_deadline if indirect_due
                           else probe.end_deadline)
        for key, suspicion in self._suspicions.items():
            deadline = min(deadline, self._suspicion_deadline(key, suspicion))
        return deadline

    # --- outputs -------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[str, bytes]]:
        """(address, datagram) pairs the driver must send, in order."""
        out, self._outgoing = self._outgoing, []
        return out

    def take_events(self) -> list[MembershipEvent]:
        events, self._events = self._events, []
        return events

    def members(self) -> list[Member]:
        """Every known member, this node first, in any state."""
        return [self._public(self._self), *(self._public(m) for m in self._members.values())]

    def member(self, public_key: bytes) -> Member | None:
        if public_key == self._key:
            return self._public(self._self)
        found = self._members.get(public_key)
        return None if found is None else self._public(found)

    def live_members(self) -> list[Member]:
        """Other members that are alive or suspected (still worth a broadcast link)."""
        return [self._public(m) for m in self._live_others()]

    def statistics(self) -> MembershipStatistics:
        c = self._counters
        states = [m.state for m in self._members.values()]
        return MembershipStatistics(
            members=len(states) + 1, alive=states.count(PeerState.ALIVE) + (not self._left),
            suspect=states.count(PeerState.SUSPECT), failed=states.count(PeerState.FAILED),
            left=states.count(PeerState.LEFT) + self._left, local_health=self._health,
            incarnation=self._incarnation, probes=c.probes, probes_failed=c.probes_failed,
            indirect_probes=c.indirect, suspicions=c.suspicions, refutations=c.refutations,
            stalls=c.stalls, datagrams_in=c.datagrams_in, datagrams_out=c.datagrams_out,
            bytes_in=c.bytes_in, bytes_out=c.bytes_out, claims_applied=c.applied,
            stale_claims=c.stale, rejected=dict(c.rejected),
        )

    # --- claims ----------------------------------------------------------------------

    def _on_claim(self, claim: Claim, now: float, *, full_state: bool = False,
                  source: str = "") -> None:
        subject = claim.subject
        if claim.incarnation >= MAX_INCARNATION:
            self._reject("absurd_incarnation")
            return
        if subject == self._key:
            self._on_claim_about_self(claim)
            return
        member = self._members.get(subject)
        if member is not None and claim.incarnation > member.incarnation + MAX_INCARNATION_JUMP:
            self._reject("absurd_incarnation")
            return
        kind = claim.type
        trust = self._trust
        if trust is not None and (trust.is_revoked(subject) or trust.is_revoked(claim.author)):
            self._reject("revoked")
            return
        if kind == ClaimType.ALIVE:
            if member is not None and claim.incarnation <= member.incarnation:
                if claim.incarnation < member.incarnation:
                    self._counters.stale += 1
                return
            host = source.rpartition(":")[0] or source
            if member is None:
                limit = max(4, self.config.max_members // INTRODUCTION_SHARE)
                if self._introductions.get(host, 0) >= limit:
                    # One host (with as many keys and ports as it likes) may fill only a
                    # share of the table: made-up members cannot lock real ones out.
                    self._reject("introductions_limited")
                    return
                if len(self._members) + 1 >= self.config.max_members \
                        and len(self._members) == self._live_members:
                    self._reject(RejectReason.MEMBERS_FULL)  # nobody gone to make room
                    return
            if not self._verify(claim):
                return
            if trust is not None:
                # The policy's word on the name: bound to another key, not on the
                # allowlist, or without a valid certificate, it is no member.
                refused = trust.admit(subject, claim.node_id, claim.credential,
                                      wall=now + self._wall_offset)
                if refused is not None:
                    self._reject(refused)
                    return
            if member is None and len(self._members) + 1 >= self.config.max_members:
                # Only for a claim that proved itself: a forged one must not cost a
                # failed member its entry (it heals partitions, refuses old ALIVEs).
                self._make_room()
            self._apply_alive(member, claim, now, introduced_by=host)
            return
        if member is None:
            return  # a claim about a member we do not know yet: its ALIVE will come
        if claim.incarnation < member.incarnation:
            self._counters.stale += 1
            return
        if kind == ClaimType.SUSPECT:
            if member.state in (PeerState.FAILED, PeerState.LEFT):
                return
            suspicion = self._suspicions.get(subject)
            if (member.state == PeerState.SUSPECT and claim.incarnation == member.incarnation
                    and suspicion is not None and claim.author in suspicion.confirmations):
                return
            if not self._verify(claim):
                return
            if claim.author != self._key and not self._suspicion_budget.take(claim.author,
                                                                             now=now):
                self._reject("suspicion_limited")
                return
            self._apply_suspect(member, claim, now)
        elif kind == ClaimType.DEAD:
            if member.state in (PeerState.FAILED, PeerState.LEFT):
                return
            if not self._verify(claim):
                return
            if full_state or member.state == PeerState.ALIVE:
                # Another side's old verdict (typically across a healed partition), or a
                # death nobody suspected here first (one member's word, maybe forged):
                # check for ourselves instead of believing it, and tell the accused so it
                # can refute at once (memberlist likewise demotes a merged death to
                # suspicion). A real failure was gossiped as a suspicion before its death.
                self._send(member.address, encode_datagram(DatagramKind.GOSSIP, self._key, 0,
                                                           [claim.raw]))
                self.report_unreachable(member.key, now=now)
                return
            self._set_state(member, PeerState.FAILED, claim, now)
        elif kind == ClaimType.LEAVE:
            if member.state == PeerState.LEFT:
                return
            if not self._verify(claim):
                return
            self._set_state(member, PeerState.LEFT, claim, now)

    def _on_claim_about_self(self, claim: Claim) -> None:
        if claim.incarnation < self._incarnation or self._left:
            return
        if claim.incarnation > self._incarnation + MAX_INCARNATION_JUMP:
            self._reject("absurd_incarnation")
            return
        if claim.type == ClaimType.ALIVE and claim.raw == self._self.alive_claim:
            return
        if not self._verify(claim, about_self=True):
            return
        # Someone accuses us, or relays a claim from an earlier life of this key (a
        # restart with the same identity): announce ourselves past it.
        self._incarnation = claim.incarnation + 1
        self._self = self._new_self(self._self.address, self._now)
        self._enqueue(self._self.alive_claim, self._key, ClaimType.ALIVE, self._key)
        self._counters.refutations += 1
        # Lifeguard counts a refutation against our health; at most one per probe
        # interval, so forged suspicions in a burst cannot stretch every timeout.
        if self._now - self._last_refutation_raise >= self.config.probe_interval:
            self._last_refutation_raise = self._now
            self._adjust_health(+1)

    def _verify(self, claim: Claim, *, about_self: bool = False) -> bool:
        """Check a claim's author and signature once; later copies hit the cache.

        Accusations must come from a known member, except those against this node: an
        unknown accuser costs us only a refutation, and ignoring it could cost our life.
        """
        digest = hashlib.blake2b(claim.raw, digest_size=16).digest()
        if digest in self._verified:
            self._verified.move_to_end(digest)
            return True
        if digest in self._refused:
            self._reject(RejectReason.BAD_SIGNATURE)
            return False
        if claim.type in (ClaimType.SUSPECT, ClaimType.DEAD):
            if claim.author == claim.subject:
                self._reject(RejectReason.SELF_ACCUSATION)
                return False
            author = self._members.get(claim.author)
            if not about_self and claim.author != self._key and (
                    author is None or author.state == PeerState.LEFT):
                self._reject(RejectReason.UNKNOWN_AUTHOR)
                return False
        trusted = self._trusted
        if trusted is not None and (claim.author not in trusted or claim.subject not in trusted):
            self._reject(RejectReason.UNTRUSTED)
            return False
        if not self._signature_ok(claim.author, claim.signature, CLAIM_DOMAIN, claim.signed):
            self._reject(RejectReason.BAD_SIGNATURE)
            self._refused[digest] = None
            if len(self._refused) > REFUSED_CACHE:
                self._refused.popitem(last=False)
            return False
        self._verified[digest] = None
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return True

    def _apply_alive(self, member: _Member | None, claim: Claim, now: float, *,
                     introduced_by: str = "") -> None:
        self._counters.applied += 1
        self._enqueue(claim.raw, claim.subject, ClaimType.ALIVE, claim.subject)
        if member is None:
            member = _Member(claim.subject, claim.node_id, claim.address, claim.incarnation,
                             PeerState.ALIVE, now, now, claim.raw,
                             introduced_by=introduced_by)
            self._introductions[introduced_by] = \
                self._introductions.get(introduced_by, 0) + 1
            self._members[claim.subject] = member
            self._addresses[member.address] = member.key
            self._live_members += 1
            self._round_robin.insert(self._rng.randint(0, len(self._round_robin)),
                                     claim.subject)
            self._events.append(PeerJoined(member.node_id, member.address, member.key,
                                           member.incarnation))
            return
        previous = member.state
        self._live_members += previous not in _LIVE
        if member.address != claim.address:
            if self._addresses.get(member.address) == member.key:
                del self._addresses[member.address]
            self._addresses[claim.address] = member.key
        member.node_id, member.address = claim.node_id, claim.address
        member.incarnation, member.alive_claim = claim.incarnation, claim.raw
        member.state, member.state_claim, member.state_since = PeerState.ALIVE, None, now
        member.last_seen = now
        self._suspicions.pop(member.key, None)
        if previous == PeerState.LEFT:
            self._events.append(PeerJoined(member.node_id, member.address, member.key,
                                           member.incarnation))
        elif previous != PeerState.ALIVE:
            self._events.append(PeerRecovered(member.node_id, member.address, member.key,
                                              member.incarnation))
            if previous == PeerState.FAILED:
                self._note_return(member)

    def _apply_suspect(self, member: _Member, claim: Claim, now: float) -> None:
        self._counters.applied += 1
        self._enqueue(claim.raw, member.key, ClaimType.SUSPECT, claim.author)
        suspicion = self._suspicions.get(member.key)
        if (member.state == PeerState.SUSPECT and suspicion is not None
                and claim.incarnation == member.incarnation):
            suspicion.confirmations.add(claim.author)
            return
        author = self._members.get(claim.author)
        accuser = self.node_id if author is None else author.node_id
        member.incarnation = claim.incarnation
        self._live_members += member.state not in _LIVE
        member.state, member.state_claim, member.state_since = PeerState.SUSPECT, claim.raw, now
        self._suspicions[member.key] = _Suspicion(now, {claim.author}, accuser)
        self._events.append(PeerSuspected(member.node_id, member.address, member.key,
                                          member.incarnation, accuser))

    def _set_state(self, member: _Member, state: PeerState, claim: Claim, now: float) -> None:
        self._counters.applied += 1
        kind = ClaimType.DEAD if state == PeerState.FAILED else ClaimType.LEAVE
        # The verdict supersedes whatever was still being spread about the member; an
        # ALIVE left in the queue would introduce a dead node to nodes that never knew it.
        self._queue.remove_subject(member.key)
        self._enqueue(claim.raw, member.key, kind, claim.author)
        member.incarnation = claim.incarnation
        self._live_members -= member.state in _LIVE
        member.state, member.state_claim, member.state_since = state, claim.raw, now
        self._suspicions.pop(member.key, None)
        self._cancel_probe_of(member.key)
        if self._trust is not None:
            self._trust.release(member.key)
        event = PeerFailed if state == PeerState.FAILED else PeerLeft
        self._events.append(event(member.node_id, member.address, member.key,
                                  member.incarnation))
        if state == PeerState.FAILED:
            self._note_failure(member, now)

    def _note_failure(self, member: _Member, now: float) -> None:
        """Many failures within about two probe rounds: a partition, reported once."""
        window = 2 * self.config.probe_interval * (len(self._members) + 1)
        recent = self._recent_failures
        recent.append((now, member.key))
        while recent and now - recent[0][0] > window:
            recent.popleft()
        if self._partition_lost:
            self._partition_lost[member.key] = True  # lost along with the others
            return
        lost = list(dict.fromkeys(key for _, key in recent))
        before = self._live_members + 1 + len(lost)
        if len(lost) >= 2 and len(lost) >= self.config.partition_fraction * before:
            self._partition_lost = dict.fromkeys(lost, True)
            names = tuple(self._members[key].node_id for key in lost if key in self._members)
            self._events.append(PartitionDetected(names, before))

    def _note_return(self, member: _Member) -> None:
        """A failed member is alive again: if half the partition's lost are, it healed."""
        lost = self._partition_lost
        if member.key not in lost:
            return
        lost[member.key] = False
        back = [key for key, missing in lost.items() if not missing]
        if 2 * len(back) >= len(lost):
            names = tuple(self._members[key].node_id for key in back if key in self._members)
            self._partition_lost = {}
            self._recent_failures.clear()
            self._events.append(PartitionHealed(names))

    def _accuse(self, member: _Member, kind: ClaimType, now: float) -> None:
        """Raise (or confirm) our own suspicion, or declare a member dead."""
        raw = self._sign(encode_claim_body(kind, member.key, member.incarnation,
                                           author=self._key))
        claim = Claim(kind, member.key, member.incarnation, self._key, "", "", b"", b"", b"",
                      raw)
        if kind == ClaimType.SUSPECT:
            self._counters.suspicions += 1
            self._apply_suspect(member, claim, now)
        else:
            self._set_state(member, PeerState.FAILED, claim, now)

    # --- probing ---------------------------------------------------------------------

    def _next_probe_target(self) -> _Member | None:
        for _ in range(2):
            while self._round_robin:
                key = self._round_robin.pop()
                member = self._members.get(key)
                if member is not None and member.state in _LIVE:
                    return member
            live = [m.key for m in self._live_others()]
            self._rng.shuffle(live)
            self._round_robin = live
        return None

    def _start_probe(self, member: _Member, now: float) -> None:
        if member.key in self._probing:
            return
        nonce = self._new_nonce()
        scale = self._scale()
        config = self.config
        round_length = max(config.probe_interval, 2 * config.probe_timeout)
        self._probes[nonce] = _Probe(member.key, member.address,
                                     now + config.probe_timeout * scale,
                                     now + round_length * scale, sent_at=now)
        self._probing[member.key] = nonce
        self._counters.probes += 1
        # Lifeguard's buddy system: a suspect learns of its suspicion from the ping itself.
        first = [member.state_claim] if member.state == PeerState.SUSPECT \
            and member.state_claim else []
        self._send_with_gossip(member.address, DatagramKind.PING, nonce, target=member.key,
                               first=first)

    def _on_ping(self, source: str, sender: bytes, nonce: int, target: bytes) -> None:
        if target != self._key:
            self._reject("misdirected_ping")
            return
        # Piggyback only to members at their signed address: a spoofed ping must not
        # turn into a large datagram sent to a victim.
        member = self._members.get(sender)
        if member is not None and member.address == source:
            self._send_with_gossip(source, DatagramKind.ACK, nonce)
        else:
            self._send(source, encode_datagram(DatagramKind.ACK, self._key, nonce, []))

    def _on_ack(self, nonce: int, sender: bytes, now: float) -> None:
        probe = self._probes.get(nonce)
        if probe is None:
            return
        if sender != probe.target and sender not in probe.helper_keys:
            # An on-path host that saw the nonce must not keep a dead member alive.
            self._reject("ack_from_stranger")
            return
        del self._probes[nonce]
        if self._probing.get(probe.target) == nonce:
            del self._probing[probe.target]
        member = self._members.get(probe.target)
        if member is not None:
            member.last_seen = now
            if sender == probe.target and probe.relay_to is None:
                member.rtt = now - probe.sent_at
        if probe.relay_to is not None:
            address, their_nonce = probe.relay_to
            self._send(address, encode_datagram(DatagramKind.ACK, self._key, their_nonce, []))
        else:
            self._adjust_health(-1)

    def _on_ping_request(self, source: str, sender: bytes, nonce: int, target: bytes,
                         target_address: str, now: float) -> None:
        requester = self._members.get(sender)
        if requester is None or requester.state not in _LIVE:
            self._reject("unknown_requester")
            return
        if target == self._key:
            self._send(source, encode_datagram(DatagramKind.ACK, self._key, nonce, []))
            return
        our_nonce = self._new_nonce()
        # Nack a little before the requester's probe round ends, so the nack counts.
        deadline = now + 0.8 * self.config.probe_timeout * self._scale()
        self._probes[our_nonce] = _Probe(target, target_address, deadline, deadline,
                                         relay_to=(requester.address, nonce))
        self._send(target_address, encode_datagram(DatagramKind.PING, self._key, our_nonce,
                                                   [], target=target))

    def _check_probes(self, now: float) -> None:
        config = self.config
        for nonce, probe in list(self._probes.items()):
            if probe.relay_to is not None:
                if now >= probe.end_deadline:
                    del self._probes[nonce]
                    address, their_nonce = probe.relay_to
                    self._send(address, encode_datagram(DatagramKind.NACK, self._key,
                                                        their_nonce, []))
                continue
            member = self._members.get(probe.target)
            if member is None or member.state not in _LIVE:
                self._cancel_probe_of(probe.target)
                continue
            if probe.helpers == 0 and now >= probe.direct_deadline and now < probe.end_deadline:
                helpers = [m for m in self._live_others()
                           if m.key != probe.target and m.state == PeerState.ALIVE]
                chosen = self._rng.sample(helpers, min(len(helpers), config.indirect_checks))
                probe.helpers = len(chosen) or -1
                probe.helper_keys = frozenset(m.key for m in chosen)
                for helper in chosen:
                    self._counters.indirect += 1
                    self._send_with_gossip(helper.address, DatagramKind.PING_REQ, nonce,
                                           target=probe.target, target_address=probe.address)
            if now >= probe.end_deadline:
                self._cancel_probe_of(probe.target)
                self._counters.probes_failed += 1
                # Lifeguard: each helper that did not even send a nack suggests the
                # problem is on our side; with no helpers we can only blame ourselves once.
                self._adjust_health(probe.helpers - probe.nacks if probe.helpers > 0 else 1)
                self._accuse(member, ClaimType.SUSPECT, now)

    def _cancel_probe_of(self, key: bytes) -> None:
        nonce = self._probing.pop(key, None)
        if nonce is not None:
            self._probes.pop(nonce, None)

    # --- suspicion -------------------------------------------------------------------

    def _suspicion_deadline(self, key: bytes, suspicion: _Suspicion) -> float:
        config = self.config
        live = self._live_count()
        minimum = config.suspicion_mult * max(1.0, math.log10(live)) * config.probe_interval
        maximum = config.suspicion_max_mult * minimum
        expected = config.suspicion_confirmations if live - 2 >= \
            config.suspicion_confirmations else max(0, live - 2)
        confirmations = len(suspicion.confirmations) - 1
        if expected == 0 or confirmations >= expected:
            timeout = minimum
        else:
            fraction = math.log(confirmations + 1) / math.log(expected + 1)
            timeout = max(minimum, maximum - (maximum - minimum) * fraction)
        return suspicion.started + timeout * self._scale()

    def _check_suspicions(self, now: float) -> None:
        for key, suspicion in list(self._suspicions.items()):
            if now >= self._suspicion_deadline(key, suspicion):
                del self._suspicions[key]
                member = self._members.get(key)
                if member is not None and member.state == PeerState.SUSPECT:
                    self._accuse(member, ClaimType.DEAD, now)

    def _on_stall(self, late: float, now: float) -> None:
        """Our own timer fired ``late`` seconds late: we were not running. What we did not
        hear meanwhile is our fault, not the members'; push every deadline back."""
        self._counters.stalls += 1
        self._adjust_health(self.config.awareness_max_multiplier)
        for probe in self._probes.values():
            probe.direct_deadline += late
            probe.end_deadline += late
        for suspicion in self._suspicions.values():
            suspicion.started += late

    def _scale(self) -> int:
        return self._health + 1

    def _adjust_health(self, delta: int) -> None:
        ceiling = self.config.awareness_max_multiplier - 1
        self._health = min(ceiling, max(0, self._health + delta))

    # --- dissemination ---------------------------------------------------------------

    def _enqueue(self, raw: bytes, subject: bytes, kind: ClaimType, author: bytes) -> None:
        if kind == ClaimType.ALIVE:
            self._queue.remove_subject(subject)
        self._queue.put((subject, kind, author), raw)

    def _retransmit_limit(self) -> int:
        live = self._live_count()
        return self.config.retransmit_mult * max(1, math.ceil(math.log10(live + 1)))

    def _piggyback(self, budget: int, first: list[bytes]) -> list[bytes]:
        chosen: list[bytes] = []
        for raw in first:
            if len(raw) <= budget:
                chosen.append(raw)
                budget -= len(raw)
        if not self._queue:
            return chosen
        limit = self._retransmit_limit()
        queue = self._queue
        for key, claim in queue.least_transmitted(PIGGYBACK_CANDIDATES):
            if len(claim) > budget or claim in chosen:
                continue
            chosen.append(claim)
            budget -= len(claim)
            queue.transmitted(key, limit)
            if budget < 80:
                break
        return chosen

    def _send_with_gossip(self, address: str, kind: DatagramKind, nonce: int, *,
                          target: bytes = b"", target_address: str = "",
                          first: list[bytes] | None = None) -> None:
        budget = self.config.max_datagram - self._overhead - fixed_size(kind, target_address)
        claims = self._piggyback(budget, first or [])
        self._send(address, encode_datagram(kind, self._key, nonce, claims, target=target,
                                            target_address=target_address))

    def _gossip_round(self) -> None:
        if not self._queue:
            return
        targets = self._gossip_targets()
        for member in self._rng.sample(targets, min(len(targets), self.config.gossip_nodes)):
            if not self._queue:
                break
            self._send_with_gossip(member.address, DatagramKind.GOSSIP, 0)

    def _gossip_targets(self) -> list[_Member]:
        cutoff = self._now - self.config.gossip_to_the_dead
        return [m for m in self._members.values()
                if m.state in _LIVE or m.state_since >= cutoff]

    def _send_state(self, address: str, kind: DatagramKind, *,
                    reply_wanted: bool = False, limit: int | None = None) -> None:
        """Send every member's claims (ours first), split over as many datagrams as
        ``max_datagram`` needs; only the first asks for a reply, padded to the full size
        so that it pays for the whole answer it may get. With ``limit`` (bytes, sealing
        included) a random part of the members goes, as much as the limit allows."""
        claims = []
        for member in self._members.values():
            # A failed or departed member travels as its verdict alone: a node that knows
            # it checks the verdict, and a node that never saw it alive (a later joiner)
            # ignores it rather than reporting it joined and then failed (memberlist too
            # ignores deaths of unknown nodes).
            if member.state in _LIVE:
                claims.append(member.alive_claim)
            if member.state_claim is not None:
                claims.append(member.state_claim)
        budget = self.config.max_datagram - self._overhead - fixed_size(kind)
        if limit is not None:
            whole = sum(map(len, claims)) + len(self._self.alive_claim)
            if whole + (whole // budget + 1) * (fixed_size(kind) + self._overhead) > limit:
                # Different members each time, so repeated push/pulls cover them all.
                self._rng.shuffle(claims)
        claims.insert(0, self._self.alive_claim)
        chunks: list[list[bytes]] = [[]]
        used = 0
        for raw in claims:
            if used + len(raw) > budget and chunks[-1]:
                chunks.append([])
                used = 0
            chunks[-1].append(raw)
            used += len(raw)
        spent = 0
        for index, chunk in enumerate(chunks):
            first = index == 0
            datagram = encode_datagram(kind, self._key, 0, chunk,
                                       reply_wanted=reply_wanted and first)
            if first and reply_wanted:
                datagram = encode_datagram(kind, self._key, 0, chunk, reply_wanted=True,
                                           padding=budget + fixed_size(kind) - len(datagram))
            if limit is not None:
                while chunk and spent + len(datagram) + self._overhead > limit:
                    chunk.pop()
                    datagram = encode_datagram(kind, self._key, 0, chunk)
                if not chunk:
                    return
                spent += len(datagram) + self._overhead
            self._send(address, datagram)

    def _reconnect_round(self, now: float) -> None:
        """Send our state to one failed member (or a seed when nobody is alive): if it is
        back, it refutes and answers, and the two sides merge."""
        if self._left:
            return
        failed = [m.address for m in self._members.values()
                  if m.state == PeerState.FAILED
                  and now - m.state_since < self.config.reconnect_timeout]
        failed.extend(self._unanswered_seeds())
        if failed:
            address = failed[self._rng.randrange(len(failed))]
            self._send_state(address, DatagramKind.PUSH, reply_wanted=True)

    def _forget(self, now: float) -> None:
        # A sweep visits every member: once a second is soon enough for timeouts of
        # minutes, and keeps timer handling O(1) in the mesh size.
        if now < self._next_forget:
            return
        self._next_forget = now + FORGET_SWEEP_INTERVAL
        config = self.config
        for member in list(self._members.values()):
            age = now - member.state_since
            if (member.state == PeerState.FAILED and age > config.reconnect_timeout) or \
                    (member.state == PeerState.LEFT and age > config.forget_left_after):
                self._remove(member)

    def _remove(self, member: _Member) -> None:
        """Forget a failed or departed member for good."""
        key = member.key
        del self._members[key]
        self._hinted.pop(key, None)
        if self._addresses.get(member.address) == key:
            del self._addresses[member.address]
        self._partition_lost.pop(key, None)
        count = self._introductions.get(member.introduced_by, 0)
        if count > 1:
            self._introductions[member.introduced_by] = count - 1
        else:
            self._introductions.pop(member.introduced_by, None)

    def _make_room(self) -> bool:
        """The table is full: forget the failed or departed member gone longest, which
        the sweep would drop later anyway. False when every member is alive or suspect."""
        gone = [m for m in self._members.values()
                if m.state in (PeerState.FAILED, PeerState.LEFT)]
        if not gone:
            return False
        self._remove(min(gone, key=lambda m: m.state_since))
        return True

    def _push_pull_scale(self) -> float:
        """memberlist's pushPullScale: one more interval per doubling above 32 members."""
        members = len(self._members) + 1
        if members <= 32:
            return 1.0
        return math.ceil(math.log2(members) - math.log2(32)) + 1.0

    # --- helpers -----------------------------------------------------------------------

    def _live_count(self) -> int:
        """Members alive or suspected, this node included: the N of the formulas."""
        return 1 + self._live_members

    def _live_others(self) -> list[_Member]:
        return [m for m in self._members.values() if m.state in _LIVE]

    def _new_self(self, address: str, now: float) -> _Member:
        raw = self._sign(encode_claim_body(ClaimType.ALIVE, self._key, self._incarnation,
                                           node_id=self.node_id, address=address,
                                           credential=self._credential))
        return _Member(self._key, self.node_id, address, self._incarnation, PeerState.ALIVE,
                       now, now, raw)

    def _sign(self, body: bytes) -> bytes:
        return body + self.identity.sign(CLAIM_DOMAIN, body)

    def _new_nonce(self) -> int:
        nonce = self._rng.getrandbits(64)
        while nonce == 0 or nonce in self._probes:
            nonce = self._rng.getrandbits(64)
        return nonce

    def _send(self, address: str, datagram: bytes) -> None:
        self._counters.datagrams_out += 1
        self._counters.bytes_out += len(datagram)
        self._outgoing.append((address, datagram))

    def _reject(self, reason: str) -> None:
        reason = str(reason)
        rejected = self._counters.rejected
        rejected[reason] = rejected.get(reason, 0) + 1

    def _public(self, member: _Member) -> Member:
        if member is self._self:
            state = PeerState.LEFT if self._left else PeerState.ALIVE
            return Member(member.node_id, member.address, member.key, state,
                          self._incarnation, member.last_seen)
        return Member(member.node_id, member.address, member.key, member.state,
                      member.incarnation, member.last_seen, member.rtt)


_LIVE = (PeerState.ALIVE, PeerState.SUSPECT)
