"""Batch signing on real nodes (``NodeConfig.signing_batch_size``), over 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from somasync import (
    ConfigError,
    GossipConfig,
    Message,
    MessageType,
    SynapseNode,
    SynapseNodeBuilder,
)
from somasync.config import NodeConfig
from somasync.core import wire
from somasync.testing import RunningNodes, wait_until

pytestmark = pytest.mark.filterwarnings("error")

DEADLINE = 10.0


class Pair(RunningNodes):
    """A publisher and a receiver linked to it, their deliveries drained."""

    async def add(self, name: str, *, workers: int = 0, batch: int = 1, window: float = 0.002,
                  bootstrap: tuple[str, ...] = ()) -> SynapseNode:
        builder = (SynapseNodeBuilder().with_node_id(name).with_bind_address("127.0.0.1:0")
                   .with_gossip_config(GossipConfig.local()).with_workers(workers)
                   .with_discovery("static"))
        builder = builder.with_batch_signing(batch, window)
        for address in bootstrap:
            builder = builder.add_bootstrap_peer(address)
        return self.nodes[await self.start(*builder.build())]

    def got(self, name: str) -> list[Message]:
        """What the node ``name`` delivered so far."""
        return self.received[[n.node_id for n in self.nodes].index(name)]


@contextlib.asynccontextmanager
async def pair() -> AsyncIterator[Pair]:
    p = Pair()
    try:
        yield p
    finally:
        await p.close()


async def linked(p: Pair, *, publisher_workers: int = 0, receiver_workers: int = 0,
                 batch: int, window: float = 0.002) -> tuple[SynapseNode, SynapseNode]:
    receiver = await p.add("receiver", workers=receiver_workers)
    publisher = await p.add("publisher", workers=publisher_workers, batch=batch,
                            window=window, bootstrap=(receiver.listen_address,))
    await wait_until(lambda: bool(receiver.connected_peers()), "the link", DEADLINE)
    return publisher, receiver


@pytest.mark.parametrize(("publisher_workers", "receiver_workers"), [(0, 0), (2, 2)],
                         ids=["embedded", "workers2"])
async def test_a_node_signs_in_batches_and_its_peer_checks_one_signature_each(
        publisher_workers: int, receiver_workers: int) -> None:
    async with pair() as p:
        publisher, receiver = await linked(p, publisher_workers=publisher_workers,
                                           receiver_workers=receiver_workers, batch=16,
                                           window=30.0)
        sent = [await publisher.broadcast_message(MessageType.Data(f"ioc {i}"))
                for i in range(49)]
        got = p.got("receiver")
        await wait_until(lambda: len(got) >= 49, "every message", DEADLINE)
        assert sorted(m.id for m in got) == sorted(sent)
        assert all(m.verify_signature() for m in got)
        sizes = sorted(len(m.signature or b"") for m in got)
        # The first found the signer idle and went alone; the rest filled three batches
        # (the 30 s window never ran out).
        assert sizes == [wire.SIGNATURE_SIZE] + [wire.batch_authenticator_size(16)] * 48
        stats = await receiver.get_stats()
        assert stats.core.signatures_verified == 4
        assert stats.core.batch_proofs == 45


async def test_a_message_to_an_idle_signer_goes_at_once_and_the_next_within_the_window(
        ) -> None:
    async with pair() as p:
        publisher, _receiver = await linked(p, batch=64, window=0.05)
        first = await publisher.broadcast_message(MessageType.Data("alone"))
        second = await publisher.broadcast_message(MessageType.Data("waits for company"))
        got = p.got("receiver")
        await wait_until(lambda: len(got) == 2, "both messages", DEADLINE)
        assert sorted(m.id for m in got) == sorted([first, second])
        assert all(m.verify_signature() for m in got)


async def test_stop_sends_what_waits_for_its_batch() -> None:
    async with pair() as p:
        publisher, _receiver = await linked(p, batch=64, window=600.0)
        sent = [await publisher.broadcast_message(MessageType.Data(f"late {i}"))
                for i in range(5)]
        got = p.got("receiver")
        await wait_until(lambda: len(got) == 1, "the first, signed alone", DEADLINE)
        assert got[0].id == sent[0]  # the other four wait for a batch (600 s)
        await publisher.stop()
        await wait_until(lambda: len(got) == 5, "the waiting batch", DEADLINE)
        assert sorted(m.id for m in got) == sorted(sent)


async def test_a_restarted_node_signs_in_batches_again() -> None:
    async with pair() as p:
        publisher, receiver = await linked(p, batch=8, window=0.01)
        before = await publisher.broadcast_message(MessageType.Data("before the restart"))
        await publisher.stop()
        await publisher.start()
        await wait_until(lambda: bool(receiver.connected_peers()), "the link again", DEADLINE)
        after = [await publisher.broadcast_message(MessageType.Data(f"after {i}"))
                 for i in range(4)]
        got = p.got("receiver")
        await wait_until(lambda: len(got) == 5, "every message", DEADLINE)
        assert sorted(m.id for m in got) == sorted([before, *after])
        assert all(m.verify_signature() for m in got)


async def test_a_critical_message_is_never_held_for_a_batch() -> None:
    async with pair() as p:
        publisher, _receiver = await linked(p, batch=64, window=600.0)
        first = await publisher.broadcast_message(MessageType.Data("bulk, alone"))
        await publisher.broadcast_message(MessageType.Data("bulk, held"))
        urgent = await publisher.broadcast_message(
            MessageType.Alert("critical", "intrusion", None), priority=255)
        got = p.got("receiver")
        await wait_until(lambda: len(got) == 2, "the critical message", DEADLINE)
        assert {m.id for m in got} == {first, urgent}
        assert all(len(m.signature or b"") == wire.SIGNATURE_SIZE for m in got)


@pytest.mark.parametrize(("field", "value"), [
    ("signing_batch_size", 0), ("signing_batch_size", 4096), ("signing_batch_size", 2.0),
    ("signing_batch_window", -0.1), ("signing_batch_window", float("nan")),
])
def test_bad_batch_settings_name_their_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as raised:
        NodeConfig(**{field: value})  # type: ignore[arg-type]
    assert raised.value.field == field
