"""Batch signing of a node's own messages (``NodeConfig.signing_batch_size``).

A message that finds the signer idle (nothing waiting, no batch signed within the last
window) is signed alone at once: a node that publishes now and then pays no latency for
batching. Messages that follow within the window wait at most ``signing_batch_window``
for others, then the batch is signed with one signature over the Merkle tree of their
ids (:func:`somasync.message.sign_batch`) and handed on in the order they were given. A
full batch is signed and sent by the call that filled it, so a publisher faster than the
node waits there instead of growing the batch without bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable

from somasync.core.crypto import Identity
from somasync.core.inbox import CRITICAL
from somasync.errors import NodeStateError
from somasync.message import Message, sign_batch

__all__ = ["BYPASS_PRIORITY", "MAX_IN_FLIGHT", "BatchSigner"]

_log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2
"""Signed batches on their way before a publisher adding more waits for them."""

BYPASS_PRIORITY = CRITICAL
"""Messages of this priority or more (the critical band) are signed alone at once,
never held for a batch."""


class BatchSigner:
    """Collects a node's unsigned messages, signs them in batches, sends them in order.

    Args:
        identity: the node's key.
        size: messages per batch (2 or more).
        window: seconds the first message of a batch waits for the rest.
        send: hands one signed message on (the node's broadcast path).
    """

    def __init__(self, identity: Identity, size: int, window: float,
                 send: Callable[[Message], Awaitable[None]]) -> None:
        self._identity = identity
        self._size = size
        self._window = window
        self._send = send
        self._pending: list[Message] = []
        self._timer: asyncio.TimerHandle | None = None
        # Each signed batch is sent by a task of its own, chained after the one before
        # (batches leave in the order they were cut): a caller cancelled while its batch
        # is on the way cannot leave the rest of it unsent, though its id was given.
        self._sending: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._busy_until = float("-inf")  # loop time until which messages are batched
        self._closed = False
        self.send_errors = 0
        """Messages that could not be handed on (the node stopped under them)."""

    @property
    def pending(self) -> int:
        """Messages waiting for their batch to be signed."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Signed batches (or lone messages) on their way, not yet all handed on."""
        return self._in_flight

    async def add(self, message: Message) -> str:
        """Queue ``message`` (unsigned) for signing; returns its id, fixed already.

        Raises:
            NodeStateError: the signer was closed (the node is stopping).
        """
        if self._closed:
            raise NodeStateError("the node is stopping")
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._pending and now >= self._busy_until:
            # Idle: no batch to join. Later messages in the window will form one.
            self._busy_until = now + self._window
            signed = message.sign_with_ed25519(self._identity)
            await self._dispatch([signed])
            return signed.id
        # The id covers the origin key, so set it before the id is taken.
        message = dataclasses.replace(message, signer_public_key=self._identity.public_key)
        self._pending.append(message)
        if len(self._pending) >= self._size:
            await self.flush()
        else:
            if self._timer is None:
                self._timer = loop.call_later(self._window, self._expire)
            if self._in_flight > MAX_IN_FLIGHT and self._sending is not None:
                # Batches cut by the timer are piling up behind a slow send: the
                # publisher waits for them rather than grow the pile.
                await asyncio.shield(self._sending)
        return message.id

    def _expire(self) -> None:
        self._timer = None
        self._cut()

    def _cut(self) -> asyncio.Task[None] | None:
        """Sign what waits and start sending it after the batches before it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return None
        self._busy_until = asyncio.get_running_loop().time() + self._window
        return self._start(sign_batch(batch, self._identity))

    def _start(self, signed: list[Message]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._send_all(signed, self._sending))
        self._sending = task
        self._in_flight += 1
        return task

    async def _dispatch(self, signed: list[Message]) -> None:
        await asyncio.shield(self._start(signed))

    async def _send_all(self, signed: list[Message],
                        before: asyncio.Task[None] | None) -> None:
        try:
            if before is not None:
                await asyncio.wait([before])  # its outcome is its own (counted there)
            failed = 0
            for message in signed:
                try:
                    await self._send(message)
                except Exception:
                    failed += 1
            if failed:
                # Their ids were given out; say so once per batch.
                self.send_errors += failed
                _log.warning("%d signed message(s) of a batch could not be sent", failed)
        finally:
            self._in_flight -= 1

    async def flush(self) -> None:
        """Sign and send whatever waits now; returns once it is handed on."""
        task = self._cut()
        if task is not None:
            await asyncio.shield(task)

    def reopen(self) -> None:
        """Take messages again (the node started again after a stop)."""
        self._closed = False
        self._busy_until = float("-inf")

    async def close(self) -> None:
        """Send what waits and wait for every batch on its way (the node is stopping);
        later messages are refused."""
        self._closed = True
        await self.flush()
        if self._sending is not None:
            await asyncio.wait([self._sending])
