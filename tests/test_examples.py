"""Every script in ``examples/`` runs as a user would run it, and says what it promised."""

from __future__ import annotations

import re
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
    tested = {"quick_start.py", "intel_feed.py", "sharded_node.py", "direct_message.py",
              "query_status.py",
              # The original README's examples, one per section.
              "basic_mesh.py", "message_broadcasting.py", "event_handling.py",
              "message_signing.py", "enterprise_gossip.py", "basic_configuration.py",
              "enterprise_configuration.py", "monitoring.py"}
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


# --- the original README's examples ------------------------------------------------------


def test_basic_mesh_links_alpha_and_beta() -> None:
    assert run("basic_mesh.py").splitlines() == ["alpha -> beta: connected=True"]


def test_message_broadcasting_delivers_the_critical_alert_and_the_record() -> None:
    assert run("message_broadcasting.py").splitlines() == [
        "255 Alert(level='critical', message='System overload detected', details=None)",
        "128 Structured(fields={'temperature': '85.2', 'unit': 'celsius'})",
    ]


def test_event_handling_sees_the_peer_and_the_message() -> None:
    lines = run("event_handling.py").splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"New peer connected: sender at 127\.0\.0\.1:\d+", lines[0])
    assert sorted(lines[1:]) == ["Message from sender: Data(text='Hello, neural mesh!')",
                                 "Received: Data(text='Hello, neural mesh!')"]


def test_message_signing_verifies_and_catches_a_change() -> None:
    lines = run("message_signing.py").splitlines()
    assert lines[:2] == ["Message verified - authentic threat intel", "Message is not signed"]
    assert re.fullmatch(r"Message signature invalid: message [0-9a-f]{32}: "
                        r"signature does not match", lines[2])


def test_enterprise_gossip_protocols_carry_a_signed_alert() -> None:
    assert run("enterprise_gossip.py").splitlines() == [
        "enterprise-node-001 255 Alert(level='critical', message='APT detected', "
        "details=None) True",
        "fanout 20, max_send_rate 50000000, enterprise True",
        "GossipStats(healthy_peers=1, total_peers=1, cached_messages=1, known_messages=1)",
    ]


def test_basic_configuration_maps_and_refuses_the_originals_fields() -> None:
    assert run("basic_configuration.py").splitlines() == [
        "refused: gossip.gossip_interval",
        "configured-node 5 30.0 1800.0 10000 1.0 gossip",
    ]


def test_enterprise_configuration_sets_real_settings() -> None:
    assert run("enterprise_configuration.py").splitlines() == [
        "threat-intel: forwarding=tree degree=10 fanout=10 max_send_rate=100000000 "
        "max_link_send_rate=0 anti_entropy_batch=100 anti_entropy_interval=1.0 "
        "require_signatures=True",
        "large-scale: forwarding=tree degree=50 fanout=50 max_send_rate=1000000000 "
        "max_link_send_rate=25000000 anti_entropy_batch=1024 anti_entropy_interval=10.0 "
        "require_signatures=True",
    ]


def test_monitoring_reports_the_originals_figures() -> None:
    lines = run("monitoring.py").splitlines()
    assert lines[0] == "Node: monitored"
    assert re.fullmatch(r"Uptime: \d+\.\d{3}s", lines[1])
    assert lines[2:5] == ["Messages processed: 1", "Healthy peers: 1", "Cached messages: 1"]
    assert re.fullmatch(r"Bytes received: [1-9]\d*", lines[5])


def test_direct_message_reaches_one_node_through_a_relay_and_is_answered() -> None:
    assert run("direct_message.py").splitlines() == [
        "sensor got Command(action='isolate', params={'host': 'ws-042'}) from hq signed: True",
        "hq got Data(text='ws-042 isolated') answering True",
        "hq reaches sensor via relay",
        "relay delivered 0 messages",
    ]


def test_query_status_collects_filtered_and_capped_answers() -> None:
    assert run("query_status.py").splitlines() == [
        "all: ['node-1', 'node-2', 'node-3']",
        "sensors: ['node-1', 'node-3']",
        "first two: 2 timed out: False",
    ]
