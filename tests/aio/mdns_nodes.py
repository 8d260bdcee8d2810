"""Run by ``test_mdns.py`` inside a network namespace it created (multicast stays there):
two nodes of this one process, one of them sharded, find each other by mDNS with no
seed, let go of each other as they stop, and find each other again after a restart.
Prints what it saw as one JSON object.

Usage: ``python mdns_nodes.py ADDRESS`` (an address of an interface that multicasts).
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import psutil
import uvloop
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from somasync import MembershipConfig, SynapseNode, SynapseNodeBuilder
from somasync.config import MDNS_SERVICE_TYPE
from somasync.testing import wait_until

MDNS_PORT = 5353
DEADLINE = 60.0  # generous: each wait ends as soon as its condition holds


def mdns_sockets() -> int:
    """UDP sockets of this process on the mDNS port (zeroconf's)."""
    return sum(1 for c in psutil.Process().net_connections("udp") if c.laddr.port == MDNS_PORT)


def alive(node: SynapseNode) -> list[str]:
    return sorted(m.node_id for m in node.members() if m.state.value == "alive")


def found(node: SynapseNode) -> list[str]:
    mdns = node.control.mdns
    return [] if mdns is None else mdns.seeds


def core_seeds(node: SynapseNode) -> list[str]:
    control = node.control.control
    assert control is not None
    assert control.membership is not None
    return control.membership.seeds


async def announcement(host: str, name: str) -> dict[str, Any]:
    """What the network answers about the service ``name``, asked by a third party."""
    async with AsyncZeroconf(interfaces=[host]) as zc:
        info = AsyncServiceInfo(MDNS_SERVICE_TYPE, name)
        if not await info.async_request(zc.zeroconf, 5000):
            return {}
        return {"addresses": info.parsed_addresses(), "port": info.port,
                "id": (info.properties.get(b"id") or b"").decode(),
                "key": (info.properties.get(b"key") or b"").decode()}


async def main(host: str) -> dict[str, Any]:
    report: dict[str, Any] = {"threads_before": threading.active_count()}
    nodes = []
    for name, workers in (("plain", 0), ("sharded", 1)):
        node, _messages, _events = (
            SynapseNodeBuilder().with_node_id(name).with_bind_address(f"{host}:0")
            .with_discovery("gossip", "mdns").with_workers(workers)
            .with_membership_config(MembershipConfig.local()).build())
        nodes.append(node)
    plain, sharded = nodes
    try:
        for node in nodes:
            await node.start()
        report["addresses"] = {n.node_id: n.listen_address for n in nodes}
        report["public_keys"] = {n.node_id: n.public_key.hex() for n in nodes}
        report["mdns_sockets_running"] = mdns_sockets()
        await wait_until(lambda: all(alive(n) == ["plain", "sharded"] for n in nodes),
                         "both nodes to see both alive", DEADLINE)
        await wait_until(lambda: all(found(n) for n in nodes), "both to find the other",
                         DEADLINE)
        report["found"] = {n.node_id: found(n) for n in nodes}
        report["core_seeds"] = {n.node_id: core_seeds(n) for n in nodes}
        mdns = sharded.control.mdns
        assert mdns is not None
        report["announcement"] = await announcement(host, mdns.name)

        await sharded.stop()
        gone = sharded.listen_address
        await wait_until(lambda: gone not in found(plain), "the plain node to drop the "
                         "stopped one's announcement", DEADLINE)
        report["found_after_stop"] = found(plain)
        report["core_seeds_after_stop"] = core_seeds(plain)

        await sharded.start()  # a restarted node announces itself again
        await wait_until(lambda: found(plain) == [gone] and found(sharded) == [
            plain.listen_address], "the restarted node and the other to find each other",
            DEADLINE)
        report["found_after_restart"] = {n.node_id: found(n) for n in nodes}
    finally:
        for node in nodes:
            await node.stop()
    report["mdns_sockets_after"] = mdns_sockets()
    report["threads_after"] = threading.active_count()
    return report


if __name__ == "__main__":
    print(json.dumps(uvloop.run(main(sys.argv[1]))))
