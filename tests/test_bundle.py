"""Bundles: a large payload cut into signed chunks and put back together, whole or not at
all, with bounded memory (``somasync.bundle``)."""

from __future__ import annotations

import dataclasses
import time

import nacl.signing
import pytest

from somasync.bundle import CHUNK_BYTES, CHUNK_COST, PER_ORIGIN, Reassembler, is_chunk, split
from somasync.core.payload import MessageType
from somasync.message import Message

KEY = nacl.signing.SigningKey(bytes(range(32)))
NOW = time.time()  # the chunks are stamped now: within their TTL


def chunks_of(payload: MessageType, *, ttl: int = 600) -> list[Message]:
    return [c.sign_with_ed25519(KEY)
            for c in split(payload, "origin", priority=128, ttl=ttl)]


def reassembler(max_bytes: int = 64 * CHUNK_BYTES) -> Reassembler:
    return Reassembler(max_bytes=max_bytes, max_held=2 * max_bytes)


@pytest.mark.parametrize("payload", [
    MessageType.Binary(bytes(range(256)) * (3 * CHUNK_BYTES // 256 + 7)),
    MessageType.Data("ioc " * (CHUNK_BYTES // 2)),
    MessageType.Binary(b""),
])
def test_a_payload_comes_back_whole_once_in_any_order(payload: MessageType) -> None:
    chunks = chunks_of(payload)
    assert all(is_chunk(c) and c.verify_signature() for c in chunks)
    assert all(isinstance(c.message_type, MessageType.Binary)
               and len(c.message_type.data) <= CHUNK_BYTES for c in chunks)
    r = reassembler()
    results = [r.add(c, now=NOW) for c in reversed(chunks)]
    assert all(result is None for result in results[:-1])
    done = results[-1]
    assert done is not None
    whole, parts = done
    assert whole.message_type == payload
    assert whole.signer_public_key == KEY.verify_key.encode()
    assert whole.headers == {"bundle": chunks[0].headers["bundle"], "chunks": str(len(chunks))}
    assert [p.headers["chunk"] for p in parts] == [str(i) for i in range(len(chunks))]
    assert r.statistics().delivered == 1
    assert r.statistics().held_bytes == 0


def test_chunks_that_disagree_about_their_bundle_drop_it() -> None:
    chunks = chunks_of(MessageType.Binary(b"x" * (2 * CHUNK_BYTES + 1)))
    liar = dataclasses.replace(chunks[1], headers={**chunks[1].headers, "hash": "00" * 32},
                               signature=None).sign_with_ed25519(KEY)
    r = reassembler()
    assert r.add(chunks[0], now=NOW) is None
    assert r.add(liar, now=NOW) is None
    assert r.statistics().dropped == {"bad_chunk": 1}
    assert r.statistics().in_progress == 0


def test_a_whole_that_does_not_match_its_hash_is_not_delivered() -> None:
    """An origin that signs chunks of other bytes than it described."""
    chunks = chunks_of(MessageType.Binary(b"a" * (CHUNK_BYTES + 10)))
    forged = dataclasses.replace(chunks[1], message_type=MessageType.Binary(b"b" * 10),
                                 signature=None).sign_with_ed25519(KEY)
    r = reassembler()
    assert r.add(chunks[0], now=NOW) is None
    assert r.add(forged, now=NOW) is None
    assert r.statistics().dropped == {"hash_mismatch": 1}


def test_a_bundle_larger_than_allowed_is_refused_from_its_first_chunk() -> None:
    chunks = chunks_of(MessageType.Binary(b"z" * (3 * CHUNK_BYTES)))
    r = reassembler(max_bytes=2 * CHUNK_BYTES)
    assert r.add(chunks[0], now=NOW) is None
    assert r.statistics().dropped == {"too_large": 1}
    assert r.statistics().held_bytes == 0


def test_memory_is_bounded_the_bundle_waiting_longest_goes_first() -> None:
    r = Reassembler(max_bytes=4 * CHUNK_BYTES, max_held=3 * CHUNK_BYTES)
    first = chunks_of(MessageType.Binary(b"1" * (4 * CHUNK_BYTES)))
    second = chunks_of(MessageType.Binary(b"2" * (2 * CHUNK_BYTES)))
    r.add(first[0], now=NOW)
    r.add(first[1], now=NOW)
    r.add(second[0], now=NOW)
    r.add(second[1], now=NOW)  # over the bound: the first bundle is dropped
    assert r.statistics().dropped == {"memory": 1}
    assert r.statistics().held_bytes <= 3 * CHUNK_BYTES


def test_a_bundle_that_does_not_complete_within_its_ttl_is_dropped() -> None:
    chunks = chunks_of(MessageType.Binary(b"t" * (2 * CHUNK_BYTES)), ttl=60)
    r = reassembler()
    r.add(chunks[0], now=chunks[0].timestamp)
    r.expire(now=chunks[0].timestamp + 61)
    assert r.statistics().dropped == {"expired": 1}
    assert r.statistics().in_progress == 0
    # The rest arriving late starts nothing that could complete.
    assert r.add(chunks[1], now=chunks[0].timestamp + 62) is None


def test_one_origin_cannot_crowd_out_the_others() -> None:
    """A review found one origin's bundles could push every other origin's out of a
    shared queue: now an origin holds at most PER_ORIGIN bundles in progress, and the
    memory bound takes from the origin holding most."""
    other = nacl.signing.SigningKey(bytes(range(1, 33)))
    honest = [c.sign_with_ed25519(other) for c in split(
        MessageType.Binary(b"h" * (3 * CHUNK_BYTES)), "honest", priority=128, ttl=600)]
    r = Reassembler(max_bytes=4 * CHUNK_BYTES, max_held=6 * CHUNK_BYTES)
    assert r.add(honest[0], now=NOW) is None
    for i in range(PER_ORIGIN + 3):  # the greedy origin starts bundle after bundle
        for chunk in chunks_of(MessageType.Binary(bytes([i]) * (4 * CHUNK_BYTES)))[:3]:
            r.add(chunk, now=NOW)
    assert r.statistics().dropped.get("crowded", 0) + \
        r.statistics().dropped.get("memory", 0) >= 3
    # The honest bundle survived all of it and completes.
    assert r.add(honest[1], now=NOW) is None
    done = r.add(honest[2], now=NOW)
    assert done is not None
    assert done[0].message_type == MessageType.Binary(b"h" * (3 * CHUNK_BYTES))


def test_tiny_chunks_count_for_their_cost_and_a_dropped_bundle_stays_dropped() -> None:
    r = reassembler()
    tail = chunks_of(MessageType.Binary(b"s" * (CHUNK_BYTES + 1)))  # a 5-byte last chunk
    assert r.add(tail[1], now=NOW) is None
    assert r.statistics().held_bytes == CHUNK_COST
    r.expire(now=NOW + 10_000)
    assert r.statistics().dropped == {"expired": 1}
    assert r.add(tail[0], now=NOW) is None  # starts nothing that cannot complete
    assert r.statistics().dropped == {"expired": 1, "already_dropped": 1}
    assert r.statistics().in_progress == 0


def test_the_whole_message_takes_its_fields_from_chunk_zero() -> None:
    chunks = chunks_of(MessageType.Binary(b"z" * (2 * CHUNK_BYTES)))
    r = reassembler()
    r.add(chunks[1], now=NOW)
    done = r.add(chunks[0], now=NOW)
    assert done is not None
    assert done[0].sequence == chunks[0].sequence
