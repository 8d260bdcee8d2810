"""Direct messages in the sans-IO core: a stepped clock and in-memory links (Mesh)."""

from __future__ import annotations

import itertools
import random
from typing import TypeVar

import pytest

from somasync.core import direct, wire
from somasync.core.crypto import Identity
from somasync.core.endpoint import Endpoint
from somasync.core.events import DirectAcked, DirectFailed, RouteDiscovered
from somasync.core.payload import MessageType
from somasync.core.shard import direct_owner
from somasync.message import Message
from somasync.testing import WALL, Mesh


def build(edges: list[tuple[str, str]], shards: dict[str, int] | None = None) -> Mesh:
    mesh = Mesh()
    for name in dict.fromkeys(n for edge in edges for n in edge):
        mesh.add(name, shards=(shards or {}).get(name, 1))
    for a, b in edges:
        mesh.connect(a, b)
    mesh.settle()
    return mesh


def envelope(mesh: Mesh, sender: str, target: bytes, text: str) -> wire.Envelope:
    identity = mesh.nodes[sender].identity
    message = Message(MessageType.Data(text), sender, timestamp=WALL + mesh.now - 100.0,
                      sequence=0, headers={direct.DIRECT_HEADER: target.hex()})
    return message.sign_with_ed25519(identity).to_envelope()


def owner(mesh: Mesh, sender: str, target: bytes) -> Endpoint:
    shards = mesh.shards[sender]
    key = shards[0].identity.public_key
    return shards[direct_owner(key, target, len(shards)) if len(shards) > 1 else 0]


def send(mesh: Mesh, sender: str, target: str, text: str, *, timeout: float = 5.0,
         via: tuple[str, ...] = ()) -> bytes:
    key = mesh.nodes[target].identity.public_key
    return owner(mesh, sender, key).send_direct(
        envelope(mesh, sender, key, text), key, target, now=mesh.now, timeout=timeout,
        via=[mesh.nodes[v].identity.public_key for v in via])


E = TypeVar("E")


def of(mesh: Mesh, name: str, kind: type[E]) -> list[E]:
    return [e for e in mesh.events[name] if isinstance(e, kind)]


def rejected(mesh: Mesh, name: str, reason: str) -> int:
    return sum(e.statistics().rejected.get(reason, 0) for e in mesh.shards[name])


def test_reaches_a_node_three_hops_away_once_and_only_it() -> None:
    mesh = build([("a", "b"), ("b", "c"), ("c", "d"), ("b", "e")])
    message_id = send(mesh, "a", "d", "for d alone")
    mesh.settle()
    assert mesh.delivered["d"] == [message_id]
    for name in "abce":
        assert mesh.delivered[name] == [], name  # relays pass it on, never deliver it
    assert of(mesh, "a", DirectAcked) == [
        DirectAcked(message_id, "d", mesh.nodes["d"].identity.public_key)]
    assert of(mesh, "a", RouteDiscovered) == [RouteDiscovered("d", "b")]
    mesh.step(10.0)  # no retry after the ack, no failure either
    assert mesh.delivered["d"] == [message_id]
    assert of(mesh, "a", DirectFailed) == []
    assert mesh.nodes["a"].direct_pending == 0


def test_a_learned_route_carries_the_next_message_without_flooding() -> None:
    mesh = build([("a", "b"), ("b", "c"), ("c", "d"), ("b", "e"), ("e", "f")])
    send(mesh, "a", "d", "first")
    mesh.settle()
    before = mesh.nodes["e"].statistics().frames_in
    second = send(mesh, "a", "d", "second")
    mesh.settle()
    assert mesh.delivered["d"][-1] == second
    # b knows d lies behind c (the first ack came from there): e hears nothing.
    assert mesh.nodes["e"].statistics().frames_in == before


def test_a_neighbour_target_gets_it_over_the_link() -> None:
    mesh = build([("a", "b"), ("a", "c")])
    before = mesh.nodes["c"].statistics().frames_in
    message_id = send(mesh, "a", "b", "hi")
    mesh.settle()
    assert mesh.delivered["b"] == [message_id]
    assert mesh.delivered["c"] == []
    assert mesh.nodes["c"].statistics().frames_in == before
    assert of(mesh, "a", RouteDiscovered) == []  # a neighbour needs no route
    assert len(of(mesh, "a", DirectAcked)) == 1


def pump(mesh: Mesh, name: str) -> None:
    """Move what every worker of ``name`` has queued, once (its routed items too)."""
    for endpoint in mesh.shards[name]:
        mesh._pump(name, endpoint)


SHARDED = pytest.mark.parametrize("shards", [1, 2], ids=["plain", "2-worker nodes"])


@SHARDED
def test_relay_link_closed_mid_way_is_retried_over_another_path_once(shards: int) -> None:
    # Two paths a-b-d and a-c-d. The frame reaches b; b's link to d closes before b can
    # pass it on: the retry floods and arrives through c.
    mesh = build([("a", "b"), ("b", "d"), ("a", "c"), ("c", "d")],
                 dict.fromkeys("abcd", shards))
    send(mesh, "a", "d", "learn")  # a route, which the next message follows
    mesh.settle()
    via = of(mesh, "a", RouteDiscovered)[0].via
    other = "c" if via == "b" else "b"
    message_id = send(mesh, "a", "d", "through the storm")
    for _ in range(shards):
        pump(mesh, "a")  # a -> relay (through a's workers)
    mesh.disconnect(mesh.wires[(via, mesh.link_of(via, "d"))])
    mesh.settle()
    assert message_id not in mesh.delivered["d"]
    mesh.step(1.0)
    assert mesh.delivered["d"].count(message_id) == 1
    acked = [e for e in of(mesh, "a", DirectAcked) if e.message_id == message_id]
    assert len(acked) == 1
    assert of(mesh, "a", RouteDiscovered)[-1] == RouteDiscovered("d", other)


@SHARDED
def test_a_lost_ack_makes_a_retry_that_is_acked_but_not_delivered_again(shards: int) -> None:
    mesh = build([("a", "b"), ("b", "d"), ("a", "c"), ("c", "d")],
                 dict.fromkeys("abcd", shards))
    send(mesh, "a", "d", "learn")
    mesh.settle()
    via = of(mesh, "a", RouteDiscovered)[0].via
    message_id = send(mesh, "a", "d", "once")
    for _ in range(2 * shards):
        pump(mesh, "a")  # a -> relay
        pump(mesh, via)  # relay -> d
        pump(mesh, "d")  # d delivers, its ack goes to the relay...
        if message_id in mesh.delivered["d"]:
            break
    assert mesh.delivered["d"].count(message_id) == 1
    mesh.disconnect(mesh.wires[(via, mesh.link_of(via, "a"))])  # ...which loses its way back
    mesh.settle()
    assert not [e for e in of(mesh, "a", DirectAcked)
                if e.message_id == message_id]
    mesh.step(1.0)
    assert mesh.delivered["d"].count(message_id) == 1
    assert rejected(mesh, "d", "direct_duplicate_delivery") >= 1
    assert [e for e in of(mesh, "a", DirectAcked) if e.message_id == message_id]


def test_an_unreachable_node_fails_after_the_timeout() -> None:
    mesh = build([("a", "b"), ("c", "d")])  # two islands
    message_id = send(mesh, "a", "d", "anyone?", timeout=3.0)
    mesh.settle()
    mesh.step(2.0)
    assert of(mesh, "a", DirectFailed) == []
    mesh.step(2.0)
    failed = of(mesh, "a", DirectFailed)
    assert len(failed) == 1
    assert failed[0].message_id == message_id
    assert failed[0].node_id == "d"
    assert "no acknowledgement" in failed[0].reason
    assert mesh.delivered["d"] == []
    assert mesh.nodes["a"].direct_pending == 0


def test_a_forged_ack_from_a_relay_is_refused() -> None:
    mesh = build([("a", "b"), ("b", "c")])
    mesh.wires[("b", mesh.link_of("b", "c"))].drop = True  # the real ack never comes
    message_id = send(mesh, "a", "c", "x", timeout=2.0)
    mesh.settle()
    c_key = mesh.nodes["c"].identity.public_key
    forged = direct.encode_direct(direct.ACK, 0, mesh.nodes["a"].identity.public_key, c_key,
                                  message_id + mesh.nodes["b"].identity.sign(
                                      direct.ACK_DOMAIN, message_id + c_key))
    mesh.inject("a", mesh.link_of("a", "b"), forged)
    mesh.settle()
    assert of(mesh, "a", DirectAcked) == []
    assert rejected(mesh, "a", "direct_bad_ack") == 1
    mesh.step(3.0)
    assert len(of(mesh, "a", DirectFailed)) == 1


def test_a_relay_cannot_readdress_a_message() -> None:
    mesh = build([("a", "b"), ("b", "c"), ("b", "e")])
    c_key = mesh.nodes["c"].identity.public_key
    e_key = mesh.nodes["e"].identity.public_key
    signed = envelope(mesh, "a", c_key, "for c")
    # b sends e a's message for c, addressed to e.
    frame = direct.encode_direct(direct.DATA, 0, e_key, mesh.nodes["a"].identity.public_key,
                                 signed.signature + signed.body)  # type: ignore[operator]
    mesh.inject("e", mesh.link_of("e", "b"), frame)
    mesh.settle()
    assert mesh.delivered["e"] == []
    assert rejected(mesh, "e", "direct_wrong_target") == 1
    assert mesh.nodes["e"].statistics().links == 1  # the relay may be honest: kept


def test_a_direct_message_broadcast_by_a_relay_is_refused() -> None:
    mesh = build([("a", "b"), ("b", "c")])
    signed = envelope(mesh, "a", mesh.nodes["c"].identity.public_key, "for c")
    mesh.inject("b", mesh.link_of("b", "a"), wire.encode_message_frame(signed, hops=0))
    mesh.settle()
    assert mesh.delivered["b"] == []
    assert mesh.delivered["c"] == []
    assert rejected(mesh, "b", "direct_as_broadcast") == 1
    with pytest.raises(ValueError, match="for one node"):
        mesh.nodes["a"].broadcast(signed, now=mesh.now)


def test_a_tampered_message_is_counted_and_not_delivered() -> None:
    mesh = build([("a", "b")])
    signed = envelope(mesh, "a", mesh.nodes["b"].identity.public_key, "pay 10")
    body = bytearray(signed.body)
    body[-2:] = b"99"
    frame = direct.encode_direct(direct.DATA, 0, mesh.nodes["b"].identity.public_key,
                                 mesh.nodes["a"].identity.public_key,
                                 signed.signature + bytes(body))  # type: ignore[operator]
    mesh.inject("b", mesh.link_of("b", "a"), frame)
    mesh.settle()
    assert mesh.delivered["b"] == []
    assert rejected(mesh, "b", "bad_signature") == 1


@pytest.mark.parametrize("garbage", [
    b"\x01\x00",  # shorter than the header
    bytes([1, 0]) + bytes(64) + b"\x09",  # 9 relays
    bytes([3, 0]) + bytes(65),  # unknown type
    bytes([2, 0]) + bytes(65) + bytes(10),  # an ack of the wrong size
])
def test_malformed_direct_frames_close_the_link_counted(garbage: bytes) -> None:
    mesh = build([("a", "b")])
    mesh.inject("b", mesh.link_of("b", "a"),
                wire.encode_frame(wire.FrameKind.DIRECT, garbage))
    mesh.settle()
    stats = mesh.nodes["b"].statistics()
    assert sum(stats.rejected.values()) == 1
    assert stats.links == 0


def test_explicit_route_goes_through_the_named_relays_only() -> None:
    mesh = build([("a", "b"), ("b", "d"), ("a", "c"), ("c", "d")])
    before = mesh.nodes["b"].statistics().frames_in
    message_id = send(mesh, "a", "d", "via c", via=("c",))
    mesh.settle()
    assert mesh.delivered["d"] == [message_id]
    assert of(mesh, "a", RouteDiscovered) == [RouteDiscovered("d", "c")]
    assert mesh.nodes["b"].statistics().frames_in == before
    # A relay that is not a neighbour of the one before it: nowhere to go.
    failed = send(mesh, "a", "d", "via b then c", via=("b", "c"), timeout=1.0)
    mesh.settle()
    mesh.step(2.0)
    assert failed not in mesh.delivered["d"]
    assert rejected(mesh, "b", "direct_no_route") >= 1
    assert [e for e in of(mesh, "a", DirectFailed) if e.message_id == failed]


NOWHERE = bytes(range(32))  # a key no node has: a frame for it floods


def flood_from(mesh: Mesh, identity: Identity, source: str, text: str) -> bytes:
    """A direct message for :data:`NOWHERE`, signed by ``identity``."""
    message = Message(MessageType.Data(text), source, timestamp=WALL + mesh.now - 100.0,
                      sequence=0, headers={direct.DIRECT_HEADER: NOWHERE.hex()})
    signed = message.sign_with_ed25519(identity).to_envelope()
    return direct.encode_direct(direct.DATA, 0, NOWHERE, identity.public_key,
                                signed.signature + signed.body)  # type: ignore[operator]


def test_a_flooding_neighbour_is_limited_and_counted() -> None:
    # x passes on floods of eight makers (so no one maker's share is what binds).
    mesh = build([("x", "r"), ("r", "p1"), ("r", "p2"), ("r", "p3")])
    makers = [Identity.generate() for _ in range(8)]
    link = mesh.link_of("r", "x")
    peers = ("p1", "p2", "p3")
    before = sum(mesh.nodes[p].statistics().frames_in for p in peers)
    frames = 200
    for i in range(frames):
        mesh.inject("r", link, flood_from(mesh, makers[i % 8], f"k{i % 8}", f"flood {i}"))
    mesh.settle()
    burst = int(direct.FLOOD_BURST)
    assert rejected(mesh, "r", "direct_flood_limited") == frames - burst
    # Each flood the budget let through went out once to each other neighbour.
    after = sum(mesh.nodes[p].statistics().frames_in for p in peers)
    assert after - before == 3 * burst


@pytest.mark.parametrize("maker", ["another node", "the neighbour"])
def test_a_flood_nobody_signed_goes_nowhere(maker: str) -> None:
    mesh = build([("x", "r"), ("r", "p1"), ("r", "p2")])
    nowhere = bytes(range(32))
    x_key = mesh.nodes["x"].identity.public_key if maker == "the neighbour" \
        else bytes(range(32, 64))
    before = mesh.nodes["p1"].statistics().frames_in
    for i in range(10):
        body = bytes(wire.SIGNATURE_SIZE) + i.to_bytes(4, "big") * 16  # distinct ids
        mesh.inject("r", mesh.link_of("r", "x"),
                    direct.encode_direct(direct.DATA, 0, nowhere, x_key, body))
        ack = direct.encode_direct(direct.ACK, 0, nowhere, x_key,
                                   i.to_bytes(16, "big") + bytes(wire.SIGNATURE_SIZE))
        mesh.inject("r", mesh.link_of("r", "x"), ack)
    mesh.settle()
    assert mesh.nodes["p1"].statistics().frames_in == before
    if maker == "another node":
        assert rejected(mesh, "r", "direct_bad_signature") == 20
        assert mesh.nodes["r"].statistics().links == 3  # x may have passed them on unchecked
    else:
        # x made the first: its last frame.
        assert rejected(mesh, "r", "direct_bad_signature") == 1
        assert mesh.nodes["r"].statistics().links == 2


def test_hop_limit_stops_a_flood() -> None:
    names = [f"n{i}" for i in range(direct.MAX_HOPS + 3)]
    mesh = build(list(itertools.pairwise(names)))
    message_id = send(mesh, "n0", names[-1], "far", timeout=1.0)
    mesh.settle()
    assert mesh.delivered[names[-1]] == []
    assert rejected(mesh, names[direct.MAX_HOPS], "direct_hop_limit") == 1
    mesh.step(2.0)
    assert [e.message_id for e in of(mesh, "n0", DirectFailed)] == [message_id]


@pytest.mark.parametrize("shards", [2, 3])
def test_across_sharded_nodes(shards: int) -> None:
    # The sender, a relay and the target each run as several workers: frames cross the
    # workers to the one owning the pair, and the ack goes out through the link's owner.
    mesh = build([("a", "r"), ("r", "d"), ("r", "x")], {"a": shards, "r": shards, "d": shards})
    ids = [send(mesh, "a", "d", f"m{i}") for i in range(6)]
    mesh.settle()
    assert sorted(mesh.delivered["d"]) == sorted(ids)
    acked = [e for e in mesh.events["a"] if isinstance(e, DirectAcked)]
    assert {e.message_id for e in acked} == set(ids)
    assert all(mesh.delivered[n] == [] for n in ("a", "r", "x"))
    routed = sum(e.statistics().frames_routed for e in mesh.shards["d"])
    assert routed > 0


def test_a_relay_forwards_in_the_message_own_priority_band() -> None:
    mesh = build([("a", "b"), ("b", "c")])
    c_key = mesh.nodes["c"].identity.public_key
    identity = mesh.nodes["a"].identity
    message = Message(MessageType.Data("bulk"), "a", timestamp=WALL, sequence=0, priority=10,
                      headers={direct.DIRECT_HEADER: c_key.hex()}).sign_with_ed25519(identity)
    seen: list[int] = []
    router = mesh.nodes["c"]._direct
    original = router.on_frame

    def record(state: object, frame: wire.Frame, now: float) -> None:
        seen.append(frame.priority)
        original(state, frame, now)  # type: ignore[arg-type]

    router.on_frame = record  # type: ignore[method-assign]
    # a claims the control band in the frame header; the signed envelope says 10.
    frame = direct.encode_direct(direct.DATA, 0, c_key, identity.public_key,
                                 message.signature + message.envelope_bytes,  # type: ignore[operator]
                                 priority=255)
    mesh.inject("b", mesh.link_of("b", "a"), frame)
    mesh.settle()
    assert len(mesh.delivered["c"]) == 1
    assert seen == [10]


def forged_data(mesh: Mesh, maker: str, sender: str, target: str, *,
                unsigned: bool) -> bytes:
    """A DATA frame claiming to come from ``sender``, made by ``maker``: signed by the
    maker's own key, or not at all."""
    target_key = mesh.nodes[target].identity.public_key
    signed = envelope(mesh, maker, target_key, "from someone else")
    signature = bytes(wire.SIGNATURE_SIZE) if unsigned else signed.signature
    return direct.encode_direct(direct.DATA, 0, target_key,
                                mesh.nodes[sender].identity.public_key,
                                signature + signed.body)  # type: ignore[operator]


@pytest.mark.parametrize("unsigned", [False, True], ids=["forged", "unsigned"])
def test_a_relayed_frame_nobody_signed_teaches_no_route(unsigned: bool) -> None:
    # l claims d lies behind it: a DATA frame "from d" for a, b's neighbour, which b
    # routes on without flooding. Learned unchecked, the route would send a's first try
    # for d into l, a black hole.
    mesh = build([("a", "b"), ("b", "c"), ("c", "d"), ("b", "l")])
    mesh.wires[("b", mesh.link_of("b", "l"))].drop = True
    mesh.inject("b", mesh.link_of("b", "l"), forged_data(mesh, "l", "d", "a",
                                                          unsigned=unsigned))
    mesh.settle()
    message_id = send(mesh, "a", "d", "first try")
    mesh.settle()
    assert mesh.delivered["d"] == [message_id]
    assert of(mesh, "a", RouteDiscovered) == [RouteDiscovered("d", "b")]
    # Checked, since it would have taught a route: refused, not passed on to a.
    assert rejected(mesh, "b", "direct_bad_signature") == 1


@pytest.mark.parametrize("unsigned", [False, True], ids=["forged", "unsigned"])
def test_a_forged_ack_teaches_no_route_and_discovers_nothing(unsigned: bool) -> None:
    # l sends a an ACK "from d": for a message a sent, or for none.
    mesh = build([("a", "b"), ("b", "c"), ("c", "d"), ("a", "l")])
    mesh.wires[("a", mesh.link_of("a", "l"))].drop = True
    a_key = mesh.nodes["a"].identity.public_key
    d_key = mesh.nodes["d"].identity.public_key
    pending = send(mesh, "a", "d", "pending", timeout=60.0)
    list(mesh.nodes["a"].frames_to_send())  # lost on the way: d never answers
    for message_id in (bytes(range(16)), pending):
        signature = bytes(wire.SIGNATURE_SIZE) if unsigned else mesh.nodes["l"].identity.sign(
            direct.ACK_DOMAIN, message_id + a_key)
        mesh.inject("a", mesh.link_of("a", "l"),
                    direct.encode_direct(direct.ACK, 0, a_key, d_key, message_id + signature,
                                         priority=255))
    assert rejected(mesh, "a", "direct_ack_unknown") == 1
    # Checked by the last relay or made by l: l's fault, its link's last frame.
    assert rejected(mesh, "a", "direct_bad_ack") == 1
    assert [link for link, _ in mesh.nodes["a"].links_to_close()] == [mesh.link_of("a", "l")]
    assert of(mesh, "a", RouteDiscovered) == []
    # The first try of a new message: over a's route to d, were there one; else flooded.
    send(mesh, "a", "d", "first try")
    assert mesh.link_of("a", "b") in {link for link, _ in mesh.nodes["a"].frames_to_send()}


def test_route_checks_are_budgeted_per_neighbour() -> None:
    # Each frame from a new maker would teach a route, so each would cost a signature
    # check: past the neighbour's budget, frames pass on unchecked and teach nothing.
    # (t is no neighbour of r, which knows the way: the next relay, not r, checks the
    # frames it hands t.)
    mesh = build([("x", "r"), ("r", "q"), ("q", "t")])
    send(mesh, "t", "x", "the way to t")
    mesh.settle()
    t_key = mesh.nodes["t"].identity.public_key
    routes = dict(mesh.nodes["r"]._direct._routes)
    before = mesh.nodes["r"].statistics().signatures_verified
    frames = 200
    for i in range(frames):
        maker = bytes([i % 256, i // 256]) * 16  # 200 makers nobody knows
        body = bytes(wire.SIGNATURE_SIZE) + i.to_bytes(4, "big") * 16
        mesh.inject("r", mesh.link_of("r", "x"),
                    direct.encode_direct(direct.DATA, 0, t_key, maker, body))
    mesh.settle()
    burst = int(direct.ROUTE_CHECK_BURST)
    r = mesh.nodes["r"]
    assert r.statistics().signatures_verified - before == burst
    assert rejected(mesh, "r", "direct_bad_signature") == burst
    assert r._direct._routes == routes
    assert r.statistics().links == 2


@pytest.mark.parametrize("copy", ["hop limit", "dies one hop on", "re-addressed", "other route"])
def test_copies_sent_ahead_cannot_make_relays_drop_the_genuine_tries(copy: str) -> None:
    # s - x - y - t, and m beside x, which saw s's message once. m sends x a copy of it
    # for every attempt byte before s's first try moves: one x drops (past the hop
    # limit), one x passes on but that dies at y, one addressed to m itself, one on an
    # explicit route through m. Remembered as relayed, each would make x drop s's
    # genuine tries as duplicates until the send fails.
    mesh = build([("s", "x"), ("x", "y"), ("y", "t"), ("m", "x")])
    t_key = mesh.nodes["t"].identity.public_key
    s_key = mesh.nodes["s"].identity.public_key
    m_key = mesh.nodes["m"].identity.public_key
    x_key = mesh.nodes["x"].identity.public_key
    message_id = send(mesh, "s", "t", "alert for t", timeout=5.0)  # queued at s
    signed = envelope(mesh, "s", t_key, "alert for t")
    assert signed.id == message_id
    body = signed.signature + signed.body  # type: ignore[operator]
    target, via, hops = t_key, (), 0
    if copy == "hop limit":
        hops = direct.MAX_HOPS - 1
    elif copy == "dies one hop on":
        hops = direct.MAX_HOPS - 2
    elif copy == "re-addressed":
        target = m_key
    else:
        via = (x_key, m_key)
    for attempt in range(256):
        mesh.inject("x", mesh.link_of("x", "m"), direct.encode_direct(
            direct.DATA, attempt, target, s_key, body, via=via, hops=hops))
    mesh.settle()
    mesh.step(6.0)
    assert mesh.delivered["t"] == [message_id]
    assert [e.message_id for e in of(mesh, "s", DirectAcked)] == [message_id]
    assert of(mesh, "s", DirectFailed) == []


def unsigned_for(mesh: Mesh, target: str, maker: bytes, i: int,
                 priority: int | None = None) -> bytes:
    """A DATA frame for ``target`` that passes every check before the signature (its
    origin is ``maker``, its header names the target, its timestamp is fresh), signed by
    nobody; ``priority`` rewrites the envelope's (unsigned here) priority byte, and the
    frame header's."""
    target_key = mesh.nodes[target].identity.public_key
    body = bytearray(envelope(mesh, "m", target_key, f"x{i}").body)
    body[3:35] = maker
    if priority is not None:
        body[direct.PRIORITY_OFFSET - wire.SIGNATURE_SIZE] = priority
    return direct.encode_direct(direct.DATA, 0, target_key, maker,
                                bytes(wire.SIGNATURE_SIZE) + bytes(body),
                                priority=128 if priority is None else priority)


def test_a_neighbour_that_sends_its_own_unsigned_messages_is_cut_off() -> None:
    # m made them (no relay passes on a frame naming the relay as its maker): each one
    # would cost y a signature check, so the first is its last.
    mesh = build([("m", "y")])
    y = mesh.nodes["y"]
    m_key = mesh.nodes["m"].identity.public_key
    before = y.statistics().signatures_verified
    for i in range(50):
        mesh.inject("y", mesh.link_of("y", "m"), unsigned_for(mesh, "y", m_key, i))
    mesh.settle()
    assert y.statistics().signatures_verified - before == 1
    assert rejected(mesh, "y", "bad_signature") == 1
    assert y.statistics().links == 0


def test_the_last_relay_checks_what_it_hands_the_target_within_a_budget() -> None:
    # m - x - y: garbage for y "from" a stranger. x hands y nothing unchecked, so y
    # checks nothing (and may blame x for what fails); x checks at most its budgets'
    # worth for m, and keeps m, which may have passed it on unchecked.
    mesh = build([("m", "x"), ("x", "y")])
    x, y = mesh.nodes["x"], mesh.nodes["y"]
    y_before = y.statistics().signatures_verified
    x_before = x.statistics().signatures_verified
    frames = 1000
    for i in range(frames):
        stranger = i.to_bytes(2, "big") * 16
        mesh.inject("x", mesh.link_of("x", "m"), unsigned_for(mesh, "y", stranger, i))
    mesh.settle()
    assert y.statistics().signatures_verified == y_before
    assert x.statistics().signatures_verified - x_before == \
        direct.ROUTE_CHECK_BURST + direct.CHECK_BURST
    assert rejected(mesh, "x", "direct_check_limited") == \
        frames - direct.ROUTE_CHECK_BURST - direct.CHECK_BURST
    assert x.statistics().links == 2
    assert y.statistics().links == 1
    # ...and a message signed by its maker still goes through.
    message_id = send(mesh, "m", "y", "signed", timeout=5.0)
    mesh.step(6.0)
    assert mesh.delivered["y"] == [message_id]


def test_a_relayed_frame_nobody_checked_goes_below_the_critical_band() -> None:
    # m - x - y - z, and x knows z lies behind y: a frame for z that m hands x goes on
    # unchecked, in a band below the critical one whatever priority byte it carries.
    mesh = build([("m", "x"), ("x", "y"), ("y", "z")])
    send(mesh, "z", "m", "teach the way back to z")
    mesh.settle()
    m_key = mesh.nodes["m"].identity.public_key
    x = mesh.nodes["x"]
    mesh.inject("x", mesh.link_of("x", "m"), unsigned_for(mesh, "z", m_key, 0, priority=255))
    bands = [len(band) for band in x._links[mesh.link_of("x", "y")].outbox._bands]
    assert bands[-1] == 0
    assert sum(bands) == 1
    # A signed flood keeps its signed priority (checked before it went out).
    nowhere = bytes(range(32))
    signed = Message(MessageType.Data("alert"), "m", timestamp=WALL, sequence=0, priority=255,
                     headers={direct.DIRECT_HEADER: nowhere.hex()}).sign_with_ed25519(
        mesh.nodes["m"].identity)
    mesh.settle()
    mesh.inject("x", mesh.link_of("x", "m"), direct.encode_direct(
        direct.DATA, 0, nowhere, m_key, signed.signature + signed.envelope_bytes,  # type: ignore[operator]
        priority=255))
    bands = [len(band) for band in x._links[mesh.link_of("x", "y")].outbox._bands]
    assert bands == [0, 0, 0, 1]


def test_direct_frames_read_ahead_wait_their_turn_like_messages() -> None:
    # A neighbour's direct frames below the critical band wait in read-ahead with its
    # messages (each link's highest band first, links in turn), not handled as read: a
    # critical broadcast read behind a hundred of them goes first.
    mesh = build([("a", "b")])
    b = mesh.nodes["b"]
    b_key = b.identity.public_key
    a = mesh.nodes["a"]
    data = b""
    for i in range(100):
        signed = envelope(mesh, "a", b_key, f"bulk {i}")
        data += direct.encode_direct(
            direct.DATA, 0, b_key, a.identity.public_key,
            signed.signature + signed.body, priority=signed.priority)  # type: ignore[operator]
    alert = Message(MessageType.Data("alert"), "a", timestamp=WALL, sequence=1,
                    priority=255).sign_with_ed25519(a.identity).to_envelope()
    data += wire.encode_message_frame(alert, hops=0)
    mesh.inject("b", mesh.link_of("b", "a"), data)
    assert [d.envelope.id for d in b.take_deliveries()] == [alert.id]
    assert b.has_backlog
    mesh.settle()
    assert len(mesh.delivered["b"]) == 100
    assert not b.has_backlog


def replay_setup(monkeypatch: pytest.MonkeyPatch) -> tuple[Mesh, bytes, bytes]:
    """a - b - d, with d's caches shrunk (the same code as at full size): a's message
    delivered to d once, and its frame as b captured it (b is any relay, or any node a
    retry flooded)."""
    monkeypatch.setattr(direct, "DELIVERED_CAPACITY", 64)
    monkeypatch.setattr(direct, "DELIVERED_PER_SENDER", 16, raising=False)
    mesh = build([("a", "b"), ("b", "d")])
    d_key = mesh.nodes["d"].identity.public_key
    signed = envelope(mesh, "a", d_key, "block 10.0.0.1")
    captured = direct.encode_direct(direct.DATA, 1, d_key, mesh.nodes["a"].identity.public_key,
                                    signed.signature + signed.body)  # type: ignore[operator]
    message_id = send(mesh, "a", "d", "block 10.0.0.1")
    mesh.settle()
    assert mesh.delivered["d"] == [message_id]
    return mesh, message_id, captured


def direct_from(mesh: Mesh, identity: Identity, source: str, target: str, text: str) -> bytes:
    """A direct message for ``target`` signed by ``identity`` (any key, linked or not)."""
    target_key = mesh.nodes[target].identity.public_key
    message = Message(MessageType.Data(text), source, timestamp=WALL + mesh.now - 50.0,
                      sequence=0, headers={direct.DIRECT_HEADER: target_key.hex()})
    signed = message.sign_with_ed25519(identity).to_envelope()
    return direct.encode_direct(direct.DATA, 0, target_key, identity.public_key,
                                signed.signature + signed.body)  # type: ignore[operator]


@pytest.mark.parametrize("keys", [1, 100], ids=["one key", "a key per message"])
def test_a_replayed_message_is_never_delivered_twice(monkeypatch: pytest.MonkeyPatch,
                                                     keys: int) -> None:
    # b sends d 100 valid direct messages of its own, newer than a's, to push a's id out
    # of d's cache, then replays a's frame with a new attempt byte (so relays pass it).
    mesh, message_id, captured = replay_setup(monkeypatch)
    identities = [mesh.nodes["b"].identity] if keys == 1 else \
        [Identity.generate() for _ in range(keys)]
    for i in range(100):
        mesh.inject("d", mesh.link_of("d", "b"), direct_from(
            mesh, identities[i % keys], "b" if keys == 1 else f"k{i}", "d", f"filler {i}"))
        mesh.step(0.01)  # each newer than the one before
    assert len(mesh.delivered["d"]) == 101
    mesh.inject("d", mesh.link_of("d", "b"), captured)
    mesh.settle()
    assert mesh.delivered["d"].count(message_id) == 1
    if keys == 1:
        # b's messages pushed out only b's own ids: a's retry is still answered.
        assert rejected(mesh, "d", "direct_duplicate_delivery") == 1
    else:
        # a was forgotten: what a signed before the newest message forgotten is refused.
        assert rejected(mesh, "d", "direct_replayed") == 1


def test_a_sender_that_outruns_its_own_cache_gets_no_old_message_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    mesh, message_id, captured = replay_setup(monkeypatch)
    for i in range(20):  # more than DELIVERED_PER_SENDER, each newer
        send(mesh, "a", "d", f"next {i}")
        mesh.step(0.01)
    mesh.settle()
    assert len(mesh.delivered["d"]) == 21
    mesh.inject("d", mesh.link_of("d", "b"), captured)
    mesh.settle()
    assert mesh.delivered["d"].count(message_id) == 1
    assert rejected(mesh, "d", "direct_replayed") == 1
    # ...while a message of a's newer than every one forgotten is taken.
    fresh = send(mesh, "a", "d", "fresh")
    mesh.settle()
    assert mesh.delivered["d"][-1] == fresh


def test_a_sender_past_the_message_age_is_forgotten_without_a_floor() -> None:
    mesh = build([("a", "d")])
    send(mesh, "a", "d", "old news")
    mesh.settle()
    router = mesh.nodes["d"]._direct
    assert len(router._delivered) == 1
    mesh.step(mesh.nodes["d"].config.max_message_age + 1.0)
    assert len(router._delivered) == 0
    assert router._delivered_ids == 0
    assert router._forgotten_ms == -1
    # A new message of a's is taken (no floor left behind).
    fresh = send(mesh, "a", "d", "news")
    mesh.settle()
    assert mesh.delivered["d"][-1] == fresh


def test_floods_of_a_few_makers_leave_room_in_a_neighbour_s_budget_for_others() -> None:
    # x hands y floods signed by two makers, far more than y's flood budget for x (x
    # may pass on 32 a second of each, from two neighbours of its own), then one by s.
    # Charged to x alone, the two used up x's budget and s's flood went nowhere.
    mesh = build([("x", "y"), ("y", "p")])
    makers = [Identity.generate() for _ in range(3)]
    link = mesh.link_of("y", "x")
    before = mesh.nodes["p"].statistics().frames_in
    frames = 100
    for i in range(frames):
        for k in (0, 1):
            mesh.inject("y", link, flood_from(mesh, makers[k], f"m{k}", f"flood {i}"))
    mesh.settle()
    mesh.inject("y", link, flood_from(mesh, makers[2], "s", "the one that matters"))
    mesh.settle()
    share = int(direct.FLOOD_ORIGIN_BURST)
    assert rejected(mesh, "y", "direct_flood_limited") == 2 * (frames - share)
    assert mesh.nodes["p"].statistics().frames_in - before == 2 * share + 1


def test_an_acknowledgement_s_check_is_counted() -> None:
    mesh = build([("a", "b")])
    a = mesh.nodes["a"]
    before = a.statistics().signatures_verified
    send(mesh, "a", "b", "hi")
    mesh.settle()
    assert len(of(mesh, "a", DirectAcked)) == 1
    assert a.statistics().signatures_verified - before == 1  # the ack's, checked at a


def test_a_sender_whose_clock_runs_ahead_does_not_hold_back_everyone_else(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # d must forget senders whole (more than its capacity from a hundred keys, each
    # message 50 s ahead of d's clock). It forgets those whose newest message is oldest
    # first: forgetting a, 55 s ahead, would refuse every new sender's message (no
    # newer than a's) for a while.
    mesh, _, _ = replay_setup(monkeypatch)
    ahead = Message(MessageType.Data("from the future"), "a", timestamp=WALL + mesh.now - 45.0,
                    sequence=0, headers={direct.DIRECT_HEADER:
                                         mesh.nodes["d"].identity.public_key.hex()})
    signed = ahead.sign_with_ed25519(mesh.nodes["a"].identity).to_envelope()
    mesh.inject("d", mesh.link_of("d", "b"), direct.encode_direct(
        direct.DATA, 0, mesh.nodes["d"].identity.public_key,
        mesh.nodes["a"].identity.public_key, signed.signature + signed.body))  # type: ignore[operator]
    mesh.settle()
    for i in range(100):
        mesh.inject("d", mesh.link_of("d", "b"), direct_from(
            mesh, Identity.generate(), f"k{i}", "d", f"filler {i}"))
        mesh.step(0.01)
    assert len(mesh.delivered["d"]) == 102
    newcomer = direct_from(mesh, Identity.generate(), "c", "d", "hello")
    mesh.inject("d", mesh.link_of("d", "b"), newcomer)
    mesh.settle()
    assert len(mesh.delivered["d"]) == 103
    assert rejected(mesh, "d", "direct_replayed") == 0


@pytest.mark.parametrize("seed", range(4))
def test_no_mix_of_senders_timestamps_and_replays_delivers_a_message_twice(
        monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    # Small caches, a few keys, timestamps out of order within the clock skew, and
    # every frame made so far replayed at random with a new attempt byte.
    monkeypatch.setattr(direct, "DELIVERED_CAPACITY", 12)
    monkeypatch.setattr(direct, "DELIVERED_PER_SENDER", 4)
    rng = random.Random(seed)
    mesh = build([("b", "d")])
    d_key = mesh.nodes["d"].identity.public_key
    keys = [Identity.generate() for _ in range(5)]
    made: list[bytes] = []
    for i in range(300):
        if made and rng.random() < 0.4:
            frame = bytearray(rng.choice(made))
            frame[wire.FRAME_HEADER.size + 1] = rng.randrange(1, 256)  # the attempt byte
            mesh.inject("d", mesh.link_of("d", "b"), bytes(frame))
        else:
            key = rng.choice(keys)
            message = Message(MessageType.Data(f"m{i}"), "k",
                              timestamp=WALL + mesh.now - 100.0 + rng.uniform(-30, 30),
                              sequence=0, headers={direct.DIRECT_HEADER: d_key.hex()})
            signed = message.sign_with_ed25519(key).to_envelope()
            made.append(direct.encode_direct(direct.DATA, 0, d_key, key.public_key,
                                             signed.signature + signed.body))  # type: ignore[operator]
            mesh.inject("d", mesh.link_of("d", "b"), made[-1])
        mesh.step(0.01)
    delivered = mesh.delivered["d"]
    assert len(delivered) == len(set(delivered))
    assert len(delivered) > 12  # more than the cache holds went through


def test_an_answer_to_a_query_follows_the_query_back_without_flooding() -> None:
    # Every node a query reaches may answer it with a direct message: were each answer
    # to flood, one query would cost (nodes x links) frames. The query's own way to each
    # node (a signed broadcast, checked) is the way back.
    mesh = build([("a", "b"), ("b", "c"), ("c", "d"), ("b", "e"), ("e", "f")])
    asker = mesh.nodes["d"]
    query = Message(MessageType.Data("who runs sensor?"), "d", timestamp=WALL + mesh.now - 100.0,
                    sequence=1, headers={direct.QUERY_HEADER: "q1"})
    asker.broadcast(query.sign_with_ed25519(asker.identity).to_envelope(), now=mesh.now)
    mesh.settle()
    before = mesh.nodes["e"].statistics().frames_in
    answer = send(mesh, "a", "d", "me")
    mesh.settle()
    assert mesh.delivered["d"][-1] == answer
    assert mesh.nodes["e"].statistics().frames_in == before  # no flood through e
    assert of(mesh, "a", RouteDiscovered) == [RouteDiscovered("d", "b")]


def test_a_neighbour_that_relays_a_query_first_delays_only_the_first_try_of_an_answer(
        ) -> None:
    # m hands the asker's (genuine) query to r1 and r2 before anyone else, so both learn
    # m as the way back to q; then m swallows everything. The query's way back is a
    # guess for the first try only: retries flood past m.
    mesh = build([("q", "a"), ("a", "r1"), ("a", "r2"), ("a", "m"), ("m", "r1"),
                  ("m", "r2"), ("x", "r1"), ("x", "r2")])
    asker = mesh.nodes["q"]
    query = Message(MessageType.Data("who runs sensor?"), "q",
                    timestamp=WALL + mesh.now - 101.0, sequence=0,
                    headers={direct.QUERY_HEADER: "q1"})
    envelope_ = query.sign_with_ed25519(asker.identity).to_envelope()
    frame = wire.encode_message_frame(envelope_, hops=1)
    for relay in ("r1", "r2"):
        mesh.inject(relay, mesh.link_of(relay, "m"), frame)
    mesh.settle()
    assert envelope_.id in mesh.delivered["x"]
    for w in mesh.wires.values():
        if "m" in (w.a, w.b):
            w.drop = True  # m swallows whatever it is sent; its links stay up
    answer = send(mesh, "x", "q", "me", timeout=10.0)
    mesh.step(12.0)
    assert answer in mesh.delivered["q"]
    assert [e.message_id for e in of(mesh, "x", DirectAcked)] == [answer]
    assert of(mesh, "x", DirectFailed) == []


def test_junk_from_another_neighbour_does_not_refill_a_maker_s_share() -> None:
    # m sends y frames naming made-up makers, none signed: each costs m nothing beyond a
    # check, and must not push x's share for maker k out of y's bounded table (a share
    # forgotten starts full again, and k would get x's whole budget).
    mesh = build([("x", "y"), ("y", "p"), ("m", "y")])
    maker = Identity.generate()
    from_x, from_m = mesh.link_of("y", "x"), mesh.link_of("y", "m")
    share = int(direct.FLOOD_ORIGIN_BURST)
    passed = []
    sent = 0
    for round_ in range(3):
        before = mesh.nodes["p"].statistics().frames_in
        for _ in range(share):
            mesh.inject("y", from_x, flood_from(mesh, maker, "k", f"flood {sent}"))
            sent += 1
        mesh.settle()
        passed.append(mesh.nodes["p"].statistics().frames_in - before)
        for j in range(4100):
            fake = (round_ * 10_000 + j).to_bytes(4, "big") * 8
            mesh.inject("y", from_m, direct.encode_direct(
                direct.DATA, 0, NOWHERE, fake,
                b"\x01" * (wire.SIGNATURE_SIZE + wire.ENVELOPE_HEAD.size + 8)))
        mesh.settle()
    assert passed == [share, 0, 0]
