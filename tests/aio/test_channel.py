"""The bounded delivery stream: never blocks the node, counts drops, ends on close."""

from __future__ import annotations

import asyncio

import pytest

from somasync import Stream


async def test_bounded_drops_and_counts() -> None:
    stream: Stream[int] = Stream(2)
    assert stream.put_nowait(1)
    assert stream.put_nowait(2)
    assert not stream.put_nowait(3)
    assert stream.dropped == 1
    assert [await stream.recv(), await stream.recv()] == [1, 2]
    assert stream.try_recv() is None


async def test_two_consumers_each_get_an_item() -> None:
    stream: Stream[str] = Stream(10)
    first = asyncio.create_task(stream.recv())
    second = asyncio.create_task(stream.recv())
    await asyncio.sleep(0)
    stream.put_nowait("a")
    stream.put_nowait("b")
    assert sorted(await asyncio.gather(first, second)) == ["a", "b"]


async def test_close_ends_iteration_after_buffered_items() -> None:
    stream: Stream[int] = Stream(10)
    stream.put_nowait(1)
    waiting = asyncio.create_task(anext(aiter(stream)))
    assert await waiting == 1
    pending = asyncio.create_task(stream.recv())
    await asyncio.sleep(0)
    stream.close()
    with pytest.raises(EOFError):
        await pending
    assert [item async for item in stream] == []
