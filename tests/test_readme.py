"""The README's two set-up commands exist, and CI runs the test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


def test_the_securing_example_runs_as_written(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's certificate mesh: its key commands run as written (``somasync`` is
    this interpreter's ``python -m somasync``); its three agents run with the flags it
    shows, on ports the OS picks instead of 7946-7948 (tests run side by side); the
    revocation it makes reaches the other nodes."""
    import shlex
    import subprocess
    import sys

    from somasync.bench.agents import AgentCluster

    text = (ROOT / "README.md").read_text()
    match = re.search(r"### Securing a mesh.*?```sh\n(.*?)```", text, re.S)
    assert match is not None
    block = match.group(1)
    setup, _, rest = block.partition("# Each node runs")
    agent_lines = [line for line in rest.splitlines() if line.startswith("somasync agent")]
    revoke = rest.partition("# edge-3's key leaked")[2]
    assert len(agent_lines) == 3
    assert "somasync keys revoke" in revoke
    shell = f'set -e\nsomasync() {{ "{sys.executable}" -m somasync "$@"; }}\n'
    monkeypatch.chdir(tmp_path)
    subprocess.run(["bash", "-c", shell + setup], check=True, timeout=120,
                   capture_output=True)
    operator = subprocess.run([sys.executable, "-m", "somasync", "keys", "show",
                               "operator.key"], check=True, capture_output=True,
                              text=True).stdout.strip()
    with AgentCluster() as cluster:
        seed = ""
        for line in agent_lines:
            words = shlex.split(line.replace("$OPERATOR", operator))[2:]
            options = dict(zip(words[::2], words[1::2], strict=True))
            name = options.pop("--node-id")
            options.pop("--bind")  # the OS picks the port
            joins = [seed] if options.pop("--join", None) else []
            agent = cluster.spawn(node_id=name, join=joins,
                                  args=[word for pair in options.items() for word in pair])
            cluster.wait(agent.ready.is_set, f"{name} to listen", 30.0)
            seed = seed or agent.address
        first, second, _third = cluster.agents
        cluster.wait(lambda: len(first.of("PeerConnected")) == 2, "both to link", 30.0)
        subprocess.run(["bash", "-c", shell + revoke], check=True, timeout=60,
                       capture_output=True)
        first.send("revoke revoke-edge-3.json")
        cluster.wait(lambda: bool(first.of("PeerRevoked")) and bool(second.of("PeerRevoked")),
                     "the revocation at edge-1 and edge-2", 30.0)
        cluster.wait(lambda: any(e["peer_id"] == "edge-3"
                                 for e in second.of("PeerDisconnected")),
                     "edge-2 to drop edge-3", 30.0)
        [notice] = second.of("PeerRevoked")
        assert notice["peer_id"] == "edge-3"
