"""Bounded async streams handing deliveries and events to the application."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Stream"]

T = TypeVar("T")


class Stream(Generic[T]):
    """A bounded, single-loop queue with ``recv()`` and ``async for``.

    The node puts items without ever blocking: beyond ``maxsize`` they are dropped and
    counted in ``dropped`` (the node never stalls because the application is slow).
    After :meth:`close` the iterator ends once the buffered items are consumed.
    """

    def __init__(self, maxsize: int) -> None:
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> bool:
        if len(self._items) >= self._maxsize:
            self.dropped += 1
            return False
        self._items.append(item)
        self._wake()
        return True

    def close(self) -> None:
        self._closed = True
        self._wake()

    def reopen(self) -> None:
        self._closed = False

    def _wake(self) -> None:
        # One item wakes one consumer; close() wakes them all.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not self._closed:
                    return

    def try_recv(self) -> T | None:
        """The next item, or None when none is buffered."""
        return self._items.popleft() if self._items else None

    async def recv(self) -> T:
        """Wait for the next item.

        Raises:
            EOFError: the stream is closed and empty.
        """
        while not self._items:
            if self._closed:
                raise EOFError("stream closed")
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self._items.popleft()

    def __aiter__(self) -> Stream[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.recv()
        except EOFError:
            raise StopAsyncIteration from None
