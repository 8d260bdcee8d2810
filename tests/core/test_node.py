"""NodeControl, the control part of a node: dialling, overlay and membership together,
driven with a stepped clock."""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from somasync.config import (
    DiscoveryMethod,
    MembershipConfig,
    NodeConfig,
    OverlayConfig,
    SecurityConfig,
)
from somasync.core.crypto import Identity
from somasync.core.events import PeerJoined, PeerLeft
from somasync.core.node import OVERLAY_CHANNEL, NodeControl
from somasync.core.overlay import OverlayKind, encode_message

STATIC = frozenset({DiscoveryMethod.STATIC})
SEED = "10.0.0.2:7000"


def control(address: str = "10.0.0.1:7000", *, discovery: frozenset[DiscoveryMethod]
            = frozenset({DiscoveryMethod.GOSSIP}), seed: int = 1, now: float = 0.0,
            sealed: bool = False, **changes: object) -> NodeControl:
    """A node's control part; its datagrams travel in clear unless ``sealed`` (these
    tests read and inject them; the seal has its own tests)."""
    config = NodeConfig(node_id=address, discovery=discovery,
                        membership=MembershipConfig.local(), overlay=OverlayConfig.local(),
                        security=SecurityConfig(seal_datagrams=sealed),
                        **changes)  # type: ignore[arg-type]
    identity = Identity(bytes([seed]) * 32)
    return NodeControl(config, identity, address, rng=random.Random(seed), now=now)


def key(n: int) -> bytes:
    return Identity(bytes([n]) * 32).public_key


# --- the dialler -----------------------------------------------------------------------

def test_a_static_peer_is_redialled_with_growing_jittered_back_off() -> None:
    node = control(discovery=STATIC, reconnect_initial_delay=0.1, reconnect_max_delay=0.4)
    node.start([SEED], [], now=0.0)
    assert node.take_dials() == [SEED]
    now = 0.0
    waits = []
    for _ in range(4):
        node.dial_failed(SEED, now=now)
        assert node.take_dials() == []  # not before the back-off
        failed_at = now
        while not (dials := node.take_dials()):
            now = node.get_timer()  # membership's timers come due too
            node.handle_timer(now=now)
        assert dials == [SEED]
        waits.append(now - failed_at)
    # Each wait is delay x [0.5, 1.5) with the delay doubling up to the maximum.
    for wait, delay in zip(waits, (0.1, 0.2, 0.4, 0.4), strict=True):
        assert 0.5 * delay <= wait < 1.5 * delay
    assert node.statistics().connect_failures == 4


def test_a_link_the_peer_dialled_satisfies_our_dial_and_its_loser_is_no_failure() -> None:
    node = control(discovery=STATIC)
    node.start([SEED], [], now=0.0)
    assert node.take_dials() == [SEED]
    node.link_up(key(2), SEED, now=0.01)  # the peer's own dial finished first
    node.dial_succeeded(SEED, key(2), now=0.02)
    node.dial_failed(SEED, now=0.02)  # ours was closed as the duplicate
    assert node.statistics().connect_failures == 0
    assert node.statistics().links == 1
    node.handle_timer(now=10.0)
    assert node.take_dials() == []


def test_a_released_peer_is_closed_and_never_dialled_again() -> None:
    node = control(discovery=STATIC)
    node.start([SEED], [SEED], now=0.0)  # as a node starts with a peer it was given
    assert node.take_dials() == [SEED]
    node.dial_succeeded(SEED, key(2), now=0.0)
    node.link_up(key(2), SEED, now=0.0)
    assert node.release(SEED, now=1.0)
    assert node.take_closes() == [(key(2), "removed")]
    node.link_down(key(2), now=1.0)
    now = 1.0
    while now < 60.0:  # long past every back-off
        now = max(node.get_timer(), now + 0.1)
        node.handle_timer(now=now)
        assert node.take_dials() == []
    assert SEED not in node.wanted()
    assert not node.release(SEED, now=now)  # no longer kept


def test_a_long_lived_link_is_redialled_at_once_a_short_one_after_a_back_off() -> None:
    node = control(discovery=STATIC, reconnect_initial_delay=0.1, reconnect_max_delay=1.0)
    node.start([SEED], [], now=0.0)
    node.take_dials()
    node.dial_succeeded(SEED, key(2), now=0.0)
    node.link_up(key(2), SEED, now=0.0)
    node.link_down(key(2), now=100.0)
    assert node.take_dials() == [SEED]  # it lived long: no reason to wait
    node.dial_succeeded(SEED, key(2), now=100.0)
    node.link_up(key(2), SEED, now=100.0)
    node.link_down(key(2), now=100.2)  # flapping: wait
    assert node.take_dials() == []
    now = 100.2
    while not node.take_dials():
        now = node.get_timer()
        node.handle_timer(now=now)
    assert 100.2 + 0.5 * 0.1 <= now < 100.2 + 1.5 * 0.1


def test_a_stopped_node_neither_redials_nor_reports_failures() -> None:
    node = control(discovery=STATIC)
    node.start([SEED], [], now=0.0)
    node.take_dials()
    node.dial_succeeded(SEED, key(2), now=0.0)
    node.link_up(key(2), SEED, now=0.0)
    node.leave(now=1.0)
    node.link_down(key(2), now=1.0)
    node.handle_timer(now=50.0)
    assert node.take_dials() == []
    assert node.statistics().connect_failures == 0
    node.rejoin(now=60.0)
    assert node.take_dials() == [SEED]


# --- the overlay -----------------------------------------------------------------------

def test_gossip_discovery_joins_the_overlay_through_the_first_seed() -> None:
    node = control()
    node.start([SEED, "10.0.0.3:7000"], [], now=0.0)
    assert node.take_dials() == [SEED]  # the contact is a neighbour at once
    sent = node.datagrams_to_send(now=0.0)
    overlay = [data for address, data in sent if data[0] == OVERLAY_CHANNEL]
    membership = [address for address, data in sent if data[0] != OVERLAY_CHANNEL]
    assert overlay  # the JOIN
    assert set(membership) == {SEED, "10.0.0.3:7000"}  # SWIM pushes its state to each seed
    assert node.overlay is not None
    assert "10.0.0.3:7000" in node.overlay.passive()


def test_a_failed_overlay_dial_is_a_failed_neighbour_not_a_redial_loop() -> None:
    node = control()
    node.start([SEED], [], now=0.0)
    assert node.take_dials() == [SEED]
    node.dial_failed(SEED, now=0.1)
    assert node.overlay is not None
    assert SEED not in node.overlay.active()
    assert SEED not in node.wanted()
    assert node.take_dials() == []


def test_a_link_dialled_for_a_neighbour_dropped_meanwhile_is_closed() -> None:
    node = control()
    node.start([SEED], [], now=0.0)
    assert node.take_dials() == [SEED]
    # The contact drops us (a DISCONNECT) while our connection to it is still opening.
    disconnect = encode_message(OverlayKind.DISCONNECT, SEED)
    node.receive_datagram(SEED, bytes([OVERLAY_CHANNEL]) + disconnect, now=0.01)
    assert SEED not in node.wanted()
    node.dial_succeeded(SEED, key(2), now=0.02)
    node.link_up(key(2), SEED, now=0.02)
    assert node.take_closes() == [(key(2), "unwanted")]
    node.link_down(key(2), now=0.03)
    assert node.statistics().links == 0
    assert node.take_dials() == []


def test_datagrams_go_to_overlay_or_membership_by_their_first_byte() -> None:
    node = control()
    node.start([], [], now=0.0)
    assert node.overlay is not None
    assert node.membership is not None
    node.receive_datagram(SEED, bytes([OVERLAY_CHANNEL]) + b"\x01", now=0.1)
    assert node.overlay.statistics().rejected == 1
    assert sum(node.membership.statistics().rejected.values()) == 0
    node.receive_datagram(SEED, b"\x01\x09garbage", now=0.2)
    assert sum(node.membership.statistics().rejected.values()) == 1
    assert node.overlay.statistics().rejected == 1


# --- membership and overlay together ------------------------------------------------------

def _exchange(nodes: dict[str, NodeControl], now: float) -> None:
    """Hand every queued datagram to its addressee until none is left."""
    for _ in range(100):
        moved = False
        for source, node in nodes.items():
            for address, data in node.datagrams_to_send(now=now):
                if address in nodes:
                    nodes[address].receive_datagram(source, data, now=now)
                    moved = True
        if not moved:
            return
    raise AssertionError("datagrams kept flowing")


def test_members_feed_the_overlay_and_a_signed_leave_drops_the_link() -> None:
    a = control("10.0.0.1:7000", seed=1)
    b = control("10.0.0.2:7000", seed=2)
    nodes = {a.address: a, b.address: b}
    a.start([], [], now=0.0)
    b.start([a.address], [], now=0.0)
    _exchange(nodes, 0.0)
    assert any(isinstance(e, PeerJoined) for e in a.take_events())
    assert b.take_dials() == [a.address]
    assert a.take_dials() == [b.address]  # the JOIN made each the other's neighbour
    b.dial_succeeded(a.address, key(1), now=0.01)
    b.link_up(key(1), a.address, now=0.01)
    a.link_up(key(2), b.address, now=0.01)
    assert a.overlay is not None
    assert b.overlay is not None
    assert b.address in a.overlay.active()
    b.leave(now=1.0)
    _exchange(nodes, 1.0)
    assert any(isinstance(e, PeerLeft) for e in a.take_events())
    assert a.take_closes() == [(key(2), "PeerLeft")]
    assert b.address not in a.overlay.active() + a.overlay.passive()
    a.link_down(key(2), now=1.1)
    a.handle_timer(now=5.0)
    assert a.take_dials() == []  # a departed member is not asked back


def test_a_lost_overlay_link_is_redialled_before_the_neighbour_counts_as_failed() -> None:
    node = control()
    node.start([SEED], [], now=0.0)
    assert node.take_dials() == [SEED]
    node.dial_succeeded(SEED, key(2), now=0.01)
    node.link_up(key(2), SEED, now=0.01)
    assert node.overlay is not None
    node.datagrams_to_send(now=0.01)
    node.link_down(key(2), now=0.5)  # dropped, maybe only for a moment
    assert SEED in node.overlay.active()
    assert not [d for a, d in node.datagrams_to_send(now=0.5) if d[0] == OVERLAY_CHANNEL
                and a == SEED and d[1] == OverlayKind.DISCONNECT]
    now = 0.5
    while not (dials := node.take_dials()):
        now = node.get_timer()
        node.handle_timer(now=now)
    assert dials == [SEED]
    assert now < 0.5 + 1.5 * node.config.reconnect_initial_delay + 1e-9
    node.dial_failed(SEED, now=now)  # refused: gone for real
    assert SEED not in node.overlay.active()
    assert SEED not in node.wanted()


# --- any order of runtime reports -------------------------------------------------------

ADDRESSES = [f"10.0.0.{i}:7000" for i in range(2, 8)]
KEYS = {address: key(i + 2) for i, address in enumerate(ADDRESSES)}


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(
    ["link_up", "link_down", "dial_succeeded", "dial_failed", "timer", "keep", "garbage",
     "overlay_garbage"]), st.sampled_from(ADDRESSES)), max_size=60))
def test_any_order_of_runtime_reports_keeps_the_dialler_consistent(
        steps: list[tuple[str, str]]) -> None:
    """Runtimes report in whatever order sockets and handshakes complete; whatever that
    order, the control part never raises, dials only addresses it wants, closes only
    linked peers, and keeps its state bounded by what it was told."""
    node = control()
    node.start(ADDRESSES[:2], [], now=0.0)
    now = 0.0
    linked: set[bytes] = set()
    kept: set[str] = set()
    for action, address in steps:
        now += 0.05
        peer = KEYS[address]
        if action == "link_up":
            node.link_up(peer, address, now=now)
            linked.add(peer)
        elif action == "link_down":
            node.link_down(peer, now=now)
            linked.discard(peer)
        elif action == "dial_succeeded":
            node.dial_succeeded(address, peer, now=now)
        elif action == "dial_failed":
            node.dial_failed(address, now=now)
        elif action == "timer":
            now = max(now, min(node.get_timer(), now + 5.0))
            node.handle_timer(now=now)
        elif action == "keep":
            node.keep(address, now=now)
            kept.add(address)
        elif action == "garbage":
            node.receive_datagram(address, b"\x01\x02garbage", now=now)
        else:
            node.receive_datagram(address, bytes([OVERLAY_CHANNEL]) + b"\x03\x01", now=now)
        wanted = set(node.wanted())
        assert set(node.take_dials()) <= wanted
        for peer_key, _reason in node.take_closes():
            assert peer_key in linked
        assert node.statistics().links == len(linked)
        assert kept <= wanted
        assert node.overlay is not None
        assert len(wanted - kept) <= node.config.overlay.active_size
        node.datagrams_to_send(now=now)
        node.take_events()


# --- sealed datagrams, end to end ----------------------------------------------------------

def test_sealed_nodes_join_through_a_seed_they_only_know_by_address() -> None:
    """The joiner knows the seed's address, not its key: a WHOIS/IAM exchange comes
    first, then everything travels sealed, and names never appear in a datagram."""
    nodes = {address: control(address, seed=i + 1, sealed=True)
             for i, address in enumerate(("10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"))}
    seed_address = "10.0.0.1:7000"
    wire_bytes = bytearray()
    for address, node in nodes.items():
        node.start([] if address == seed_address else [seed_address], [], now=0.0)
    now = 0.0
    for _ in range(40):
        for source, node in nodes.items():
            for address, data in node.datagrams_to_send(now=now):
                wire_bytes += data
                nodes[address].receive_datagram(source, data, now=now)
        now += 0.1
        for node in nodes.values():
            if node.get_timer() <= now:
                node.handle_timer(now=now)
    for node in nodes.values():
        assert len([m for m in node.members() if m.state == "alive"]) == 3
        stats = node.statistics().datagrams
        assert stats is not None
        assert stats.rejected == {}
        assert stats.opened > 0
    assert sum(n.statistics().datagrams.keys_learned for n in nodes.values()) >= 1  # type: ignore[union-attr]
    for needle in (b"10.0.0.1:7000", b"10.0.0.2:7000", b"10.0.0.3:7000"):
        assert needle not in wire_bytes  # node ids here are their addresses


def test_a_sealed_node_refuses_unsealed_datagrams() -> None:
    node = control(sealed=True)
    node.start([], [], now=0.0)
    node.receive_datagram(SEED, bytes([OVERLAY_CHANNEL]) + b"\x01", now=0.1)
    node.receive_datagram(SEED, b"\x01\x02" + bytes(40), now=0.2)
    stats = node.statistics()
    assert stats.datagrams is not None
    assert stats.datagrams.rejected == {"unsealed": 2}
    assert stats.overlay is not None
    assert stats.overlay.rejected == 0


def test_seeds_a_dns_name_no_longer_resolves_to_are_neither_retried_nor_dialled() -> None:
    """Found in review: addresses a DNS seed once resolved to were kept as seeds and, with
    static discovery, as links for good: every dead pod's address dialled forever."""
    node = control(discovery=STATIC)
    node.start([], [], now=0.0)
    node.add_seeds(["10.0.0.7:7000", "10.0.0.8:7000"], now=0.0)
    assert set(node.take_dials()) == {"10.0.0.7:7000", "10.0.0.8:7000"}
    assert {a for a, _ in node.datagrams_to_send(now=0.0)} >= {"10.0.0.8:7000"}
    for address in ("10.0.0.7:7000", "10.0.0.8:7000"):
        node.dial_failed(address, now=0.0)
    node.drop_seeds(["10.0.0.8:7000"], now=0.0)
    node.handle_timer(now=60.0)
    dials = node.take_dials()
    assert "10.0.0.7:7000" in dials
    assert "10.0.0.8:7000" not in dials
    pushed_to = {address for address, _ in node.datagrams_to_send(now=60.0)}
    node.handle_timer(now=120.0)
    pushed_to |= {address for address, _ in node.datagrams_to_send(now=120.0)}
    assert "10.0.0.8:7000" not in pushed_to
