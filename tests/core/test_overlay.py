"""Deterministic tests of HyParView: a stepped clock and an in-memory datagram network."""

from __future__ import annotations

import heapq
import random
from collections import deque

import pytest
from hypothesis import given, settings, strategies as st

from somasync.config import OverlayConfig
from somasync.core.overlay import (
    HyParView,
    OverlayKind,
    OverlayMessage,
    decode_message,
    encode_message,
)
from somasync.errors import ConfigError, DecodeError

CONFIG = OverlayConfig.local()
LATENCY = 0.001
LINK_TIMEOUT = 5.0  # a transport's keepalive: a link whose bytes cannot cross dies after it
CUT = b""  # a link-timeout event: neighbour_down if the link is still cut and still used


class Net:
    """Moves datagrams between HyParView instances with a fixed latency (so in order
    per pair), optional loss, and crashed nodes that neither send nor receive. Like a
    transport, it reports ``neighbour_down`` for links to crashed nodes: for existing
    links when the crash happens, for new ones when they are opened. A partition drops
    datagrams across its cut and, like a transport's keepalive, reports links across it
    down ``LINK_TIMEOUT`` after the cut (existing links) or after they are opened."""

    def __init__(self, *, seed: int = 1, config: OverlayConfig = CONFIG,
                 loss: float = 0.0) -> None:
        self.seed = seed
        self.config = config
        self.loss = loss
        self.rng = random.Random(seed)
        self.now = 0.0
        self.nodes: dict[str, HyParView] = {}
        self.crashed: set[str] = set()
        self.side: dict[str, int] | None = None  # partition: node -> side
        self.wakeups: dict[str, int] = {}
        self.changes: list[tuple[float, str, str, bool]] = []
        self._events: list[tuple[float, int, str, str, bytes | None]] = []
        self._timers: list[tuple[float, int, str]] = []
        self._deadline: dict[str, float] = {}
        self._seq = 0

    def add(self, name: str, contact: str | None = None) -> HyParView:
        node = HyParView(name, self.config, rng=random.Random(f"{self.seed}/{name}"),
                         now=self.now)
        self.nodes[name] = node
        if contact is not None:
            node.join(contact, now=self.now)
        self._collect(name)
        return node

    def live(self) -> dict[str, HyParView]:
        return {n: node for n, node in self.nodes.items() if n not in self.crashed}

    def crash(self, names: list[str]) -> None:
        self.crashed.update(names)
        for name, node in self.live().items():
            for peer in node.active():
                if peer in self.crashed:
                    self._push(self.now + LATENCY, name, peer, None)

    def cut(self, a: str, b: str) -> bool:
        return self.side is not None and self.side[a] != self.side[b]

    def partition(self, *sides: list[str]) -> None:
        self.side = {name: number for number, side in enumerate(sides) for name in side}
        for name, node in self.live().items():
            for peer in node.active():
                if self.cut(name, peer):
                    self._push(self.now + LINK_TIMEOUT, name, peer, CUT)

    def heal(self) -> None:
        self.side = None

    def _push(self, at: float, dest: str, source: str, data: bytes | None) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, dest, source, data))

    def _collect(self, name: str, *, after_timer: bool = False) -> None:
        node = self.nodes[name]
        for dest, data in node.messages_to_send():
            if dest in self.crashed or self.cut(name, dest) or (
                    self.loss and self.rng.random() < self.loss):
                continue
            self._push(self.now + LATENCY, dest, name, data)
        for peer, up in node.take_changes():
            self.changes.append((self.now, name, peer, up))
            if up and peer in self.crashed:  # the connect fails
                self._push(self.now + LATENCY, name, peer, None)
            elif up and self.cut(name, peer):  # the connect times out
                self._push(self.now + LINK_TIMEOUT, name, peer, CUT)
        deadline = node.get_timer()
        # Due now is fine after a datagram; after handle_timer it would spin.
        assert deadline > self.now or (deadline == self.now and not after_timer), name
        if self._deadline.get(name) != deadline:
            self._deadline[name] = deadline
            self._seq += 1
            heapq.heappush(self._timers, (deadline, self._seq, name))

    def step(self) -> None:
        event_at = self._events[0][0] if self._events else float("inf")
        while self._timers:  # drop stale timer entries
            at, _, name = self._timers[0]
            if name not in self.crashed and self._deadline.get(name) == at:
                break
            heapq.heappop(self._timers)
        timer_at = self._timers[0][0] if self._timers else float("inf")
        if event_at <= timer_at:
            self.now, _, dest, source, data = heapq.heappop(self._events)
            if dest in self.crashed:
                return
            if data == CUT:
                if not self.cut(dest, source) or source not in self.nodes[dest].active():
                    return
                self.nodes[dest].neighbour_down(source, now=self.now)
            elif data is None:
                self.nodes[dest].neighbour_down(source, now=self.now)
            elif self.cut(dest, source):  # was in flight when the cut came
                return
            else:
                self.nodes[dest].receive(source, data, now=self.now)
            self._collect(dest)
        else:
            self.now, _, name = heapq.heappop(self._timers)
            del self._deadline[name]
            self.wakeups[name] = self.wakeups.get(name, 0) + 1
            self.nodes[name].handle_timer(now=self.now)
            self._collect(name, after_timer=True)

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        for _ in range(2_000_000):
            next_at = min(self._events[0][0] if self._events else float("inf"),
                          self._timers[0][0] if self._timers else float("inf"))
            if next_at > end:
                self.now = end
                return
            self.step()
        raise AssertionError("the network never went quiet")

    def settle(self) -> None:
        """Step until no datagram is in flight and no request is waiting for an answer."""
        for _ in range(100_000):
            if not self._events and all(n.statistics().pending == 0
                                        for n in self.live().values()):
                return
            self.step()
        raise AssertionError("the overlay never settled")


def build(n: int, *, seed: int = 1, loss: float = 0.0, warmup: float = 15.0,
          config: OverlayConfig = CONFIG) -> Net:
    """``n`` nodes joining one after another through ``n0``, then ``warmup`` seconds."""
    net = Net(seed=seed, loss=loss, config=config)
    net.add("n0")
    for i in range(1, n):
        net.add(f"n{i}", contact="n0")
        net.run(0.02)
    net.run(warmup)
    return net


def connected(net: Net) -> bool:
    live = net.live()
    start = next(iter(live))
    seen, todo = {start}, deque([start])
    while todo:
        for peer in live[todo.popleft()].active():
            if peer in live and peer not in seen:
                seen.add(peer)
                todo.append(peer)
    return seen == set(live)


def assert_views_sound(net: Net) -> None:
    for name, node in net.live().items():
        active, passive = node.active(), node.passive()
        assert name not in active
        assert name not in passive
        assert not set(active) & set(passive), name
        assert len(set(active)) == len(active) <= CONFIG.active_size
        assert len(set(passive)) == len(passive) <= CONFIG.passive_size


def assert_symmetric(net: Net) -> None:
    live = net.live()
    for name, node in live.items():
        for peer in node.active():
            assert name in live[peer].active(), f"{name} -> {peer} is one-sided"


@pytest.fixture(scope="module")
def mesh100() -> Net:
    net = build(100)
    net.settle()
    return net


# --- joining and shuffling ----------------------------------------------------------


def test_join_of_100_nodes_through_one_contact(mesh100: Net) -> None:
    net = mesh100
    assert_views_sound(net)
    sizes = [len(node.active()) for node in net.nodes.values()]
    assert min(sizes) >= 1
    assert sum(sizes) / len(sizes) >= CONFIG.active_size - 1  # nearly all views are full
    assert_symmetric(net)
    assert connected(net)
    assert sum(node.statistics().rejected for node in net.nodes.values()) == 0
    # The contact took every JOIN but kept no more neighbours than anyone else.
    assert net.nodes["n0"].statistics().joins == 99


def test_passive_views_fill_through_shuffles(mesh100: Net) -> None:
    passive = [len(node.passive()) for node in mesh100.nodes.values()]
    assert min(passive) >= CONFIG.passive_size // 2
    assert sum(passive) / len(passive) >= 0.9 * CONFIG.passive_size
    assert all(node.statistics().shuffles >= 10 for node in mesh100.nodes.values())


def test_same_seed_gives_the_same_run() -> None:
    def changes(seed: int) -> list[tuple[float, str, str, bool]]:
        net = build(30, seed=seed, warmup=5.0)
        net.crash([f"n{i}" for i in range(0, 30, 3)])
        net.run(5.0)
        return net.changes

    first = changes(7)
    assert first == changes(7)
    assert first != changes(8)


# --- failures -----------------------------------------------------------------------


def test_overlay_heals_after_half_the_nodes_crash() -> None:
    net = build(100, seed=3)
    victims = random.Random(3).sample(sorted(net.nodes), 50)
    net.crash(victims)
    net.run(10.0)
    net.settle()
    assert_views_sound(net)
    for name, node in net.live().items():
        assert not set(node.active()) & net.crashed, name
        assert node.active(), name
    assert_symmetric(net)
    assert connected(net)
    stats = [node.statistics() for node in net.live().values()]
    assert sum(s.failures for s in stats) > 0
    assert sum(s.promotions for s in stats) > 0
    assert sum(s.neighbor_timeouts for s in stats) > 0  # crashed passive entries dropped


def test_overlay_stays_connected_under_datagram_loss() -> None:
    net = build(60, seed=5, loss=0.05, warmup=20.0)
    assert_views_sound(net)
    assert connected(net)
    assert all(node.active() for node in net.nodes.values())
    one_sided = sum(name not in net.nodes[peer].active()
                    for name, node in net.nodes.items() for peer in node.active())
    links = sum(len(node.active()) for node in net.nodes.values())
    assert one_sided <= links // 20


def test_isolated_node_rejoins_its_contact() -> None:
    net = Net()
    net.add("a")
    b = net.add("b", contact="a")
    net.run(0.1)
    assert b.active() == ["a"]
    net.crash(["a"])
    net.run(0.1)
    assert b.active() == []
    net.crashed.discard("a")  # a comes back (its state kept, as after a partition)
    net.run(3 * CONFIG.shuffle_interval)
    assert b.active() == ["a"]
    assert net.nodes["a"].active() == ["b"]


def cross_links(net: Net, side: dict[str, int]) -> int:
    return sum(side[name] != side[peer]
               for name, node in net.live().items() for peer in node.active())


@pytest.mark.parametrize("seed", [1, 2])
def test_overlay_remerges_after_a_partition_heals(seed: int) -> None:
    net = build(80, seed=seed)
    halves = [f"n{i}" for i in range(40)], [f"n{i}" for i in range(40, 80)]
    side = {name: number for number, half in enumerate(halves) for name in half}
    assert cross_links(net, side) > 0
    net.partition(*halves)
    net.run(60.0)
    # Every link across the cut failed, and each half filled its views from its own side.
    assert cross_links(net, side) == 0
    assert not connected(net)
    assert all(len(node.active()) >= 1 for node in net.nodes.values())
    assert sum(node.statistics().reconnecting for node in net.nodes.values()) > 0
    net.heal()
    healed_at = net.now
    while not connected(net):
        assert net.now - healed_at < 10.0, "the halves did not merge within 10 s"
        net.run(0.25)
    net.run(10.0 - (net.now - healed_at))
    net.settle()
    assert connected(net)
    assert cross_links(net, side) > 0
    assert_views_sound(net)
    assert_symmetric(net)
    assert all(len(node.active()) >= 1 for node in net.nodes.values())
    stats = [node.statistics() for node in net.nodes.values()]
    assert sum(s.reconnects for s in stats) > 0
    assert sum(s.reconnecting for s in stats) == 0  # everyone answered: nothing left


def test_without_reconnecting_a_healed_partition_stays_split() -> None:
    """The control for the test above: the paper's rules alone never re-merge."""
    net = build(80, seed=1, config=CONFIG.replace(reconnect_timeout=0.0))
    net.partition([f"n{i}" for i in range(40)], [f"n{i}" for i in range(40, 80)])
    net.run(60.0)
    net.heal()
    net.run(10.0)
    assert not connected(net)
    assert all(node.statistics().reconnect_requests == 0 for node in net.nodes.values())


# --- single-node rules ---------------------------------------------------------------


def node(me: str = "me", config: OverlayConfig = CONFIG) -> HyParView:
    return HyParView(me, config, rng=random.Random(0), now=0.0)


def sent(hpv: HyParView) -> list[tuple[str, OverlayMessage]]:
    return [(dest, decode_message(data)) for dest, data in hpv.messages_to_send()]


def msg(kind: OverlayKind, sender: str, **fields: object) -> bytes:
    return encode_message(kind, sender, **fields)  # type: ignore[arg-type]


def fill_active(hpv: HyParView, peers: list[str]) -> None:
    for peer in peers:
        hpv.receive(peer, msg(OverlayKind.NEIGHBOR, peer, high_priority=True), now=0.0)
    hpv.messages_to_send()
    hpv.take_changes()


def test_full_view_refuses_low_priority_and_evicts_for_high() -> None:
    hpv = node()
    peers = [f"p{i}" for i in range(CONFIG.active_size)]
    fill_active(hpv, peers)
    assert hpv.active() == peers
    hpv.receive("low", msg(OverlayKind.NEIGHBOR, "low"), now=0.0)
    [(dest, reply)] = sent(hpv)
    assert dest == "low"
    assert reply.kind == OverlayKind.NEIGHBOR_REPLY
    assert not reply.accepted
    assert "low" not in hpv.active()
    hpv.receive("high", msg(OverlayKind.NEIGHBOR, "high", high_priority=True), now=0.0)
    out = sent(hpv)
    [victim] = [d for d, m in out if m.kind == OverlayKind.DISCONNECT]
    assert victim in peers
    assert victim in hpv.passive()
    assert victim not in hpv.active()
    assert ("high", True) in hpv.take_changes()
    assert any(d == "high" and m.accepted for d, m in out)
    assert len(hpv.active()) == CONFIG.active_size


def test_unanswered_neighbor_request_drops_the_entry() -> None:
    hpv = node()
    fill_active(hpv, ["a"])
    hpv.receive("x", msg(OverlayKind.SHUFFLE_REPLY, "x", entries=["q1", "q2"]), now=0.0)
    assert hpv.statistics().reject_reasons == {"unsolicited": 1}  # no shuffle of ours
    # A shuffle walk ends here: its entries enter the passive view, and since the
    # active view has room, they are asked (low priority) to become neighbours.
    hpv.receive("a", msg(OverlayKind.SHUFFLE, "a", node="o", ttl=1, entries=["q1", "q2"]),
                now=0.0)
    out = sent(hpv)
    assert ("o", OverlayKind.SHUFFLE_REPLY) in [(d, m.kind) for d, m in out]
    requests = {d: m.high_priority for d, m in out if m.kind == OverlayKind.NEIGHBOR}
    assert requests == {"o": False, "q1": False, "q2": False}
    hpv.receive("a", msg(OverlayKind.DISCONNECT, "a"), now=0.1)
    assert hpv.take_changes() == [("a", False)]
    assert hpv.messages_to_send() == []  # "a" just left us: it is not asked straight back
    assert hpv.get_timer() == pytest.approx(CONFIG.neighbor_timeout)
    hpv.handle_timer(now=CONFIG.neighbor_timeout)
    assert hpv.passive() == ["a"]  # the silent entries are gone
    assert hpv.statistics().neighbor_timeouts == 3
    # Each gets a DISCONNECT, in case only its reply was lost.
    assert {d for d, m in sent(hpv) if m.kind == OverlayKind.DISCONNECT} == {"o", "q1", "q2"}


def test_neighbour_down_promotes_with_high_priority_when_alone() -> None:
    hpv = node()
    fill_active(hpv, ["a"])
    hpv.receive("a", msg(OverlayKind.SHUFFLE, "a", node="o", ttl=1, entries=["b"]), now=0.0)
    hpv.receive("o", msg(OverlayKind.NEIGHBOR_REPLY, "o", accepted=False), now=0.0)
    hpv.receive("b", msg(OverlayKind.NEIGHBOR_REPLY, "b", accepted=False), now=0.0)
    assert hpv.statistics().neighbor_refusals == 2
    hpv.messages_to_send()
    hpv.neighbour_down("a", now=0.5)
    assert hpv.take_changes() == [("a", False)]
    assert hpv.active() == []
    assert hpv.passive() == ["o", "b"]
    out = sent(hpv)
    # A DISCONNECT, should only the link have failed; o and b refused us less than
    # shuffle_interval ago, so they are not asked again yet.
    assert [(d, m.kind) for d, m in out] == [("a", OverlayKind.DISCONNECT)]
    requests: dict[str, bool] = {}
    for _ in range(5):
        hpv.handle_timer(now=hpv.get_timer())
        requests.update((d, m.high_priority) for d, m in sent(hpv)
                        if m.kind == OverlayKind.NEIGHBOR)
        if requests:
            break
    assert sorted(requests) == ["b", "o"]
    assert sorted(requests.values()) == [False, True]  # one high-priority request at once
    [peer] = [p for p, high in requests.items() if high]
    hpv.receive(peer, msg(OverlayKind.NEIGHBOR_REPLY, peer, accepted=True), now=2.0)
    assert hpv.active() == [peer]
    assert peer not in hpv.passive()
    assert hpv.take_changes() == [(peer, True)]
    assert hpv.statistics().promotions == 1


def test_a_disconnect_that_arrives_after_the_link_broke_is_no_failure_to_retry() -> None:
    """A neighbour that drops us closes its link and sends DISCONNECT; over TCP and UDP
    the close can win. The link break looks like a failure, but the DISCONNECT that
    follows says it was on purpose: the peer must not be asked back (with high
    priority, it would have to evict someone to take us)."""
    hpv = node(config=OverlayConfig.local().replace(reconnect_interval=2.0))
    fill_active(hpv, ["a", "b"])
    hpv.neighbour_down("a", now=1.0)
    assert hpv.statistics().reconnecting == 1
    hpv.receive("a", msg(OverlayKind.DISCONNECT, "a"), now=1.001)
    assert hpv.statistics().reconnecting == 0
    assert "a" in hpv.passive()
    hpv.messages_to_send()
    run_timers(hpv, 30.0)
    assert hpv.statistics().reconnect_requests == 0


RECONNECT = OverlayConfig(shuffle_interval=10.0, neighbor_timeout=1.0, reconnect_interval=2.0,
                          reconnect_timeout=10.0)


def run_timers(hpv: HyParView, until: float) -> tuple[int, list[tuple[float, str, bool]]]:
    """Call handle_timer whenever due up to ``until``; the wakeups, and the NEIGHBOR
    requests sent (time, peer, high priority)."""
    wakeups = 0
    requests: list[tuple[float, str, bool]] = []
    while (at := hpv.get_timer()) <= until:
        hpv.handle_timer(now=at)
        wakeups += 1
        requests += [(at, d, m.high_priority) for d, m in sent(hpv)
                     if m.kind == OverlayKind.NEIGHBOR]
    return wakeups, requests


def test_idle_node_wakes_only_to_shuffle_and_a_failed_neighbour_briefly_more() -> None:
    hpv = node(config=RECONNECT)
    peers = [f"p{i}" for i in range(RECONNECT.active_size)]
    fill_active(hpv, peers)
    wakeups, requests = run_timers(hpv, 100.0)
    assert wakeups == hpv.statistics().shuffles >= 9  # nothing but one per shuffle
    assert requests == []
    hpv.neighbour_down("p0", now=100.0)
    assert hpv.statistics().reconnecting == 1
    assert hpv.get_timer() == pytest.approx(102.0)
    wakeups, requests = run_timers(hpv, 120.0)
    # Asked back every reconnect_interval while remembered (low priority: there is a
    # free slot), never answering; forgotten after reconnect_timeout.
    assert [t for t, _, _ in requests] == pytest.approx([102.0, 104.0, 106.0, 108.0])
    assert {(peer, high) for _, peer, high in requests} == {("p0", False)}
    stats = hpv.statistics()
    assert stats.reconnecting == 0
    assert stats.reconnect_requests == 4
    assert stats.neighbor_timeouts == 4
    assert "p0" not in hpv.passive()
    before = hpv.statistics().shuffles
    wakeups, requests = run_timers(hpv, 220.0)
    assert wakeups == hpv.statistics().shuffles - before == 10  # idle again
    assert requests == []


def test_full_node_reconnects_with_high_priority_one_request_at_a_time() -> None:
    hpv = node(config=RECONNECT.replace(reconnect_timeout=60.0))
    peers = [f"p{i}" for i in range(RECONNECT.active_size)]
    fill_active(hpv, peers)
    for peer in peers[:3]:
        hpv.neighbour_down(peer, now=1.0)
    assert hpv.statistics().reconnecting == 3
    fill_active(hpv, ["q0", "q1", "q2"])  # refilled from elsewhere: full again
    hpv.take_changes()
    _, requests = run_timers(hpv, 7.5)
    # One outstanding at a time, the least recently tried first, with high priority.
    assert [(t, peer, high) for t, peer, high in requests] == [
        (3.0, "p0", True), (5.0, "p1", True), (7.0, "p2", True)]
    assert hpv.statistics().pending == 1
    hpv.receive("p2", msg(OverlayKind.NEIGHBOR_REPLY, "p2", accepted=True), now=7.6)
    assert "p2" in hpv.active()
    assert len(hpv.active()) == RECONNECT.active_size
    [(victim, disconnect)] = sent(hpv)
    assert disconnect.kind == OverlayKind.DISCONNECT  # the full view evicted one
    stats = hpv.statistics()
    assert (stats.reconnects, stats.reconnecting) == (1, 2)
    # With a free slot the next request is low priority; a peer that refuses (reachable,
    # only full) is forgotten and kept as a backup.
    other = next(p for p in hpv.active() if p != "p2")
    hpv.receive(other, msg(OverlayKind.DISCONNECT, other), now=7.7)
    assert [(d, m.kind) for d, m in sent(hpv)] == [(victim, OverlayKind.NEIGHBOR)]  # _fill
    _, requests = run_timers(hpv, 9.5)
    assert requests == [(9.0, "p0", False)]
    hpv.receive("p0", msg(OverlayKind.NEIGHBOR_REPLY, "p0", accepted=False), now=9.6)
    assert hpv.statistics().reconnecting == 1
    assert "p0" in hpv.passive()
    # A remembered peer that becomes a neighbour any other way is forgotten too.
    hpv.receive("p1", msg(OverlayKind.NEIGHBOR, "p1", high_priority=True), now=9.7)
    stats = hpv.statistics()
    assert (stats.reconnects, stats.reconnecting) == (2, 0)


def test_reconnect_list_keeps_the_newest_passive_size_entries() -> None:
    config = RECONNECT.replace(active_size=8, passive_size=3, reconnect_timeout=60.0)
    hpv = node(config=config)
    peers = [f"p{i}" for i in range(8)]
    fill_active(hpv, peers)
    for i, peer in enumerate(peers):
        hpv.neighbour_down(peer, now=1.0 + i / 100)
    assert hpv.active() == []
    assert hpv.statistics().reconnecting == 3
    _, requests = run_timers(hpv, 30.0)
    assert {peer for _, peer, _ in requests} == {"p5", "p6", "p7"}
    assert len(requests) == 14  # one every 2 s: the list does not multiply requests


def test_isolated_node_rejoins_while_a_reconnect_is_outstanding() -> None:
    hpv = node(config=RECONNECT.replace(reconnect_timeout=60.0))
    hpv.join("c", now=0.0)
    hpv.receive("c", msg(OverlayKind.NEIGHBOR_REPLY, "c", accepted=True), now=0.0)
    fill_active(hpv, ["x"])
    shuffle_at = hpv.get_timer()
    hpv.receive("c", msg(OverlayKind.DISCONNECT, "c"), now=0.1)
    hpv.neighbour_down("c", now=0.1)  # the contact is gone from both views
    # x fails so that its reconnect requests fall due with every shuffle.
    hpv.neighbour_down("x", now=shuffle_at - RECONNECT.reconnect_interval)
    assert (hpv.active(), hpv.passive()) == ([], [])
    hpv.messages_to_send()
    hpv.handle_timer(now=shuffle_at)
    out = [(d, m.kind) for d, m in sent(hpv)]
    assert ("x", OverlayKind.NEIGHBOR) in out
    assert ("c", OverlayKind.JOIN) in out


def test_join_walk_gives_the_joiner_several_neighbours() -> None:
    net = Net()
    for i in range(8):
        net.add(f"n{i}", contact="n0" if i else None)
        net.run(0.05)
    joiner = net.add("new", contact="n3")
    net.run(0.05)
    assert len(joiner.active()) >= 3
    assert_symmetric(net)


def test_a_node_never_adds_itself() -> None:
    hpv = node()
    hpv.join("me", now=0.0)
    hpv.receive("a", msg(OverlayKind.NEIGHBOR, "a", high_priority=True), now=0.0)
    hpv.receive("a", msg(OverlayKind.FORWARD_JOIN, "a", node="me", ttl=0), now=0.0)
    hpv.receive("a", msg(OverlayKind.SHUFFLE, "a", node="z", ttl=1, entries=["me", "a"]),
                now=0.0)
    assert hpv.active() == ["a"]
    assert "me" not in hpv.passive()
    assert "a" not in hpv.passive()


def test_sender_must_match_the_transport_address() -> None:
    hpv = node()
    hpv.receive("evil", msg(OverlayKind.NEIGHBOR, "victim", high_priority=True), now=0.0)
    hpv.receive("me", msg(OverlayKind.NEIGHBOR, "me", high_priority=True), now=0.0)
    stats = hpv.statistics()
    assert stats.reject_reasons == {"sender_mismatch": 1, "from_self": 1}
    assert hpv.active() == []
    assert hpv.messages_to_send() == []


# --- the codec -----------------------------------------------------------------------

addresses = st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= 255)
messages = st.one_of(
    st.builds(OverlayMessage, st.sampled_from([OverlayKind.JOIN, OverlayKind.DISCONNECT]),
              addresses),
    st.builds(OverlayMessage, st.just(OverlayKind.FORWARD_JOIN), addresses, node=addresses,
              ttl=st.integers(0, 255)),
    st.builds(OverlayMessage, st.just(OverlayKind.NEIGHBOR), addresses,
              high_priority=st.booleans()),
    st.builds(OverlayMessage, st.just(OverlayKind.NEIGHBOR_REPLY), addresses,
              accepted=st.booleans()),
    st.builds(OverlayMessage, st.just(OverlayKind.SHUFFLE), addresses, node=addresses,
              ttl=st.integers(0, 255), entries=st.lists(addresses, max_size=8).map(tuple)),
    st.builds(OverlayMessage, st.just(OverlayKind.SHUFFLE_REPLY), addresses,
              entries=st.lists(addresses, max_size=8).map(tuple)),
)


def encode(m: OverlayMessage) -> bytes:
    return encode_message(m.kind, m.sender, node=m.node, ttl=m.ttl,
                          high_priority=m.high_priority, accepted=m.accepted,
                          entries=m.entries)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_codec_round_trips_and_every_prefix_is_truncated(m: OverlayMessage) -> None:
    data = encode(m)
    assert decode_message(data) == m
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode_message(data[:cut])
    with pytest.raises(DecodeError):
        decode_message(data + b"\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_counted_never_raised(data: bytes) -> None:
    hpv = node()
    fill_active(hpv, ["peer"])
    hpv.receive("peer", data, now=0.0)
    hpv.receive("peer", b"\x06\x01\x04peer" + data, now=0.0)  # a SHUFFLE header, then junk
    stats = hpv.statistics()
    assert stats.messages_in == 3
    assert "me" not in hpv.active() + hpv.passive()


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "truncated"),
    (b"\x01", "truncated"),
    (b"\x01\x02\x01a", "bad_version"),
    (b"\x63\x01\x01a", "unknown_kind"),
    (b"\x01\x01\x00", "bad_address"),
    (b"\x01\x01\x05ab", "truncated"),
    (b"\x01\x01\x02\xff\xfe", "bad_address"),
    (b"\x01\x01\x01ax", "bad_length"),
    (b"\x03\x01\x01a\x02", "bad_message"),
    (b"\x07\x01\x01a\xff", "too_many"),
    (b"\x07\x01\x01a" + bytes([CONFIG.shuffle_active + CONFIG.shuffle_passive + 2]),
     "too_many"),
    (b"\x01\x01\x01a" + b"\x00" * 2000, "oversize"),
])
def test_bad_datagrams_are_counted_by_reason(data: bytes, reason: str) -> None:
    hpv = node()
    hpv.receive("a", data, now=0.0)
    assert hpv.statistics().reject_reasons == {reason: 1}
    assert hpv.statistics().rejected == 1
    assert hpv.active() == []
    assert hpv.messages_to_send() == []


def test_encode_refuses_addresses_over_255_bytes() -> None:
    with pytest.raises(ValueError, match="1-255 bytes"):
        encode_message(OverlayKind.JOIN, "x" * 256)
    with pytest.raises(ValueError, match="1-255 bytes"):
        HyParView("é" * 128, CONFIG, rng=random.Random(0), now=0.0)
    encode_message(OverlayKind.JOIN, "x" * 255)


def test_shuffles_shrink_to_fit_max_message() -> None:
    long = [f"{i:03d}" + "x" * 250 for i in range(5)]  # 253-byte addresses
    config = CONFIG.replace(max_message=600, active_size=1)  # full: asks nobody
    hpv = HyParView("me", config, rng=random.Random(0), now=0.0)
    fill_active(hpv, long[:1])
    for origin in long[1:]:  # walks ending here leave their origins in the passive view
        hpv.receive(long[0], msg(OverlayKind.SHUFFLE, long[0], node=origin, ttl=1), now=0.0)
    assert hpv.passive() == long[1:]
    assert all(len(data) <= 600 for _, data in hpv.messages_to_send())  # the replies
    shuffles: list[bytes] = []
    while not shuffles:
        hpv.handle_timer(now=hpv.get_timer())
        shuffles = [data for _, data in hpv.messages_to_send()
                    if decode_message(data).kind == OverlayKind.SHUFFLE]
    [data] = shuffles
    assert len(data) <= 600
    assert len(decode_message(data).entries) == 2  # of 4 passive entries, 2 fit


# --- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "field"), [
    ({"active_size": 0}, "overlay.active_size"),
    ({"passive_size": -1}, "overlay.passive_size"),
    ({"active_walk_length": 256}, "overlay.active_walk_length"),
    ({"passive_walk_length": 7}, "overlay.passive_walk_length"),
    ({"shuffle_interval": 0.0}, "overlay.shuffle_interval"),
    ({"shuffle_interval": float("nan")}, "overlay.shuffle_interval"),
    ({"shuffle_active": -1}, "overlay.shuffle_active"),
    ({"shuffle_passive": 300}, "overlay.shuffle_passive"),
    ({"neighbor_timeout": -1.0}, "overlay.neighbor_timeout"),
    ({"max_message": 100}, "overlay.max_message"),
    ({"reconnect_interval": 0.0}, "overlay.reconnect_interval"),
    ({"reconnect_interval": float("inf")}, "overlay.reconnect_interval"),
    ({"reconnect_timeout": -1.0}, "overlay.reconnect_timeout"),
    ({"reconnect_timeout": 1.0}, "overlay.reconnect_timeout"),  # < reconnect_interval
    ({"active_size": True}, "overlay.active_size"),
])
def test_config_validation_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        OverlayConfig(**changes)  # type: ignore[arg-type]
    assert info.value.field == field


def test_config_presets() -> None:
    assert OverlayConfig.lan() == OverlayConfig()
    assert OverlayConfig().active_size == 5
    assert OverlayConfig().passive_size == 30
    assert OverlayConfig(reconnect_timeout=0.0).reconnect_timeout == 0.0  # off
    assert OverlayConfig.local().shuffle_interval < OverlayConfig.lan().shuffle_interval
