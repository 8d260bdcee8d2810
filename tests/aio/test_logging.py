"""What a node logs: under the ``somasync`` logger, once per fact, never per message or
per retry."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from somasync import MembershipConfig, PeerUnreachable, SynapseNodeBuilder
from somasync.testing import wait_until

DEADLINE = 10.0


def unused_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_library_is_silent_unless_the_application_configures_logging() -> None:
    handlers = logging.getLogger("somasync").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


async def test_an_unreachable_peer_is_logged_once_however_often_it_is_retried(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="somasync")
    address = f"127.0.0.1:{unused_port()}"
    node, _messages, events = (SynapseNodeBuilder().with_bind_address("127.0.0.1:0")
                               .with_auto_discovery(False)  # keep redialling the seed
                               .add_bootstrap_peer(address).build())
    async with node:
        await wait_until(lambda: node.control.statistics() is not None
                         and node.control.statistics().connect_failures >= 3,  # type: ignore[union-attr]
                         "three failed dials", DEADLINE)
    # Also an event (once), for applications that watch events rather than logs.
    seen = []
    while (event := events.try_recv()) is not None:
        seen.append(event)
    assert [e for e in seen if isinstance(e, PeerUnreachable)] == [PeerUnreachable(address)]
    unreachable = [r for r in caplog.records if "cannot reach" in r.getMessage()]
    assert len(unreachable) == 1
    assert unreachable[0].levelno == logging.WARNING
    assert address in unreachable[0].getMessage()
    assert unreachable[0].name == "somasync.control"


async def test_membership_verdicts_are_logged_once_each(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="somasync")
    local = MembershipConfig.local()
    x, _xm, _xe = (SynapseNodeBuilder().with_node_id("x").with_bind_address("127.0.0.1:0")
                   .with_membership_config(local).build())
    async with x:
        y, _ym, _ye = (SynapseNodeBuilder().with_node_id("y")
                       .with_bind_address("127.0.0.1:0").add_bootstrap_peer(x.listen_address)
                       .with_membership_config(local).build())
        async with y:
            await wait_until(lambda: len(x.members()) == 2, "x to know y", DEADLINE)
        await wait_until(lambda: any("member y" in r.getMessage() and "left" in r.getMessage()
                                     for r in caplog.records), "x to log that y left",
                         DEADLINE)
    messages = [r.getMessage() for r in caplog.records if r.name == "somasync.control"]
    assert sum("member y joined" in m for m in messages) == 1
    assert sum("member y" in m and "left" in m for m in messages) == 1


@pytest.mark.parametrize("workers", [0, 2])
async def test_a_refused_peer_is_logged_once_however_often_it_comes_back(
        caplog: pytest.LogCaptureFixture, workers: int) -> None:
    from somasync import SecurityConfig
    from somasync.core.crypto import Identity

    caplog.set_level(logging.INFO, logger="somasync")
    keys = {name: Identity.generate() for name in ("a", "x")}
    listed = SecurityConfig(trust="allowlist", allowlist={"a": keys["a"].public_key})
    a, _am, _ae = (SynapseNodeBuilder().with_node_id("a").with_bind_address("127.0.0.1:0")
                   .with_workers(workers).with_security_config(listed)
                   .with_signing_key(keys["a"].signing_key)
                   .with_membership_config(MembershipConfig.local()).build())
    async with a:
        x, _xm, _xe = (SynapseNodeBuilder().with_node_id("x").with_bind_address("127.0.0.1:0")
                       .with_signing_key(keys["x"].signing_key)
                       .with_membership_config(MembershipConfig.local())
                       .add_bootstrap_peer(a.listen_address).build())
        async with x:
            async def refusals() -> int:
                return (await a.get_stats()).rejected.get("not_allowed", 0)

            for _ in range(300):  # x redials its seed: refused each time
                if await refusals() >= 3:
                    break
                await asyncio.sleep(0.1)
            assert await refusals() >= 3
    lines = [r for r in caplog.records if "not_allowed" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING
    assert "'x'" in lines[0].getMessage()
