"""Adaptive fanout (somasync.core.sizing and its hooks in NodeControl, HyParView, the
broadcast tree and the endpoint), driven with a stepped clock."""

from __future__ import annotations

import math
import random

import pytest

from somasync.config import (
    AdaptiveConfig,
    DiscoveryMethod,
    GossipConfig,
    NodeConfig,
    OverlayConfig,
    SecurityConfig,
)
from somasync.core.broadcast import BroadcastTree
from somasync.core.crypto import Identity
from somasync.core.node import SIZE_CHANNEL, NodeControl
from somasync.core.overlay import HyParView, OverlayKind, decode_message, encode_message
from somasync.core.sizing import (
    MAX_ESTIMATE,
    MAX_RANK,
    SKETCH_REGISTERS,
    SKETCH_SIZE,
    AdaptiveSizer,
    MeshSizeSketch,
    Sizing,
    decode_sketch,
    derive_sizing,
    encode_sketch,
    epidemic_fanout,
    hll_estimate,
)
from somasync.enterprise import EnterpriseGossipConfig
from somasync.errors import ConfigError, DecodeError
from somasync.testing import Mesh

ON = AdaptiveConfig(enabled=True)


def keys(count: int, start: int = 0) -> list[bytes]:
    """Distinct 32-byte keys (the sketch hashes whatever key it is given)."""
    return [i.to_bytes(32, "big") for i in range(start, start + count)]


# --- the pure function -------------------------------------------------------------------


def test_derived_values_follow_ln_n_and_the_target_probability() -> None:
    # ceil(ln N - ln(-ln p)): 2.97 added at p = 0.95, 6.91 at p = 0.999.
    assert epidemic_fanout(10, 0.95) == 6
    assert epidemic_fanout(100, 0.95) == 8
    assert epidemic_fanout(1000, 0.95) == 10
    assert epidemic_fanout(10_000, 0.95) == 13
    assert epidemic_fanout(1000, 0.999) == 14
    wide = ON.replace(degree_bounds=(1, 100), fanout_bounds=(1, 100), ihave_bounds=(1, 100),
                      max_anti_entropy_interval=100.0)
    small, large = (derive_sizing(n, wide, anti_entropy_interval=2.0) for n in (10, 1000))
    assert (small.degree, small.fanout, small.ihave_fanout) == (6, 6, 6)
    assert (large.degree, large.fanout, large.ihave_fanout) == (10, 10, 10)
    # memberlist's push-pull scale: x1 up to 32 nodes, ceil(log2(N/32)) + 1 above.
    assert small.anti_entropy_interval == 2.0
    assert large.anti_entropy_interval == 2.0 * 6
    assert derive_sizing(1000, wide.replace(target_delivery_probability=0.999),
                         anti_entropy_interval=2.0).degree == 14


def test_derived_values_stay_within_their_bounds() -> None:
    config = ON.replace(degree_bounds=(5, 8), fanout_bounds=(4, 6), ihave_bounds=(3, 7),
                        max_anti_entropy_interval=5.0)
    tiny = derive_sizing(1, config, anti_entropy_interval=2.0)
    assert (tiny.degree, tiny.fanout, tiny.ihave_fanout) == (5, 4, 3)
    assert tiny.anti_entropy_interval == 2.0
    huge = derive_sizing(10**9, config, anti_entropy_interval=2.0)
    assert (huge.degree, huge.fanout, huge.ihave_fanout) == (8, 6, 7)
    assert huge.anti_entropy_interval == 5.0


@pytest.mark.parametrize(("changes", "field"), [
    ({"degree_bounds": (6, 5)}, "adaptive.degree_bounds"),
    ({"degree_bounds": (0, 5)}, "adaptive.degree_bounds"),
    ({"degree_bounds": (5, 5000)}, "adaptive.degree_bounds"),
    ({"fanout_bounds": [4, 8]}, "adaptive.fanout_bounds"),
    ({"ihave_bounds": (3,)}, "adaptive.ihave_bounds"),
    ({"target_delivery_probability": 1.0}, "adaptive.target_delivery_probability"),
    ({"hysteresis": 0.0}, "adaptive.hysteresis"),
    ({"settle_time": -1.0}, "adaptive.settle_time"),
    ({"sketch_epoch": 4.0}, "adaptive.sketch_epoch"),
    ({"initial_estimate": 0}, "adaptive.initial_estimate"),
    ({"enabled": 1}, "adaptive.enabled"),
])
def test_invalid_adaptive_settings_name_their_field(changes: dict[str, object],
                                                    field: str) -> None:
    with pytest.raises(ConfigError) as info:
        AdaptiveConfig(**changes)  # type: ignore[arg-type]
    assert info.value.field == field


def test_pacing_bound_below_the_base_interval_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        NodeConfig(gossip=GossipConfig(anti_entropy_interval=20.0), adaptive=ON)
    assert info.value.field == "adaptive.max_anti_entropy_interval"


# --- hysteresis --------------------------------------------------------------------------


def test_an_estimate_hovering_at_a_degree_boundary_changes_nothing() -> None:
    # ceil(ln N + 2.97) steps from 7 to 8 at N = 56.3: estimates of 50 and 60 straddle it.
    assert epidemic_fanout(50, 0.95) == 7
    assert epidemic_fanout(60, 0.95) == 8
    sizer = AdaptiveSizer(ON.replace(degree_bounds=(1, 20), settle_time=0.0),
                          anti_entropy_interval=2.0)
    first = sizer.update(50, now=0.0)
    assert first is not None
    assert first.degree == 7
    now = 0.0
    for estimate in [60, 50, 60, 55, 58, 52, 61] * 10:
        now += 1.0
        assert sizer.update(estimate, now=now) is None
    assert sizer.current is first
    assert sizer.changes == 0
    # Past the hysteresis (25 %) from the basis of 50, it follows.
    grown = sizer.update(70, now=now + 1.0)
    assert grown is not None
    assert grown.degree == 8
    assert sizer.changes == 1


def test_changes_wait_for_the_settle_time() -> None:
    sizer = AdaptiveSizer(ON.replace(degree_bounds=(1, 20), settle_time=15.0),
                          anti_entropy_interval=2.0)
    assert sizer.update(10, now=100.0) is not None
    assert sizer.update(1000, now=110.0) is None  # 10 s after the change: too early
    later = sizer.update(1000, now=115.0)
    assert later is not None
    assert later.degree == 10


def test_an_estimate_past_the_hysteresis_with_the_same_values_is_no_change() -> None:
    sizer = AdaptiveSizer(ON.replace(degree_bounds=(5, 5), fanout_bounds=(4, 4),
                                     ihave_bounds=(4, 4), max_anti_entropy_interval=2.0,
                                     settle_time=0.0), anti_entropy_interval=2.0)
    assert sizer.update(10, now=0.0) is not None
    assert sizer.update(10_000, now=1.0) is None
    assert sizer.changes == 0


# --- the sketch --------------------------------------------------------------------------


def test_one_sketch_counts_distinct_keys_within_its_error() -> None:
    for count, tolerance in ((10, 0.05), (100, 0.1), (1000, 0.2), (20_000, 0.2)):
        sketch = MeshSizeSketch(b"self" * 8, ON, now=0.0)
        for other in keys(count - 1):
            single = MeshSizeSketch(other, ON, now=0.0)
            sketch.receive("x", single.tick(["x"], now=0.0)[0][1])
        assert abs(sketch.estimate() - count) <= tolerance * count, count


class SketchNet:
    """Sketches on a random regular-ish graph; datagrams delivered at the next tick."""

    def __init__(self, n: int, degree: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.names = [f"n{i}" for i in range(n)]
        self.sketches = {name: MeshSizeSketch(key, ON, now=0.0)
                         for name, key in zip(self.names, keys(n), strict=True)}
        self.neighbours: dict[str, list[str]] = {name: [] for name in self.names}
        for i, name in enumerate(self.names):  # a ring keeps it connected
            self._link(name, self.names[(i + 1) % n])
        while sum(len(v) for v in self.neighbours.values()) < n * degree:
            a, b = rng.sample(self.names, 2)
            self._link(a, b)
        self.now = 0.0
        self.sent = 0

    def _link(self, a: str, b: str) -> None:
        if b not in self.neighbours[a]:
            self.neighbours[a].append(b)
            self.neighbours[b].append(a)

    def tick(self) -> None:
        self.now += ON.sketch_interval
        out = []
        for name, sketch in self.sketches.items():
            out += [(name, to, data) for to, data in
                    sketch.tick(self.neighbours[name], now=self.now)]
        self.sent += len(out)
        for source, to, data in out:
            self.sketches[to].receive(source, data)

    def estimates(self) -> list[float]:
        return [s.estimate() for s in self.sketches.values()]


def test_gossiped_sketches_converge_within_the_diameter_and_then_fall_silent() -> None:
    net = SketchNet(500, degree=6)
    ticks = 0
    while ticks == 0 or net.sent:
        net.sent = 0
        net.tick()
        ticks += 1
        # A 500-node graph of mean degree 6 has a diameter of about 5; each tick is a
        # hop, and the last growth is passed on once more.
        assert ticks <= 12
    assert len(set(net.estimates())) == 1
    assert abs(net.estimates()[0] - 500) <= 3 * 0.065 * 500  # three standard errors
    for _ in range(5):
        net.tick()
    assert net.sent == 0, "a converged sketch sends nothing until the next epoch"


def test_a_departed_node_stops_being_counted_after_two_epochs() -> None:
    net = SketchNet(40, degree=4)
    for _ in range(10):
        net.tick()
    assert all(abs(e - 40) <= 2 for e in net.estimates())
    for name in net.names[20:]:  # half the mesh leaves
        del net.sketches[name]
    for name in net.names[:20]:
        net.neighbours[name] = [n for n in net.neighbours[name] if n in net.sketches]
    epoch = ON.sketch_epoch
    while net.now < epoch:  # the epoch they were counted in
        net.tick()
    net.tick()
    assert all(e >= 38 for e in net.estimates()), "the previous epoch still counts them"
    while net.now < 2 * epoch + 1:
        net.tick()
    # The ring lost its other half: what is left may be split, each part counts itself.
    assert all(e <= 21 for e in net.estimates())


@pytest.mark.parametrize("data", [
    b"",
    bytes(SKETCH_SIZE - 1),
    bytes(SKETCH_SIZE + 1),
    bytes([2]) + bytes(SKETCH_SIZE - 1),  # version 2
    encode_sketch(0, bytes([MAX_RANK + 1]) + bytes(255)),
])
def test_malformed_sketches_are_counted_and_dropped(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_sketch(data)
    sketch = MeshSizeSketch(b"k" * 32, ON, now=0.0)
    before = sketch.estimate()
    sketch.receive("x", data)
    assert sketch.estimate() == before
    assert sum(sketch.statistics().rejected.values()) == 1


def test_a_sketch_of_a_far_epoch_is_refused() -> None:
    sketch = MeshSizeSketch(b"k" * 32, ON, now=0.0)
    epoch = sketch.statistics().epoch
    full = encode_sketch(epoch + 5, bytes([10]) * 256)
    sketch.receive("x", full)
    assert sketch.statistics().rejected == {"epoch": 1}
    assert sketch.estimate() < 2


# --- the node ----------------------------------------------------------------------------


def sketch_of(count: int, epoch_now: float = 0.0) -> bytes:
    """The sketch datagram of a mesh of ``count`` nodes (without the channel byte)."""
    merged = MeshSizeSketch(keys(1, start=10**6)[0], ON, now=epoch_now)
    for key in keys(count - 1):
        merged.receive("x", MeshSizeSketch(key, ON, now=epoch_now)
                       .tick(["x"], now=epoch_now)[0][1])
    return merged.tick(["x"], now=epoch_now)[0][1]


def adaptive_node(adaptive: AdaptiveConfig = ON) -> NodeControl:
    config = NodeConfig(node_id="me", overlay=OverlayConfig.local(),
                        security=SecurityConfig(seal_datagrams=False), adaptive=adaptive)
    return NodeControl(config, Identity(bytes(32)), "10.0.0.1:7000",
                       rng=random.Random(1), now=0.0, run_membership=False)


def run_until(node: NodeControl, until: float, now: float) -> float:
    while (deadline := node.get_timer()) <= until:
        now = max(now, deadline)
        node.handle_timer(now=now)
    return until


def test_the_node_raises_its_degree_as_the_mesh_grows_from_10_to_1000() -> None:
    node = adaptive_node()
    node.start(["10.0.0.2:7000"], [], now=0.0)
    first = node.take_sizing()
    assert first is not None
    assert first.degree == 5
    overlay = node.overlay
    assert overlay is not None
    assert overlay.active_size == 5
    node.receive_datagram("10.0.0.2:7000", bytes([SIZE_CHANNEL]) + sketch_of(10), now=0.5)
    now = run_until(node, 20.0, 0.5)
    ten = node.take_sizing()
    assert ten is not None
    assert 9 <= ten.estimate <= 11
    assert (ten.degree, ten.ihave_fanout, ten.anti_entropy_interval) == (6, 6, 2.0)
    assert overlay.active_size == 6
    node.receive_datagram("10.0.0.2:7000", bytes([SIZE_CHANNEL]) + sketch_of(1000), now=now)
    run_until(node, 40.0, now)
    thousand = node.take_sizing()
    assert thousand is not None
    assert 800 <= thousand.estimate <= 1200
    assert (thousand.degree, thousand.fanout, thousand.anti_entropy_interval) == (10, 10, 10.0)
    assert overlay.active_size == 10
    assert node.statistics().sizing_changes == 2


def test_the_node_with_adaptive_fanout_off_sends_no_sketch_and_keeps_its_degree() -> None:
    node = adaptive_node(AdaptiveConfig())
    node.start(["10.0.0.2:7000"], [], now=0.0)
    node.receive_datagram("10.0.0.2:7000", bytes([SIZE_CHANNEL]) + sketch_of(1000), now=0.5)
    run_until(node, 40.0, 0.5)
    assert node.take_sizing() is None
    assert node.overlay is not None
    assert node.overlay.active_size == 5
    assert not any(data[:1] == bytes([SIZE_CHANNEL])
                   for _, data in node.datagrams_to_send(now=40.0))


def test_membership_counts_the_mesh_where_it_runs() -> None:
    config = NodeConfig(node_id="me", overlay=OverlayConfig.local(),
                        security=SecurityConfig(seal_datagrams=False),
                        adaptive=ON.replace(initial_estimate=500),
                        discovery=frozenset({DiscoveryMethod.GOSSIP}))
    node = NodeControl(config, Identity(bytes(32)), "10.0.0.1:7000",
                       rng=random.Random(1), now=0.0)
    node.start([], [], now=0.0)
    assert node.size_estimate() == 1.0  # alone: membership knows only itself
    first = node.take_sizing()
    assert first is not None
    assert first.degree == epidemic_fanout(500, 0.95) == 10
    assert node.statistics().sketch is None
    run_until(node, 20.0, 0.0)
    alone = node.take_sizing()
    assert alone is not None
    assert alone.degree == 5


# --- the overlay, the tree and the endpoint -------------------------------------------------


def test_a_shrinking_view_disconnects_extras_and_a_growing_one_asks_for_more() -> None:
    hpv = HyParView("me", OverlayConfig(active_size=6), rng=random.Random(0), now=0.0)
    peers = [f"p{i}" for i in range(6)]
    for peer in peers:
        hpv.receive(peer, encode_message(OverlayKind.NEIGHBOR, peer, high_priority=True),
                    now=0.0)
    for i in range(10):
        hpv.learn(f"q{i}", now=0.0)
    hpv.messages_to_send()
    hpv.take_changes()
    hpv.resize(4, now=1.0)
    assert len(hpv.active()) == 4
    out = [(to, decode_message(data)) for to, data in hpv.messages_to_send()]
    dropped = [to for to, m in out if m.kind == OverlayKind.DISCONNECT]
    assert len(dropped) == 2
    assert set(dropped) <= set(peers)
    assert set(dropped) <= set(hpv.passive())
    assert sorted(up for _, up in hpv.take_changes()) == [False, False]
    hpv.resize(8, now=2.0)
    requests = [to for to, data in hpv.messages_to_send()
                if decode_message(data).kind == OverlayKind.NEIGHBOR]
    assert len(requests) == 4  # one per free slot
    with pytest.raises(ValueError, match="size"):
        hpv.resize(0, now=3.0)


def test_the_ihave_fanout_caps_announcements_and_rotates_over_the_lazy_links() -> None:
    tree = BroadcastTree(lazy_timeout=0.25, graft_retry=0.5, max_missing=100)
    for link in range(1, 9):
        tree.link_up(link)
    for link in range(2, 9):
        tree.make_lazy(link, b"s")
    eager, lazy = tree.split_targets(b"s", received_from=None)
    assert eager == [1]
    assert lazy == list(range(2, 9))
    tree.lazy_fanout = 3
    announced: dict[int, int] = {}
    for _ in range(7):
        eager, lazy = tree.split_targets(b"s", received_from=None)
        assert eager == [1]
        assert len(lazy) == 3
        for link in lazy:
            announced[link] = announced.get(link, 0) + 1
    assert announced == dict.fromkeys(range(2, 9), 3)  # an equal share each
    assert len(tree.split_targets(b"s", received_from=2)[1]) == 3


def test_retune_sets_the_endpoints_fanout_and_anti_entropy_interval() -> None:
    mesh = Mesh(GossipConfig(forwarding="push", fanout=2))
    for name in ("a", "b", "c", "d", "e"):
        mesh.add(name)
    for other in ("b", "c", "d", "e"):
        mesh.connect("a", other)
    mesh.settle()
    endpoint = mesh.nodes["a"]
    endpoint.retune(Sizing(estimate=1000, degree=10, fanout=3, ihave_fanout=10,
                           anti_entropy_interval=7.0))
    assert endpoint.config.fanout == 3
    assert endpoint.config.anti_entropy_interval == 7.0
    targets = endpoint._strategy.targets(b"t", received_from=-1,
                                         rng=random.Random(1))
    assert len(targets) == 3
    tree_mesh = Mesh(GossipConfig())
    tree_mesh.add("x")
    tree_endpoint = tree_mesh.nodes["x"]
    tree_endpoint.retune(Sizing(estimate=10, degree=6, fanout=6, ihave_fanout=4,
                                anti_entropy_interval=2.0))
    assert tree_endpoint._tree is not None
    assert tree_endpoint._tree.lazy_fanout == 4


# --- the enterprise configuration ----------------------------------------------------------


def test_enterprise_presets_turn_adaptive_fanout_on_with_their_bounds() -> None:
    large = EnterpriseGossipConfig.for_large_networks()
    node = large.apply(NodeConfig())
    adaptive = node.adaptive
    assert adaptive.enabled
    assert adaptive.degree_bounds == adaptive.fanout_bounds == adaptive.ihave_bounds == (5, 10)
    assert adaptive.initial_estimate == 10_000
    assert adaptive.target_delivery_probability == 0.95
    assert adaptive.max_anti_entropy_interval >= node.gossip.anti_entropy_interval
    tuned = EnterpriseGossipConfig().with_adaptive_fanout(6, 20).with_epidemic_tuning(0.999)
    adaptive = tuned.to_adaptive_config()
    assert adaptive.enabled
    assert adaptive.degree_bounds == (6, 20)
    assert adaptive.target_delivery_probability == 0.999
    assert not EnterpriseGossipConfig().to_adaptive_config().enabled
    assert not EnterpriseGossipConfig().apply(NodeConfig()).adaptive.enabled


def test_the_sketch_estimate_is_reported_with_a_known_error() -> None:
    # 1.04 / sqrt(256) = 6.5 % above 640 nodes: 20 independent meshes of 2,000 nodes (new
    # keys each) stay within 4 standard errors, and their mean within 3.
    errors = []
    for mesh in range(20):
        sketch = MeshSizeSketch(keys(1, start=10**7 + mesh)[0], ON, now=0.0)
        for key in keys(1999, start=mesh * 2000):
            sketch.receive("x", MeshSizeSketch(key, ON, now=0.0).tick(["x"], now=0.0)[0][1])
        errors.append(sketch.estimate() / 2000 - 1)
    assert max(abs(e) for e in errors) <= 4 * 0.065
    assert abs(sum(errors) / len(errors)) <= 3 * 0.065 / math.sqrt(len(errors))


def test_an_absurd_estimate_is_capped_and_stays_a_64_bit_integer() -> None:
    # A sketch with every register at its largest rank claims about 2.65e19 nodes; a
    # sharded node sends its workers the estimate as a JSON integer.
    sizer = AdaptiveSizer(ON, anti_entropy_interval=2.0)
    sizing = sizer.update(hll_estimate(bytes([MAX_RANK]) * SKETCH_REGISTERS), now=0.0)
    assert sizing is not None
    assert sizing.estimate <= MAX_ESTIMATE < 2**63
    assert sizing.degree == ON.degree_bounds[1]


def test_a_size_sketch_where_none_is_kept_is_counted_as_bad_input() -> None:
    # Adaptive off (or membership on): the size channel's byte is membership's to refuse
    # and count, as it was before the channel existed.
    config = NodeConfig(discovery=frozenset({DiscoveryMethod.STATIC}),
                        security=SecurityConfig(seal_datagrams=False))
    control = NodeControl(config, Identity.generate(), "127.0.0.1:7000",
                          rng=random.Random(1), now=0.0)
    control.start([], [], now=0.0)
    before = control.statistics().membership.datagrams_in
    control.receive_datagram("127.0.0.1:9", bytes([SIZE_CHANNEL]) + bytes(40), now=1.0)
    stats = control.statistics().membership
    assert stats.datagrams_in == before + 1
    assert sum(stats.rejected.values()) == 1
