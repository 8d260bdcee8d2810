"""Do the broadcast trees prefer low-latency links? A simulator measurement.

    python bench/tree_latency.py [--nodes 500] [--broadcasts 200] [--seed 1]

Puts ``--nodes`` virtual nodes in five WAN regions (``somasync.sim.WanModel``), lets the
HyParView overlay form, sends ``--broadcasts`` broadcasts from the workload's publishers,
and compares the one-way latency of every overlay link with that of the links each
origin's tree kept eager and of those it pruned to lazy. The overlay itself is random
(it knows nothing of latency); a tree made of the links that delivered first should lean
to the fast ones.
"""

from __future__ import annotations

import argparse
import statistics

from somasync.sim import NetworkModel, SimSettings, Simulation, WanModel, sim_gossip_config

CROSS_REGION = 0.01  # seconds: intra-region pairs are about 1 ms, inter-region 30+ ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--broadcasts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sim = Simulation(args.nodes, seed=args.seed,
                     config=sim_gossip_config(SimSettings(nodes=args.nodes)),
                     network=NetworkModel(wan=WanModel.default()))
    sim.start()
    sim.run(5.0)
    for _ in range(args.broadcasts):
        sim.broadcast()
        sim.run(0.05)
    sim.run(3.0)
    overlay: list[float] = []
    eager: list[float] = []
    lazy: list[float] = []
    for node in sim.nodes:
        endpoint = node.endpoint
        tree = endpoint._tree  # the simulator's own inspection of the core's state
        assert tree is not None
        peers = {link: sim.node_named(name) for link, name in endpoint.peer_links().items()}
        latency = {link: sim.latency(node.index, peer.index)
                   for link, peer in peers.items() if peer is not None}
        overlay.extend(latency.values())
        for tag in tree._pruned:
            for link, value in latency.items():
                (eager if tree.is_eager(link, tag) else lazy).append(value)

    def row(name: str, values: list[float]) -> str:
        cross = sum(1 for v in values if v > CROSS_REGION) / len(values)
        return (f"{name:<28} mean {statistics.mean(values) * 1e3:6.1f} ms   median "
                f"{statistics.median(values) * 1e3:6.1f} ms   cross-region {cross:4.0%}"
                f"   n={len(values)}")

    print(f"{args.nodes} nodes, 5 WAN regions, {args.broadcasts} broadcasts, seed {args.seed}")
    print(row("overlay links", overlay))
    print(row("tree (eager) link ends", eager))
    print(row("pruned (lazy) link ends", lazy))
    print(f"copies missing at the end: {sim.missing_copies()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
