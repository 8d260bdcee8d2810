"""The two pieces of event-loop bookkeeping every driver of a sans-IO object repeats.

:class:`DeadlineTimer` is "arm one timer": a sans-IO object says when it next needs
``handle_timer`` (``get_timer()``) after every input, and the driver keeps exactly one
loop timer at that deadline. :class:`TaskSet` holds the short tasks a runtime starts
(one per dial) so that stopping can cancel and await them all.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["DeadlineTimer", "TaskSet"]


class DeadlineTimer:
    """One loop timer that fires ``callback`` at the latest deadline given to
    :meth:`arm` (re-armed only when the deadline changes)."""

    __slots__ = ("_callback", "_deadline", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._deadline: float | None = None

    def arm(self, deadline: float) -> None:
        """Fire at ``deadline`` (loop time) instead of any earlier arming; an infinite
        deadline disarms."""
        if deadline == self._deadline:
            return
        self.cancel()
        if math.isfinite(deadline):
            self._deadline = deadline
            self._handle = self._loop.call_at(deadline, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._deadline = None

    def _fire(self) -> None:
        self._handle = self._deadline = None
        self._callback()


class TaskSet:
    """Tasks started and forgotten, each removed when done, all cancelled at stop."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, loop: asyncio.AbstractEventLoop,
              coroutine: Coroutine[Any, Any, None]) -> None:
        task = loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self) -> None:
        """Cancel every task still running and wait until each has ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
