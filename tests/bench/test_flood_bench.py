"""``python -m somasync.bench flood`` measures an honest peer beside a flooding one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from somasync.bench.__main__ import main


def test_the_flood_bench_runs_both_readings_and_loses_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flood", "--trials", "1", "--flood", "500", "--honest", "20",
                 "--interval", "0.005", "--json", str(tmp_path / "f.json")]) == 0
    out = capsys.readouterr().out
    assert "fair" in out
    assert "unfair" in out
    runs = json.loads((tmp_path / "f.json").read_text())["runs"]
    for mode in ("fair", "unfair"):
        [row] = runs[mode]
        assert row["honest_lost"] == 0
        assert row["flood_delivered"] == 500
