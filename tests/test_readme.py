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


@pytest.mark.multiprocess
def test_the_four_terminal_walkthrough_runs_as_written(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15's new user: three agents from the README's three terminals, then from a
    fourth ``somasync members``, ``monitor``, ``publish``, the metrics and the status
    page. The agents' lines run with their flags as written, on ports the OS picks (tests
    run side by side); the fourth terminal's lines run through bash as written, with
    those addresses put in."""
    import contextlib
    import json
    import shlex
    import shutil
    import subprocess
    import sys
    import time
    import urllib.request

    from somasync.bench.agents import AgentCluster

    text = (ROOT / "README.md").read_text()
    section = text.partition("## Try it: a mesh in four terminals")[2].partition("\n## ")[0]
    agents_block, terminal_block = re.findall(r"```sh\n(.*?)```", section, re.S)
    agent_lines = [line for line in agents_block.splitlines()
                   if line.startswith("somasync agent")]
    terminal = [line for line in terminal_block.splitlines() if line.strip()]
    assert len(agent_lines) == 3
    assert [line.split()[1] for line in terminal] == ["members", "monitor", "publish", "-s"]
    shell = f'set -eo pipefail\nsomasync() {{ "{sys.executable}" -m somasync "$@"; }}\n'
    monkeypatch.chdir(tmp_path)

    def run(line: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", shell + line], capture_output=True, text=True,
                              timeout=60, check=False, **kwargs)  # type: ignore[call-overload]

    with AgentCluster() as cluster:
        addresses: dict[str, str] = {}
        for line in agent_lines:
            words = shlex.split(line)[2:]
            options = dict(zip(words[::2], words[1::2], strict=True))
            for flag in ("--bind", "--metrics-addr", "--http-addr"):
                if flag in options:
                    addresses[options[flag]] = ""
                    options[flag] = "127.0.0.1:0"
            if "--join" in options:
                options["--join"] = addresses["127.0.0.1:7946"]
            agent = cluster.spawn(node_id=options.pop("--node-id"),
                                  args=[word for pair in options.items() for word in pair])
            cluster.wait(agent.ready.is_set, f"{agent.node_id} to listen", 30.0)
            if not addresses.get("127.0.0.1:7946"):
                ready = agent.of("ready")[0]
                addresses.update({"127.0.0.1:7946": ready["address"],
                                  "127.0.0.1:9464": ready["metrics"],
                                  "127.0.0.1:8080": ready["http"]})

        def written(line: str) -> str:
            for given, actual in addresses.items():
                line = line.replace(given, actual)
            return line

        # somasync members: all three alive, seen from edge-1.
        def members_alive() -> bool:
            out = run(terminal[0]).stdout
            return all(re.search(rf"^edge-{i}\s.*\balive\b", out, re.M) for i in (1, 2, 3))
        cluster.wait(members_alive, "somasync members to list three alive members", 60.0)
        # somasync monitor (started first, as in its own terminal) sees what publish sends.
        monitor = subprocess.Popen(["bash", "-c", shell + terminal[1].rstrip(" &")],
                                   stdout=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60.0
            while monitor.poll() is None and time.monotonic() < deadline:
                # Again only while the monitor has not subscribed yet when it was sent.
                assert run(terminal[2]).returncode == 0
                with contextlib.suppress(subprocess.TimeoutExpired):
                    monitor.wait(timeout=2.0)
            assert monitor.returncode == 0, "the monitor saw nothing within 60 s"
            assert monitor.stdout is not None
            [line] = monitor.stdout.read().splitlines()
        finally:
            if monitor.poll() is None:
                monitor.kill()
            monitor.wait()
            if monitor.stdout is not None:
                monitor.stdout.close()
        seen = json.loads(line)
        assert seen["event"] == "message"
        assert seen["payload"]["message"] == "suspicious login from 203.0.113.7"
        # The metrics, with curl as written where the machine has it.
        if shutil.which("curl"):
            metrics = run(written(terminal[3])).stdout
        else:
            with urllib.request.urlopen(f"http://{addresses['127.0.0.1:9464']}/metrics") as r:
                metrics = r.read().decode()
        assert "somasync_messages_delivered" in metrics
        # The status page (tests/aio/test_status_page_browser.py drives it in chromium).
        page_url = written(re.search(r"`(http://127\.0\.0\.1:8080/)`", section).group(1))
        with urllib.request.urlopen(page_url) as response:
            assert b"<html" in response.read().lower()
        with urllib.request.urlopen(page_url + "api/status") as response:
            status = json.loads(response.read())
        assert {m["node_id"] for m in status["members"]} == {"edge-1", "edge-2", "edge-3"}
