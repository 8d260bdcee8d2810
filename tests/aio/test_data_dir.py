"""A node restarted with its data directory: same member, nothing delivered twice, what it
missed caught up, revocations still applied (both runtimes)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from somasync import (
    DataDirError,
    GossipConfig,
    MembershipConfig,
    Message,
    MessageType,
    SecurityConfig,
    SynapseNode,
    SynapseNodeBuilder,
)
from somasync.aio.channel import Stream
from somasync.core.crypto import Identity
from somasync.keys import revocation_message
from somasync.testing import wait_until

pytestmark = pytest.mark.multiprocess

DEADLINE = 30.0


class Receiver:
    """A node and what its application received, kept across its restarts."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    def watch(self, messages: Stream[Message]) -> None:
        async def drain() -> None:
            with contextlib.suppress(EOFError):
                while True:
                    message = await messages.recv()
                    self.texts.append(message.message_type.text)  # type: ignore[union-attr]

        self._tasks.append(asyncio.create_task(drain()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def builder(name: str, *, workers: int = 0, data_dir: Path | None = None,
            seed: str | None = None, security: SecurityConfig | None = None
            ) -> SynapseNodeBuilder:
    built = (SynapseNodeBuilder().with_node_id(name).with_bind_address("127.0.0.1:0")
             .with_gossip_config(GossipConfig.local())
             .with_membership_config(MembershipConfig.local())
             .with_security_config(security or SecurityConfig())
             .with_workers(workers).with_data_dir(data_dir))
    return built.add_bootstrap_peer(seed) if seed else built


async def publish(node: SynapseNode, texts: list[str]) -> None:
    for text in texts:
        await node.broadcast_message(MessageType.Data(text))


@pytest.mark.parametrize("workers", [0, 2])
async def test_a_restarted_node_delivers_nothing_twice_and_catches_up_on_what_it_missed(
        workers: int, tmp_path: Path) -> None:
    publisher, _pm, _pe = builder("publisher").build()
    receiver = Receiver()
    async with publisher:
        node, messages, _events = builder("keeper", workers=workers, data_dir=tmp_path / "keeper",
                                          seed=publisher.listen_address).build()
        first_key = node.public_key
        receiver.watch(messages)
        try:
            async with node:
                await wait_until(lambda: "keeper" in publisher.connected_peers(),
                                 "the keeper to link", DEADLINE)
                await publish(publisher, [f"before-{i}" for i in range(10)])
                await publish(node, [f"own-{i}" for i in range(3)])
                await wait_until(lambda: len(receiver.texts) == 10, "10 deliveries", DEADLINE)
            # Down: the mesh goes on without it.
            await publish(publisher, [f"missed-{i}" for i in range(10)])

            again, messages, _events = builder("keeper", workers=workers,
                                               data_dir=tmp_path / "keeper",
                                               seed=publisher.listen_address).build()
            assert again.public_key == first_key  # the same member: its key was kept
            receiver.watch(messages)
            async with again:
                await wait_until(lambda: sum(t.startswith("missed-") for t in receiver.texts)
                                 == 10, "the missed messages", DEADLINE)
                # One more through the live link: anything old that anti-entropy would
                # hand back has had its chance by now.
                await publish(publisher, ["after"])
                await wait_until(lambda: "after" in receiver.texts, "a live message",
                                 DEADLINE)
                stats = await again.get_stats()
        finally:
            await receiver.close()
        # Each message once: none of the 10 before, none of its own 3, all 10 missed.
        assert sorted(receiver.texts) == sorted(
            [f"before-{i}" for i in range(10)] + [f"missed-{i}" for i in range(10)]
            + ["after"])
        assert stats.messages_processed == 11

        # The control: a node without the directory is handed the old messages, so the
        # check above could fail.
        fresh, fresh_messages, _e = builder("fresh", seed=publisher.listen_address).build()
        control = Receiver()
        control.watch(fresh_messages)
        try:
            async with fresh:
                await wait_until(lambda: sum(t.startswith("before-") for t in control.texts)
                                 == 10, "a fresh node to get the old messages", DEADLINE)
        finally:
            await control.close()


async def test_a_running_nodes_data_dir_cannot_be_used_by_a_second_node(tmp_path: Path) -> None:
    node, _m, _e = builder("one", data_dir=tmp_path / "d").build()
    async with node:
        second, _m2, _e2 = builder("two", data_dir=tmp_path / "d").build()
        with pytest.raises(DataDirError, match="in use by another node"):
            await second.start()
        assert not second.is_running
    # Stopped: the directory is free (the stopped node takes it back if started again).
    other, _m, _e = builder("one", data_dir=tmp_path / "d").build()
    async with other:
        assert other.public_key == node.public_key
        with pytest.raises(DataDirError, match="in use by another node"):
            await node.start()
        assert not node.is_running


async def test_a_given_key_other_than_the_kept_one_is_refused(tmp_path: Path) -> None:
    node, _m, _e = builder("one", data_dir=tmp_path / "d").build()
    async with node:
        pass
    with pytest.raises(DataDirError, match="not the one given"):
        builder("one", data_dir=tmp_path / "d").with_signing_key(
            Identity.generate().signing_key).build()


async def test_a_revocation_applied_before_a_restart_still_holds_after_it(
        tmp_path: Path) -> None:
    operator = Identity.generate()
    revoked = Identity.generate().public_key
    security = SecurityConfig(operator_keys=frozenset([operator.public_key]))
    node, _m, _e = builder("keeper", data_dir=tmp_path / "d", security=security).build()
    async with node:
        await node.broadcast(revocation_message(operator, revoked, sequence=1))
        assert node.trust.is_revoked(revoked)
    again, _m, _e = builder("keeper", data_dir=tmp_path / "d", security=security).build()
    # Before it starts or hears from anyone.
    assert again.trust.is_revoked(revoked)
    assert [key for key, _notice in again.trust.revocations()] == [revoked]


async def test_a_node_built_but_not_started_holds_no_lock(tmp_path: Path) -> None:
    """Found in review: the lock was taken when the node was built, so a node built and
    never started (or one whose construction failed) kept the directory locked."""
    idle, _m, _e = builder("idle", data_dir=tmp_path / "d").build()
    running, _m2, _e2 = builder("running", data_dir=tmp_path / "d").build()
    async with running:
        assert running.public_key == idle.public_key
