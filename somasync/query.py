"""Queries: ask the mesh, stream back the answers (Serf's queries are the model).

:meth:`SynapseNode.query <somasync.aio.node.SynapseNode.query>` broadcasts a signed
message whose headers mark it as a query (``somasync-query``: the query id) and carry
its :class:`QueryFilter` (``somasync-query-filter``), both under the asker's signature.
Each node that matches the filter puts a :class:`QueryReceived` on its ``events``
stream and, when the application registered a handler
(:meth:`~somasync.aio.node.SynapseNode.on_query`), answers with what the handler
returns. Answers are direct messages (:meth:`~somasync.aio.node.SynapseNode.send_message`:
signed by the responder, acknowledged, never broadcast) marked ``somasync-query-response``
and correlated with the query's message id. The asker's :class:`Query` yields each
responder's first answer, up to ``max_responses``, until the timeout; then
:class:`QueryFinished` goes on its ``events`` stream.

Differences from Serf: no relay factor (answers already travel acknowledged and
retried); tag filters match this node's :attr:`SynapseNode.tags
<somasync.aio.node.SynapseNode.tags>`, which stay local (Serf gossips its tags).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from somasync.core.payload import MessageType
from somasync.errors import DecodeError
from somasync.tagpattern import TagPattern

if TYPE_CHECKING:
    from somasync.message import Message

__all__ = [
    "MAX_OPEN_QUERIES",
    "MAX_RESPONSES",
    "Query",
    "QueryFilter",
    "QueryFinished",
    "QueryHandler",
    "QueryReceived",
    "QueryResponse",
    "check_pattern",
]

FILTER_HEADER = "somasync-query-filter"
RESPONSE_HEADER = "somasync-query-response"
ACK_HEADER = "somasync-query-ack"  # in a query: "ack on receipt"; in an answer: the ack
MAX_OPEN_QUERIES = 64
"""Queries one node keeps open at once."""
MAX_RESPONSES = 4096
"""Answers one query takes at most (``max_responses`` may set fewer)."""
MAX_FILTER_ITEMS = 256  # names plus tags a filter may list
MAX_PATTERN = 256  # characters of one tag's pattern


def check_pattern(pattern: str) -> None:
    """Refuse a tag pattern outside the language of :class:`somasync.tagpattern.TagPattern`
    (no groups, no anchors, at most :data:`somasync.tagpattern.MAX_STATES` states):
    patterns come from the network, and a node matches them in time linear in its tag
    value, never with Python's backtracking ``re``.

    Raises:
        ValueError: the pattern is not of that form.
    """
    TagPattern(pattern)


@dataclass(frozen=True, slots=True)
class QueryFilter:
    """Which nodes answer: every node when empty.

    Args:
        nodes: node ids; when given, only these nodes answer.
        tags: tag name -> regular expression the node's tag value must match in full
            (``{"role": "sensor|ids"}``); a node without the tag does not answer. No
            groups or anchors (:mod:`somasync.tagpattern`): the patterns come from the
            network and run on every node, so they are matched without backtracking.
    """

    nodes: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    _patterns: dict[str, TagPattern] = field(default_factory=dict, init=False, repr=False,
                                             compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "tags", dict(self.tags))
        if len(self.nodes) + len(self.tags) > MAX_FILTER_ITEMS:
            raise ValueError(f"a filter lists at most {MAX_FILTER_ITEMS} names and tags")
        compiled: dict[str, TagPattern] = {}
        for name, pattern in self.tags.items():
            if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN:
                raise ValueError(f"tag {name!r}: a pattern is a string of at most "
                                 f"{MAX_PATTERN} characters")
            try:
                compiled[name] = TagPattern(pattern)
            except ValueError as exc:
                raise ValueError(f"tag {name!r}: {exc}") from None
        object.__setattr__(self, "_patterns", compiled)

    def encode(self) -> str:
        """The filter as the query's signed header value."""
        return orjson.dumps({"nodes": list(self.nodes), "tags": self.tags}).decode()

    @classmethod
    def decode(cls, text: str) -> QueryFilter:
        """Parse a query's filter header (raises only DecodeError)."""
        try:
            data = orjson.loads(text)
            nodes, tags = data["nodes"], data["tags"]
            if not (isinstance(nodes, list) and all(isinstance(n, str) for n in nodes)
                    and isinstance(tags, dict)):
                raise TypeError("wrong types")
            return cls(tuple(nodes), tags)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DecodeError("bad_query", f"query filter: {exc}") from None

    def matches(self, node_id: str, tags: Mapping[str, str]) -> bool:
        """Whether the node ``node_id`` with these ``tags`` answers. The patterns come
        from the network: they run against this node's own tag values only, which
        bounds what a pathological pattern can cost (keep tag values short)."""
        if self.nodes and node_id not in self.nodes:
            return False
        for name, pattern in self._patterns.items():
            value = tags.get(name)
            if value is None or not pattern.matches(value):
                return False
        return True


@dataclass(frozen=True, slots=True)
class QueryResponse:
    """One node's answer to a query."""

    node_id: str
    message: Message
    """The responder's signed direct message (its ``correlation_id`` is the query's
    message id)."""

    @property
    def payload(self) -> MessageType:
        return self.message.message_type


@dataclass(frozen=True, slots=True)
class QueryFinished:
    """A query closed: its timeout passed (``timed_out``) or its cap was reached."""

    query_id: str
    responses: tuple[str, ...]
    """Node ids that answered, in the order their answers came."""
    timed_out: bool
    acks: tuple[str, ...] = ()
    """Node ids that acknowledged receiving it (a query made with ``ack=True``)."""


@dataclass(eq=False)
class QueryReceived:
    """A query this node matches (an event on ``events``); :meth:`respond` answers it."""

    query_id: str
    from_node: str
    message: Message
    answered: bool = False

    def __post_init__(self) -> None:
        # Not a field: events are plain data (the agent prints each as JSON); only
        # the node that made this event can answer through it.
        self._respond: Callable[[MessageType], Awaitable[None]] | None = None

    @property
    def payload(self) -> MessageType:
        return self.message.message_type

    async def respond(self, payload: MessageType) -> None:
        """Answer the asker directly (once; a second answer is refused).

        Raises:
            DeliveryFailedError: the asker did not acknowledge the answer.
            ValueError: this query was already answered.
        """
        if self.answered:
            raise ValueError(f"query {self.query_id} was already answered")
        if self._respond is None:
            raise ValueError(f"query {self.query_id} was not received by a node")
        self.answered = True
        await self._respond(payload)


QueryHandler = Callable[[QueryReceived], Awaitable[MessageType | None]]
"""What :meth:`~somasync.aio.node.SynapseNode.on_query` takes: an async function of the
query, returning the answer (None: no answer)."""


class Query:
    """An open query: an async iterator of :class:`QueryResponse`, one per responder,
    which ends at the timeout or at ``max_responses`` answers."""

    def __init__(self, query_id: str, message_id: str, max_responses: int,
                 nodes: tuple[str, ...] = ()) -> None:
        self.query_id = query_id
        self.nodes = frozenset(nodes)
        """The node ids the filter named (empty: any node may answer)."""
        self.message_id = message_id
        """Hex id of the query's message: the answers' correlation id."""
        self.max_responses = max_responses
        self.responses: list[QueryResponse] = []
        """Every answer taken so far."""
        self.timed_out = False
        self._queue: asyncio.Queue[QueryResponse | None] = asyncio.Queue()
        self._responders: set[str] = set()
        self.finished = False
        self.duplicates = 0
        """Answers refused because their node had answered already."""
        self.over_cap = 0
        """Answers refused because ``max_responses`` were in."""
        self.unasked = 0
        """Answers refused because their node was not among the filter's ``nodes``."""
        self.acks: list[str] = []
        """Nodes that acknowledged receiving the query (``ack=True``), in order."""

    def _ack(self, node_id: str) -> None:
        if (not self.finished and node_id not in self.acks
                and (not self.nodes or node_id in self.nodes)
                and len(self.acks) < MAX_RESPONSES):
            self.acks.append(node_id)

    def _offer(self, response: QueryResponse) -> bool:
        """Take an answer; True when it made the query reach its cap."""
        if self.finished:
            self.over_cap += 1
            return False
        if self.nodes and response.node_id not in self.nodes:
            self.unasked += 1
            return False
        if response.node_id in self._responders:
            self.duplicates += 1
            return False
        self._responders.add(response.node_id)
        self.responses.append(response)
        self._queue.put_nowait(response)
        return len(self.responses) >= self.max_responses

    def _finish(self, *, timed_out: bool) -> QueryFinished | None:
        if self.finished:
            return None
        self.finished = True
        self.timed_out = timed_out
        self._queue.put_nowait(None)
        return QueryFinished(self.query_id, tuple(r.node_id for r in self.responses),
                             timed_out, tuple(self.acks))

    def __aiter__(self) -> Query:
        return self

    async def __anext__(self) -> QueryResponse:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # every later reader ends too
            raise StopAsyncIteration
        return item

    async def collect(self) -> list[QueryResponse]:
        """Wait until the query finishes; every answer."""
        return [response async for response in self]
