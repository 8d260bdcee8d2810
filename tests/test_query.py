"""Query filters and the asker's side of a query, without a network."""

from __future__ import annotations

import json

import pytest

from somasync import Message, MessageType
from somasync.errors import DecodeError
from somasync.query import Query, QueryFilter, QueryFinished, QueryResponse


def test_filter_round_trips_and_matches_names_and_tags() -> None:
    query_filter = QueryFilter(nodes=("ids-1", "ids-2"), tags={"role": "ids|sensor"})
    assert QueryFilter.decode(query_filter.encode()) == query_filter
    assert query_filter.matches("ids-1", {"role": "sensor", "dc": "x"})
    assert not query_filter.matches("ids-3", {"role": "sensor"})  # not named
    assert not query_filter.matches("ids-1", {"role": "sensors"})  # the whole value
    assert not query_filter.matches("ids-1", {})  # no such tag
    assert QueryFilter().matches("anyone", {})


@pytest.mark.parametrize("text", ['{"nodes": "x", "tags": {}}', "[]", "not json",
                                  '{"nodes": [], "tags": {"a": "("}}', '{"nodes": []}',
                                  '{"nodes": [], "tags": {"a": "' + "x" * 300 + '"}}'])
def test_a_bad_filter_from_the_network_is_a_decode_error(text: str) -> None:
    with pytest.raises(DecodeError):
        QueryFilter.decode(text)


def test_a_bad_filter_is_refused_when_made() -> None:
    with pytest.raises(ValueError, match="role"):
        QueryFilter(tags={"role": "(unclosed"})
    with pytest.raises(ValueError, match="at most"):
        QueryFilter(nodes=tuple(f"n{i}" for i in range(300)))


def response(node: str) -> QueryResponse:
    return QueryResponse(node, Message(MessageType.Data(f"from {node}"), node))


async def test_answers_are_deduplicated_capped_and_limited_to_the_named_nodes() -> None:
    query = Query("q1", "00" * 16, max_responses=2, nodes=("a", "b", "c"))
    assert not query._offer(response("a"))
    assert not query._offer(response("a"))  # the same node again
    assert not query._offer(response("x"))  # never asked
    assert query._offer(response("b"))  # the cap: the query is done
    assert query._finish(timed_out=False) == QueryFinished("q1", ("a", "b"), False)
    assert not query._offer(response("c"))
    assert [r.node_id for r in await query.collect()] == ["a", "b"]
    assert [r.node_id for r in await query.collect()] == []  # ended for every reader
    assert (query.duplicates, query.unasked, query.over_cap) == (1, 1, 1)
    assert query._finish(timed_out=True) is None  # finished once


def test_acks_count_once_per_named_node_until_the_end() -> None:
    query = Query("q2", "00" * 16, max_responses=1, nodes=("a", "b"))
    for node in ("a", "a", "x", "b"):
        query._ack(node)
    assert query.acks == ["a", "b"]
    finished = query._finish(timed_out=True)
    assert finished is not None
    assert finished.acks == ("a", "b")
    query._ack("c")
    assert query.acks == ["a", "b"]


@pytest.mark.parametrize("pattern", [
    "(a|a)*b",  # exponential backtracking in re against "aaaa...": a group under a quantifier
    "(a+)+",
    "^sensor$",  # anchors: a pattern always matches the whole value
    r"(?i)sensor",
])
def test_a_pattern_outside_the_tag_language_is_refused(pattern: str) -> None:
    # A filter is decoded from the network and run on every node's event loop.
    with pytest.raises(ValueError, match="pattern"):
        QueryFilter(tags={"role": pattern})
    text = json.dumps({"nodes": [], "tags": {"role": pattern}})
    with pytest.raises(DecodeError):
        QueryFilter.decode(text)


def test_a_pattern_that_backtracks_in_re_is_matched_without_backtracking() -> None:
    # 93 s in re.fullmatch on "probe"; decoded from the network like any filter.
    pattern = ".?" * 127 + "!"
    text = json.dumps({"nodes": [], "tags": {"role": pattern}})
    query_filter = QueryFilter.decode(text)
    assert not query_filter.matches("n1", {"role": "probe" * 40})
    assert query_filter.matches("n1", {"role": "probe!"})


@pytest.mark.parametrize("pattern", ["sensor", "sensor|ids", "sens.*", "ids-[0-9]+",
                                     r"edge-\d{1,3}\.example", ".*-prod|.*-stage",
                                     "a*a*a*a*a*a*b", "x{1,}y{2,}z*w+"])
def test_the_patterns_people_write_are_taken(pattern: str) -> None:
    QueryFilter(tags={"role": pattern})
