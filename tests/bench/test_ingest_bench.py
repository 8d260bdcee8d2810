"""``python -m somasync.bench ingest``: one node fed by sender processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from somasync.bench.__main__ import main


@pytest.mark.multiprocess
def test_ingest_compares_single_and_batch_signing_and_loses_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ingest.json"
    assert main(["ingest", "--workers", "0", "--encryption", "off",
                 "--signing", "single,batch", "--batch-size", "16", "--trials", "1",
                 "--senders", "1", "--messages", "1500", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "raw batch-signed checks (16 to a signature)" in printed
    result = json.loads(out.read_text())
    for signing in ("single", "batch"):
        [run] = result["results"][f"0/off/{signing}"]
        assert run["delivered"] == 1500
        assert run["rejected"] == 0
    assert len(result["workers_0_off_batch"]["batch_vs_single_per_trial"]) == 1
