"""``python -m somasync.bench memory``: bytes per remembered entry, and the plateau."""

from __future__ import annotations

import pytest

from somasync.bench.memory import main, measure, predict_plateau
from somasync.config import GossipConfig


def test_entries_cost_what_the_config_docs_promise() -> None:
    # At the default sizes: a hash table's cost per entry steps with its size.
    per_entry = measure(GossipConfig.lan(), size=256, trials=1)
    # The config docs quote ~100 B per seen id and ~330 B per stored message beyond
    # its frame; an ordered map of id -> expiry cost 178 B per id.
    assert per_entry["seen_id"]["median"] < 140
    assert per_entry["stored_message"]["median"] < 400
    assert 256 < per_entry["frame"]["median"] < 256 + 200
    assert 0 < per_entry["stream"]["median"] < 2048


def test_plateau_is_bounded_by_configuration_not_rate() -> None:
    per_entry = {"seen_id": {"median": 100.0}, "stored_message": {"median": 300.0},
                 "frame": {"median": 400.0}, "stream": {"median": 1000.0}}
    config = GossipConfig.lan()
    slow = predict_plateau(per_entry, rate=1, streams=5, config=config)
    assert slow["seen_ids"] == 1 * config.seen_ttl < config.seen_cache_size
    assert slow["stored_messages"] == 1 * config.max_message_age < config.max_stored_messages
    fast = predict_plateau(per_entry, rate=1e6, streams=1e6, config=config)
    assert fast["seen_bytes"] == config.seen_cache_size * 100.0
    assert fast["store_bytes"] == config.max_stored_messages * 700.0
    assert fast["stream_bytes"] == config.max_streams * 1000.0


def test_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--trials", "1", "--rate", "1000"]) == 0
    out = capsys.readouterr().out
    assert "seen id (id object included)" in out
    assert "remembered at 1000 msg/s" in out
