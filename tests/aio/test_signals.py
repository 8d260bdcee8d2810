"""SIGTERM stops a node gracefully in both runtimes: its members hear that it left."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from somasync import MembershipConfig, SynapseEvent, SynapseNodeBuilder

pytestmark = pytest.mark.multiprocess

DEADLINE = 30.0

NODE_SCRIPT = """
import asyncio, sys
from somasync import MembershipConfig, SynapseNodeBuilder

async def main() -> None:
    node, _messages, _events = (SynapseNodeBuilder().with_node_id("b")
        .with_bind_address("127.0.0.1:0").add_bootstrap_peer(sys.argv[1])
        .with_membership_config(MembershipConfig.local())
        .with_workers(int(sys.argv[2])).build())
    await node.start()
    print(node.listen_address, flush=True)
    await asyncio.Event().wait()  # until a signal ends the process

if __name__ == "__main__":
    asyncio.run(main())
"""


@pytest.mark.parametrize("workers", [0, 2])
async def test_sigterm_makes_a_node_leave_before_it_exits(tmp_path: Path,
                                                          workers: int) -> None:
    node, _messages, events = (SynapseNodeBuilder().with_node_id("a")
                               .with_bind_address("127.0.0.1:0")
                               .with_membership_config(MembershipConfig.local()).build())
    script = tmp_path / "node.py"
    script.write_text(NODE_SCRIPT)
    async with node:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(script), node.listen_address, str(workers),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            async def wait_for_event(kind: type) -> None:
                while True:
                    event = await events.recv()
                    if isinstance(event, kind) and event.peer_id == "b":
                        return

            assert process.stdout is not None
            # start() has returned (handlers are installed at its end) once it prints.
            assert await asyncio.wait_for(process.stdout.readline(), DEADLINE)
            await asyncio.wait_for(wait_for_event(SynapseEvent.PeerJoined), DEADLINE)
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(wait_for_event(SynapseEvent.PeerLeft), DEADLINE)
            await asyncio.wait_for(process.communicate(), DEADLINE)
            # Stopped, then ended by the signal as it would have been without the handler.
            assert process.returncode == -signal.SIGTERM
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await process.communicate()
