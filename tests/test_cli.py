"""The command line: ``somasync`` (and ``python -m somasync``) as an operator meets it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from somasync import __version__
from somasync.cli import main


def test_version_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"somasync {__version__}\n"
    assert main([]) == 2  # no command: usage, as an error
    assert "agent" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_agent_help_documents_the_stdin_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["agent", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("publish", "members", "stats", "stop", "--log-format"):
        assert command in text


def test_agent_logs_an_unreachable_seed_once_as_json_on_stderr() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        seed = f"127.0.0.1:{probe.getsockname()[1]}"
    agent = subprocess.Popen(
        [sys.executable, "-m", "somasync", "agent", "--bind", "127.0.0.1:0",
         "--join", seed, "--discovery", "static",
         "--log-level", "info", "--log-format", "json", "--lifeline"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert agent.stdin is not None
    assert agent.stderr is not None
    records: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + 20.0
        while not any("cannot reach" in str(r["message"]) for r in records):
            assert time.monotonic() < deadline, f"no 'cannot reach' line: {records}"
            ready, _, _ = select.select([agent.stderr], [], [], 0.5)
            if ready:
                line = agent.stderr.readline()
                assert line, "the agent exited"
                records.append(json.loads(line))
        # Closing stdin (communicate does) makes a --lifeline agent leave and exit.
        _, rest = agent.communicate(timeout=20.0)
        records += [json.loads(line) for line in rest.splitlines() if line.strip()]
    finally:
        if agent.poll() is None:
            agent.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.communicate(timeout=5.0)
    assert agent.returncode == 0
    unreachable = [r for r in records if "cannot reach" in str(r["message"])]
    assert len(unreachable) == 1
    assert unreachable[0]["level"] == "warning"
    assert unreachable[0]["logger"] == "somasync.control"
    assert seed in str(unreachable[0]["message"])


def test_publish_takes_text_as_an_alert_or_json_as_any_payload() -> None:
    from somasync import MessageType
    from somasync.cli.agent import _publication

    assert _publication("intrusion on db-3") == (
        MessageType.Alert(level="high", message="intrusion on db-3", details=None), {})
    payload, options = _publication(
        '{"type": "status", "component": "ids", "state": "degraded", "priority": 200}')
    assert payload == MessageType.Status("ids", "degraded")
    assert options == {"priority": 200}
    for bad, says in [('{"type": "status"', "invalid JSON"),
                      ('{"type": "alarm"}', "payload type must be one of"),
                      ('{"type": "data", "text": "x", "colour": "red"}', "no field"),
                      ('{"type": "data", "text": "x", "ttl": "soon"}', "ttl must be")]:
        with pytest.raises(ValueError, match=says):
            _publication(bad)


def test_two_agents_exchange_a_json_payload() -> None:
    from somasync.bench.agents import AgentCluster

    with AgentCluster(preset="local") as cluster:
        cluster.start(2, within=30.0)
        a, b = cluster.agents
        cluster.wait(lambda: bool(a.of("PeerConnected")) and bool(b.of("PeerConnected")),
                     "the agents to link", 30.0)
        b.send('publish {"type": "command", "action": "isolate", '
               '"params": {"host": "db-3"}, "priority": 250, "ttl": 60}')
        cluster.wait(lambda: bool(a.of("message")), "a to receive it", 30.0)
        [message] = a.of("message")
        [published] = b.of("published")
        assert message["id"] == published["id"]
        assert message["payload"] == {"type": "command", "action": "isolate",
                                      "params": {"host": "db-3"}}
        assert (message["priority"], message["ttl"]) == (250, 60)
        b.send('publish {"type": "command"}')
        cluster.wait(lambda: bool(b.of("error")), "b to refuse a bad payload", 30.0)
        assert "publish:" in b.of("error")[0]["detail"]


# --- configuration: preset < file < SOMASYNC_* < flags ----------------------------------

def _show(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    assert main(["config", "show", "--format", "json", *argv]) == 0
    settings: dict[str, dict[str, object]] = json.loads(capsys.readouterr().out)
    return settings


def test_config_precedence_and_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    node_toml = tmp_path / "node.toml"
    node_toml.write_text('node_id = "edge-7"\nbootstrap_peers = ["10.0.0.5:7946"]\n'
                         "workers = 1\n[gossip]\nfanout = 4\nanti_entropy_interval = 1\n"
                         "[membership]\nprobe_interval = 0.5\n")
    monkeypatch.setenv("SOMASYNC_GOSSIP__FANOUT", "5")
    monkeypatch.setenv("SOMASYNC_WORKERS", "2")
    settings = _show(["--config", str(node_toml), "--preset", "local", "--workers", "3"],
                     capsys)
    where = f"file {node_toml}"
    assert settings["node_id"] == {"value": "edge-7", "source": where}
    assert settings["bootstrap_peers"] == {"value": ["10.0.0.5:7946"], "source": where}
    assert settings["gossip.anti_entropy_interval"] == {"value": 1.0, "source": where}
    assert settings["membership.probe_interval"] == {"value": 0.5, "source": where}
    assert settings["gossip.fanout"] == {"value": 5, "source": "env SOMASYNC_GOSSIP__FANOUT"}
    assert settings["workers"] == {"value": 3, "source": "flag"}
    # Untouched settings keep the preset's value; the agent's documented port included.
    assert settings["gossip.seen_cache_size"]["source"] == "default"
    assert settings["bind_address"] == {"value": "127.0.0.1:7946", "source": "default"}
    monkeypatch.setenv("SOMASYNC_CONFIG", str(node_toml))
    assert _show([], capsys)["node_id"]["value"] == "edge-7"


@pytest.mark.parametrize(("toml", "env", "says"), [
    ("[gossip]\nfanout = 0\n", {}, "gossip.fanout: must be an integer >= 1, got 0 (file"),
    ('[gossip]\nfanout = "many"\n', {}, "gossip.fanout: must be int"),
    ("[gossip]\ncolour = 3\n", {}, "gossip.colour: no such setting (file"),
    ("gossip = 3\n", {}, "gossip: must be a table"),
    ("fanout = [\n", {}, "is not valid TOML"),
    ("", {"SOMASYNC_MEMBERSHIP__PROBE_INTERVAL": "soon"},
     "membership.probe_interval: must be a number, got 'soon' (env "
     "SOMASYNC_MEMBERSHIP__PROBE_INTERVAL)"),
    ("", {"SOMASYNC_DISCOVERY": "carrier-pigeon"}, "discovery: must name discovery"),
    ("", {"SOMASYNC_GOSSIP__TRUSTED_KEYS": "not-hex"}, "gossip.trusted_keys: must be hex"),
])
def test_a_bad_setting_is_refused_naming_the_field_and_where_it_came_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        toml: str, env: dict[str, str], says: str) -> None:
    node_toml = tmp_path / "node.toml"
    node_toml.write_text(toml)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["config", "check", "--config", str(node_toml)]) == 2
    assert says in capsys.readouterr().err


def test_a_missing_config_file_is_a_clear_error(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_the_agent_refuses_a_bad_config_before_it_starts(tmp_path: Path) -> None:
    node_toml = tmp_path / "node.toml"
    node_toml.write_text("[overlay]\nactive_size = 0\n")
    result = subprocess.run([sys.executable, "-m", "somasync", "agent", "--config",
                             str(node_toml)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "overlay.active_size" in result.stderr
    assert result.stdout == ""  # no ready event: it never started


# --- metrics -----------------------------------------------------------------------------

async def test_metrics_follow_prometheus_naming_and_the_node_s_counters() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from somasync import MessageType, SynapseNodeBuilder
    from somasync.metrics import NodeMetrics

    node, _messages, _events = SynapseNodeBuilder().with_node_id("m").with_bind_address(
        "127.0.0.1:0").build()
    metrics = NodeMetrics(node)
    registry = CollectorRegistry()
    registry.register(metrics)
    await metrics.refresh()  # not started yet: nothing to report, no error
    assert generate_latest(registry) == b""
    async with node:
        await node.broadcast_message(MessageType.Data("counted"))
        await metrics.refresh()
        text = generate_latest(registry).decode()
    for line in ('somasync_messages_originated_total{node_id="m"} 1.0',
                 'somasync_members{node_id="m",state="alive"} 1.0',
                 'somasync_peers{node_id="m"} 0.0',
                 '# TYPE somasync_transport_bytes_total counter'):
        assert line in text, text
    assert 'somasync_transport_bytes_total{direction="out",node_id="m"}' in text


async def test_delivery_latency_is_a_histogram_in_stats_and_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from somasync import MembershipConfig, MessageType, SynapseNodeBuilder
    from somasync.metrics import NodeMetrics
    from somasync.testing import wait_until

    def build(name: str) -> SynapseNodeBuilder:
        return (SynapseNodeBuilder().with_node_id(name).with_bind_address("127.0.0.1:0")
                .with_membership_config(MembershipConfig.local()))

    sender, _m, _e = build("sender").build()
    async with sender:
        receiver, _m2, _e2 = build("receiver").add_bootstrap_peer(
            sender.listen_address).build()
        metrics = NodeMetrics(receiver)
        registry = CollectorRegistry()
        registry.register(metrics)
        async with receiver:
            await wait_until(lambda: "receiver" in sender.connected_peers(), "a link", 30.0)
            for i in range(3):
                await sender.broadcast_message(MessageType.Data(f"m{i}"))

            async def delivered() -> int:
                return (await receiver.get_stats()).delivery_latency.count

            for _ in range(300):
                if await delivered() == 3:
                    break
                await asyncio.sleep(0.1)
            stats = await receiver.get_stats()
            await metrics.refresh()
            text = generate_latest(registry).decode()
    latency = stats.delivery_latency
    assert latency.count == 3
    assert len(latency.counts) == len(latency.bounds) + 1
    assert 0 <= latency.total < 30.0
    assert 'somasync_delivery_latency_seconds_count{node_id="receiver"} 3.0' in text
    assert 'somasync_delivery_latency_seconds_bucket{le="+Inf",node_id="receiver"} 3.0' \
        in text
    # Three messages, three signature checks at least (handshakes are checks too).
    assert sum(stats.core.verify_seconds) >= 3
    assert stats.core.verify_seconds_total > 0
    assert 'somasync_verify_seconds_count{node_id="receiver"}' in text
    # The application never took the three: they wait in its queue.
    assert stats.delivery_queue == 3
    assert 'somasync_delivery_queue_messages{node_id="receiver"} 3.0' in text
    assert ('somasync_message_copies_total{direction="in",kind="first",node_id="receiver"} '
            '3.0') in text
    assert 'somasync_send_queue_bytes{node_id="receiver"}' in text
    assert 'somasync_control_frames_total{kind="digest",node_id="receiver"}' in text


async def test_a_sharded_node_reports_its_rings_depths() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from somasync import SynapseNodeBuilder
    from somasync.metrics import NodeMetrics

    node, _messages, _events = (SynapseNodeBuilder().with_node_id("s").with_workers(2)
                                .with_bind_address("127.0.0.1:0").build())
    metrics = NodeMetrics(node)
    registry = CollectorRegistry()
    registry.register(metrics)
    async with node:
        await metrics.refresh()
        text = generate_latest(registry).decode()
    for worker in ("0", "1"):
        for state in ("waiting", "pending"):
            assert f'somasync_ring_bytes{{node_id="s",state="{state}",worker="{worker}"}}' \
                in text, text


def test_the_agent_serves_metrics_over_http() -> None:
    import urllib.request

    from somasync.bench.agents import AgentCluster

    with AgentCluster(preset="local", extra=["--metrics-addr", "127.0.0.1:0"]) as cluster:
        cluster.start(1, within=30.0)
        [ready] = cluster.agents[0].of("ready")
        url = f"http://{ready['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert f'somasync_uptime_seconds{{node_id="{ready["node_id"]}"}}' in text
        assert "somasync_members" in text


def _agent_with_rpc(tmp_path: Path, *, stdin: int) -> tuple[subprocess.Popen[str], Path]:
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        [sys.executable, "-m", "somasync", "agent", "--bind", "127.0.0.1:0",
         "--node-id", "rpc-agent", "--rpc", str(socket_path), "--preset", "local"],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert agent.stdout is not None
    ready = json.loads(agent.stdout.readline())
    assert ready["event"] == "ready"
    assert ready["rpc"] == str(socket_path)
    return agent, socket_path


def _stop(agent: subprocess.Popen[str]) -> None:
    if agent.poll() is None:
        agent.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        agent.communicate(timeout=10.0)


def test_client_commands_reach_a_running_agent_over_its_private_socket(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Also with stdin at /dev/null, as service managers start it (it used to abort)."""
    import stat
    import threading

    agent, path = _agent_with_rpc(tmp_path, stdin=subprocess.DEVNULL)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert main(["members", "--rpc", str(path)]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split()[:3] == ["NAME", "ADDRESS", "STATE"]
        assert table[1].split()[0] == "rpc-agent"
        assert main(["stats", "--rpc", str(path), "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out)["membership"]["alive"] == 1
        monitored: list[int] = []
        monitor = threading.Thread(target=lambda: monitored.append(
            main(["monitor", "--rpc", str(path), "--count", "2"])))
        monitor.start()
        deadline = time.monotonic() + 20.0
        while monitor.is_alive() and time.monotonic() < deadline:
            assert main(["publish", "--rpc", str(path), "intrusion on db-3"]) == 0
            monitor.join(0.2)
        assert monitored == [0]
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        # Each publish is also a MessageSent event; which of the two comes first varies.
        [event, *_] = [e for e in map(json.loads, lines) if e["event"] == "published"]
        assert event["payload"]["message"] == "intrusion on db-3"
        assert main(["publish", "--rpc", str(path), '{"type": "alarm"}']) == 1
        assert "payload type must be one of" in capsys.readouterr().err
        assert main(["leave", "--rpc", str(path)]) == 0
        agent.wait(timeout=20.0)
        assert agent.returncode == 0
        assert not path.exists()
        assert main(["members", "--rpc", str(path)]) == 3
        assert "cannot reach an agent" in capsys.readouterr().err
    finally:
        _stop(agent)


def test_members_shows_each_linked_peers_score_and_round_trip(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    agent, path = _agent_with_rpc(tmp_path, stdin=subprocess.PIPE)
    ready = {"address": ""}
    other = None
    try:
        members: list[dict[str, object]] = []
        assert main(["members", "--rpc", str(path), "--format", "json"]) == 0
        ready["address"] = json.loads(capsys.readouterr().out)["members"][0]["address"]
        other = subprocess.Popen(
            [sys.executable, "-m", "somasync", "agent", "--bind", "127.0.0.1:0",
             "--node-id", "other", "--rpc", "off", "--preset", "local",
             "--join", str(ready["address"])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            assert main(["members", "--rpc", str(path), "--format", "json"]) == 0
            members = json.loads(capsys.readouterr().out)["members"]
            found = [m for m in members if m["node_id"] == "other"]
            if found and found[0]["rtt"] is not None and found[0]["score"] is not None:
                break
            time.sleep(0.2)
        peer = next(m for m in members if m["node_id"] == "other")
        assert 0 <= float(peer["rtt"]) < 30.0  # type: ignore[arg-type]  # (ms resolution)
        assert peer["score"] == 0.0  # linked, nothing delivered yet, nothing held against it
        assert main(["members", "--rpc", str(path)]) == 0
        header, *rows = capsys.readouterr().out.splitlines()
        assert header.split()[4:6] == ["SCORE", "RTT"]
        assert any(row.split()[0] == "other" and "ms" in row for row in rows)
    finally:
        _stop(agent)
        if other is not None:
            _stop(other)  # type: ignore[arg-type]


def test_every_commands_json_output_follows_the_documented_schema(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import threading
    from importlib import resources

    import jsonschema

    document = json.loads(resources.files("somasync.cli").joinpath("schema.json")
                          .read_text())
    jsonschema.Draft202012Validator.check_schema(document)

    def check(output: str, definition: str) -> dict[str, object]:
        value = json.loads(output)
        jsonschema.validate(value, {**document, "$ref": f"#/$defs/{definition}"})
        return value  # type: ignore[no-any-return]

    agent, path = _agent_with_rpc(tmp_path, stdin=subprocess.PIPE)
    try:
        rpc = ["--rpc", str(path), "--format", "json"]
        assert main(["members", *rpc]) == 0
        check(capsys.readouterr().out, "members")
        assert main(["stats", *rpc]) == 0
        check(capsys.readouterr().out, "stats")
        lines: list[str] = []
        monitor = threading.Thread(target=lambda: main(["monitor", "--rpc", str(path),
                                                         "--count", "1"]))
        monitor.start()
        deadline = time.monotonic() + 20.0
        while monitor.is_alive() and time.monotonic() < deadline:
            assert main(["publish", *rpc, '{"type": "data", "text": "schema"}']) == 0
            monitor.join(0.2)
        out = capsys.readouterr().out.splitlines()
        published = [line for line in out if '"payload"' in line and '"event"' not in line]
        check(published[0], "published")
        lines = [line for line in out if line.startswith('{"event"')]
        check(lines[0], "monitor_line")
        assert main(["leave", *rpc]) == 0
        check(capsys.readouterr().out, "leaving")
        agent.wait(timeout=30)
    finally:
        _stop(agent)


# --- the RPC endpoint: private by default, TCP only with a token --------------------------

def _agent(*args: str, runtime: Path) -> tuple[subprocess.Popen[str], dict[str, object]]:
    """An agent with ``$XDG_RUNTIME_DIR`` at ``runtime``, and its ready event."""
    agent = subprocess.Popen(
        [sys.executable, "-m", "somasync", "agent", "--bind", "127.0.0.1:0",
         "--preset", "local", "--node-id", "rpc-agent", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    assert agent.stdout is not None
    try:
        line = agent.stdout.readline()
        assert line, f"the agent exited: {agent.communicate(timeout=10.0)[1]}"
        ready: dict[str, object] = json.loads(line)
        assert ready["event"] == "ready"
    except BaseException:
        _stop(agent)
        raise
    return agent, ready


def _raw_tcp(address: str, first: bytes | None) -> list[bytes]:
    """What the agent answers a TCP client that sends ``first`` (None: nothing) and then
    waits for the agent to hang up."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=60.0) as sock:
        if first is not None:
            sock.sendall(first)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received.splitlines()


def test_client_commands_reach_an_agent_over_tcp_with_its_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import stat
    import threading

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # where the client finds the token
    agent, ready = _agent("--rpc", "off", "--rpc-addr", "127.0.0.1:0", runtime=tmp_path)
    try:
        assert ready["rpc"] is None
        address, token_file = str(ready["rpc_addr"]), Path(str(ready["rpc_token_file"]))
        assert address.startswith("127.0.0.1:")
        assert not address.endswith(":0")
        assert token_file.parent == tmp_path / f"somasync-{os.getuid()}"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
        assert len(token_file.read_text().strip()) >= 43  # token_urlsafe(32)
        # The token found next to the agent's socket, named by --rpc-token-file, or by
        # the variables.
        assert main(["members", "--rpc-addr", address]) == 0
        assert capsys.readouterr().out.splitlines()[1].split()[0] == "rpc-agent"
        assert main(["stats", "--rpc-addr", address, "--rpc-token-file", str(token_file),
                     "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out)["rpc_refused"] == {}
        monkeypatch.setenv("SOMASYNC_RPC_ADDR", address)
        monkeypatch.setenv("SOMASYNC_RPC_TOKEN_FILE", str(token_file))
        assert main(["members", "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out)["members"][0]["node_id"] == "rpc-agent"
        monitored: list[int] = []
        monitor = threading.Thread(target=lambda: monitored.append(
            main(["monitor", "--count", "1"])))
        monitor.start()
        deadline = time.monotonic() + 20.0
        while monitor.is_alive() and time.monotonic() < deadline:
            assert main(["publish", "over tcp"]) == 0
            monitor.join(0.2)
        assert monitored == [0]
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        assert json.loads(lines[0])["payload"]["message"] == "over tcp"
        assert main(["leave"]) == 0
        agent.wait(timeout=20.0)
        assert agent.returncode == 0
        assert not token_file.exists()  # a generated token lives as long as its agent
        capsys.readouterr()
        assert main(["members", "--rpc-addr", address, "--rpc-token-file",
                     str(tmp_path / "absent")]) == 2
        assert "rpc_token_file" in capsys.readouterr().err
    finally:
        _stop(agent)


def test_tcp_rpc_refuses_a_wrong_token_no_token_and_a_silent_client_and_counts_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    agent, ready = _agent("--rpc", "off", "--rpc-addr", "127.0.0.1:0", runtime=tmp_path)
    try:
        address, token_file = str(ready["rpc_addr"]), str(ready["rpc_token_file"])
        wrong = tmp_path / "wrong.token"
        wrong.write_text("not-the-token\n")
        wrong.chmod(0o600)
        assert main(["members", "--rpc-addr", address, "--rpc-token-file", str(wrong)]) == 1
        assert "refused the connection: unauthorized" in capsys.readouterr().err
        unauthorized = [b'{"ok":false,"error":"unauthorized"}']
        # A request without the auth line first, and a client that says nothing at all
        # (the agent gives up on it after AUTH_TIMEOUT seconds): one error line, hung up.
        assert _raw_tcp(address, b'{"id": 1, "command": "members"}\n') == unauthorized
        assert _raw_tcp(address, None) == unauthorized
        assert main(["stats", "--rpc-addr", address, "--rpc-token-file", token_file,
                     "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out)["rpc_refused"] == {
            "bad_token": 1, "no_token": 1, "timeout": 1}
        assert main(["leave", "--rpc-addr", address, "--rpc-token-file", token_file]) == 0
        _, stderr = agent.communicate(timeout=20.0)
    finally:
        _stop(agent)
    assert agent.returncode == 0
    # Each refusal is logged once: the first on a line of its own, the rest of the
    # interval summed up (at the latest when the agent stops); how few lines a flood
    # makes is tested on the server itself below.
    refusals = [line for line in stderr.splitlines() if "refused" in line]
    assert all("WARNING somasync.cli.rpc: RPC: refused" in line for line in refusals), stderr
    assert "from 127.0.0.1:" in refusals[0]
    assert "(wrong token)" in refusals[0]
    told = [int(more[1]) if (more := re.search(r"refused (\d+) more", line)) else 1
            for line in refusals]
    assert sum(told) == 3, stderr


async def test_the_rpc_server_caps_unauthenticated_connections_and_sums_up_a_flood(
        caplog: pytest.LogCaptureFixture) -> None:
    from somasync.cli.rpc import RpcServer

    async def handler(command: str, argument: str) -> tuple[str, dict[str, object]]:
        return command, {}

    async def ask(first: bytes) -> list[bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(first)
        answer = [await reader.readline(), await reader.readline()]
        writer.close()
        await writer.wait_closed()
        return answer

    token = "s3cret-token"
    server = RpcServer(None, handler, tcp_address=("127.0.0.1", 0), token=token,
                       max_unauthenticated=2, log_interval=3600.0)
    caplog.set_level("WARNING", logger="somasync.cli.rpc")
    await server.start()
    waiting: list[asyncio.StreamWriter] = []
    try:
        assert server.tcp_address is not None
        host, _, port_text = server.tcp_address.rpartition(":")
        port = int(port_text)
        for _ in range(2):  # two clients that say nothing hold both places
            _, writer = await asyncio.open_connection(host, port)
            waiting.append(writer)
        reader, writer = await asyncio.open_connection(host, port)
        assert await reader.readline() == \
            b'{"ok":false,"error":"too many unauthenticated connections"}\n'
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        waiting[0].close()  # a place frees, and the right token gets in
        await waiting.pop(0).wait_closed()
        for _ in range(300):
            answer = await ask(b'{"auth": "s3cret-token"}\n{"id": 7, "command": "members"}\n')
            if answer[0] != b'{"ok":false,"error":"too many unauthenticated connections"}\n':
                break
            await asyncio.sleep(0.05)  # the agent has not seen the hang-up yet
        assert answer == [b'{"ok":true,"event":"authorized","result":{}}\n',
                          b'{"id":7,"ok":true,"event":"members","result":{}}\n']
        for attempt in range(10):
            assert (await ask(f'{{"auth": "guess-{attempt}"}}\n'.encode()))[0] == \
                b'{"ok":false,"error":"unauthorized"}\n'
        assert await ask('{"auth": "t\u00f6ken"}\n'.encode()) == [
            b'{"ok":false,"error":"unauthorized"}\n', b""]  # not ASCII: refused, no crash
    finally:
        for writer in waiting:
            writer.close()
        await server.close()
    assert server.refused["too_many"] >= 1
    assert server.refused["bad_token"] == 11
    messages = [record.getMessage() for record in caplog.records
                if record.name == "somasync.cli.rpc"]
    assert len(messages) == 2, messages
    assert "too many unauthenticated connections" in messages[0]
    assert f"refused {sum(server.refused.values()) - 1} more TCP connections" in messages[1]


@pytest.mark.parametrize(("flags", "field", "says"), [
    (["--rpc-addr", "0.0.0.0:0"], "rpc_addr", "--rpc-allow-network"),
    (["--rpc-addr", "localhost:0"], "rpc_addr", "not a loopback IP address"),
    (["--rpc-addr", "127.0.0.1"], "rpc_addr", "host:port"),
    (["--rpc-token-file", "token"], "rpc_token_file", "give both"),
    (["--rpc-addr", "127.0.0.1:0", "--rpc-token-file", "absent"], "rpc_token_file",
     "No such file"),
    (["--rpc-addr", "127.0.0.1:0", "--rpc-token-file", "open"], "rpc_token_file",
     "chmod 600"),
    (["--rpc-addr", "127.0.0.1:0", "--rpc-token-file", "empty"], "rpc_token_file",
     "holds no token"),
])
def test_the_tcp_rpc_stays_off_the_network_and_wants_a_private_token(
        tmp_path: Path, flags: list[str], field: str, says: str) -> None:
    for name, mode, text in (("open", 0o640, "token"), ("token", 0o600, "token"),
                             ("empty", 0o600, "\n")):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(mode)
    flags = [str(tmp_path / flag) if flag in ("open", "token", "empty", "absent") else flag
             for flag in flags]
    result = subprocess.run([sys.executable, "-m", "somasync", "agent", "--bind",
                             "127.0.0.1:0", *flags], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert f"somasync agent: {field}: " in result.stderr
    assert says in result.stderr
    assert result.stdout == ""  # no ready event: it never started


def test_a_non_loopback_rpc_address_is_for_the_network_only_when_asked() -> None:
    from somasync.cli.rpc import parse_rpc_addr
    from somasync.errors import ConfigError

    assert parse_rpc_addr("127.0.0.2:0") == ("127.0.0.2", 0)
    assert parse_rpc_addr("[::1]:7000") == ("::1", 7000)
    assert parse_rpc_addr("0.0.0.0:0", allow_network=True) == ("0.0.0.0", 0)
    with pytest.raises(ConfigError) as caught:
        parse_rpc_addr("10.0.0.7:7000")
    assert caught.value.field == "rpc_addr"


def test_an_agent_given_a_token_file_uses_it_and_leaves_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "rpc.token"
    token.write_text("a-token-the-operator-chose\n")
    token.chmod(0o600)
    agent, ready = _agent("--rpc", "off", "--rpc-addr", "127.0.0.1:0", "--rpc-token-file",
                          str(token), runtime=tmp_path)
    try:
        assert ready["rpc_token_file"] == str(token)
        rpc = ["--rpc-addr", str(ready["rpc_addr"]), "--rpc-token-file", str(token)]
        assert main(["members", *rpc]) == 0
        assert main(["leave", *rpc]) == 0
        agent.wait(timeout=20.0)
    finally:
        _stop(agent)
    assert token.read_text() == "a-token-the-operator-chose\n"
    assert not (tmp_path / f"somasync-{os.getuid()}").exists()  # nothing generated


def test_the_default_socket_is_0600_in_a_private_0700_directory(tmp_path: Path) -> None:
    import stat

    agent, ready = _agent(runtime=tmp_path)
    try:
        path = Path(str(ready["rpc"]))
        assert path.parent == tmp_path / f"somasync-{os.getuid()}"
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        _stop(agent)
    # A directory someone else made (or opened up) there is refused, not used.
    (tmp_path / f"somasync-{os.getuid()}").chmod(0o755)
    result = subprocess.run([sys.executable, "-m", "somasync", "agent", "--bind",
                             "127.0.0.1:0", "--preset", "local"], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "somasync agent: rpc: " in result.stderr
    assert "is not a private directory" in result.stderr


def test_another_user_cannot_connect_to_the_agent_s_socket(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As root, a client running as nobody (uid 65534) is refused with EACCES by the
    socket's own mode 0600 (in a directory anyone may enter) and by the default
    directory's 0700; the same socket opened up to 0666 lets it in, so the check can
    fail."""
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another user")
    nobody = {"user": 65534, "group": 65534, "extra_groups": []}
    probe = ("import errno, socket, sys\nsock = socket.socket(socket.AF_UNIX)\n"
             "try:\n    sock.connect(sys.argv[1])\nexcept OSError as exc:\n"
             "    print(errno.errorcode[exc.errno])\nelse:\n    print('connected')\n")
    python = None
    for candidate in (sys.executable, "/usr/bin/python3"):
        with contextlib.suppress(OSError):
            if subprocess.run([candidate, "-c", "pass"], timeout=60,
                              **nobody).returncode == 0:  # type: ignore[call-overload]
                python = candidate
                break
    if python is None:
        pytest.skip("no Python interpreter that uid 65534 may run")

    def connect_as_nobody(path: Path) -> str:
        result = subprocess.run([python, "-c", probe, str(path)], capture_output=True,
                                text=True, timeout=60, **nobody)  # type: ignore[call-overload]
        return str(result.stdout).strip()

    with tempfile.TemporaryDirectory(prefix="somasync-test-") as shared:
        Path(shared).chmod(0o711)  # anyone may enter: only the socket's mode guards it
        socket_path = Path(shared) / "agent.sock"
        agent, _ = _agent("--rpc", str(socket_path), runtime=Path(shared))
        try:
            default, ready = _agent(runtime=Path(shared))
            try:
                assert connect_as_nobody(socket_path) == "EACCES"
                assert connect_as_nobody(Path(str(ready["rpc"]))) == "EACCES"
                assert main(["members", "--rpc", str(socket_path)]) == 0  # its user gets in
                capsys.readouterr()
                socket_path.chmod(0o666)
                assert connect_as_nobody(socket_path) == "connected"
            finally:
                _stop(default)
        finally:
            _stop(agent)


def test_a_busy_rpc_port_stops_the_agent_naming_the_field(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        result = subprocess.run([sys.executable, "-m", "somasync", "agent", "--bind",
                                 "127.0.0.1:0", "--rpc-addr", address], capture_output=True,
                                text=True, timeout=60,
                                env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert f"somasync agent: rpc_addr: cannot listen on {address}" in result.stderr
    assert result.stdout == ""
    # Nothing left behind: no socket, no token.
    assert list((tmp_path / f"somasync-{os.getuid()}").iterdir()) == []


def test_a_client_does_not_look_for_agents_in_a_directory_others_may_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review found that a client took the one socket (or token file) it found in the
    default directory, whoever made it: in a shared /tmp another user could make that
    directory first and plant a socket that receives the client's commands."""
    from somasync.cli.rpc import RpcError, default_directory, find_endpoint

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("SOMASYNC_RPC", raising=False)
    monkeypatch.delenv("SOMASYNC_RPC_ADDR", raising=False)
    directory = default_directory()
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    (directory / "agent-7946.sock").touch()
    (directory / "rpc-127.0.0.1-7950.token").write_text("planted")
    with pytest.raises(RpcError, match="not a private directory"):
        find_endpoint()
    with pytest.raises(RpcError, match="not a private directory"):
        find_endpoint(rpc_addr="127.0.0.1:7950")
    directory.chmod(0o700)  # this user's own and private: found
    assert find_endpoint() == directory / "agent-7946.sock"
