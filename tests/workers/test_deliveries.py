"""The supervisor's side of a worker's DELIVER records: what a torn record still gives."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from somasync.config import NodeConfig
from somasync.core import wire
from somasync.core.crypto import Identity
from somasync.core.payload import MessageType
from somasync.message import Message
from somasync.testing import WALL, Mesh
from somasync.workers.records import ITEM, SupervisorKind, encode_delivery, encode_item
from somasync.workers.supervisor import ShardedRuntime, _sum_core


class Application:
    """The facade's part a runtime hands deliveries to (what the supervisor calls)."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, str, bool]] = []

    def deliver(self, message: Message, from_peer: str, *, direct: bool = False) -> None:
        self.delivered.append((message.message_type.text, from_peer, direct))  # type: ignore[attr-defined]


def signed(identity: Identity, text: str, sequence: int) -> wire.Envelope:
    return Message(MessageType.Data(text), "w", timestamp=WALL, sequence=sequence,
                   ).sign_with_ed25519(identity).to_envelope()


async def test_a_torn_record_keeps_the_direct_deliveries_before_the_tear(
        caplog: pytest.LogCaptureFixture) -> None:
    # The worker acknowledged the direct messages it put in the record: losing them
    # with the torn item behind them would lose them for good.
    identity = Identity.generate()
    application = Application()
    runtime = ShardedRuntime(NodeConfig(workers=2), identity, application)  # type: ignore[arg-type]
    runtime._loop = asyncio.get_running_loop()
    record = b"".join([
        encode_item(SupervisorKind.DELIVER, 0, 0,
                    encode_delivery("p", signed(identity, "broadcast", 1))),
        encode_item(SupervisorKind.DELIVER_DIRECT, 0, 0,
                    encode_delivery("q", signed(identity, "direct", 2))),
        ITEM.pack(SupervisorKind.DELIVER, 0, 0, 1000) + b"torn",
    ])
    with caplog.at_level(logging.WARNING, logger="somasync.workers"):
        runtime._deliver(1, record)
    assert application.delivered == [("broadcast", "p", False), ("direct", "q", True)]
    assert runtime._ring_corrupted == 1
    assert any("corrupt" in r.getMessage() for r in caplog.records)


def test_a_sharded_nodes_statistics_sum_tree_counters_and_keep_the_longest_timer() -> None:
    """Each worker grows its own tree: its counters add up, but a timer is no count (two
    workers waiting 0.25 s each do not make a node that waits 0.5 s)."""
    mesh = Mesh()
    mesh.add("a")
    stats = mesh.nodes["a"].statistics()
    assert stats.tree is not None

    def with_tree(late_copies: int, lazy_timeout: float) -> object:
        tree = dataclasses.replace(stats.tree, late_copies=late_copies,  # type: ignore[arg-type]
                                   lazy_timeout=lazy_timeout)
        return dataclasses.replace(stats, tree=tree)

    total = _sum_core([with_tree(3, 0.25), with_tree(4, 1.5)], peers=0)  # type: ignore[list-item]
    assert total.tree is not None
    assert total.tree.late_copies == 7
    assert total.tree.lazy_timeout == 1.5
