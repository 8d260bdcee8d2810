"""Adaptive fanout in the simulator: every virtual node estimates the mesh's size and
settles on the degree derived from it."""

from __future__ import annotations

from somasync.config import AdaptiveConfig
from somasync.core.sizing import epidemic_fanout
from somasync.sim import SimSettings, run_scenario


def test_a_sketch_driven_mesh_settles_on_the_derived_degree_and_delivers_everything() -> None:
    settings = SimSettings(nodes=60, messages=40, swim="off", warmup=30.0,
                           adaptive=AdaptiveConfig(enabled=True), memory_breakdown=False)
    result = run_scenario("steady", settings)
    degree = epidemic_fanout(60, 0.95)
    assert degree == 8  # above the fixed 5
    assert result.extra["adaptive_degree"] == f"{degree} ({degree}-{degree})"
    assert result.extra["links_per_node"] > 7
    assert result.reliability["min"] == 1.0
    assert result.rmr["steady_mean"] is not None
    assert result.rmr["steady_mean"] <= 0.1
    assert result.settings["adaptive"]["enabled"] is True


def test_without_adaptive_fanout_the_degree_stays_fixed() -> None:
    settings = SimSettings(nodes=60, messages=10, swim="off", warmup=30.0,
                           memory_breakdown=False)
    result = run_scenario("steady", settings)
    assert "adaptive_degree" not in result.extra
    assert result.extra["links_per_node"] <= 5
