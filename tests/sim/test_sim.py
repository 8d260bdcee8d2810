"""The simulator: determinism, reliability, repair, partitions, bad settings, the CLI.

Small meshes (tens to a few hundred nodes) and virtual-time properties only: no
wall-clock thresholds.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import nacl.signing
import pytest

from somasync.cli.sim import main
from somasync.core import wire
from somasync.errors import ConfigError
from somasync.sim import (
    Latency,
    MemoVerifier,
    NetworkModel,
    SimSettings,
    Simulation,
    WanModel,
    run_scenario,
)
from somasync.sim.membership import MEMBERSHIP_MAX_NODES
from somasync.sim.overlays import MEMBERSHIP_AUTO_LIMIT, NodeOverlay

SMALL = SimSettings(nodes=60, messages=30, drain=3.0, memory_breakdown=False)


# --- determinism ---------------------------------------------------------------------

def test_same_seed_same_trace_and_other_seed_differs() -> None:
    first = run_scenario("steady", SMALL.replace(seed=11))
    again = run_scenario("steady", SMALL.replace(seed=11))
    other = run_scenario("steady", SMALL.replace(seed=12))
    assert first.trace_hash == again.trace_hash
    assert first.events == again.events
    assert first.rmr["series"] == again.rmr["series"]
    assert other.trace_hash != first.trace_hash


def test_step_by_step_simulation_is_deterministic() -> None:
    def trace() -> str:
        sim = Simulation(40, seed=3)
        sim.start()
        sim.run(1.0)
        for _ in range(5):
            sim.broadcast()
            sim.run(0.05)
        sim.crash(range(10))
        sim.run(2.0)
        sim.broadcast()
        sim.run(3.0)
        assert sim.missing_copies() == 0
        return sim.trace_hash()

    assert trace() == trace()


# --- reliability ---------------------------------------------------------------------

@pytest.mark.parametrize(("forwarding", "overlay"),
                         [("tree", "node"), ("push", "node"), ("tree", "random"),
                          ("push", "random")])
def test_no_faults_every_node_gets_every_broadcast(forwarding: str, overlay: str) -> None:
    result = run_scenario("steady", SMALL.replace(nodes=120, forwarding=forwarding,
                                                  overlay=overlay))
    assert result.forwarding == forwarding
    assert result.overlay == overlay
    assert result.messages == 30
    assert result.reliability["min"] == 1.0
    assert result.reliability["perfect"] == 1.0
    assert result.extra["deliveries"] == 30 * 119  # everyone but the origin, once
    assert result.rmr["steady_mean"] is not None
    assert result.latency["delivery"]["count"] == 30 * 119


def test_push_is_more_redundant_than_the_tree() -> None:
    settings = SMALL.replace(nodes=150, messages=60)
    tree = run_scenario("steady", settings.replace(forwarding="tree"))
    push = run_scenario("steady", settings.replace(forwarding="push"))
    assert push.rmr["steady_mean"] > 1.0
    assert tree.rmr["steady_mean"] < push.rmr["steady_mean"]


def test_tree_repairs_after_forty_percent_crash() -> None:
    result = run_scenario("crash", SMALL.replace(nodes=150, messages=120, fail_fraction=0.4,
                                                 repair_window=1.0))
    assert result.extra["crashed"] == 60
    after = result.reliability["after_fault"]
    assert after["count"] > 0
    assert after["min"] == 1.0  # every surviving node holds every later broadcast
    assert result.extra["on_time_repaired_min"] == 1.0


@pytest.mark.parametrize("overlay", ["random", "node"])
def test_partition_heals_within_a_few_anti_entropy_intervals(overlay: str) -> None:
    result = run_scenario("partition", SMALL.replace(nodes=80, messages=40, overlay=overlay,
                                                     partition_seconds=10.0,
                                                     max_convergence=30.0))
    assert result.extra["held_by_own_side_at_heal"] == 1.0
    # Each half had only its own messages until the heal...
    assert result.reliability["on_time"]["min"] < 1.0
    # ...and then every live node held every message within a bounded time.
    assert result.extra["missing_copies_at_end"] == 0
    assert result.extra["convergence_ae_intervals"] is not None
    assert result.extra["convergence_ae_intervals"] <= 10
    assert result.reliability["min"] == 1.0


def test_churn_keeps_live_nodes_complete() -> None:
    result = run_scenario("churn", SMALL.replace(nodes=80, messages=40, churn_rate=2.0,
                                                 churn_downtime=1.0, drain=6.0))
    assert result.extra["churn_crashes"] > 0
    assert result.reliability["min"] == 1.0


def test_silent_host_failures_close_links_after_the_timeout() -> None:
    network = NetworkModel(silent_failures=True, link_timeout=2.0)
    sim = Simulation(30, seed=5, overlay="random", network=network)
    sim.start()
    sim.run(1.0)
    victim = sim.nodes[0]
    neighbours = list(victim.conns)
    assert neighbours
    sim.crash([0])
    sim.run(1.5)
    assert all(0 in sim.nodes[i].conns for i in neighbours)  # nobody noticed yet
    sim.run(1.0)
    assert not any(0 in sim.nodes[i].conns for i in neighbours)


def test_paused_node_catches_up_on_resume() -> None:
    sim = Simulation(30, seed=2, overlay="random")
    sim.start()
    sim.run(1.0)
    sim.pause([4])
    for _ in range(3):
        sim.broadcast()
        sim.run(0.1)
    assert sim.missing_copies() == 3
    sim.resume([4])
    sim.run(2.0)
    assert sim.missing_copies() == 0


def test_random_overlay_repairs_after_a_crash() -> None:
    crash = run_scenario("crash", SMALL.replace(overlay="random", nodes=100, messages=60,
                                                fail_fraction=0.5))
    assert crash.reliability["after_fault"]["min"] == 1.0


def test_the_production_control_part_is_the_default_overlay() -> None:
    assert SimSettings().overlay == "node"
    sim = Simulation(30, seed=3)
    assert isinstance(sim.overlay, NodeOverlay)
    assert sim.overlay.run_membership  # small meshes run SWIM beside the overlay
    big = Simulation(MEMBERSHIP_AUTO_LIMIT + 1, seed=3, run_membership=None)
    assert isinstance(big.overlay, NodeOverlay)
    assert not big.overlay.run_membership


def test_crash_is_detected_by_swim_and_repaired_by_the_tree_in_one_run() -> None:
    result = run_scenario("crash", SMALL.replace(nodes=100, messages=160, fail_fraction=0.3,
                                                 drain=8.0))
    assert result.extra["swim"] == "on"
    assert result.extra["crashed"] == 30
    # Every crash reached some survivor as a failure verdict, and no live node was
    # declared failed.
    assert result.extra["crashes_detected"] == 30
    assert result.extra["false_failures"] == 0
    assert result.extra["detection_first_max_seconds"] is not None
    assert result.reliability["after_fault"]["min"] == 1.0


def test_swim_off_runs_the_overlay_alone() -> None:
    result = run_scenario("steady", SMALL.replace(swim="off"))
    assert "swim" not in result.extra
    assert result.reliability["min"] == 1.0


def test_membership_scenario_detects_the_crash() -> None:
    result = run_scenario("membership", SimSettings(nodes=30, fail_fraction=0.1,
                                                    membership_window=10.0))
    assert result.extra["convergence_seconds"] is not None
    assert result.extra["crashed"] == 3
    assert result.extra["detected_pairs_fraction"] == 1.0
    assert result.extra["false_failures"] == 0


def test_membership_shares_the_verify_cache_without_changing_the_run() -> None:
    settings = SimSettings(nodes=30, fail_fraction=0.1, membership_window=10.0)
    fast = run_scenario("membership", settings)
    full = run_scenario("membership", settings.replace(crypto="full"))
    # Each distinct claim is checked once for the whole run, not once per node...
    assert fast.extra["verify_cache_hits"] > fast.extra["verify_cache_misses"] > 0
    assert full.extra["verify_cache_hits"] is None
    # ...and the answers are the same, so the run is the same event for event.
    assert fast.trace_hash == full.trace_hash
    assert fast.extra["detection_all"] == full.extra["detection_all"]


# --- network model and crypto --------------------------------------------------------

def test_pair_latency_is_fixed_symmetric_and_seeded() -> None:
    lan = NetworkModel()
    assert lan.latency_between(1, 3, 9) == lan.latency_between(1, 9, 3)
    assert lan.latency_between(1, 3, 9) != lan.latency_between(2, 3, 9)
    wan = NetworkModel.wide_area()
    model = WanModel.default()
    same_region = wan.latency_between(1, 0, len(model.regions))
    far = wan.latency_between(1, 0, 3)  # us-east to ap-northeast
    assert same_region < 0.01 < far
    assert Latency.parse("uniform:1ms:3ms").quantile(0.5) == pytest.approx(0.002)
    assert Latency.parse("constant:200us").quantile(0.9) == pytest.approx(0.0002)


def test_memo_verifier_still_rejects_a_forged_copy() -> None:
    key = nacl.signing.SigningKey(bytes(range(32)))
    data = b"alert: 203.0.113.7"
    signature = key.sign(wire.MESSAGE_DOMAIN + data).signature
    public = bytes(key.verify_key)
    verify = MemoVerifier()
    assert verify(public, signature, wire.MESSAGE_DOMAIN, data)
    assert verify(public, signature, wire.MESSAGE_DOMAIN, data)
    assert verify.hits == 1
    assert not verify(public, signature, wire.MESSAGE_DOMAIN, data + b"!")
    assert not verify(bytes(32), signature, wire.MESSAGE_DOMAIN, data)
    assert verify.misses == 3


def test_full_crypto_verifies_every_copy() -> None:
    result = run_scenario("steady", SMALL.replace(nodes=30, messages=5, crypto="full"))
    assert result.crypto == "full"
    assert result.reliability["min"] == 1.0
    assert result.extra["verify_cache_hits"] is None
    assert result.totals["signatures_verified"] >= 5 * 29


# --- bad settings ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: SimSettings(nodes=1), "sim.nodes"),
        (lambda: SimSettings(forwarding="flood"), "sim.forwarding"),
        (lambda: SimSettings(overlay="mesh"), "sim.overlay"),
        (lambda: SimSettings(swim="sometimes"), "sim.swim"),
        (lambda: Simulation(10, overlay="mesh"), "sim.overlay"),
        (lambda: SimSettings(crypto="none"), "sim.crypto"),
        (lambda: SimSettings(fail_fraction=1.5), "sim.fail_fraction"),
        (lambda: SimSettings(interval=0), "sim.interval"),
        (lambda: SimSettings(fractions=()), "sim.fractions"),
        (lambda: NetworkModel(loss=1.0), "network.loss"),
        (lambda: NetworkModel(link_timeout=-1), "network.link_timeout"),
        (lambda: Latency.parse("gaussian:1ms"), "network.latency"),
        (lambda: Latency.uniform(0.002, 0.001), "network.latency"),
        (lambda: Simulation(10, degree=0), "sim.degree"),
        (lambda: run_scenario("stampede", SMALL), "sim.scenario"),
        (lambda: run_scenario("membership", SMALL.replace(nodes=MEMBERSHIP_MAX_NODES + 1)),
         "sim.nodes"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_field(build: object, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()  # type: ignore[operator]
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


# --- command line ----------------------------------------------------------------------

def test_cli_runs_a_tiny_scenario_and_writes_json(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.json"
    status = main(["steady", "--nodes", "25", "--messages", "5", "--seed", "4",
                   "--json", str(out), "--quiet"])
    assert status == 0
    data = json.loads(out.read_text())
    assert data["scenario"] == "steady"
    assert data["nodes"] == 25
    assert data["messages"] == 5
    assert data["reliability"]["min"] == 1.0
    assert len(data["trace_hash"]) == 32
    assert "reliability" in capsys.readouterr().out


def test_same_trace_in_another_process_with_another_hash_seed(tmp_path: Path) -> None:
    """No set or dict order that depends on PYTHONHASHSEED leaks into the run."""
    hashes = set()
    for hash_seed in ("1", "2"):
        out = tmp_path / f"{hash_seed}.json"
        subprocess.run(
            [sys.executable, "-m", "somasync.sim", "crash", "--nodes", "40", "--messages",
             "20", "--quiet", "--json", str(out)],
            env={**os.environ, "PYTHONHASHSEED": hash_seed}, capture_output=True,
            check=True, timeout=120)
        hashes.add(json.loads(out.read_text())["trace_hash"])
    assert len(hashes) == 1


def test_cli_reports_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["steady", "--nodes", "1", "--quiet"]) == 2
    assert "sim.nodes" in capsys.readouterr().err


@pytest.mark.parametrize("swim", [True, False])
def test_links_follow_the_overlay_views_and_survive_a_crash(swim: bool) -> None:
    """The production control part in the engine: once the mesh settles, every node's
    links are exactly its HyParView active view (so views are symmetric), and after a
    third of the nodes crash the survivors' links are again their views, all live."""
    sim = Simulation(90, seed=4, run_membership=swim)
    sim.start()
    sim.run(20.0)

    def check() -> None:
        for node in sim.live_nodes():
            control = node.overlay
            assert control is not None
            assert control.overlay is not None
            active = {sim.node_named(a).index for a in control.overlay.active()}
            assert set(node.conns) == active, node.name
            assert 1 <= len(active) <= control.config.overlay.active_size

    check()
    sim.crash(range(0, 90, 3))
    sim.run(30.0)
    check()
    assert all(all(sim.nodes[p].alive for p in node.conns) for node in sim.live_nodes())


def test_a_run_leaves_the_garbage_collector_as_it_found_it() -> None:
    """A run builds its nodes with the collector off, freezes them and collects seldom
    while it runs: afterwards nothing stays frozen (the nodes can be freed) and the
    collector is on with its thresholds back."""
    thresholds = gc.get_threshold()
    assert gc.isenabled()
    result = run_scenario("steady", SMALL.replace(messages=5))
    assert result.reliability["min"] == 1.0
    assert gc.isenabled()
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() == 0
