"""What one bench run does: a frozen, validated settings object and the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from somasync.config import GossipConfig, require, require_int, require_number

__all__ = ["PRESETS", "SCENARIOS", "BenchSettings"]

SCENARIOS = ("steady", "burst", "kill-node", "kill-worker", "slow", "soak", "priority")
"""steady: open-loop publishing at ``rate``; burst: every message at once, as fast as the
connections take them (the one scenario that deviates from the library's defaults: see
:meth:`BenchSettings.gossip_deviations`); kill-node: SIGKILL of one node process halfway (it has no
publisher; loss is counted over the survivors); kill-worker: SIGKILL of one worker
process of node 0 halfway (every node must still get everything); slow: node 0's
application takes at most ``slow_rate`` messages/s; soak: steady publishing, reported
interval by interval (latency and RSS of every node, every ``interval`` seconds) with
its trend, to show that nothing grows with uptime; priority: publisher 0 sends critical
alerts at ``critical_rate`` for the whole run (priority 254 in its first half, while the
mesh is idle, 255 in its second), and the other publishers bulk (priority 0) at ``rate``
(0: as fast as the connections take it) from half-time on, so the report compares a
critical alert's latency under a bulk load that saturates the nodes with its idle
latency, measured in the same run."""


@dataclass(frozen=True)
class BenchSettings:
    """One run of ``python -m somasync.bench``; every field is a command-line flag."""

    nodes: int = 5
    """Node processes in the mesh (each verifies every message)."""
    workers: int = 0
    """Worker processes per node (0 = the single-process node)."""
    publishers: int = 1
    """Publisher processes; each joins one node (round robin) and signs its own messages."""
    rate: float = 500.0
    """Messages/s offered by all publishers together, on an open-loop schedule. 0 means
    as fast as the connections take them (closed loop: latency then includes queueing)."""
    size: int = 256
    """Payload bytes per message (at least the 20-byte bench header)."""
    duration: float = 5.0
    """Seconds of publishing; the message count is ``rate x duration`` unless given."""
    messages: int | None = None
    """Total messages over all publishers (required when ``rate`` is 0)."""
    scenario: str = "steady"
    """One of :data:`SCENARIOS`."""
    priority_mix: tuple[tuple[int, int], ...] = ((200, 1), (128, 8), (32, 1))
    """(priority, weight) pairs: each message's priority is drawn with these weights."""
    seed: int = 1
    """Seeds the topology and the priority draws (keys are always fresh)."""
    links: int = 2
    """Bootstrap peers each joining node dials (chosen at random among earlier nodes), so
    the mesh is connected and the average degree is about ``2 x links``."""
    slow_rate: float = 200.0
    """``slow`` scenario: messages/s node 0's application can take."""
    drain_timeout: float = 30.0
    """Seconds to wait, after the last message is sent, for every node to have it all."""
    drop_every: int = 0
    """Testing the bench itself: node 0's application discards every k-th delivery (the
    run must then fail). 0 = off."""
    anti_entropy_interval: float | None = None
    """Seconds between anti-entropy rounds in the bench's nodes; None keeps the library's
    default. The nodes run ``GossipConfig.lan()`` unchanged unless a flag says otherwise,
    and the report's header lists every deviation: a bench of a configuration users do
    not run measures nothing they get."""
    signing: str = "single"
    """How publishers sign: ``single`` (a signature per message) or ``batch``
    (``batch_size`` messages of a publisher to one signature over their Merkle tree,
    :func:`somasync.message.sign_batch`, as a node with ``signing_batch_size`` does)."""
    batch_size: int = 64
    """``batch`` signing: messages per signature (2-1024)."""
    batch_window: float = 0.002
    """``batch`` signing: seconds the first message of a batch waits for the rest before
    the batch is signed as it is; measured latency includes this wait."""
    critical_rate: float = 20.0
    """``priority`` scenario: critical alerts per second from publisher 0."""
    read_ahead_bytes: int | None = None
    """``GossipConfig.read_ahead_bytes`` of the bench's nodes; None keeps the library's
    default (0 reads in order, the way to measure what read-ahead changes)."""
    interval: float = 10.0
    """Seconds per timeline interval: latency percentiles, RSS and CPU of every node are
    reported for each (the soak scenario prints them; every JSON result holds them)."""

    def __post_init__(self) -> None:
        require_int(self.nodes, "nodes", minimum=2)
        require_int(self.workers, "workers", minimum=0)
        require_int(self.publishers, "publishers")
        require_number(self.rate, "rate", allow_zero=True, unit="messages/s")
        require_int(self.size, "size", minimum=20)
        require(self.size <= 512 * 1024, "size", "must be <= 524288 bytes (one frame)")
        require_number(self.duration, "duration")
        if self.messages is not None:
            require_int(self.messages, "messages")
        require(self.rate > 0 or self.messages is not None, "messages",
                 "is required when rate is 0 (as fast as possible)")
        require(self.scenario in SCENARIOS, "scenario",
                 f"must be one of {', '.join(SCENARIOS)}, got {self.scenario!r}")
        require(self.scenario != "kill-worker" or self.workers >= 1, "workers",
                 "must be >= 1 for the kill-worker scenario")
        require(self.scenario != "kill-node" or self.nodes >= 3, "nodes",
                 "must be >= 3 for the kill-node scenario (two survivors)")
        require(bool(self.priority_mix) and all(
            len(pair) == 2 and 0 <= int(pair[0]) <= 255 and int(pair[1]) > 0
            for pair in self.priority_mix), "priority_mix",
            "must be (priority 0-255, weight > 0) pairs")
        require_int(self.seed, "seed", minimum=0)
        require_int(self.links, "links")
        require_number(self.slow_rate, "slow_rate", unit="messages/s")
        require_number(self.drain_timeout, "drain_timeout")
        require_int(self.drop_every, "drop_every", minimum=0)
        if self.anti_entropy_interval is not None:
            require_number(self.anti_entropy_interval, "anti_entropy_interval")
        if self.read_ahead_bytes is not None:
            require_int(self.read_ahead_bytes, "read_ahead_bytes", minimum=0)
        require_number(self.interval, "interval")
        require(self.signing in ("single", "batch"), "signing",
                f"must be single or batch, got {self.signing!r}")
        require_int(self.batch_size, "batch_size", minimum=2)
        require(self.batch_size <= 1024, "batch_size", "must be at most 1024")
        require_number(self.batch_window, "batch_window", allow_zero=True)
        require_number(self.critical_rate, "critical_rate", unit="messages/s")
        require(self.scenario != "priority" or self.publishers >= 2, "publishers",
                 "must be >= 2 for the priority scenario (critical and bulk)")
        require(self.total_messages >= self.publishers, "messages",
                 "must give every publisher at least one message")

    @property
    def total_messages(self) -> int:
        if self.messages is not None:
            return self.messages
        return max(1, round(self.rate * self.duration))

    @property
    def critical_messages(self) -> int:
        """``priority`` scenario: publisher 0's alerts (``critical_rate`` x ``duration``)."""
        return max(2, round(self.critical_rate * self.duration))

    def planned(self) -> list[int]:
        """Messages per publisher (the total split as evenly as possible; in the
        ``priority`` scenario, publisher 0's alerts first and the total among the rest)."""
        if self.scenario == "priority":
            share, extra = divmod(self.total_messages, self.publishers - 1)
            return [self.critical_messages] + [share + (1 if i < extra else 0)
                                               for i in range(self.publishers - 1)]
        share, extra = divmod(self.total_messages, self.publishers)
        return [share + (1 if i < extra else 0) for i in range(self.publishers)]

    def gossip_deviations(self) -> dict[str, object]:
        """The node configuration fields this run sets away from ``GossipConfig.lan()``.

        One scenario deviates by design: a ``burst`` offers every message at once, far
        past what the nodes verify per second, so its whole run is one backlog; anti-
        entropy must be able to repair anything the overload cost from the stores, so
        they hold the whole burst (``max_stored_messages`` = messages + 1,000) where the
        library keeps the latest 10,000 (seconds of traffic at a steady rate)."""
        deviations: dict[str, object] = {}
        if self.scenario == "burst":
            stored = self.total_messages + 1000
            if stored > GossipConfig.lan().max_stored_messages:
                deviations["max_stored_messages"] = stored
        if self.anti_entropy_interval is not None:
            deviations["anti_entropy_interval"] = self.anti_entropy_interval
        if self.read_ahead_bytes is not None:
            deviations["read_ahead_bytes"] = self.read_ahead_bytes
        return deviations

    def replace(self, **changes: Any) -> BenchSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["priority_mix"] = [list(pair) for pair in self.priority_mix]
        data["total_messages"] = self.total_messages
        return data


PRESETS: dict[str, BenchSettings] = {
    "quick": BenchSettings(nodes=5, publishers=1, rate=500, duration=5),
    "small": BenchSettings(nodes=8, publishers=2, rate=500, duration=10),
    "medium": BenchSettings(nodes=16, publishers=2, rate=600, duration=15),
    "large": BenchSettings(nodes=32, publishers=4, rate=400, duration=20, links=3),
}
"""quick: the README command, well under 60 s on 2 cores; small/medium/large: meshes of
8/16/32 node processes at rates a 2-core host carries with every node verifying every
message (the ceiling there is about 2 x raw verify rate / nodes)."""
