"""The supervisor's side of a worker's DELIVER records: what a torn record still gives."""

from __future__ import annotations

import asyncio
import logging

import pytest

from somasync.config import NodeConfig
from somasync.core import wire
from somasync.core.crypto import Identity
from somasync.core.payload import MessageType
from somasync.message import Message
from somasync.testing import WALL
from somasync.workers.records import ITEM, SupervisorKind, encode_delivery, encode_item
from somasync.workers.supervisor import ShardedRuntime


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
