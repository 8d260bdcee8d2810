"""Direct messages: one signed message to one node, exactly once, with an acknowledgement.

A DIRECT frame (:attr:`somasync.core.wire.FrameKind.DIRECT`) travels hop by hop through
the overlay's links, never broadcast::

    u8  type        DATA (1) or ACK (2)
    u8  attempt     the sender's try number (outside every signature: a relay that
                    changes it can only make its own copy look like a new try)
    32s target      public key of the node the frame is for
    32s sender      public key of the node that made the frame
    u8  via count   0 to MAX_VIA keys of an explicit route (``route_message``)
    32s * count     the relays, in order
    DATA: 64-byte signature || envelope   (a signed message; origin == sender, and its
          ``somasync-direct-to`` header names the target, so no relay can re-address it
          and no relay can replay it as a broadcast: ``Endpoint`` refuses that header in
          MESSAGE frames)
    ACK:  16-byte message id || 64-byte signature by the target over ``ACK_DOMAIN`` ||
          message id || the original sender's key (a relay cannot forge one)

Forwarding, at a node that is not the target: to the target when it is a neighbour; to
the next relay of an explicit route; along a learned route (the link a frame from that
node last arrived on first); otherwise flooded to every other neighbour, at most
``MAX_HOPS`` hops, and only as many floods per neighbour as :data:`FLOOD_RATE` allows,
of which one maker (the signing key) gets a quarter (:data:`FLOOD_ORIGIN_RATE`), each
checked first: its maker's signature (a flood costs every node around, so nobody starts
one without a key). A flood is charged once its check passed, to the neighbour and to
its maker: a neighbour relays everyone's floods, and no maker uses up the others' room
in it, so it takes at least four keys, each signing its floods, to fill a neighbour's
budget (keys cost nothing: only ``trusted_keys`` bounds how many).

A node passes a frame on once, and again only for a copy with at least two hops fewer
behind it (at most ``MAX_HOPS`` / 2 times): the hop count is signed by nobody, and a
copy sent ahead with a high one dies sooner, so it must not stop the genuine one; it can
cost the genuine one at most one hop of reach (copies racing by one hop are the honest
case). A frame is remembered as relayed only once it was passed on or taken (delivered,
acknowledged), never when dropped, and by its whole payload (type, attempt, target,
route, signature, message), so no copy a neighbour makes of a message it saw (garbled,
re-addressed, routed elsewhere, past the hop limit) can make a relay drop the sender's
own tries as duplicates. A routed frame goes out once for each time it came in, so the
overlay cannot be used to multiply traffic beyond a flood's degree, which a neighbour
gets at the flood rate only.

The sender retries (every try a new ``attempt``, doubling the wait from
:data:`RETRY_FIRST` up to :data:`RETRY_MAX`) until the target's signed ACK arrives or the
timeout passes: :class:`DirectAcked` or :class:`DirectFailed`. The target delivers a
message once (a bounded cache of message ids, each with its ACK's signature, answers
retries without signing again) and acknowledges every copy, back over the link it came
on; relays take the ACK home along the routes the DATA frame taught them.
:class:`RouteDiscovered` tells the sender which neighbour leads to a node it reached.

At most once, whatever anyone sends (per worker of a sharded node, for as long as it
runs): the target holds the ids it delivered per sender (:data:`DELIVERED_PER_SENDER`
each, :data:`DELIVERED_CAPACITY` in all; past that, a sender's oldest by timestamp, else
the sender whose newest message is the oldest, whole, so the floor it leaves is no
higher than any sender still held) and, per sender, the newest timestamp among its ids
forgotten (for a sender forgotten whole, the newest of any forgotten whole). A message
not held and no newer than that is refused (``direct_replayed``) and not acknowledged:
it may have been delivered. So a captured frame replayed with a new attempt byte is
answered or refused, never delivered again; only its sender (with its key) can push its
ids out one by one, and other keys only by making it forgotten whole, which takes
:data:`DELIVERED_CAPACITY` ids of theirs. Exactly once (a retry answered with its ACK)
holds while the retry arrives before :data:`DELIVERED_PER_SENDER` newer messages of the
same sender and before the sender is forgotten whole (once :data:`DELIVERED_CAPACITY`
ids of senders with newer messages are held): past that, the retry is refused and the
send fails although it was delivered. The price of refusing: once senders were forgotten
whole, a new sender's message no newer than the newest of them is refused too; honest
senders are forgotten before any whose clock runs ahead of theirs, but many keys sending
(:attr:`~somasync.config.GossipConfig.trusted_keys` unset) can get honest first messages
refused for up to ``max_clock_skew`` (how far ahead a timestamp may run). A sender whose
every message is older than ``max_message_age`` is forgotten without raising any floor
(its messages are refused as too old anyway). A restarted node has forgotten everything:
it takes again a message younger than ``max_message_age``.

Routes are learned only from frames whose maker's signature was checked: a flood's (each
is checked before it goes on), a message delivered here, an ACK for one of this node's
messages. A frame a relay passes on along a route or to a neighbour is not checked for
itself, but it is when it would teach a new route (a signature per route learned, not per
frame, at most :data:`ROUTE_CHECK_RATE` a second per neighbour; past that, it teaches
nothing); if it fails the check it goes no further. Unchecked, a neighbour could claim to
be the way to any node and swallow every sender's first try for it. A frame passed on
unchecked goes at most in band :data:`UNCHECKED_PRIORITY`, below the critical one, so
nobody's garbage pushes out a relay's own critical frames.

A query (a broadcast with the :data:`QUERY_HEADER`) teaches every node the link its first
copy came on as the way back to its asker, so that the answers do not flood. That is a
guess for first tries only: any node holds the query and can hand it on first, and a
relay with a route never floods, so a retry (``attempt`` above 0) ignores it and floods
unless a checked direct frame taught a route.

Who pays for a bad signature: the last relay checks every frame it hands to the frame's
target (DATA and ACK alike), and no node passes on a frame that names it as the maker.
So a frame for this node that fails its check is always its neighbour's fault (it made
it, or handed it on unchecked as the last hop): the link is closed and the key scored
invalid, as for a broadcast with a bad signature. A relay that is not the last hop
cannot tell an unchecked relay before it from an attacker, so it drops and counts what
fails there and keeps the link. Either way a neighbour costs this node at most
:data:`CHECK_RATE` checks a second (:data:`CHECK_BURST` back to back) for frames for
this node or its neighbours, on top of the flood and route budgets; past that, those
frames are dropped unchecked (``direct_check_limited``), never passed on unchecked, and
the sender's retry goes through once the budget refills. Read ahead, a neighbour's
direct frames below the critical band wait their turn with its messages.

Bounds: open sends :data:`MAX_PENDING`; routes :data:`MAX_ROUTES` (least recently used
forgotten); delivered ids :data:`DELIVERED_CAPACITY` (:data:`DELIVERED_PER_SENDER` per
sender); relay dedup :data:`RELAYED_CAPACITY` ids for :data:`RELAYED_TTL` seconds. Every
drop is counted in the endpoint's ``rejected`` under a ``direct_*`` reason.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from somasync.core import wire
from somasync.core.budget import KeyedBuckets
from somasync.core.events import DirectAcked, DirectFailed, RejectReason, RouteDiscovered
from somasync.core.inbox import CRITICAL
from somasync.core.payload import decode_payload
from somasync.core.seen import SeenCache
from somasync.core.shard import direct_owner
from somasync.errors import DecodeError

if TYPE_CHECKING:
    from somasync.core.endpoint import Endpoint, _Link

__all__ = [
    "ACK_DOMAIN",
    "DIRECT_HEADER",
    "DirectAcked",
    "DirectFailed",
    "DirectRouter",
    "RouteDiscovered",
    "decode_direct",
    "encode_direct",
]

DATA, ACK = 1, 2
ACK_DOMAIN = b"somasync/direct-ack/v1\x00"
DIRECT_HEADER = "somasync-direct-to"
"""The signed header naming a direct message's target (its public key, hex)."""
QUERY_HEADER = "somasync-query"
"""The signed header that makes a broadcast a query (:mod:`somasync.query`): every node
it reaches may answer its origin with a direct message, so each learns the way back
from the query's first copy (its signature checked) instead of flooding the answer."""
HEAD = struct.Struct("!BB32s32sB")
# Where a DATA body (signature || envelope) holds the envelope's priority byte.
PRIORITY_OFFSET = wire.SIGNATURE_SIZE + struct.calcsize("!BBB32sQqI")
MAX_VIA = 8
MAX_HOPS = 8  # hops a DIRECT frame travels at most (the frame header's hop count)
RETRY_FIRST = 0.25  # seconds before the first retry; doubled per try...
RETRY_MAX = 2.0  # ...up to this
MAX_PENDING = 1024
MAX_ROUTES = 4096
DELIVERED_CAPACITY = 16384  # ids of delivered messages held, about 250 bytes each: 4 MiB
DELIVERED_PER_SENDER = 1024  # ...of them from one sender at most
RELAYED_CAPACITY = 65536
RELAYED_TTL = 60.0
FLOOD_RATE = 32.0  # floods one neighbour may start per second through this node...
FLOOD_BURST = 64.0  # ...after this many back to back
FLOOD_ORIGIN_RATE = FLOOD_RATE / 4  # of them, floods of one maker per second...
FLOOD_ORIGIN_BURST = FLOOD_BURST / 4  # ...after this many back to back
ROUTE_CHECK_RATE = 32.0  # signatures checked per second for one neighbour's routed
ROUTE_CHECK_BURST = 64.0  # frames that would teach a route, after this many back to back
CHECK_RATE = 256.0  # signatures checked per second for one neighbour's frames for this
CHECK_BURST = 512.0  # node, or handed on to their target, after this many back to back
UNCHECKED_PRIORITY = CRITICAL - 1  # the highest band a frame goes on in unchecked
_FAILED, _UNCHECKED, _CHECKED = range(3)  # what a relay's check of a routed frame found
_HOP_TAGS = [bytes((hops,)) for hops in range(MAX_HOPS)]  # relay ids' suffix


@dataclass(frozen=True, slots=True)
class DirectFrame:
    """A decoded DIRECT frame (the inner message is still undecoded)."""

    type: int
    attempt: int
    target: bytes
    sender: bytes
    via: tuple[bytes, ...]
    body: bytes
    """DATA: signature || envelope; ACK: message id || signature."""

    @property
    def message_id(self) -> bytes:
        if self.type == ACK:
            return self.body[: wire.ID_SIZE]
        return wire.message_id(self.body[wire.SIGNATURE_SIZE :])


def encode_direct(type_: int, attempt: int, target: bytes, sender: bytes, body: bytes, *,
                  via: tuple[bytes, ...] = (), hops: int = 0, priority: int = 128) -> bytes:
    """Frame a DIRECT payload (see the module docstring)."""
    if len(via) > MAX_VIA:
        raise ValueError(f"an explicit route has at most {MAX_VIA} relays")
    payload = HEAD.pack(type_, attempt & 0xFF, target, sender, len(via)) + b"".join(via) + body
    return wire.encode_frame(wire.FrameKind.DIRECT, payload, priority=priority, hops=hops)


def decode_direct(frame: wire.Frame) -> DirectFrame:
    """Check a DIRECT frame's structure (what a relay checks before passing it on)."""
    data = frame.payload
    if len(data) < HEAD.size:
        raise DecodeError("truncated", "direct frame shorter than its header")
    type_, attempt, target, sender, count = HEAD.unpack_from(data)
    if count > MAX_VIA:
        raise DecodeError("bad_direct", f"{count} relays > {MAX_VIA}")
    offset = HEAD.size + count * wire.KEY_SIZE
    if offset > len(data):
        raise DecodeError("truncated", "direct route cut short")
    via = tuple(data[HEAD.size + i * wire.KEY_SIZE : HEAD.size + (i + 1) * wire.KEY_SIZE]
                for i in range(count))
    body = data[offset:]
    if type_ == DATA:
        if len(body) < wire.SIGNATURE_SIZE + wire.ENVELOPE_HEAD.size:
            raise DecodeError("truncated", "direct message shorter than signature + header")
    elif type_ == ACK:
        if len(body) != wire.ID_SIZE + wire.SIGNATURE_SIZE:
            raise DecodeError("bad_length", "direct ack of the wrong size")
    else:
        raise DecodeError("bad_direct", f"direct frame type {type_}")
    return DirectFrame(type_, attempt, target, sender, via, body)


class _Delivered:
    """The messages of one sender delivered here: each one's ACK signature, and the
    newest timestamp among those forgotten (a message of the sender's no newer, and not
    held, may have been delivered: it is refused)."""

    __slots__ = ("acks", "floor_ms", "newest_ms", "oldest")

    def __init__(self, floor_ms: int) -> None:
        self.acks: dict[bytes, bytes] = {}  # message id -> ACK signature
        self.oldest: list[tuple[int, bytes]] = []  # heap of (timestamp ms, message id)
        self.floor_ms = floor_ms
        self.newest_ms = floor_ms

    def add(self, message_id: bytes, timestamp_ms: int, ack: bytes) -> None:
        self.acks[message_id] = ack
        heapq.heappush(self.oldest, (timestamp_ms, message_id))
        self.newest_ms = max(self.newest_ms, timestamp_ms)

    def forget_oldest(self) -> None:
        timestamp_ms, message_id = heapq.heappop(self.oldest)
        del self.acks[message_id]
        self.floor_ms = max(self.floor_ms, timestamp_ms)


@dataclass(slots=True)
class _Pending:
    target: bytes
    node_id: str
    body: bytes
    via: tuple[bytes, ...]
    priority: int
    deadline: float
    next_try: float
    wait: float
    attempt: int = 0


class DirectRouter:
    """The direct-message state of one endpoint (driven by it; see the module docstring).

    In a sharded node every frame between two nodes is handled by one worker
    (:func:`somasync.core.shard.direct_owner` of the two keys), so the sender's open
    sends, the target's delivered ids and a relay's routes for that pair meet there.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._pending: dict[bytes, _Pending] = {}
        self._routes: OrderedDict[bytes, int] = OrderedDict()  # node key -> link
        # The way back to a query's asker (the link its query came on first): a guess,
        # for a first try only. Anyone holding the query (everyone) can hand it on
        # first; were it a route, relays would never flood a retry past that node.
        self._query_routes: OrderedDict[bytes, int] = OrderedDict()
        # Sender key -> what it delivered here; ids held in all; (newest timestamp,
        # sender) as a heap, stale entries skipped, for the sender to forget first; the
        # newest timestamp of any sender forgotten whole.
        self._delivered: dict[bytes, _Delivered] = {}
        self._delivered_ids = 0
        self._stalest: list[tuple[int, bytes]] = []
        self._forgotten_ms = -1
        self._relayed = SeenCache(RELAYED_CAPACITY, RELAYED_TTL)
        self._floods = KeyedBuckets(FLOOD_RATE, FLOOD_BURST)
        # (neighbour, maker): one maker's share of the neighbour's floods.
        self._origin_floods = KeyedBuckets(FLOOD_ORIGIN_RATE, FLOOD_ORIGIN_BURST)
        self._route_checks = KeyedBuckets(ROUTE_CHECK_RATE, ROUTE_CHECK_BURST)
        self._checks = KeyedBuckets(CHECK_RATE, CHECK_BURST)
        self._next: float | None = None

    # --- the sender ---------------------------------------------------------------------

    def send(self, envelope: wire.Envelope, target: bytes, node_id: str, *, now: float,
             timeout: float, via: tuple[bytes, ...] = ()) -> bytes:
        """Start sending ``envelope`` (signed by this node, its ``somasync-direct-to``
        header naming ``target``) to ``target``; returns the message id. The outcome is a
        :class:`DirectAcked` or :class:`DirectFailed` event."""
        endpoint = self._endpoint
        me = endpoint.identity.public_key
        if envelope.signature is None or envelope.origin != me:
            raise ValueError("a direct message must be signed by this node")
        if envelope.headers.get(DIRECT_HEADER) != target.hex():
            raise ValueError(f"a direct message's {DIRECT_HEADER} header must name its target")
        if len(via) > MAX_VIA:
            raise ValueError(f"an explicit route has at most {MAX_VIA} relays")
        if envelope.id in self._pending:
            return envelope.id
        if target == me or len(self._pending) >= MAX_PENDING:
            reason = ("the target is this node" if target == me
                      else f"{MAX_PENDING} direct messages already wait for an answer")
            endpoint._events.append(DirectFailed(envelope.id, node_id, target, reason))
            return envelope.id
        pending = _Pending(target, node_id, envelope.signature + envelope.body, via,
                           envelope.priority, now + timeout, now + RETRY_FIRST, RETRY_FIRST)
        self._pending[envelope.id] = pending
        self._transmit(pending)
        self._schedule(min(pending.next_try, pending.deadline))
        return envelope.id

    def _transmit(self, pending: _Pending) -> None:
        endpoint = self._endpoint
        frame = encode_direct(DATA, pending.attempt, pending.target,
                              endpoint.identity.public_key, pending.body, via=pending.via,
                              priority=pending.priority)
        # The first relay of an explicit route, else the target or its route; a retry
        # floods as well, in case the route broke.
        first = pending.via[0] if pending.via else pending.target
        link = self._link_to(first, explicit=bool(pending.via), attempt=pending.attempt)
        if link is not None:
            endpoint._queue(link, frame, pending.priority)
            if pending.attempt == 0 or pending.via or first in endpoint._peers:
                return
        elif pending.via:
            endpoint._count_reject("direct_no_route")
            return
        for state in list(endpoint._peers.values()):
            if state is not link and not state.closing:
                endpoint._queue(state, frame, pending.priority)

    def _link_to(self, key: bytes, *, explicit: bool = False,
                 attempt: int = 0) -> _Link | None:
        """The link leading to ``key``: the neighbour itself, or its learned route; for a
        first try (``attempt`` 0), else the way a query of ``key`` came."""
        endpoint = self._endpoint
        state = endpoint._peers.get(key)
        if state is not None and not state.closing:
            return state
        if explicit:
            return None
        for routes in (self._routes, self._query_routes) if attempt == 0 else (self._routes,):
            link = routes.get(key)
            if link is None:
                continue
            state = endpoint._links.get(link)
            if state is None or state.closing or state.hello is None:
                del routes[key]
                continue
            return state
        return None

    # --- frames -------------------------------------------------------------------------

    def on_frame(self, state: _Link, frame: wire.Frame, now: float) -> None:
        """A DIRECT frame from ``state``'s peer (raises DecodeError when malformed)."""
        endpoint = self._endpoint
        direct = decode_direct(frame)
        me = endpoint.identity.public_key
        if direct.sender == me:
            endpoint._count_reject("direct_echo")  # our own flood, come round a loop
            return
        # The whole payload (type, attempt, target, route, signature, message): a copy
        # sent ahead by a node that saw the first flood, garbled, re-addressed or on
        # another route, is another frame and cannot pass for the genuine one.
        relay_id = hashlib.blake2b(frame.payload, digest_size=16).digest()
        relayed = self._relayed
        hops = min(frame.hops, MAX_HOPS - 1)
        # A duplicate is a frame this node already passed on (or took) with at most one
        # hop more: that copy went nearly as far as this one can. The hop count is
        # nobody's signature, so a copy sent ahead with more, which dies sooner, must
        # not make the genuine one look like a duplicate; one hop of slack, because
        # honest copies racing each other often differ by one (re-sending those cost
        # 27% more frames per flood at 120 simulated nodes, 45% at 500).
        for done in _HOP_TAGS[: hops + 2]:
            if relay_id + done in relayed:
                endpoint._count_reject("direct_duplicate")
                return
        if direct.target == me:
            handled = (self._on_data(state, direct, now) if direct.type == DATA
                       else self._on_ack(state, direct))
            hops = 0  # taken here: every later copy is a duplicate
        else:
            handled = self._relay(state, direct, frame, now)
        # Remembered only once passed on or taken: a frame dropped here (past the hop
        # limit or the flood budget, badly signed, nowhere to go) blocks no other copy.
        if handled:
            relayed.add(relay_id + _HOP_TAGS[hops], now=now)

    def _learn(self, state: _Link, direct: DirectFrame) -> None:
        """``direct``'s maker signed it (checked): the link it came on first leads back to
        its maker."""
        self.learn_route(state, direct.sender)

    def learn_route(self, state: _Link, sender: bytes, *, query: bool = False) -> None:
        """A frame ``sender`` signed (checked) came first over ``state``'s link: that link
        leads back to it. ``query``: the frame was ``sender``'s query, whose way back its
        answers' first tries take (only theirs: see ``_query_routes``)."""
        if sender in self._endpoint._peers:
            return
        routes = self._query_routes if query else self._routes
        routes[sender] = state.id
        routes.move_to_end(sender)
        if len(routes) > MAX_ROUTES:
            routes.popitem(last=False)

    def _routed_on(self, state: _Link, direct: DirectFrame, now: float) -> int:
        """For a frame relayed without a flood's check: learn the way back to its maker
        if it teaches a new one, checking its signature first (within the neighbour's
        budget; past it, nothing is learned). ``_FAILED``: it failed the check, drop it;
        else ``_CHECKED`` or ``_UNCHECKED``."""
        sender = direct.sender
        routes = self._routes
        if sender in self._endpoint._peers:
            return _UNCHECKED
        if routes.get(sender) == state.id:
            routes.move_to_end(sender)  # the route it confirms was checked when learned
            return _UNCHECKED
        assert state.hello is not None
        if not self._route_checks.take(state.hello.public_key, now=now):
            return _UNCHECKED
        if not self._authentic(direct):
            self._bad_signature(state, direct)
            return _FAILED
        self._learn(state, direct)
        return _CHECKED

    def _bad_signature(self, state: _Link, direct: DirectFrame) -> None:
        """``direct`` failed its maker's signature check here."""
        assert state.hello is not None
        if direct.sender == state.hello.public_key:
            # The neighbour made it: no relay passes on a frame that names it as the
            # maker (it takes it for its own, come round a loop).
            self._endpoint._reject(state, "direct_bad_signature",
                                   "a direct frame its maker did not sign", close=True)
        else:
            # The neighbour may have passed it on unchecked, so its link stays.
            self._endpoint._count_reject("direct_bad_signature")

    def _hand_on(self, state: _Link, direct: DirectFrame, frame: wire.Frame, link: _Link,
                 now: float) -> bool:
        """Pass a frame on along a route (not a flood) over ``link``; whether it went."""
        endpoint = self._endpoint
        verdict = self._routed_on(state, direct, now)
        if verdict == _FAILED:
            return False
        if verdict == _UNCHECKED and link.hello is not None \
                and link.hello.public_key == direct.target:
            # The last hop: the target takes a frame that fails its check for this
            # node's fault, so none goes to it unchecked (past the budget, none at all:
            # the neighbour may be passing on another's flood, and its link stays).
            assert state.hello is not None
            if not self._checks.take(state.hello.public_key, now=now):
                endpoint._count_reject("direct_check_limited")
                return False
            if not self._authentic(direct):
                self._bad_signature(state, direct)
                return False
            verdict = _CHECKED
        priority = 255 if direct.type == ACK else direct.body[PRIORITY_OFFSET]
        if verdict != _CHECKED:
            # Nobody checked it here: it must not push out this node's own critical
            # frames (or anyone's checked ones) on the way.
            priority = min(priority, UNCHECKED_PRIORITY)
        endpoint._queue(link, self._forwarded(direct, frame, priority), priority)
        return True

    @staticmethod
    def _forwarded(direct: DirectFrame, frame: wire.Frame, priority: int) -> bytes:
        return encode_direct(direct.type, direct.attempt, direct.target, direct.sender,
                             direct.body, via=direct.via, hops=frame.hops + 1,
                             priority=priority)

    def _relay(self, state: _Link, direct: DirectFrame, frame: wire.Frame,
               now: float) -> bool:
        """Pass the frame on; whether it went (else it was dropped, counted)."""
        endpoint = self._endpoint
        if frame.hops + 1 >= MAX_HOPS:
            endpoint._count_reject("direct_hop_limit")
            return False
        me = endpoint.identity.public_key
        if direct.via:
            # An explicit route: only the next relay after this one, or the target.
            if me not in direct.via:
                endpoint._count_reject("direct_not_on_route")
                return False
            index = direct.via.index(me)
            following = direct.via[index + 1] if index + 1 < len(direct.via) else direct.target
            link = self._link_to(following, explicit=True)
            if link is None or link is state:
                endpoint._count_reject("direct_no_route")
                return False
            return self._hand_on(state, direct, frame, link, now)
        link = self._link_to(direct.target, attempt=direct.attempt)
        if link is not None and link is not state:
            return self._hand_on(state, direct, frame, link, now)
        assert state.hello is not None
        neighbour = state.hello.public_key
        share = (neighbour, direct.sender)
        if not (self._floods.has(neighbour, now=now)
                and self._origin_floods.has(share, now=now)):
            endpoint._count_reject("direct_flood_limited")
            return False
        if not self._checks.take(neighbour, now=now):
            endpoint._count_reject("direct_check_limited")
            return False
        if not self._authentic(direct):
            # A flood costs the whole neighbourhood: only for what its maker signed.
            self._bad_signature(state, direct)
            return False
        # Charged once checked, to the maker as well as the neighbour: a badly signed
        # flood spends only a check, and no maker spends more than its share of the
        # neighbour's budget (a neighbour relays everyone's floods).
        self._floods.take(neighbour, now=now)
        self._origin_floods.take(share, now=now)
        self._learn(state, direct)
        # The send queues' band: a message's own (signed, checked) priority, not what
        # the last hop wrote in the frame header; acknowledgements go as control frames.
        priority = 255 if direct.type == ACK else direct.body[PRIORITY_OFFSET]
        forwarded = self._forwarded(direct, frame, priority)
        for other in list(endpoint._peers.values()):
            if other is not state and not other.closing:
                endpoint._queue(other, forwarded, priority)
        return True

    def _authentic(self, direct: DirectFrame) -> bool:
        """Whether the frame's maker (``sender``) signed it: a DATA frame's message, or
        an ACK for the message and the node it goes to."""
        endpoint = self._endpoint
        endpoint._counters.verified += 1
        if direct.type == ACK:
            message_id = direct.body[: wire.ID_SIZE]
            return endpoint._verify(direct.sender, direct.body[wire.ID_SIZE :], ACK_DOMAIN,
                                    message_id + direct.target)
        body = direct.body[wire.SIGNATURE_SIZE :]
        return body[3 : 3 + wire.KEY_SIZE] == direct.sender and endpoint._verify(
            direct.sender, direct.body[: wire.SIGNATURE_SIZE], wire.MESSAGE_DOMAIN, body)

    def _on_data(self, state: _Link, direct: DirectFrame, now: float) -> bool:
        """Deliver a message for this node (once) and acknowledge it; whether it was
        taken (delivered now or before), else it was dropped, counted."""
        endpoint = self._endpoint
        signature = direct.body[: wire.SIGNATURE_SIZE]
        body = direct.body[wire.SIGNATURE_SIZE :]
        message_id = wire.message_id(body)
        log = self._delivered.get(direct.sender)
        ack_signature = None if log is None else log.acks.get(message_id)
        if ack_signature is None:
            # What is wrong inside is the sender's fault (or a relay's we cannot tell),
            # so it is dropped and counted, never a reason to close this link; but the
            # neighbour made this frame or checked its signature (the last relay
            # checks), so one that fails it is the neighbour's.
            reason = self._check(state, direct, signature, body, now)
            if reason == RejectReason.BAD_SIGNATURE:
                endpoint._reject(state, reason, "a direct message its neighbour passed "
                                 "on unchecked or made", close=True)
                return False
            if reason is not None:
                endpoint._count_reject(reason)
                return False
            self._learn(state, direct)
            envelope = wire.decode_envelope(body, signature)
            try:
                payload = decode_payload(envelope.payload_kind, envelope.payload)
            except DecodeError:
                endpoint._count_reject("direct_bad_payload")
                return False
            ack_signature = endpoint.identity.sign(ACK_DOMAIN, message_id + direct.sender)
            self._remember(direct.sender, message_id, envelope.timestamp_ms, ack_signature)
            assert state.hello is not None
            endpoint._deliver_direct(envelope, payload, state.hello.node_id)
        else:
            endpoint._count_reject("direct_duplicate_delivery")
        ack = encode_direct(ACK, direct.attempt, direct.sender, endpoint.identity.public_key,
                            message_id + ack_signature, priority=255)
        endpoint._queue(state, ack, 255)
        return True

    def _remember(self, sender: bytes, message_id: bytes, timestamp_ms: int,
                  ack: bytes) -> None:
        """Hold a delivered message's id, forgetting (within the bounds) what is oldest:
        the sender's oldest message past :data:`DELIVERED_PER_SENDER`, else, past
        :data:`DELIVERED_CAPACITY` in all, the sender whose newest message is the oldest,
        whole (so the floor it leaves for every sender forgotten whole is as low as can
        be: no higher than any sender's still held)."""
        delivered = self._delivered
        log = delivered.get(sender)
        if log is None:
            # A sender forgotten whole may come back: its floor is everyone forgotten's.
            log = delivered[sender] = _Delivered(self._forgotten_ms)
        newest = log.newest_ms
        log.add(message_id, timestamp_ms, ack)
        if log.newest_ms != newest:  # (a new sender's is newer than its floor)
            stalest = self._stalest
            heapq.heappush(stalest, (log.newest_ms, sender))
            if len(stalest) > 4 * len(delivered) + 64:
                # Entries left behind by newer messages: rebuilt, O(senders) per as many.
                stalest[:] = [(held.newest_ms, key) for key, held in delivered.items()]
                heapq.heapify(stalest)
        self._delivered_ids += 1
        if len(log.acks) > DELIVERED_PER_SENDER:
            log.forget_oldest()
            self._delivered_ids -= 1
        while self._delivered_ids > DELIVERED_CAPACITY:
            forgotten = self._pop_stalest()
            self._forgotten_ms = max(self._forgotten_ms, forgotten.newest_ms)

    def _pop_stalest(self) -> _Delivered:
        """Forget the sender whose newest message is the oldest, whole."""
        stalest, delivered = self._stalest, self._delivered
        while True:
            newest, sender = heapq.heappop(stalest)
            log = delivered.get(sender)
            if log is not None and log.newest_ms == newest:
                del delivered[sender]
                self._delivered_ids -= len(log.acks)
                return log

    def _check(self, state: _Link, direct: DirectFrame, signature: bytes, body: bytes,
               now: float) -> str | None:
        """Why the DATA frame's message may not be delivered here (None: it may)."""
        endpoint = self._endpoint
        config = endpoint.config
        try:
            envelope = wire.decode_envelope(body, signature)
        except DecodeError:
            return "direct_bad_envelope"
        if envelope.origin != direct.sender:
            return "direct_bad_envelope"
        if envelope.headers.get(DIRECT_HEADER) != endpoint.identity.public_key.hex():
            return "direct_wrong_target"
        if config.trusted_keys is not None and envelope.origin not in config.trusted_keys:
            return "untrusted"
        wall_now = now + endpoint._wall_offset
        refused = endpoint.trust.check_source(envelope.origin, envelope.source, wall=wall_now)
        if refused is not None:
            return str(refused)
        if envelope.expires_at < wall_now:
            return "expired"
        if envelope.timestamp_ms / 1000.0 < wall_now - config.max_message_age:
            return "too_old"
        if envelope.timestamp_ms / 1000.0 > wall_now + config.max_clock_skew:
            return "future_timestamp"
        log = self._delivered.get(envelope.origin)
        if envelope.timestamp_ms <= (self._forgotten_ms if log is None else log.floor_ms):
            # Its id may have been delivered and forgotten since: refused, never
            # delivered twice (and not acknowledged: it may not have been delivered).
            return "direct_replayed"
        assert state.hello is not None
        if not self._checks.take(state.hello.public_key, now=now):
            return "direct_check_limited"
        endpoint._counters.verified += 1
        if not endpoint._verify(envelope.origin, signature, wire.MESSAGE_DOMAIN, body):
            return RejectReason.BAD_SIGNATURE
        return None

    def _on_ack(self, state: _Link, direct: DirectFrame) -> bool:
        """An acknowledgement for this node; whether it was taken."""
        endpoint = self._endpoint
        message_id = direct.body[: wire.ID_SIZE]
        pending = self._pending.get(message_id)
        if pending is None or direct.sender != pending.target:
            endpoint._count_reject("direct_ack_unknown")  # late, or not ours
            return False
        endpoint._counters.verified += 1
        if not endpoint._verify(pending.target, direct.body[wire.ID_SIZE :], ACK_DOMAIN,
                                message_id + endpoint.identity.public_key):
            # Checked by the last relay, or made by the neighbour: its fault.
            endpoint._reject(state, "direct_bad_ack", "an acknowledgement its neighbour "
                             "passed on unchecked or made", close=True)
            return False
        del self._pending[message_id]
        self._learn(state, direct)
        endpoint._events.append(DirectAcked(message_id, pending.node_id, pending.target))
        if pending.target not in endpoint._peers and state.hello is not None:
            endpoint._events.append(RouteDiscovered(pending.node_id, state.hello.node_id))
        return True

    # --- time and links -----------------------------------------------------------------

    def _schedule(self, when: float) -> None:
        if self._next is None or when < self._next:
            self._next = when

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` must run next (None: nothing waits)."""
        return self._next

    def on_timer(self, now: float) -> None:
        """Retry what is due, fail what timed out."""
        if self._next is None or now < self._next:
            return
        self._next = None
        endpoint = self._endpoint
        for message_id, pending in list(self._pending.items()):
            if now >= pending.deadline:
                del self._pending[message_id]
                endpoint._events.append(DirectFailed(
                    message_id, pending.node_id, pending.target,
                    f"no acknowledgement after {pending.attempt + 1} tries"))
                continue
            if now >= pending.next_try:
                pending.attempt += 1
                pending.wait = min(pending.wait * 2, RETRY_MAX)
                pending.next_try = now + pending.wait
                self._transmit(pending)
            self._schedule(min(pending.next_try, pending.deadline))

    def expire(self, now: float) -> None:
        """Forget relayed ids past :data:`RELAYED_TTL`, and senders whose every message
        delivered here is past ``max_message_age`` (the endpoint's housekeeping)."""
        self._relayed.expire(now=now)
        endpoint = self._endpoint
        # Too old to be taken again anyway: forgotten without raising anyone's floor.
        horizon_ms = (now + endpoint._wall_offset - endpoint.config.max_message_age) * 1000
        stalest, delivered = self._stalest, self._delivered
        while stalest and stalest[0][0] < horizon_ms:
            newest, sender = heapq.heappop(stalest)
            log = delivered.get(sender)
            if log is not None and log.newest_ms == newest:  # else a newer entry stays
                del delivered[sender]
                self._delivered_ids -= len(log.acks)

    def link_down(self, link: int) -> None:
        """``link`` closed: routes through it are gone."""
        for routes in (self._routes, self._query_routes):
            for key in [k for k, v in routes.items() if v == link]:
                del routes[key]

    @property
    def pending(self) -> int:
        """Direct messages sent and not yet acknowledged or failed."""
        return len(self._pending)

    def owner(self, target: bytes, count: int) -> int:
        """The worker of a ``count``-worker node that handles this node's frames with
        ``target``."""
        return direct_owner(self._endpoint.identity.public_key, target, count)
