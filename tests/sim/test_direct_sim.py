"""Direct messages on the simulator: hundreds of real endpoints on HyParView, with
relays crashing while messages are on their way."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from somasync.core import direct
from somasync.core.endpoint import Delivery
from somasync.core.events import DirectAcked, DirectFailed, RouteDiscovered
from somasync.core.payload import MessageType
from somasync.message import Message
from somasync.sim.engine import Simulation
from somasync.testing import WALL


class Watch:
    """What the endpoints report: the engine takes (and drops) their events itself."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.events: list[object] = []
        self.direct: Counter[tuple[int, bytes]] = Counter()  # (node, message id) -> copies
        self.retries = 0
        for node in sim.nodes:
            self.watch(node.index)

    def watch(self, index: int) -> None:
        endpoint: Any = self.sim.nodes[index].endpoint
        take_events, take_deliveries = endpoint.take_events, endpoint.take_deliveries

        def events() -> list[object]:
            taken = take_events()
            self.events.extend(e for e in taken
                               if isinstance(e, DirectAcked | DirectFailed | RouteDiscovered))
            return taken

        def deliveries() -> list[Delivery]:
            taken = take_deliveries()
            for delivery in taken:
                if delivery.direct:
                    self.direct[(index, delivery.envelope.id)] += 1
            return taken

        endpoint.take_events = events
        endpoint.take_deliveries = deliveries
        router = endpoint._direct
        transmit = router._transmit

        def counted(pending: Any) -> None:
            self.retries += pending.attempt > 0
            transmit(pending)

        router._transmit = counted

    def drain(self) -> None:
        for node in self.sim.nodes:
            if node.alive and node.endpoint is not None:
                node.endpoint.take_events()


def send(sim: Simulation, sender: int, target: int, text: str, timeout: float) -> bytes:
    node, other = sim.nodes[sender], sim.nodes[target]
    key = other.identity.public_key
    message = Message(MessageType.Data(text), node.name, sequence=0,
                      timestamp=WALL + sim.now, headers={direct.DIRECT_HEADER: key.hex()})
    envelope = message.sign_with_ed25519(node.identity).to_envelope()
    assert node.endpoint is not None
    message_id = node.endpoint.send_direct(envelope, key, other.name, now=sim.now,
                                           timeout=timeout)
    sim._pump(node)
    return message_id


def test_direct_messages_reach_their_targets_once_while_relays_crash() -> None:
    size = 120
    sim = Simulation(size, seed=5)
    sim.start()
    sim.run(8.0)  # the overlay forms
    watch = Watch(sim)
    rng = random.Random(9)
    ends = rng.sample(range(size), 80)
    pairs = list(zip(ends[:40], ends[40:], strict=True))
    bystanders = sorted(set(range(size)) - set(ends))
    sent: dict[bytes, int] = {}
    for i, (sender, target) in enumerate(pairs[:20]):
        sent[send(sim, sender, target, f"first {i}", timeout=20.0)] = target
    sim.run(0.002)  # on their way: some frames sit with relays now
    sim.crash(rng.sample(bystanders, 10))  # a quarter of the relays, mid-way
    for i, (sender, target) in enumerate(pairs[20:]):
        sent[send(sim, sender, target, f"later {i}", timeout=20.0)] = target
    sim.run(25.0)
    watch.drain()
    acked = {e.message_id for e in watch.events if isinstance(e, DirectAcked)}
    failed = [e for e in watch.events if isinstance(e, DirectFailed)]
    assert failed == []
    assert acked == set(sent)
    # Exactly once, and only at the target.
    assert {(node, mid): n for (node, mid), n in watch.direct.items()} == {
        (target, mid): 1 for mid, target in sent.items()}
    assert watch.retries > 0  # the crashes broke paths that messages were on
    routes = [e for e in watch.events if isinstance(e, RouteDiscovered)]
    assert routes  # most targets are not neighbours: routes were learned
    relayed = sum(n.endpoint.statistics().rejected.get("direct_duplicate", 0)
                  for n in sim.nodes if n.alive and n.endpoint is not None)
    assert relayed > 0  # floods met themselves, and were cut there
