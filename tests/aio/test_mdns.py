"""mDNS discovery: nodes announce themselves with DNS-SD and join whoever they find,
with no seed at all.

Multicast never leaves the network namespaces these tests create (a veth pair, see
``netns_pair``); they need root and iproute2 and are skipped elsewhere.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from somasync import ConfigError, SynapseNodeBuilder
from somasync.aio.mdns import instance_name
from somasync.bench.agents import AgentCluster
from somasync.config import DiscoveryMethod, NodeConfig

DEADLINE = 90.0  # generous: each wait ends as soon as its condition holds
SCRIPT = Path(__file__).with_name("mdns_nodes.py")
MDNS = frozenset({DiscoveryMethod.GOSSIP, DiscoveryMethod.MDNS})


# --- configuration -----------------------------------------------------------------------

def test_without_the_extra_mdns_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zeroconf", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'somasync\[mdns\]'") as caught:
        SynapseNodeBuilder().with_bind_address("10.0.0.7:0").with_discovery("gossip", "mdns")
    assert caught.value.field == "discovery"
    # Removed after the configuration was checked: the node's start says the same.
    monkeypatch.delitem(sys.modules, "somasync.aio.mdns", raising=False)
    with pytest.raises(ConfigError, match=r"somasync\[mdns\]"):
        importlib.import_module("somasync.aio.mdns")
    NodeConfig(discovery=frozenset({DiscoveryMethod.GOSSIP}))  # nobody else needs it


@pytest.mark.parametrize(("changes", "field_name"), [
    ({"bind_address": "0.0.0.0:7946"}, "mdns_interfaces"),
    ({"bind_address": "localhost:7946"}, "mdns_interfaces"),
    ({"mdns_interfaces": ("eth0",)}, "mdns_interfaces"),
    ({"mdns_interfaces": ["10.0.0.7"]}, "mdns_interfaces"),
    ({"mdns_interfaces": ("10.0.0.7", "fd00::7")}, "mdns_interfaces"),
    ({"mdns_interfaces": ("fd00::7",)}, "mdns_interfaces"),  # bound to IPv4
])
def test_mdns_needs_an_address_to_announce(changes: dict[str, object],
                                           field_name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        NodeConfig(**{"bind_address": "10.0.0.7:7946", "discovery": MDNS, **changes})
    assert caught.value.field == field_name


def test_a_wildcard_bind_address_with_named_interfaces_is_fine() -> None:
    config = NodeConfig(bind_address="0.0.0.0:7946", discovery=MDNS,
                        mdns_interfaces=("10.0.0.7", "192.168.1.7"))
    assert config.mdns_interfaces == ("10.0.0.7", "192.168.1.7")
    NodeConfig(bind_address="[::]:7946", discovery=MDNS, mdns_interfaces=("fd00::7",))
    NodeConfig(bind_address="0.0.0.0:7946")  # without mDNS nothing is announced


async def test_a_flood_of_announcements_is_followed_only_up_to_a_bound() -> None:
    """A review found every announced service was resolved and its addresses dialled:
    anyone on the LAN could make every node dial and send state to addresses it chose."""
    from zeroconf import ServiceStateChange

    from somasync.aio import mdns

    discovery = mdns.MdnsDiscovery(node_id="me", public_key=bytes(32), host="10.0.0.7",
                                   port=7946, interfaces=("10.0.0.7",),
                                   found=lambda _: None, lost=lambda _: None)
    resolving: list[str] = []

    async def resolve(zc: object, name: str) -> None:  # no network: count the lookups
        resolving.append(name)

    discovery._resolve = resolve  # type: ignore[method-assign]
    for i in range(mdns.MAX_SERVICES + 50):
        discovery._on_change(None, mdns.MDNS_SERVICE_TYPE,  # type: ignore[arg-type]
                             f"flood-{i}.{mdns.MDNS_SERVICE_TYPE}", ServiceStateChange.Added)
    assert len(discovery._resolving) == mdns.MAX_SERVICES
    assert discovery._ignored == 50
    for task in list(discovery._tasks):
        await task


def test_instance_names_fit_one_dns_label_and_tell_nodes_apart() -> None:
    key_a, key_b = bytes(range(32)), bytes(range(1, 33))
    assert instance_name("edge-7", key_a) == "edge-7 [00010203]"
    assert instance_name("edge-7", key_a) != instance_name("edge-7", key_b)
    long = instance_name("\u00e9" * 200, key_a)  # 2 bytes each: cut between characters
    assert len(long.encode()) <= 63
    assert long.endswith(" [00010203]")
    assert long.startswith("\u00e9" * 26)
    assert instance_name("a\x00b\nc", key_a) == "abc [00010203]"
    assert instance_name("\x01", key_a) == "somasync [00010203]"


# --- real multicast, in network namespaces -----------------------------------------------

@pytest.mark.multiprocess
def test_two_nodes_of_one_process_find_each_other_and_let_go(netns_pair: Any) -> None:
    """In one process (the plain runtime and a sharded one), inside a namespace: each
    announces its address and key, joins the other with no seed, drops the other's
    seed once it stops, finds it again once it restarts, and leaves no mDNS socket and
    no thread behind."""
    host = netns_pair[0]
    done = subprocess.run([*host.prefix, sys.executable, "-W", "error", str(SCRIPT),
                           host.address], capture_output=True, text=True, timeout=180,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    plain, sharded = report["addresses"]["plain"], report["addresses"]["sharded"]
    assert report["found"] == {"plain": [sharded], "sharded": [plain]}
    assert sharded in report["core_seeds"]["plain"]
    assert plain in report["core_seeds"]["sharded"]
    assert report["mdns_sockets_running"] > 0
    host_part, _, port = sharded.rpartition(":")
    assert report["announcement"] == {"addresses": [host_part], "port": int(port),
                                      "id": "sharded",
                                      "key": report["public_keys"]["sharded"]}
    assert report["found_after_stop"] == []
    assert report["found_after_restart"] == report["found"]
    assert sharded not in report["core_seeds_after_stop"]
    assert report["mdns_sockets_after"] == 0
    assert report["threads_after"] == report["threads_before"]


@pytest.mark.multiprocess
@pytest.mark.parametrize("methods", [["gossip", "mdns"], ["mdns"]],
                         ids=["gossip+mdns", "mdns_only"])
def test_agents_on_two_hosts_find_each_other_with_no_seed(
        netns_pair: Any, methods: list[str], tmp_path: Path) -> None:
    """Three agents, two on one host and one on the other, none given a seed: mDNS set
    by a flag, a ``SOMASYNC_DISCOVERY`` variable and a configuration file; they become
    one mesh and a message reaches everyone."""
    a, b = netns_pair
    config = tmp_path / "node.toml"
    config.write_text(f"discovery = {json.dumps(methods)}\n")
    flags = [arg for method in methods for arg in ("--discovery", method)]
    with AgentCluster(preset="local", extra=["--rpc", "off", "--data-dir", "off"]) as cluster:
        cluster.spawn(prefix=a.prefix, host=a.address, args=flags)
        cluster.spawn(prefix=[*a.prefix, "env", f"SOMASYNC_DISCOVERY={','.join(methods)}"],
                      host=a.address)
        cluster.spawn(prefix=b.prefix, host=b.address, args=["--config", str(config)])
        cluster.wait(lambda: all(agent.ready.is_set() for agent in cluster.agents),
                     "the agents to listen", DEADLINE)
        took = cluster.wait(cluster.converged, "one mesh of three", DEADLINE)
        print(f"one mesh {took:.2f} s after the last agent listened")
        since = time.time()
        cluster.agents[2].send("publish found-by-mdns")
        cluster.wait(lambda: all(any(e["payload"].get("message") == "found-by-mdns"
                                     and e["t"] >= since for e in agent.of("message"))
                                 for agent in cluster.agents[:2]),
                     "the message to reach the other host's agents", DEADLINE)
