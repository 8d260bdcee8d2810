"""The README's two set-up commands exist, and CI runs the test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bash_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_readme_has_exactly_two_setup_commands() -> None:
    blocks = _bash_blocks()
    assert len(blocks) == 2
    assert all(block.startswith("pip install") for block in blocks)
    assert blocks[0].endswith("python -m somasync.bench --quick")
    assert "pytest" in blocks[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = _bash_blocks()[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    """The first Python example is a whole program: two nodes on 127.0.0.1, one alert."""
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text()
    quick_start = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    script = tmp_path / "quick_start.py"
    script.write_text(quick_start)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "node-1 Alert(level='critical', message='APT detected', details=None) True")
