"""A real partition between two halves of a mesh, held for 30 s, then healed.

The halves live in two network namespaces joined by a veth pair; taking the pair down
drops every packet between them (TCP and UDP alike), as a failed switch would. Needs
root and ``ip netns``; skipped elsewhere.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from somasync.bench.agents import AgentCluster

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

HALF = 4
HOLD = 30.0  # seconds the partition lasts while both sides publish
DEADLINE = 120.0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def test_partitioned_halves_merge_and_every_node_gets_every_message_once(
        netns_pair: Any) -> None:
    """The halves live in the two namespaces of ``netns_pair``."""
    (ns_a, host_a, veth_a), (ns_b, host_b, _veth_b) = netns_pair
    with AgentCluster(preset="lan") as cluster:
        seed = cluster.spawn(prefix=["ip", "netns", "exec", ns_a], host=host_a)
        cluster.wait(seed.ready.is_set, "the seed to listen", DEADLINE)
        for i in range(2 * HALF - 1):
            side = (ns_a, host_a) if i < HALF - 1 else (ns_b, host_b)
            cluster.spawn(join=[seed.address], prefix=["ip", "netns", "exec", side[0]],
                          host=side[1])
        cluster.wait(lambda: all(a.ready.is_set() for a in cluster.agents), "agents up",
                     DEADLINE)
        cluster.wait(cluster.converged, "the whole mesh to see itself", DEADLINE)
        side_a, side_b = cluster.agents[:HALF], cluster.agents[HALF:]

        _ip("-n", ns_a, "link", "set", veth_a, "down")
        published = 0
        end = time.monotonic() + HOLD
        while time.monotonic() < end:
            for agent in (side_a[published % HALF], side_b[published % HALF]):
                agent.send(f"publish split-{published}-{agent.node_id}")
            published += 1
            time.sleep(HOLD / 10)
        # Each side has declared the other failed by now (and kept its own messages).
        cluster.wait(lambda: all(cluster.view(a.index, {"PeerFailed"})
                                 == {b.node_id for b in (side_b if a in side_a else side_a)}
                                 for a in cluster.agents), "each side to fail the other", 30)

        # The split was real: nothing published on one side reached the other.
        for agent in cluster.agents:
            other = {b.node_id for b in (side_b if agent in side_a else side_a)}
            assert not [e for e in agent.of("message") if e["source"] in other]

        _ip("-n", ns_a, "link", "set", veth_a, "up")
        took = cluster.wait(cluster.converged, "the halves to merge", DEADLINE)
        print(f"merged {took:.1f} s after the heal")

        def ids(agent_index: int) -> list[str]:
            agent = cluster.agents[agent_index]
            return [e["id"] for e in agent.of("message")] + [e["id"] for e in
                                                             agent.of("published")]

        expected = {e["id"] for agent in cluster.agents for e in agent.of("published")}
        assert len(expected) == 2 * published
        took = cluster.wait(lambda: all(set(ids(a.index)) == expected
                                        for a in cluster.agents),
                            "every node to hold every message", DEADLINE)
        print(f"every message everywhere {took:.1f} s after the merge")
        for agent in cluster.agents:
            delivered = ids(agent.index)
            assert len(delivered) == len(set(delivered)) == len(expected), agent.node_id
