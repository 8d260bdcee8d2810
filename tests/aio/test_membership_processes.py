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


def _free_port() -> int:
    """A port free for both TCP and UDP on loopback now (the agent binds both)."""
    import socket

    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(port)


@pytest.mark.parametrize("seed_comes_up", [True, False], ids=["late_seed", "seed_never_up"])
def test_nodes_started_in_any_order_converge_into_one_cluster(seed_comes_up: bool) -> None:
    """The filed split: eight agents, each bootstrapping through agent 0 and its
    predecessor, agent 0 starting 1.5 s after the others (or never). Before: two or three
    clusters, still split after 80 s."""
    count = 8
    seed = f"127.0.0.1:{_free_port()}"
    with AgentCluster(preset="lan") as cluster:
        previous: list[str] = []
        for i in range(1, count):
            agent = cluster.spawn(node_id=f"agent-{i}", join=[seed, *previous])
            cluster.wait(agent.ready.is_set, f"agent-{i} to listen", DEADLINE)
            previous = [agent.address]
        if seed_comes_up:
            time.sleep(1.5)
            late = cluster.spawn(node_id="agent-0", args=["--bind", seed])
            cluster.wait(late.ready.is_set, "agent-0 to listen", DEADLINE)
        took = cluster.wait(cluster.converged, "one cluster", DEADLINE)
        print(f"one cluster of {len(cluster.running())} {took:.2f} s after the last start")
        expected = count if seed_comes_up else count - 1
        assert all(n == expected for n in cluster.alive_counts())
