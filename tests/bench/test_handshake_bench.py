"""``python -m somasync.bench handshake`` runs real handshakes and reports them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from somasync.bench.__main__ import main


def test_the_handshake_bench_reports_rates_against_its_ceiling(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["handshake", "--trials", "1", "--count", "20",
                 "--json", str(tmp_path / "h.json")]) == 0
    out = capsys.readouterr().out
    assert "handshakes completed per node" in out
    assert "handshake / ceiling" in out
    [trial] = json.loads((tmp_path / "h.json").read_text())["trials"]
    assert trial["handshakes_per_s"] > 0
    assert trial["ratio"] == trial["handshakes_per_s"] / trial["primitives_per_s"]


def test_bad_counts_are_usage_errors() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["handshake", "--count", "0"])
    assert caught.value.code == 2
