"""The membership benchmark's model parts: the expectation and the simulated runs."""

from __future__ import annotations

from somasync.bench.membership import expectation, simulate
from somasync.config import MembershipConfig


def test_expectation_follows_the_configuration() -> None:
    lan = expectation(MembershipConfig.lan(), 32)
    slower = expectation(MembershipConfig.lan().replace(probe_interval=1.0), 32)
    # A hint (broken link) makes kill -9 faster to detect than a silent stop.
    assert lan["kill_all_failed_s"] < lan["stop_all_failed_s"]
    assert slower["stop_all_failed_s"] > lan["stop_all_failed_s"]
    assert lan["max_suspicion_timeout_s"] == 8 * lan["min_suspicion_timeout_s"]


def test_simulated_detection_is_bounded_by_the_suspicion_timeouts() -> None:
    config = MembershipConfig.local()
    result = simulate(config, 8, 2)
    for key in ("crash_all_failed_s", "pause_all_failed_s"):
        summary = result[key]
        assert summary["n"] == 2
        # Never sooner than one probe round plus the minimum suspicion timeout, and
        # never later than the first probe plus the longest suspicion.
        floor = expectation(config, 8)["min_suspicion_timeout_s"] + config.probe_interval
        ceiling = expectation(config, 8)["max_suspicion_timeout_s"] + 8 * config.probe_interval
        assert floor <= summary["min"] <= summary["max"] <= ceiling
