"""The deployment files in ``examples/deploy/``: every agent command they run is one the
agent accepts, and the pieces that must agree (a DNS seed and its service, the compose
services and their seeds, the systemd unit) do."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from somasync.cli.agent import _parser
from somasync.config import parse_seed

DEPLOY = Path(__file__).resolve().parent.parent / "examples" / "deploy"


def agent_options(argv: list[str]) -> object:
    """The agent's parsed options for ``argv`` (["agent", ...]); argparse exits on a
    flag the agent does not have."""
    assert argv[0] == "agent", argv
    return _parser().parse_args(argv[1:])


def flow_lists(text: str, key: str) -> list[list[str]]:
    """Every ``key: [...]`` flow-style list in a YAML file (written as JSON arrays)."""
    return [json.loads(match) for match in re.findall(rf"^\s*{key}: (\[.*\])\s*$", text, re.M)]


def test_the_image_runs_an_agent_the_cli_accepts() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    [entrypoint] = re.findall(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    [command] = re.findall(r"^CMD (\[.*\])$", text, re.M)
    assert json.loads(entrypoint) == ["somasync"]
    options = agent_options(json.loads(command))
    assert options.bind == "0.0.0.0:7946"  # type: ignore[attr-defined]
    assert options.data_dir == "/var/lib/somasync"  # type: ignore[attr-defined]
    assert "VOLUME /var/lib/somasync" in text


def test_each_compose_service_joins_through_the_others() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    services = re.findall(r"^  ([a-z0-9-]+):$", text, re.M)
    commands = flow_lists(text, "command")
    assert len(services) == len(commands) == 3
    for service, command in zip(services, commands, strict=True):
        options = agent_options(command)
        assert options.node_id == service  # type: ignore[attr-defined]
        seeds = {parse_seed(seed)[0] for seed in options.join}  # type: ignore[attr-defined]
        assert seeds == set(services) - {service}


def test_the_statefulset_joins_through_its_headless_service_by_dns() -> None:
    text = (DEPLOY / "kubernetes.yaml").read_text()
    service, statefulset = text.split("\n---\n")
    assert "clusterIP: None" in service
    assert "publishNotReadyAddresses: true" in service
    [service_name] = re.findall(r"^  name: (\S+)$", service, re.M)
    assert f"serviceName: {service_name}" in statefulset
    [args] = flow_lists(statefulset, "args")
    options = agent_options(args)
    [seed] = options.join  # type: ignore[attr-defined]
    assert seed.startswith("dns:")
    assert parse_seed(seed) == (service_name, 7946)
    assert options.node_id == "$(POD_NAME)"  # type: ignore[attr-defined]  # one per pod


def test_the_systemd_unit_runs_an_agent_the_cli_accepts() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "somasync.service")
    command = shlex.split(unit["Service"]["ExecStart"])
    assert command[:2] == ["/usr/bin/env", "somasync"]
    options = agent_options(command[2:])
    assert options.data_dir == "/var/lib/" + unit["Service"]["StateDirectory"]  # type: ignore[attr-defined]
    assert options.rpc.startswith("/run/" + unit["Service"]["RuntimeDirectory"] + "/")  # type: ignore[attr-defined]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_finds_nothing_wrong_with_the_unit() -> None:
    result = subprocess.run(["systemd-analyze", "verify", str(DEPLOY / "somasync.service")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "somasync.service" not in result.stderr  # no warning about it either
