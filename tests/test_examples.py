"""Every script in ``examples/`` runs as a user would run it, and says what it promised."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_example_is_tested_here() -> None:
    tested = {"quick_start.py", "intel_feed.py", "sharded_node.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_quick_start_is_the_readme_quick_start() -> None:
    assert run("quick_start.py").strip() == (
        "node-1 Alert(level='critical', message='APT detected', details=None) True")


def test_intel_feed_reaches_every_subscriber_with_valid_signatures() -> None:
    lines = run("intel_feed.py", "--indicators", "20").splitlines()
    assert lines == [f"soc-{i}: 20 of 20 indicators, every signature valid"
                     for i in range(3)]


@pytest.mark.multiprocess
def test_sharded_node_delivers_everything_through_its_workers() -> None:
    [line] = run("sharded_node.py", "--messages", "50").splitlines()
    assert line.startswith("sharded node: 50 of 50 messages, verified by workers [")
