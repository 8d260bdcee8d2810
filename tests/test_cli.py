"""The command line: ``somasync`` (and ``python -m somasync``) as an operator meets it."""

from __future__ import annotations

import asyncio
import contextlib
import json
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
            main(["monitor", "--rpc", str(path), "--count", "1"])))
        monitor.start()
        deadline = time.monotonic() + 20.0
        while monitor.is_alive() and time.monotonic() < deadline:
            assert main(["publish", "--rpc", str(path), "intrusion on db-3"]) == 0
            monitor.join(0.2)
        assert monitored == [0]
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        event = json.loads(lines[0])
        assert event["event"] == "published"
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
