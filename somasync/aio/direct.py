"""The node facade's direct messages and queries (see :mod:`somasync.core.direct` and
:mod:`somasync.query`): names resolved to keys, messages signed for one node, the
sender waiting for the core's verdict, and queries opened, answered and closed."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from somasync.core import wire
from somasync.core.direct import DIRECT_HEADER, HEAD, MAX_VIA, QUERY_HEADER
from somasync.core.events import DirectAcked, DirectFailed
from somasync.core.payload import MessageType
from somasync.errors import (
    DecodeError,
    DeliveryFailedError,
    MessageTooLargeError,
    NodeStateError,
    QueryLimitError,
)
from somasync.message import Message
from somasync.query import (
    ACK_HEADER,
    FILTER_HEADER,
    MAX_OPEN_QUERIES,
    MAX_RESPONSES,
    RESPONSE_HEADER,
    Query,
    QueryFilter,
    QueryHandler,
    QueryReceived,
    QueryResponse,
)

if TYPE_CHECKING:
    from somasync.aio.node import SynapseNode

__all__ = ["DEFAULT_DIRECT_TIMEOUT", "DirectMessaging"]

DEFAULT_DIRECT_TIMEOUT = 10.0
"""Seconds ``send_message`` retries before it gives up."""
MAX_HANDLERS = 64  # query handlers and acks running at once; more are dropped, counted
_log = logging.getLogger("somasync.node")
VERDICT_GRACE = 5.0  # seconds past the core's own timeout the facade waits for its verdict


class DirectMessaging:
    """Direct messages and queries of one :class:`SynapseNode`."""

    def __init__(self, node: SynapseNode) -> None:
        self._node = node
        self._waiters: dict[bytes, asyncio.Future[DirectAcked | DirectFailed]] = {}
        self._queries: dict[str, Query] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._handler: QueryHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.tags: dict[str, str] = {}
        self.dropped: dict[str, int] = {}
        """Query messages and answers refused here, by reason."""

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    # --- direct messages ---------------------------------------------------------------

    def resolve(self, node_id: str) -> bytes | None:
        """The public key of the node called ``node_id``: bound by the trust policy,
        a member, or a neighbour."""
        node = self._node
        key = node.trust.key_of(node_id)
        if key is not None:
            return key
        for member in node.members():
            if member.node_id == node_id:
                return member.public_key
        return None

    async def send(self, node_id: str, message: Message | MessageType, *,
                   timeout: float, via: Sequence[str] = (),  # noqa: ASYNC109
                   target: bytes | None = None, headers: dict[str, str] | None = None,
                   correlation_id: str | None = None) -> str:
        node = self._node
        if not node.is_running:
            raise NodeStateError("start the node before sending")
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        if len(via) > MAX_VIA:
            raise ValueError(f"an explicit route names at most {MAX_VIA} relays")
        if target is None:
            target = self.resolve(node_id)
            if target is None:
                raise DeliveryFailedError(node_id, "unknown node: no member or binding "
                                                   "of that name")
        relays = []
        for relay in via:
            key = self.resolve(relay)
            if key is None:
                raise DeliveryFailedError(node_id, f"unknown relay {relay!r}")
            relays.append(key)
        signed = self._sign(message, target, headers or {}, correlation_id)
        size = (wire.FRAME_HEADER.size - wire.LENGTH_PREFIX.size + HEAD.size
                + wire.KEY_SIZE * len(relays) + wire.SIGNATURE_SIZE + len(signed.envelope_bytes))
        if size > node.config.gossip.max_frame:
            raise MessageTooLargeError(size, node.config.gossip.max_frame)
        loop = asyncio.get_running_loop()
        message_id = bytes.fromhex(signed.id)
        future = self._waiters.get(message_id)
        if future is None:
            future = self._waiters[message_id] = loop.create_future()
            node.runtime.send_direct(signed, target, node_id, timeout, relays)
        try:
            verdict = await asyncio.wait_for(asyncio.shield(future), timeout + VERDICT_GRACE)
        except TimeoutError:
            raise DeliveryFailedError(node_id, "no verdict from the node's core") from None
        finally:
            if future.done():
                self._waiters.pop(message_id, None)
        if isinstance(verdict, DirectFailed):
            raise DeliveryFailedError(node_id, verdict.reason)
        return signed.id

    def _sign(self, message: Message | MessageType, target: bytes, headers: dict[str, str],
              correlation_id: str | None) -> Message:
        node = self._node
        header = {DIRECT_HEADER: target.hex(), **headers}
        if isinstance(message, Message):
            if message.source != node.node_id:
                raise ValueError(f"a direct message's source must be this node's id "
                                 f"({node.node_id!r}), not {message.source!r}")
            if message.signature is not None:
                if len(message.signature) != wire.SIGNATURE_SIZE:
                    # A DIRECT frame carries one message's own signature; a batch's
                    # proof would only lengthen every copy of one message to one node.
                    raise ValueError("a direct message is signed alone "
                                     "(Message.sign_with_ed25519), not in a batch")
                if message.headers.get(DIRECT_HEADER) != target.hex():
                    raise ValueError(f"a message signed before sending needs its "
                                     f"{DIRECT_HEADER} header set to the target's key (hex)")
                return message
            # Sequence 0: a direct message is in no stream, so it must leave no hole in
            # the sequence numbers the node's broadcasts are checked by.
            message = dataclasses.replace(message, headers={**message.headers, **header},
                                          sequence=0)
        else:
            message = Message(message, node.node_id, sequence=0, headers=header,
                              correlation_id=correlation_id)
        return message.sign_with_ed25519(node.identity)

    def on_event(self, event: object) -> None:
        """A verdict of the core: wake its sender."""
        if isinstance(event, DirectAcked | DirectFailed):
            # Popped here too: a sender that gave up waiting leaves its future behind.
            future = self._waiters.pop(event.message_id, None)
            if future is not None and not future.done():
                future.set_result(event)

    def on_stop(self) -> None:
        """The node stopped: every sender learns so, every query ends."""
        for message_id, future in list(self._waiters.items()):
            if not future.done():
                future.set_result(DirectFailed(message_id, "", b"", "the node stopped"))
        for query_id in list(self._queries):
            self._finish(query_id, timed_out=True)
        for task in list(self._tasks):
            task.cancel()

    # --- queries -----------------------------------------------------------------------

    async def query(self, payload: MessageType, *, filter: QueryFilter | None,
                    timeout: float, max_responses: int | None,  # noqa: ASYNC109
                    ack: bool = False) -> Query:
        node = self._node
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        cap = MAX_RESPONSES if max_responses is None else max_responses
        if not 0 < cap <= MAX_RESPONSES:
            raise ValueError(f"max_responses must be in [1, {MAX_RESPONSES}]")
        if len(self._queries) >= MAX_OPEN_QUERIES:
            raise QueryLimitError(f"{MAX_OPEN_QUERIES} queries are open already")
        query_id = os.urandom(8).hex()
        headers = {QUERY_HEADER: query_id}
        if filter is not None:
            headers[FILTER_HEADER] = filter.encode()
        if ack:
            headers[ACK_HEADER] = "1"
        # It asks for answers within the timeout: nobody need hold it for longer.
        message = Message(payload, node.node_id, headers=headers,
                          ttl=max(1, int(timeout) + 1))
        message = message.sign_with_ed25519(node.identity)
        query = Query(query_id, message.id, cap, () if filter is None else filter.nodes)
        self._queries[query_id] = query
        try:
            await node.broadcast(message)
        except BaseException:
            del self._queries[query_id]
            raise
        loop = asyncio.get_running_loop()
        self._timers[query_id] = loop.call_later(timeout, self._finish, query_id, True)
        return query

    def _finish(self, query_id: str, timed_out: bool) -> None:
        query = self._queries.pop(query_id, None)
        timer = self._timers.pop(query_id, None)
        if timer is not None:
            timer.cancel()
        if query is not None:
            finished = query._finish(timed_out=timed_out)
            if finished is not None:
                self._node._events.put_nowait(finished)

    def on_query(self, handler: QueryHandler | None) -> None:
        self._handler = handler

    def consume(self, message: Message, *, direct: bool) -> bool:
        """A delivered message that belongs to a query (a query to answer, or an answer
        to one of ours): handled here, and True; any other message: False."""
        headers = message.headers
        if direct:
            answered = headers.get(RESPONSE_HEADER)
            acked = answered is None
            query_id = headers.get(ACK_HEADER) if answered is None else answered
            if query_id is None:
                return False
            query = self._queries.get(query_id)
            if query is None:
                self._drop("query_response_late")
            elif message.correlation_id != query.message_id:
                self._drop("query_response_mismatch")
            elif acked:
                query._ack(message.source)
            elif query._offer(QueryResponse(message.source, message)):
                self._finish(query_id, timed_out=False)
            return True
        query_id = headers.get(QUERY_HEADER)
        if query_id is None:
            return False
        self._on_query(query_id, message)
        return True

    def _on_query(self, query_id: str, message: Message) -> None:
        node = self._node
        text = message.headers.get(FILTER_HEADER)
        try:
            query_filter = QueryFilter() if text is None else QueryFilter.decode(text)
        except DecodeError:
            self._drop("bad_query")
            return
        if not query_filter.matches(node.node_id, self.tags):
            return
        if message.signer_public_key is None:
            self._drop("query_unsigned")  # an answer needs a key to go to
            return
        asker = message.source
        key = message.signer_public_key

        async def respond(payload: MessageType) -> None:
            await self.send(asker, payload, timeout=DEFAULT_DIRECT_TIMEOUT, target=key,
                            headers={RESPONSE_HEADER: query_id},
                            correlation_id=message.id)

        received = QueryReceived(query_id, asker, message)
        received._respond = respond
        node._events.put_nowait(received)
        if message.headers.get(ACK_HEADER) is not None:
            # Serf's ack: "it reached me and I match", whatever the application answers.
            self._spawn(self.send(asker, MessageType.Data(""), timeout=DEFAULT_DIRECT_TIMEOUT,
                                  target=key, headers={ACK_HEADER: query_id},
                                  correlation_id=message.id))
        handler = self._handler
        if handler is not None:
            self._spawn(self._answer(handler, received))

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        if len(self._tasks) >= MAX_HANDLERS:
            work.close()
            self._drop("query_handlers_busy")
            return
        task = asyncio.get_running_loop().create_task(self._quietly(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, work: Coroutine[Any, Any, object]) -> None:
        try:
            await work
        except DeliveryFailedError:
            self._drop("query_answer_unacknowledged")
        except NodeStateError:
            pass  # stopped meanwhile

    async def _answer(self, handler: QueryHandler, received: QueryReceived) -> None:
        try:
            answer = await handler(received)
        except Exception:
            # The application's handler failed: its query goes unanswered, the node on.
            self._drop("query_handler_failed")
            _log.exception("the query handler failed on query %s", received.query_id)
            return
        if answer is not None and not received.answered:
            await received.respond(answer)
