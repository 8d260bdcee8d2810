"""The control channel: typed messages over SOCK_SEQPACKET, waiting without polling."""

from __future__ import annotations

import asyncio

from somasync.workers import control
from somasync.workers.protocol import ControlError, Ready, Stop


async def test_senders_blocked_on_a_full_socket_all_go_once_it_drains() -> None:
    supervisor_end, worker_end = control.pair()
    supervisor_end.setblocking(False)
    worker_end.setblocking(False)
    try:
        filled = 0
        while control.send(supervisor_end, Stop()):  # until the worker's queue is full
            filled += 1
        assert filled > 0
        # Two senders wait at once: each must be woken, not only the last one registered.
        first = asyncio.create_task(control.send_soon(supervisor_end, Ready(pid=1)))
        second = asyncio.create_task(control.send_soon(supervisor_end, Ready(pid=2)))
        await asyncio.sleep(0.05)
        assert not first.done()
        assert not second.done()
        received = []
        while len(received) < filled + 2:
            got = control.receive(worker_end)
            assert got is not None
            received.extend(message for message, _fds in got)
            await asyncio.sleep(0)
        assert await first
        assert await second
        assert received[-2:] in ([Ready(pid=1), Ready(pid=2)], [Ready(pid=2), Ready(pid=1)])
    finally:
        supervisor_end.close()
        worker_end.close()


async def test_a_sender_gives_up_when_the_socket_never_drains() -> None:
    supervisor_end, worker_end = control.pair()
    supervisor_end.setblocking(False)
    try:
        while control.send(supervisor_end, Stop()):
            pass
        assert not await control.send_soon(supervisor_end, Stop(), within=0.05)
    finally:
        supervisor_end.close()
        worker_end.close()


def test_garbage_arrives_as_a_control_error_in_order() -> None:
    a, b = control.pair()
    b.setblocking(False)
    try:
        control.send(a, Ready(pid=3))
        a.send(b"\xff garbage")
        control.send(a, Stop())
        got = control.receive(b)
        assert got is not None
        messages = [message for message, _fds in got]
        assert messages[0] == Ready(pid=3)
        assert isinstance(messages[1], ControlError)
        assert messages[2] == Stop()
        a.close()
        assert control.receive(b) is None  # the other end closed
    finally:
        a.close()
        b.close()

