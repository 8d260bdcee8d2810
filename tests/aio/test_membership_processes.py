"""32 agent processes on loopback: join through one seed, kill -9, SIGSTOP and SIGCONT."""

from __future__ import annotations

import time

import pytest

from somasync.bench.agents import AgentCluster

pytestmark = pytest.mark.multiprocess

NODES = 32
DEADLINE = 90.0  # generous: each wait ends as soon as its condition holds


def test_32_processes_join_detect_failures_and_recover() -> None:
    with AgentCluster(preset="lan") as cluster:
        cluster.start(NODES, within=DEADLINE)
        took = cluster.wait(cluster.converged, f"{NODES} alive everywhere", DEADLINE)
        print(f"converged {took:.2f} s after the last agent listened")
        assert all(count == NODES for count in cluster.alive_counts())

        since = time.time()
        cluster.kill(7)
        took = cluster.wait(lambda: cluster.all_see(7, "PeerFailed", since=since),
                            "every survivor to report the killed node failed", DEADLINE)
        print(f"kill -9 seen failed by all in {took:.2f} s")

        since = time.time()
        cluster.pause(11)
        took = cluster.wait(lambda: cluster.all_see(11, "PeerFailed", since=since),
                            "every other node to report the stopped node failed", DEADLINE)
        print(f"SIGSTOP seen failed by all in {took:.2f} s")

        since = time.time()
        cluster.resume(11)
        took = cluster.wait(lambda: cluster.all_see(11, "PeerRecovered", since=since),
                            "every other node to see the resumed node alive", DEADLINE)
        print(f"SIGCONT: refuted and alive everywhere in {took:.2f} s")
        for agent in cluster.running():
            if agent.index != 11:
                assert cluster.agents[11].node_id in cluster.view(
                    agent.index, {"PeerJoined", "PeerRecovered"})
            # Nobody else was ever declared failed: no false positives along the way.
            failed = {e["peer_id"] for e in agent.of("PeerFailed")}
            assert failed <= {cluster.agents[7].node_id, cluster.agents[11].node_id}
