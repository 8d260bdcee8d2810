"""BatchSigner on its own: what it owes the callers it gave ids to."""

from __future__ import annotations

import asyncio

import pytest

from somasync import Message, MessageType
from somasync.aio.signer import MAX_IN_FLIGHT, BatchSigner
from somasync.core.crypto import Identity
from somasync.errors import NodeStateError
from somasync.testing import wait_until

pytestmark = pytest.mark.filterwarnings("error")


def unsigned(i: int) -> Message:
    return Message(MessageType.Data(f"m{i}"), "feed")


async def test_a_cancelled_caller_leaves_no_message_of_its_batch_unsent() -> None:
    sent: list[str] = []
    gate = asyncio.Event()
    gate.set()

    async def send(message: Message) -> None:
        await gate.wait()
        sent.append(message.id)

    signer = BatchSigner(Identity.generate(), 4, 60.0, send)
    ids = [await signer.add(unsigned(0))]  # idle: alone, at once
    gate.clear()  # the next batch's send stalls, as on a full worker ring
    ids += [await signer.add(unsigned(i)) for i in range(1, 4)]
    filling = asyncio.create_task(signer.add(unsigned(4)))
    await wait_until(lambda: signer.pending == 0, "the batch to be cut")
    filling.cancel()  # the caller gives up waiting (a wait_for timeout)
    with pytest.raises(asyncio.CancelledError):
        await filling
    gate.set()
    await wait_until(lambda: len(sent) == 5, "every message of the batch")
    assert sent[:4] == ids
    assert signer.send_errors == 0


async def test_one_message_that_cannot_be_sent_does_not_take_its_batch_with_it() -> None:
    sent: list[str] = []

    async def send(message: Message) -> None:
        if message.message_type == MessageType.Data("m2"):
            raise NodeStateError("gone")
        sent.append(message.id)

    signer = BatchSigner(Identity.generate(), 3, 60.0, send)
    for i in range(4):
        await signer.add(unsigned(i))
    assert len(sent) == 3  # m0 alone, then m1 and m3 of the batch
    assert signer.send_errors == 1


async def test_a_closed_signer_sends_what_waits_and_refuses_more() -> None:
    sent: list[str] = []

    async def send(message: Message) -> None:
        sent.append(message.id)

    signer = BatchSigner(Identity.generate(), 8, 60.0, send)
    ids = [await signer.add(unsigned(i)) for i in range(3)]
    await signer.close()
    assert sent == ids
    with pytest.raises(NodeStateError):
        await signer.add(unsigned(9))


async def test_batches_cut_by_the_timer_hold_back_the_publisher_when_sends_stall() -> None:
    gate = asyncio.Event()

    async def send(message: Message) -> None:
        await gate.wait()

    signer = BatchSigner(Identity.generate(), 1000, 0.05, send)
    gate.set()
    await signer.add(unsigned(0))  # alone; the next ones, within 50 ms, batch
    gate.clear()  # every send stalls from here, as on a full worker ring
    publisher = asyncio.create_task(_publish(signer, 1, 100_000))
    await wait_until(lambda: signer.in_flight > MAX_IN_FLIGHT, "batches to pile up")
    await asyncio.sleep(0.3)  # six more windows: without back-pressure, six more batches
    assert not publisher.done()
    assert signer.in_flight <= MAX_IN_FLIGHT + 2
    publisher.cancel()
    gate.set()
    await signer.close()


async def _publish(signer: BatchSigner, first: int, count: int) -> None:
    for i in range(first, first + count):
        await signer.add(unsigned(i))
        if i % 10 == 0:
            await asyncio.sleep(0.001)
