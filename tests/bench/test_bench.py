"""``python -m somasync.bench`` end to end: real node processes on 127.0.0.1.

Each run is bounded (the runner's own deadlines, and a subprocess timeout here); the
runner stops every process it started, and a killed runner's nodes and publishers exit
when their stdin closes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from somasync.bench import BenchSettings
from somasync.errors import ConfigError
from somasync.workers import shm

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "somasync" / "bench" / "schema.json").read_text())


def _bench(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "result.json"
    completed = subprocess.run(
        [sys.executable, "-m", "somasync.bench", "--no-progress", "--json", str(out), *args],
        capture_output=True, text=True, timeout=240, check=False)
    assert out.exists(), completed.stdout + completed.stderr
    result = json.loads(out.read_text())
    jsonschema.validate(result, SCHEMA, cls=jsonschema.Draft202012Validator)
    for node in result["nodes"]:  # only this run's segments: tests run in parallel
        if node["segment_tag"]:
            assert shm.leaked_segments(node["segment_tag"]) == [], node["node_id"]
    return completed.returncode, result, completed.stdout


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.multiprocess
def test_tiny_mesh_delivers_every_message_once_everywhere(tmp_path: Path) -> None:
    code, result, stdout = _bench(tmp_path, "--nodes", "3", "--rate", "200",
                                  "--duration", "1.5")
    assert code == 0, stdout
    assert result["ok"]
    assert result["published"]["messages"] == 300
    assert result["totals"]["lost"] == 0
    assert result["totals"]["duplicates"] == 0
    assert [node["unique"] for node in result["nodes"]] == [300, 300, 300]
    assert result["reach_all_messages"] == 300
    assert result["latency_histogram"]["count"] == 900
    assert result["raw_verify_per_s"]["median"] > 0
    assert result["totals"]["ceiling"] == "single"
    assert result["raw_batch_verify_per_s"] is None
    assert "OK: every live node received every message exactly once" in stdout


@pytest.mark.multiprocess
def test_a_node_that_drops_deliveries_fails_the_run(tmp_path: Path) -> None:
    code, result, stdout = _bench(tmp_path, "--nodes", "3", "--rate", "200",
                                  "--duration", "1", "--drop-every", "20")
    assert code == 1, stdout
    assert not result["ok"]
    dropping = result["nodes"][0]
    assert dropping["injected_drops"] == 10
    assert dropping["missing"] == 10
    assert len(dropping["gaps"]) == 10
    assert result["totals"]["lost"] == 10  # the other nodes lost nothing
    assert "FAILED" in stdout


@pytest.mark.multiprocess
def test_survivors_lose_nothing_when_a_node_is_killed(tmp_path: Path) -> None:
    code, result, stdout = _bench(tmp_path, "--nodes", "4", "--rate", "200",
                                  "--duration", "2", "--scenario", "kill-node")
    assert code == 0, stdout
    killed = [node for node in result["nodes"] if node["killed"]]
    assert len(killed) == 1
    assert killed[0]["unique"] is None
    assert any("SIGKILL node" in event["what"] for event in result["events"])
    assert all(node["missing"] == 0 for node in result["nodes"] if not node["killed"])


@pytest.mark.multiprocess
def test_nothing_is_lost_when_a_worker_of_a_sharded_node_is_killed(tmp_path: Path) -> None:
    code, result, stdout = _bench(tmp_path, "--nodes", "3", "--workers", "2", "--rate",
                                  "200", "--duration", "2", "--scenario", "kill-worker")
    assert code == 0, stdout
    assert result["totals"]["lost"] == 0
    assert result["totals"]["duplicates"] == 0
    assert any("SIGKILL worker" in event["what"] for event in result["events"])
    assert all(node["segment_tag"] for node in result["nodes"])  # really sharded
    assert all(node["processes"] >= 3 for node in result["nodes"])  # supervisor + 2


@pytest.mark.multiprocess
def test_soak_reports_every_interval_of_every_node_on_library_defaults(
        tmp_path: Path) -> None:
    code, result, stdout = _bench(tmp_path, "--nodes", "3", "--rate", "200", "--duration",
                                  "3", "--interval", "1", "--scenario", "soak")
    assert code == 0, stdout
    assert result["gossip_config"] == {"preset": "lan", "deviations": {}}
    assert "GossipConfig.lan() unchanged" in stdout
    timeline = result["timeline"]
    assert timeline["intervals"] == 3
    for rows in timeline["nodes"].values():
        assert [row["messages"] for row in rows] == [200, 200, 200]
        assert all(row["rss_bytes"] for row in rows)
    assert all(row is not None and row["p99"] > 0 for row in timeline["reach_all_ms"])
    assert set(result["trend"]["nodes"]) == {"0", "1", "2"}
    assert "timeline: 3 intervals of 1 s" in stdout


def test_a_configuration_deviation_is_listed() -> None:
    assert BenchSettings().gossip_deviations() == {}
    assert BenchSettings(anti_entropy_interval=0.5).gossip_deviations() == {
        "anti_entropy_interval": 0.5}
    assert BenchSettings(scenario="burst", rate=0, messages=20_000).gossip_deviations() == {
        "max_stored_messages": 21_000}
    assert BenchSettings(scenario="burst", rate=0, messages=500).gossip_deviations() == {}


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        BenchSettings(nodes=1)
    assert caught.value.field == "nodes"
    with pytest.raises(ConfigError) as caught:
        BenchSettings(rate=0)
    assert caught.value.field == "messages"
    with pytest.raises(ConfigError) as caught:
        BenchSettings(scenario="kill-worker")
    assert caught.value.field == "workers"


def test_cli_usage_errors_exit_2() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "somasync.bench", "--nodes", "1"],
        capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 2
    assert "nodes" in completed.stderr


@pytest.mark.multiprocess
def test_batch_signing_publishers_deliver_everything_once(tmp_path: Path) -> None:
    code, result, stdout = _bench(tmp_path, "--nodes", "3", "--rate", "400",
                                  "--duration", "1", "--signing", "batch",
                                  "--batch-size", "16")
    assert code == 0, stdout
    assert result["settings"]["signing"] == "batch"
    assert [node["unique"] for node in result["nodes"]] == [400, 400, 400]
    assert result["totals"]["duplicates"] == 0
    assert "batch-signed, 16 to a signature within 2 ms" in stdout
    # Efficiency against the ceiling of checking batch-signed messages, measured in the
    # same run: far above one Ed25519 verify per message.
    assert result["totals"]["ceiling"] == "batch"
    batch_ceiling = result["raw_batch_verify_per_s"]
    assert batch_ceiling["batch_size"] == 16
    assert batch_ceiling["median"] > result["raw_verify_per_s"]["median"]
    assert result["totals"]["efficiency"] == pytest.approx(
        result["totals"]["aggregate_rate_per_s"]
        / (result["totals"]["verify_cores"] * batch_ceiling["median"]), abs=1e-3)
    assert "checking everything (batch-signed)" in stdout


@pytest.mark.multiprocess
def test_the_priority_scenario_reports_critical_latency_idle_and_loaded(
        tmp_path: Path) -> None:
    code, result, stdout = _bench(tmp_path, "--scenario", "priority", "--nodes", "3",
                                  "--publishers", "2", "--rate", "400", "--messages", "800",
                                  "--duration", "2", "--critical-rate", "20",
                                  "--drain-timeout", "20")
    assert code == 0, stdout
    priority = result["priority"]
    assert priority["critical_lost"] == 0
    assert priority["critical_idle_ms"]["p99"] > 0
    assert priority["critical_loaded_ms"]["p99"] > 0
    assert priority["p99_loaded_over_idle"] > 0
    assert [p["sent"] for p in result["publishers"]] == [40, 800]
    assert "critical alerts, bulk load" in stdout


def test_the_priority_scenario_needs_a_bulk_publisher() -> None:
    with pytest.raises(ConfigError) as raised:
        BenchSettings(scenario="priority", publishers=1)
    assert raised.value.field == "publishers"
