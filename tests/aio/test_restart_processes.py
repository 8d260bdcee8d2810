"""An agent killed with SIGKILL and started again on its data directory (processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from somasync.bench.agents import AgentCluster

pytestmark = pytest.mark.multiprocess

DEADLINE = 60.0  # generous: each wait ends as soon as its condition holds


def texts(cluster: AgentCluster, index: int) -> list[str]:
    return [event["payload"]["message"] for event in cluster.agents[index].of("message")]


@pytest.mark.parametrize("workers", [0, 2])
def test_an_agent_killed_and_restarted_delivers_nothing_twice_and_gets_what_it_missed(
        workers: int, tmp_path: Path) -> None:
    keep = ["--data-dir", str(tmp_path / "keeper"), "--workers", str(workers)]
    with AgentCluster(preset="local") as cluster:
        publisher = cluster.spawn(node_id="publisher")
        cluster.wait(publisher.ready.is_set, "the publisher to listen", DEADLINE)
        keeper = cluster.spawn(node_id="keeper", join=[publisher.address], args=keep)
        cluster.wait(lambda: bool(keeper.of("PeerConnected")), "the keeper to link",
                     DEADLINE)
        for i in range(10):
            publisher.send(f"publish before-{i}")
        cluster.wait(lambda: len(texts(cluster, keeper.index)) == 10, "10 deliveries",
                     DEADLINE)
        key = keeper.of("ready")[0]["public_key"]

        cluster.kill(keeper.index)  # no chance to save anything on the way out
        keeper.process.wait(timeout=DEADLINE)
        for i in range(10):
            publisher.send(f"publish missed-{i}")
        cluster.wait(lambda: len(publisher.of("published")) == 20, "20 publications",
                     DEADLINE)

        again = cluster.spawn(node_id="keeper", join=[publisher.address], args=keep)
        cluster.wait(lambda: sum(t.startswith("missed-") for t in texts(cluster, again.index))
                     == 10, "the restarted agent to get what it missed", DEADLINE)
        publisher.send("publish after")
        cluster.wait(lambda: "after" in texts(cluster, again.index), "a live message",
                     DEADLINE)
        assert again.of("ready")[0]["public_key"] == key
        assert sorted(texts(cluster, again.index)) == sorted(
            [f"missed-{i}" for i in range(10)] + ["after"])
