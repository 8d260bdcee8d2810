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
from somasync.message import Message, sign_batch

__all__ = ["BYPASS_PRIORITY", "BatchSigner"]

_log = logging.getLogger(__name__)

BYPASS_PRIORITY = 192
"""Messages of this priority or more (the critical band of the send queues) are signed
alone at once, never held for a batch."""


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
        self._order = asyncio.Lock()  # FIFO: batches leave in the order they were cut
        self._flushes: set[asyncio.Task[None]] = set()
        self._busy_until = float("-inf")  # loop time until which messages are batched
        self.send_errors = 0
        """Batches a timer's flush could not send (the node stopped under it)."""

    @property
    def pending(self) -> int:
        """Messages waiting for their batch to be signed."""
        return len(self._pending)

    async def add(self, message: Message) -> str:
        """Queue ``message`` (unsigned) for signing; returns its id, fixed already."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._pending and now >= self._busy_until:
            # Idle: no batch to join. Later messages in the window will form one.
            self._busy_until = now + self._window
            signed = message.sign_with_ed25519(self._identity)
            async with self._order:
                await self._send(signed)
            return signed.id
        # The id covers the origin key, so set it before the id is taken.
        message = dataclasses.replace(message, signer_public_key=self._identity.public_key)
        self._pending.append(message)
        if len(self._pending) >= self._size:
            await self.flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window, self._expire)
        return message.id

    def _expire(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self._flush_quietly())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except Exception:
            # The caller that queued these got its id and left; the node's stop (which
            # flushes first) is the only normal way here. Say it once per batch.
            self.send_errors += 1
            _log.warning("a signed batch could not be sent", exc_info=True)

    async def flush(self) -> None:
        """Sign and send whatever waits now; returns once it is handed on."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        self._busy_until = asyncio.get_running_loop().time() + self._window
        signed = sign_batch(batch, self._identity)
        async with self._order:
            for message in signed:
                await self._send(message)

    async def close(self) -> None:
        """Send what waits and wait for flushes in progress (the node is stopping)."""
        await self.flush()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
