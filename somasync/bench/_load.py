"""What the load benchmarks share: their child processes' ready/go handshake on
stdin/stdout, and stopping everything a trial started (by PID), also on error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["drain_events", "start_together", "stop_trial"]


async def start_together(processes: Iterable[asyncio.subprocess.Process], *,
                         within: float, before_go: Callable[[], None] | None = None) -> None:
    """Wait for each load process to print ``ready``, call ``before_go`` (a benchmark
    starts its clocks there), then tell them all ``go``.

    Raises:
        RuntimeError: a process exited or said something else first.
    """
    processes = list(processes)
    for process in processes:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), within)
        if line.strip() != b"ready":
            raise RuntimeError("a load process did not start")
    if before_go is not None:
        before_go()
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        await process.stdin.drain()


async def drain_events(events: Any) -> None:
    """Consume a node's events stream (a benchmark that does not read it would fill it)."""
    with contextlib.suppress(EOFError):
        while True:
            await events.recv()


async def stop_trial(processes: Iterable[asyncio.subprocess.Process], node: Any,
                     tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Kill the trial's load processes (ours, by PID), stop its node, end its tasks."""
    for process in processes:
        if process.returncode is None:
            process.kill()
        await process.wait()
    await node.stop()
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
