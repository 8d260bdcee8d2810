"""Fair reading (aio/fair.py): a flood reaches the endpoint a slice per loop turn."""

from __future__ import annotations

import asyncio

from somasync.aio.fair import DEFAULT_READ_SLICE as READ_SLICE, SlicedReader


class FakeTransport:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return False


async def test_a_large_read_is_fed_a_slice_per_turn_and_other_work_runs_between() -> None:
    loop = asyncio.get_running_loop()
    order: list[str] = []
    fed = bytearray()

    def feed(data: bytes) -> None:
        assert len(data) <= READ_SLICE
        fed.extend(data)
        order.append("flood")

    reader = SlicedReader(loop, feed)
    transport = FakeTransport()
    reader.transport = transport  # type: ignore[assignment]
    flood = bytes(range(256)) * (5 * READ_SLICE // 256 + 7)
    reader.data_received(flood)
    assert transport.paused
    assert order == ["flood"]

    async def honest() -> None:
        for _ in range(6):
            order.append("honest")
            await asyncio.sleep(0)

    await honest()
    for _ in range(1000):  # a turn per slice; bounded
        if not reader.backlog:
            break
        await asyncio.sleep(0)
    assert bytes(fed) == flood
    assert not transport.paused
    # The other link's work ran between the flood's slices, not after all of them.
    first_honest = order.index("honest")
    assert first_honest < len(order) - 1 - order[::-1].index("flood")


async def test_bytes_arriving_while_paused_keep_their_order() -> None:
    fed = bytearray()
    reader = SlicedReader(asyncio.get_running_loop(), fed.extend)
    reader.transport = FakeTransport()  # type: ignore[assignment]
    reader.data_received(b"a" * (READ_SLICE + 10))
    reader.data_received(b"b" * 5)  # already in flight when reading paused
    for _ in range(1000):  # a turn per slice; bounded
        if not reader.backlog:
            break
        await asyncio.sleep(0)
    assert bytes(fed) == b"a" * (READ_SLICE + 10) + b"b" * 5


async def test_small_reads_go_straight_through() -> None:
    fed: list[bytes] = []
    reader = SlicedReader(asyncio.get_running_loop(), fed.append)
    transport = FakeTransport()
    reader.transport = transport  # type: ignore[assignment]
    reader.data_received(b"x" * 100)
    assert fed == [b"x" * 100]
    assert transport.pauses == 0
