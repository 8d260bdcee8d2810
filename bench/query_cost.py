"""What a query's answers cost the mesh: frames every node sends while every node answers
one query with a direct message to its asker, with the query's way back learned
(somasync.core.direct.QUERY_HEADER) and without (each answer's first try floods).

The simulator runs the real core on HyParView; the background traffic (anti-entropy,
membership, the overlay) of an equally long quiet stretch of the same run is subtracted.

    python bench/query_cost.py --nodes 120 --seeds 5,6,7
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

from somasync.core import direct
from somasync.core.events import DirectAcked
from somasync.core.payload import MessageType
from somasync.message import Message
from somasync.sim.engine import Simulation
from somasync.testing import WALL

QUIET = 5.0  # simulated seconds, for the background and then for the answers


def frames_sent(sim: Simulation) -> int:
    return sum(node.endpoint.statistics().frames_out for node in sim.nodes
               if node.alive and node.endpoint is not None)


def count_acks(sim: Simulation) -> list[int]:
    """Counts DirectAcked events (the engine takes and drops them itself)."""
    acked = [0]
    for node in sim.nodes:
        endpoint: Any = node.endpoint
        take: Callable[[], list[object]] = endpoint.take_events

        def counted(take: Callable[[], list[object]] = take) -> list[object]:
            taken = take()
            acked[0] += sum(isinstance(event, DirectAcked) for event in taken)
            return taken

        endpoint.take_events = counted
    return acked


def answers_cost(size: int, seed: int, *, query_routes: bool) -> tuple[int, int]:
    """(frames the answers took, answers acknowledged) for one query answered by all."""
    learn = direct.DirectRouter.learn_route
    if not query_routes:
        def without_query_routes(router: direct.DirectRouter, state: Any, sender: bytes, *,
                                 query: bool = False) -> None:
            if not query:
                learn(router, state, sender)
        direct.DirectRouter.learn_route = without_query_routes  # type: ignore[method-assign]
    try:
        sim = Simulation(size, seed=seed)
        sim.start()
        sim.run(8.0)  # the overlay forms
        acked = count_acks(sim)
        asker = sim.nodes[0]
        assert asker.endpoint is not None
        query = Message(MessageType.Data("who is there?"), asker.name, sequence=1,
                        timestamp=WALL + sim.now, headers={direct.QUERY_HEADER: "q1"})
        asker.endpoint.broadcast(query.sign_with_ed25519(asker.identity).to_envelope(),
                                 now=sim.now)
        sim._pump(asker)
        sim.run(2.0)  # everyone has it
        before = frames_sent(sim)
        sim.run(QUIET)
        background = frames_sent(sim) - before
        before = frames_sent(sim)
        key = asker.identity.public_key
        for node in sim.nodes[1:]:
            answer = Message(MessageType.Data(f"{node.name} is"), node.name, sequence=0,
                             timestamp=WALL + sim.now,
                             headers={direct.DIRECT_HEADER: key.hex()})
            assert node.endpoint is not None
            node.endpoint.send_direct(answer.sign_with_ed25519(node.identity).to_envelope(),
                                      key, asker.name, now=sim.now, timeout=20.0)
            sim._pump(node)
        sim.run(QUIET)
        return frames_sent(sim) - before - background, acked[0]
    finally:
        direct.DirectRouter.learn_route = learn  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=120)
    parser.add_argument("--seeds", default="5,6,7")
    args = parser.parse_args()
    results: dict[bool, list[int]] = {True: [], False: []}
    for seed in (int(s) for s in args.seeds.split(",")):
        for routes in (True, False):
            cost, acked = answers_cost(args.nodes, seed, query_routes=routes)
            results[routes].append(cost)
            print(f"seed {seed}, query routes {'on ' if routes else 'off'}: {cost:,} frames, "
                  f"{acked} of {args.nodes - 1} answers acknowledged")
    for routes in (True, False):
        costs = results[routes]
        print(f"query routes {'on ' if routes else 'off'}: median {statistics.median(costs):,.0f}"
              f" frames ({min(costs):,}-{max(costs):,})")


if __name__ == "__main__":
    main()
