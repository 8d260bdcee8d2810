"""Adaptive fanout on real nodes: the control part's estimate (membership's live
members) drives the overlay degree and the data part's values, in one process and in a
sharded node's workers."""

from __future__ import annotations

import pytest

from somasync import GossipConfig, MembershipConfig, SynapseNodeBuilder
from somasync.config import AdaptiveConfig, NodeConfig, OverlayConfig
from somasync.core.sizing import epidemic_fanout
from somasync.testing import wait_until

pytestmark = pytest.mark.multiprocess

DEADLINE = 20.0
WIDE = (1, 20)


def config(name: str) -> NodeConfig:
    # Wide bounds and no settle time: a mesh of two already moves the degree from that
    # of one node (3 at p = 0.95) to that of two (4).
    return NodeConfig(node_id=name, bind_address="127.0.0.1:0",
                      gossip=GossipConfig.local().replace(forwarding="push", fanout=2),
                      membership=MembershipConfig.local(), overlay=OverlayConfig.local(),
                      adaptive=AdaptiveConfig(enabled=True, degree_bounds=WIDE,
                                              fanout_bounds=WIDE, ihave_bounds=WIDE,
                                              settle_time=0.0, sketch_interval=0.1,
                                              sketch_epoch=10.0))


@pytest.mark.parametrize("workers", [0, 2])
async def test_a_growing_mesh_retunes_the_overlay_and_the_data_part(workers: int) -> None:
    assert (epidemic_fanout(1, 0.95), epidemic_fanout(2, 0.95)) == (3, 4)
    node, _messages, _events = (SynapseNodeBuilder().with_config(config("x"))
                                .with_workers(workers).build())
    async with node:
        def sizing_degree() -> int | None:
            stats = node.control.statistics()
            return None if stats is None or stats.sizing is None else stats.sizing.degree

        await wait_until(lambda: sizing_degree() == 3, "x alone to derive degree 3",
                         DEADLINE)
        peer, _m, _e = (SynapseNodeBuilder().with_config(config("y"))
                        .add_bootstrap_peer(node.listen_address).build())
        async with peer:
            await wait_until(lambda: sizing_degree() == 4, "x to count two members",
                             DEADLINE)
            overlay = node.control.statistics()
            assert overlay is not None
            assert overlay.size_estimate == 2
            if workers == 0:
                endpoint = node.runtime._endpoint  # type: ignore[attr-defined]
                assert endpoint.config.fanout == 4
            else:
                # Each worker got the values (the supervisor keeps them for a
                # replacement too).
                assert node.runtime._sizing.fanout == 4  # type: ignore[attr-defined]
