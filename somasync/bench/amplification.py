"""What one request can make a node send: the amplification factor of every request kind.

    python -m somasync.bench amplification [--messages 1000] [--size 300] [--members 20]
                                           [--window 10] [--rate 100] [--json PATH]

Runs on the real sans-IO core, no sockets: the link part (:class:`~somasync.core.endpoint.
Endpoint`: handshake, DIGEST, IHAVE, GRAFT, PRUNE, MESSAGE) and the datagram part
(:class:`~somasync.core.node.NodeControl`: SWIM membership, the HyParView overlay and the
datagram seal, with the seal on, the default, and off), on a stepped clock.

The node under test holds a realistic state: ``--messages`` stored messages of ``--size``
payload bytes from ``--origins`` origins, ``--neighbours`` honest neighbours on links (a
star around it, all holding the same messages), and ``--members`` members (itself, the
attacker and honest members, converged, claim queues drained). The attacker is an
admitted peer: it finished a link handshake, or it is a member whose signed ALIVE claim
everyone holds and who answers probes. For each request kind it sends the smallest
request that gets the largest answer (see ``LINK_KINDS`` and ``DATAGRAM_KINDS``).

Bytes count as they leave a machine: for links, whole ``frames_to_send()`` buffers
(sealed records with their 20 bytes of overhead, handshake messages); for datagrams,
``datagrams_to_send(now=)`` as sealed (or not). A TCP or UDP header is not counted, on
either side. The answer to a request is everything the node sends, to anyone, beyond
what it sends without the request: each run starts from a copy of one built state and is
compared with a run of the same copy, same clock and same seeds, without the attacker's
requests (so timer-driven consequences count: a GRAFT a quarter second after an IHAVE,
a NACK after a PING_REQ, a claim gossiped for seconds). While measuring, only the node
under test runs its membership and overlay timers: the other members answer what they
receive at once but start nothing (their probes and shuffle walks would be answered
alike in both runs, and the random draws a request shifts would turn them into noise of
hundreds of bytes). The node's E, sent as a connection opens, counts as an answer.

* single: one request, then ``--settle`` simulated seconds; factor = answer / request.
* sustained: the attacker repeats the request at ``--rate`` per simulated second for
  ``--window`` seconds (one kind has its own rate, see its row); factor = answer bytes
  over the window / request bytes over the window. Where the node limits a kind (a token
  bucket, a bounded table) this is where it shows: ``refused`` counts the requests its
  limiter turned away, and ``answer B/s`` is what the attacker gets per second however
  fast it asks. An attacker that paces itself to the limiter gets the single factor.

Link requests ("linked") are made on a connection the attacker opens at the start of each
run: its handshake counts in the request bytes, and the node's handshake reply and link-up
digest in the answer. That is the unit the node bounds (``AMPLIFICATION_LIMIT`` bytes
answered per byte received over a link's life, as QUIC bounds a path before it is
validated): a peer may save credit with earlier traffic and spend it on one request, never
more than the limit allows for all it sent.

The node may also dial a TCP connection in answer (an overlay JOIN makes the joiner a
neighbour); dials are counted, not their bytes.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from somasync.bench.machine import machine_info
from somasync.config import GossipConfig, NodeConfig, SecurityConfig
from somasync.core import crypto, wire
from somasync.core.crypto import Identity
from somasync.core.datagrams import WHOIS, DatagramSealer
from somasync.core.endpoint import Endpoint
from somasync.core.handshake import Handshake, Session
from somasync.core.membership_wire import (
    CLAIM_DOMAIN,
    ClaimType,
    DatagramKind,
    decode_datagram,
    encode_claim_body,
    encode_datagram,
)
from somasync.core.node import OVERLAY_CHANNEL, NodeControl
from somasync.core.overlay import JOIN_SIZE, OverlayKind, encode_message
from somasync.core.payload import PayloadKind
from somasync.errors import DecodeError
from somasync.testing import WALL

__all__ = ["DATAGRAM_KINDS", "LINK_KINDS", "Settings", "format_table", "main", "run"]

START = 100.0  # the stepped clock at creation (seconds)
TICK = 0.005  # seconds per step of the clock
ENTRIES = 100  # ids named by one GRAFT, IHAVE or PRUNE
RECONNECT_DIGESTS = 8  # a new link's digest bucket (DIGEST_BURST) spent at once
WHOIS_SIZE = 1 + 32 + 16 + 64  # a WHOIS is padded to the size of its answer (an IAM)
NODE_ADDRESS = "10.0.1.10:7946"
ATTACKER_ADDRESS = "10.0.1.99:7946"
ATTACKER_NAME = "member-99"
STRANGER_ADDRESS = "203.0.113.5:7946"  # a sender that is no member


@dataclass(frozen=True)
class Settings:
    """The node's state and the attacker's pace."""

    messages: int = 1000
    size: int = 300
    origins: int = 4
    neighbours: int = 4
    members: int = 20
    window: float = 10.0
    settle: float = 3.0
    rate: float = 100.0
    seed: int = 1


def _identity(name: str) -> Identity:
    return Identity(hashlib.blake2b(f"amplification/{name}".encode(), digest_size=32).digest())


def _envelope(origin: Identity, source: str, sequence: int, payload: bytes) -> wire.Envelope:
    body = wire.encode_envelope(
        origin=origin.public_key, sequence=sequence, timestamp_ms=int((WALL - 60) * 1000),
        ttl=3600, priority=128, payload_kind=PayloadKind.BINARY, source=source,
        correlation_id=None, headers={}, payload=payload)
    return wire.decode_envelope(body, origin.sign(wire.MESSAGE_DOMAIN, body))


# --- the link part ---------------------------------------------------------------------


class LinkScene:
    """The node (endpoint 0) with honest neighbours on in-memory links, and the links the
    attacker holds to it, whose bytes are only counted (and kept while a handshake
    needs them)."""

    def __init__(self, settings: Settings, envelopes: list[wire.Envelope]) -> None:
        self.now = START
        config = GossipConfig.lan()
        self.endpoints = [
            Endpoint(config, _identity(f"node-{i}"), f"node-{i:02d}",
                     rng=random.Random(settings.seed * 1000 + i), now=START,
                     wall_offset=WALL - START, listen_address=f"10.0.1.{10 + i}:7946")
            for i in range(settings.neighbours + 1)]
        for endpoint in self.endpoints:
            for envelope in envelopes:
                endpoint.broadcast(envelope, now=START)
        self.wires: dict[tuple[int, int], tuple[int, int]] = {}
        self.sessions: dict[int, Session] = {}  # the node's links held by the attacker
        self.disconnected = False  # the node closed the attacker's link meanwhile
        self.replies: dict[int, bytearray] = {}  # their bytes, while a handshake needs them
        self.attacker_links: set[int] = set()
        self.sent = 0
        self._next_link = 1
        for i in range(1, len(self.endpoints)):
            self._connect(i, 0)
        self.pump()
        self.run(1.0)

    @property
    def node(self) -> Endpoint:
        return self.endpoints[0]

    def _link_id(self) -> int:
        self._next_link += 1
        return self._next_link

    def _connect(self, dialler: int, listener: int) -> None:
        a, b = self._link_id(), self._link_id()
        self.wires[(dialler, a)] = (listener, b)
        self.wires[(listener, b)] = (dialler, a)
        self.endpoints[dialler].open_link(a, outbound=True, address=f"n{listener}:1",
                                          now=self.now)
        self.endpoints[listener].open_link(b, outbound=False, address=f"n{dialler}:9",
                                           now=self.now)

    def pump(self) -> None:
        """Move bytes between endpoints until nothing moves."""
        moved = True
        while moved:
            moved = False
            for index, endpoint in enumerate(self.endpoints):
                for link, _ in endpoint.links_to_close():
                    self._close(index, link)
                    moved = True
                for link, data in endpoint.frames_to_send():
                    if index == 0:
                        self.sent += len(data)
                        reply = self.replies.get(link)
                        if reply is not None:
                            reply += data
                    peer = self.wires.get((index, link))
                    if peer is not None:
                        self.endpoints[peer[0]].receive_bytes(peer[1], data, now=self.now)
                        moved = True
                while endpoint.has_backlog:  # what the runtimes do between reads
                    endpoint.process_backlog(now=self.now)
                    moved = True
                endpoint.take_deliveries()
                endpoint.take_events()

    def _close(self, index: int, link: int) -> None:
        self.endpoints[index].close_link(link, now=self.now)
        peer = self.wires.pop((index, link), None)
        if peer is not None:
            self.wires.pop(peer, None)
            self.endpoints[peer[0]].close_link(peer[1], now=self.now)
        if index == 0:
            self.sessions.pop(link, None)
            self.replies.pop(link, None)
            self.attacker_links.discard(link)

    def tick(self) -> None:
        """One step of the clock: every timer due fires, and bytes move."""
        self.now = round(self.now + TICK, 9)
        for endpoint in self.endpoints:
            if endpoint.get_timer() <= self.now:
                endpoint.handle_timer(now=self.now)
        self.pump()

    def run(self, seconds: float) -> None:
        end = self.now + seconds - TICK / 2
        while self.now < end:
            self.tick()

    # --- the attacker's side -----------------------------------------------------------

    def attacker_send(self, link: int, data: bytes) -> int:
        if link in self.attacker_links:
            self.node.receive_bytes(link, data, now=self.now)
            self.pump()
        return len(data)

    def handshake(self, *, finish: bool, then: bytes = b"") -> tuple[int, int]:
        """A new connection from the attacker: its E, and (``finish``) its AUTH followed
        by the frames ``then``, sealed. Returns (the node's link, bytes the attacker
        sent)."""
        link = self._link_id()
        self.attacker_links.add(link)
        self.replies[link] = bytearray()
        self.node.open_link(link, outbound=False, address="10.0.1.99:40000", now=self.now)
        shake = Handshake(_identity("attacker"), ATTACKER_NAME, ATTACKER_ADDRESS, dialer=True)
        sent = self.attacker_send(link, shake.initial_bytes())
        if finish:
            auth = shake.receive(bytes(self.replies.get(link, b"")))
            session = shake.session
            if session is None:
                raise RuntimeError("the node did not answer the handshake")
            self.sessions[link] = session
            sent += self.attacker_send(link, auth + (session.seal(then) if then else b""))
        self.replies.pop(link, None)
        return link, sent

    def send_frames(self, frames: bytes) -> int:
        """Frames on the attacker's established link, sealed as its records. Once the
        node closed that link (the attacker's score fell too low), they go nowhere: the
        attacker still pays for them, the node answers nothing."""
        if not self.sessions:
            self.disconnected = True
            return len(frames) + 4 + crypto.AEAD_TAG_SIZE
        [link] = self.sessions
        return self.attacker_send(link, self.sessions[link].seal(frames))

    def refused(self, reasons: tuple[str, ...]) -> int:
        rejected = self.node.statistics().rejected
        return sum(rejected.get(reason, 0) for reason in reasons)

    def rejected(self) -> dict[str, int]:
        return self.node.statistics().rejected


@dataclass
class _Material:
    """What requests are made of: stored ids, a stream tag, the attacker's origin."""

    stored: list[wire.Envelope]
    rng: random.Random
    attacker: Identity

    def tree_frame(self, kind: int, ids: list[bytes]) -> bytes:
        first = self.stored[0]
        tag = wire.stream_tag(first.origin, first.source.encode())
        return wire.encode_tree_frame(kind, [wire.encode_tree_entry(i, tag) for i in ids])

    def stored_ids(self, index: int, count: int) -> list[bytes]:
        start = index * count
        return [self.stored[(start + i) % len(self.stored)].id for i in range(count)]

    def fresh_ids(self, count: int) -> list[bytes]:
        return [self.rng.randbytes(16) for _ in range(count)]


@dataclass(frozen=True)
class LinkRequest:
    """One request an admitted peer can make on a link."""

    name: str
    request: str
    setup: str  # "linked": on a connection the attacker opens first; "bare": no link
    make: Callable[[LinkScene, _Material, int], int]  # (scene, what, index) -> bytes
    expect_answer: bool = True
    limiters: tuple[str, ...] = ()
    rate: float | None = None  # its own pace (requests per second), or the default


def _graft_many(scene: LinkScene, m: _Material, i: int) -> int:
    return scene.send_frames(m.tree_frame(wire.FrameKind.GRAFT, m.stored_ids(i, ENTRIES)))


def _graft_repeated(scene: LinkScene, m: _Material, i: int) -> int:
    return scene.send_frames(m.tree_frame(wire.FrameKind.GRAFT, m.stored_ids(i, 1) * ENTRIES))


def _ihave(scene: LinkScene, m: _Material, i: int) -> int:
    return scene.send_frames(m.tree_frame(wire.FrameKind.IHAVE, m.fresh_ids(ENTRIES)))


def _prune(scene: LinkScene, m: _Material, i: int) -> int:
    return scene.send_frames(m.tree_frame(wire.FrameKind.PRUNE, m.stored_ids(i, ENTRIES)))


def _digest_empty(scene: LinkScene, m: _Material, i: int) -> int:
    return scene.send_frames(wire.encode_digest({}, reply=False))


def _digest_unknown(scene: LinkScene, m: _Material, i: int) -> int:
    streams = {(m.rng.randbytes(32), "x"): [(1, 1)]}
    return scene.send_frames(wire.encode_digest(streams, reply=False, partial=True))


def _digest_claiming(scene: LinkScene, m: _Material, i: int) -> int:
    first = m.stored[0]
    streams = {(first.origin, first.source): [(1, 1_000_000 + i)]}
    return scene.send_frames(wire.encode_digest(streams, reply=False, partial=True))


def _message_new(scene: LinkScene, m: _Material, i: int) -> int:
    envelope = _envelope(m.attacker, ATTACKER_NAME, i + 1, b"")
    return scene.send_frames(wire.encode_message_frame(envelope, hops=0))


def _message_duplicate(scene: LinkScene, m: _Material, i: int) -> int:
    envelope = m.stored[i % len(m.stored)]
    return scene.send_frames(wire.encode_message_frame(envelope, hops=0))


def _handshake_e(scene: LinkScene, m: _Material, i: int) -> int:
    return scene.handshake(finish=False)[1]


def _handshake_full(scene: LinkScene, m: _Material, i: int) -> int:
    return scene.handshake(finish=True)[1]


def _reconnect(scene: LinkScene, m: _Material, i: int) -> int:
    digests = wire.encode_digest({}, reply=False) * RECONNECT_DIGESTS
    return scene.handshake(finish=True, then=digests)[1]


LINK_KINDS = (
    LinkRequest("DIGEST, empty", "a complete digest naming no stream: 'I hold nothing'",
                "linked", _digest_empty, limiters=("digest_limited",)),
    LinkRequest("DIGEST, unknown stream", "a partial digest naming one stream the node has "
                "never seen", "linked", _digest_unknown, limiters=("digest_limited",)),
    LinkRequest("DIGEST, claiming 10^6", "a digest claiming a million messages of a stream "
                "the node holds: the node's padded request for them", "linked",
                _digest_claiming, limiters=("digest_limited",)),
    LinkRequest("GRAFT, 100 stored ids", "one GRAFT naming 100 distinct stored messages",
                "linked", _graft_many),
    LinkRequest("GRAFT, 1 id x100", "one GRAFT naming one stored message 100 times",
                "linked", _graft_repeated),
    LinkRequest("IHAVE, 100 unknown ids", "one IHAVE announcing 100 ids the node lacks",
                "linked", _ihave),
    LinkRequest("PRUNE, 100 entries", "one PRUNE naming 100 stored messages", "linked", _prune,
                expect_answer=False),
    LinkRequest("MESSAGE, new", "a new signed message with an empty payload",
                "linked", _message_new),
    LinkRequest("MESSAGE, duplicate", "a tree push of a message the node holds",
                "linked", _message_duplicate),
    LinkRequest("handshake E", "a new connection and the handshake's first message",
                "bare", _handshake_e),
    LinkRequest("handshake E+AUTH", "a new connection and a complete handshake",
                "bare", _handshake_full),
    LinkRequest("reconnect + 8 DIGESTs", "a new link (same key) and 8 empty digests at once",
                "bare", _reconnect, limiters=("digest_limited",), rate=1.0),
)


# --- the datagram part -----------------------------------------------------------------


class _Attacker:
    """A member driven by hand: its ALIVE claim is everyone's, it answers pings (so it
    stays alive), and it sends whatever datagram it likes, from any port of its host."""

    def __init__(self, sealer: DatagramSealer | None) -> None:
        self.identity = _identity("attacker")
        self.key = self.identity.public_key
        self.sealer = sealer
        self.incarnation = 0

    def alive_claim(self) -> bytes:
        body = encode_claim_body(ClaimType.ALIVE, self.key, self.incarnation,
                                 node_id=ATTACKER_NAME, address=ATTACKER_ADDRESS)
        return body + self.identity.sign(CLAIM_DOMAIN, body)

    def seal(self, address: str, data: bytes, now: float) -> list[tuple[str, bytes]]:
        if self.sealer is None:
            return [(address, data)]
        self.sealer.seal(address, data, now=now, wall=now + WALL - START)
        return self.sealer.take()

    def receive(self, source: str, data: bytes, now: float) -> list[tuple[str, bytes]]:
        if self.sealer is not None:
            opened = self.sealer.open(source, data, now=now, wall=now + WALL - START)
            if opened is None:
                return self.sealer.take()
            data = opened[1]
        if data[:1] == bytes([OVERLAY_CHANNEL]):
            return []
        try:
            datagram = decode_datagram(data)
        except DecodeError:
            return []
        if datagram.kind == DatagramKind.PING and datagram.target == self.key:
            ack = encode_datagram(DatagramKind.ACK, self.key, datagram.nonce, [])
            return self.seal(source, ack, now)
        return []


class DatagramScene:
    """Members on one stepped clock, datagrams delivered at once; member 0 is the node
    under test, and the attacker is one more member."""

    def __init__(self, settings: Settings, *, sealed: bool) -> None:
        self.now = START
        self.sealed = sealed
        addresses = [f"10.0.1.{10 + i}:7946" for i in range(settings.members - 1)]
        self.addresses = addresses
        self.controls: dict[str, NodeControl] = {}
        for i, address in enumerate(addresses):
            config = NodeConfig(node_id=f"member-{i:02d}", security=SecurityConfig(
                seal_datagrams=sealed))
            self.controls[address] = NodeControl(
                config, _identity(f"member-{i}"), address,
                rng=random.Random(settings.seed * 1000 + i), now=START,
                wall_offset=WALL - START)
        keys = {address: _identity(f"member-{i}").public_key
                for i, address in enumerate(addresses)}
        self.keys = keys
        attacker_sealer = DatagramSealer(_identity("attacker"), resolve=keys.get) \
            if sealed else None
        self.attacker = _Attacker(attacker_sealer)
        self.queue: deque[tuple[str, str, bytes]] = deque()
        self.sent = 0
        self.dials = 0
        self.frozen = False
        """True while measuring: only the node under test runs its timers (the others
        answer what they receive at once, but start nothing of their own)."""
        for address, control in self.controls.items():
            control.start([] if address == NODE_ADDRESS else [NODE_ADDRESS], [], now=self.now)
            self._collect(address)
        join = encode_datagram(DatagramKind.PUSH, self.attacker.key, 0,
                               [self.attacker.alive_claim()], reply_wanted=True)
        self.attacker_send(ATTACKER_ADDRESS, NODE_ADDRESS, join)
        self.run(40.0)
        alive = self.node.statistics().membership
        if alive is None or alive.alive != settings.members:
            raise RuntimeError(f"membership did not converge: {alive}")
        self.frozen = True

    @property
    def node(self) -> NodeControl:
        return self.controls[NODE_ADDRESS]

    def _collect(self, address: str) -> None:
        control = self.controls[address]
        out = control.datagrams_to_send(now=self.now)
        dials = control.take_dials()
        control.take_closes()
        control.take_events()
        if address == NODE_ADDRESS:
            self.sent += sum(len(data) for _, data in out)
            self.dials += len(dials)
        self.queue.extend((address, destination, data) for destination, data in out)

    def _deliver(self) -> None:
        queue = self.queue
        while queue:
            source, destination, data = queue.popleft()
            control = self.controls.get(destination)
            if control is not None:
                control.receive_datagram(source, data, now=self.now)
                self._collect(destination)
            elif destination == ATTACKER_ADDRESS:
                queue.extend((destination, to, reply)
                             for to, reply in self.attacker.receive(source, data, self.now))
            # else: an address nobody here answers for (a victim, or a port of the
            # attacker's that only listens): dropped, after being counted

    def tick(self) -> None:
        self.now = round(self.now + TICK, 9)
        for address, control in self.controls.items():
            if self.frozen and address != NODE_ADDRESS:
                continue
            if control.get_timer() <= self.now:
                control.handle_timer(now=self.now)
                self._collect(address)
        self._deliver()

    def run(self, seconds: float) -> None:
        end = self.now + seconds - TICK / 2
        while self.now < end:
            self.tick()

    def attacker_send(self, source: str, destination: str, data: bytes, *,
                      raw: bool = False) -> int:
        """A datagram from the attacker's host (``source``: any port of it), sealed
        unless ``raw``; returns its bytes on the wire."""
        out = [(destination, data)] if raw else self.attacker.seal(destination, data, self.now)
        self.queue.extend((source, to, datagram) for to, datagram in out)
        self._deliver()
        return sum(len(datagram) for _, datagram in out)

    def refused(self, reasons: tuple[str, ...]) -> int:
        rejected = self.rejected()
        return sum(rejected.get(reason, 0) for reason in reasons)

    def rejected(self) -> dict[str, int]:
        stats = self.node.statistics()
        merged: dict[str, int] = {}
        parts = [stats.membership.rejected if stats.membership else {},
                 stats.datagrams.rejected if stats.datagrams else {},
                 stats.overlay.reject_reasons if stats.overlay else {}]
        for part in parts:
            for reason, count in part.items():
                merged[reason] = merged.get(reason, 0) + count
        return merged


@dataclass(frozen=True)
class DatagramRequest:
    """One datagram a member (or anyone) can send the node."""

    name: str
    request: str
    make: Callable[[DatagramScene, int], int]  # (scene, index) -> bytes sent
    sealed_only: bool = False
    unsealed_only: bool = False
    expect_answer: bool = True
    limiters: tuple[str, ...] = ()


def _victim(i: int) -> str:
    return f"192.0.2.1:{20000 + i % 40000}"


def _ping(scene: DatagramScene, i: int) -> int:
    node_key = scene.keys[NODE_ADDRESS]
    ping = encode_datagram(DatagramKind.PING, scene.attacker.key, i + 1, [], target=node_key)
    return scene.attacker_send(ATTACKER_ADDRESS, NODE_ADDRESS, ping)


def _ping_req_member(scene: DatagramScene, i: int) -> int:
    others = scene.addresses[1:]
    target = others[i % len(others)]
    request = encode_datagram(DatagramKind.PING_REQ, scene.attacker.key, i + 1, [],
                              target=scene.keys[target], target_address=target)
    return scene.attacker_send(ATTACKER_ADDRESS, NODE_ADDRESS, request)


def _ping_req_victim(scene: DatagramScene, i: int) -> int:
    request = encode_datagram(DatagramKind.PING_REQ, scene.attacker.key, i + 1, [],
                              target=hashlib.blake2b(b"%d" % i, digest_size=32).digest(),
                              target_address=_victim(i))
    return scene.attacker_send(ATTACKER_ADDRESS, NODE_ADDRESS, request)


def _push(scene: DatagramScene, i: int) -> int:
    push = encode_datagram(DatagramKind.PUSH, scene.attacker.key, 0, [], reply_wanted=True)
    return scene.attacker_send(ATTACKER_ADDRESS, NODE_ADDRESS, push)


def _push_forged(scene: DatagramScene, i: int) -> int:
    member = scene.addresses[1 + i % (len(scene.addresses) - 1)]
    push = encode_datagram(DatagramKind.PUSH, scene.keys[member], 0, [], reply_wanted=True)
    return scene.attacker_send(STRANGER_ADDRESS, NODE_ADDRESS, push, raw=True)


def _refute(scene: DatagramScene, i: int) -> int:
    scene.attacker.incarnation += 1
    gossip = encode_datagram(DatagramKind.GOSSIP, scene.attacker.key, 0,
                             [scene.attacker.alive_claim()])
    return scene.attacker_send(ATTACKER_ADDRESS, NODE_ADDRESS, gossip)


def _whois(scene: DatagramScene, i: int) -> int:
    head = bytes([WHOIS]) + scene.attacker.key + hashlib.blake2b(
        b"%d" % i, digest_size=16).digest()
    return scene.attacker_send(ATTACKER_ADDRESS, NODE_ADDRESS,
                               head + bytes(WHOIS_SIZE - len(head)), raw=True)


def _join(scene: DatagramScene, i: int) -> int:
    port = f"10.0.1.99:{40000 + i % 20000}"
    join = bytes([OVERLAY_CHANNEL]) + encode_message(OverlayKind.JOIN, port)
    join += bytes(JOIN_SIZE + 1 - len(join))  # a shorter JOIN gets no answer at all
    return scene.attacker_send(port, NODE_ADDRESS, join)


def _shuffle(scene: DatagramScene, i: int) -> int:
    shuffle = bytes([OVERLAY_CHANNEL]) + encode_message(
        OverlayKind.SHUFFLE, ATTACKER_ADDRESS, node=_victim(i), ttl=1)
    return scene.attacker_send(ATTACKER_ADDRESS, NODE_ADDRESS, shuffle)


DATAGRAM_KINDS = (
    DatagramRequest("PING", "a probe of the node", _ping),
    DatagramRequest("PING_REQ, member", "'probe member C for me' (C answers)",
                    _ping_req_member),
    DatagramRequest("PING_REQ, victim", "'probe this address for me', a new address each "
                    "time (nobody answers)", _ping_req_victim),
    DatagramRequest("PUSH (sync request)", "push/pull: an empty PUSH asking for the full "
                    "state", _push),
    DatagramRequest("PUSH, forged sender", "an empty PUSH from a stranger naming another "
                    "member's key: the full state goes to that member", _push_forged,
                    unsealed_only=True),
    DatagramRequest("GOSSIP, own ALIVE", "the attacker's own ALIVE claim, one incarnation "
                    "up (a refutation)", _refute),
    DatagramRequest("WHOIS", "'who is at this address?' (unsealed by design, padded)",
                    _whois, sealed_only=True, limiters=("iam_limited",)),
    DatagramRequest("overlay JOIN", "HyParView JOIN from a new port of the attacker's host "
                    "each time", _join),
    DatagramRequest("overlay SHUFFLE", "a SHUFFLE walk at its last hop naming a victim as "
                    "its origin", _shuffle),
)


# --- measuring -------------------------------------------------------------------------


Scene = LinkScene | DatagramScene


def _measure(base: Scene, make: Callable[[Scene, int], int], *, seconds: float,
             rate: float | None, baseline: dict[tuple[str, float], int], setup: str,
             limiters: tuple[str, ...]) -> dict[str, Any]:
    """One run from a copy of ``base``: ``rate`` requests per second for ``seconds``
    (None: one request, at the start), against the same run without requests."""
    key = (setup, seconds)
    if key not in baseline:
        quiet = copy.deepcopy(base)
        before = quiet.sent
        quiet.run(seconds)
        baseline[key] = quiet.sent - before
    scene = copy.deepcopy(base)
    start_sent = scene.sent
    start_dials = scene.dials if isinstance(scene, DatagramScene) else 0
    rejected_before = scene.rejected()
    refused_before = scene.refused(limiters)
    requests = request_bytes = 0
    steps = round(seconds / TICK)
    every = 1 if rate is None else max(1, round(1 / (rate * TICK)))
    for step in range(steps):
        scene.tick()
        if step % every == 0 and (rate is not None or step == 0):
            request_bytes += make(scene, requests)
            requests += 1
    answer = scene.sent - start_sent - baseline[key]
    rejected = {reason: count - rejected_before.get(reason, 0)
                for reason, count in scene.rejected().items()
                if count != rejected_before.get(reason, 0)}
    result: dict[str, Any] = {
        "requests": requests, "request_bytes": request_bytes, "answer_bytes": answer,
        "factor": answer / request_bytes if request_bytes else 0.0,
        "refused": scene.refused(limiters) - refused_before, "rejected": rejected,
    }
    if rate is not None:
        result["rate_per_s"] = requests / seconds
        result["seconds"] = seconds
        result["answer_bytes_per_s"] = answer / seconds
    if isinstance(scene, DatagramScene):
        result["dials"] = scene.dials - start_dials
    else:
        result["disconnected"] = scene.disconnected
    return result


def run(settings: Settings, *, progress: Callable[[str], None] | None = None
        ) -> dict[str, Any]:
    """Every kind, single and sustained; the report (the JSON the command writes)."""
    started = time.perf_counter()
    origins = [_identity(f"origin-{k}") for k in range(settings.origins)]
    payload = bytes(range(256)) * (settings.size // 256 + 1)
    envelopes = [_envelope(origins[i % settings.origins], f"origin-{i % settings.origins}",
                           i // settings.origins + 1, payload[:settings.size])
                 for i in range(settings.messages)]
    rows: list[dict[str, Any]] = []

    bare = LinkScene(settings, envelopes)
    bare.sent = 0
    stored = bare.node.statistics().stored_messages
    baselines: dict[tuple[str, float], int] = {}
    for kind in LINK_KINDS:
        if progress:
            progress(kind.name)
        material = _Material(envelopes, random.Random(settings.seed), _identity("attacker"))

        def make(scene: Scene, i: int, kind: LinkRequest = kind,
                 material: _Material = material) -> int:
            assert isinstance(scene, LinkScene)
            opened = 0
            if kind.setup == "linked" and i == 0:
                # The connection the requests need is part of what they cost: a node's
                # answers are bounded by the bytes a peer sent it over the link's life.
                opened = scene.handshake(finish=True)[1]
            return opened + kind.make(scene, material, i)

        single = _measure(bare, make, seconds=settings.settle, rate=None,
                          baseline=baselines, setup=kind.setup, limiters=kind.limiters)
        material.rng = random.Random(settings.seed)
        sustained = _measure(bare, make, seconds=settings.window,
                             rate=kind.rate or settings.rate, baseline=baselines,
                             setup=kind.setup, limiters=kind.limiters)
        rows.append({"kind": kind.name, "part": "link", "seal": "records",
                     "request": kind.request, "expect_answer": kind.expect_answer,
                     "limiters": list(kind.limiters), "single": single,
                     "sustained": sustained})
    link_baseline = {f"{setup} {seconds:g} s": sent
                     for (setup, seconds), sent in baselines.items()}

    datagram_baseline: dict[str, int] = {}
    for sealed in (True, False):
        scene = DatagramScene(settings, sealed=sealed)
        scene.sent = scene.dials = 0
        baselines = {}
        for dkind in DATAGRAM_KINDS:
            if (dkind.sealed_only and not sealed) or (dkind.unsealed_only and sealed):
                continue
            if progress:
                progress(f"{dkind.name} (seal {'on' if sealed else 'off'})")

            def send(s: Scene, i: int, dkind: DatagramRequest = dkind) -> int:
                assert isinstance(s, DatagramScene)
                return dkind.make(s, i)

            single = _measure(scene, send, seconds=settings.settle, rate=None,
                              baseline=baselines, setup="member", limiters=dkind.limiters)
            sustained = _measure(scene, send, seconds=settings.window, rate=settings.rate,
                                 baseline=baselines, setup="member", limiters=dkind.limiters)
            rows.append({"kind": dkind.name, "part": "datagram",
                         "seal": "on" if sealed else "off", "request": dkind.request,
                         "expect_answer": dkind.expect_answer,
                         "limiters": list(dkind.limiters), "single": single,
                         "sustained": sustained})
        datagram_baseline.update({f"seal {'on' if sealed else 'off'} {seconds:g} s": sent
                                  for (_, seconds), sent in baselines.items()})

    worst_single = max(rows, key=lambda row: row["single"]["factor"])
    worst_sustained = max(rows, key=lambda row: row["sustained"]["factor"])
    worst_rate = max(rows, key=lambda row: row["sustained"]["answer_bytes_per_s"])
    frame = len(wire.encode_message_frame(envelopes[0], hops=0, repair=True))
    return {
        "machine": machine_info(),
        "settings": vars(settings) | {"tick_s": TICK, "entries_per_tree_frame": ENTRIES},
        "state": {
            "stored_messages": stored, "stored_frame_bytes": frame,
            "origins": settings.origins, "link_neighbours": settings.neighbours,
            "members": settings.members, "gossip_config": "GossipConfig.lan()",
            "membership_config": "MembershipConfig.lan()",
        },
        "baseline_bytes": {"link": link_baseline, "datagram": datagram_baseline},
        "kinds": rows,
        "worst": {
            "single": {"kind": worst_single["kind"], "seal": worst_single["seal"],
                       "factor": worst_single["single"]["factor"]},
            "sustained": {"kind": worst_sustained["kind"], "seal": worst_sustained["seal"],
                          "factor": worst_sustained["sustained"]["factor"]},
            "answer_bytes_per_s": {
                "kind": worst_rate["kind"], "seal": worst_rate["seal"],
                "value": worst_rate["sustained"]["answer_bytes_per_s"]},
        },
        "seconds": time.perf_counter() - started,
    }


def format_table(report: dict[str, Any]) -> str:
    """The human-readable table of a report."""
    state = report["state"]
    settings = report["settings"]
    lines = [
        f"amplification: node holding {state['stored_messages']:,} messages "
        f"({state['stored_frame_bytes']} B frames, {state['origins']} origins), "
        f"{state['link_neighbours']} neighbours, {state['members']} members; sustained = "
        f"{settings['rate']:g} requests/s for {settings['window']:g} s",
        "",
        f"{'kind':<24} {'seal':<7} {'req B':>7} {'answer B':>10} {'factor':>9}  "
        f"{'req/s':>5} {'sust. factor':>12} {'answer B/s':>12} {'refused':>8}",
    ]
    for row in report["kinds"]:
        one, many = row["single"], row["sustained"]
        lines.append(
            f"{row['kind']:<24} {row['seal']:<7} {one['request_bytes']:>7,} "
            f"{one['answer_bytes']:>10,} {one['factor']:>9,.2f}  {many['rate_per_s']:>5g} "
            f"{many['factor']:>12,.2f} {many['answer_bytes_per_s']:>12,.0f} "
            f"{many['refused']:>8,}")
    worst = report["worst"]
    lines += [
        "",
        f"worst single factor:    {worst['single']['kind']} ({worst['single']['seal']}) "
        f"{worst['single']['factor']:,.1f}",
        f"worst sustained factor: {worst['sustained']['kind']} "
        f"({worst['sustained']['seal']}) {worst['sustained']['factor']:,.1f}",
        f"most answer bytes/s:    {worst['answer_bytes_per_s']['kind']} "
        f"({worst['answer_bytes_per_s']['seal']}) "
        f"{worst['answer_bytes_per_s']['value']:,.0f} B/s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m somasync.bench amplification",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Settings()
    parser.add_argument("--messages", type=int, default=defaults.messages,
                        help="messages the node stores")
    parser.add_argument("--size", type=int, default=defaults.size, help="payload bytes")
    parser.add_argument("--origins", type=int, default=defaults.origins)
    parser.add_argument("--neighbours", type=int, default=defaults.neighbours,
                        help="honest neighbours on links")
    parser.add_argument("--members", type=int, default=defaults.members,
                        help="members, the node and the attacker included")
    parser.add_argument("--window", type=float, default=defaults.window,
                        help="simulated seconds of the sustained attack")
    parser.add_argument("--settle", type=float, default=defaults.settle,
                        help="simulated seconds counted after a single request")
    parser.add_argument("--rate", type=float, default=defaults.rate,
                        help="the attacker's requests per simulated second")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if min(args.messages, args.size, args.origins, args.neighbours) < 1 or args.members < 4:
        parser.error("--messages, --size, --origins, --neighbours must be >= 1, "
                     "--members >= 4")
    if args.window <= 0 or args.settle <= 0 or not 0 < args.rate <= 1 / TICK:
        parser.error(f"--window and --settle must be > 0, --rate in (0, {1 / TICK:g}]")
    settings = Settings(args.messages, args.size, args.origins, args.neighbours,
                        args.members, args.window, args.settle, args.rate, args.seed)
    report = run(settings)
    print(format_table(report))
    print(f"({report['seconds']:.1f} s)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
