"""SeenCache: bounded, expiring de-duplication of message ids (stepped clock)."""

from __future__ import annotations

from somasync.core.seen import SeenCache


def ids(count: int, start: int = 0) -> list[bytes]:
    return [n.to_bytes(16, "big") for n in range(start, start + count)]


def test_ids_expire_after_ttl_in_the_order_they_came() -> None:
    cache = SeenCache(capacity=100, ttl=16.0)
    early, late = ids(5), ids(5, start=5)
    for message_id in early:
        cache.add(message_id, now=0.0)
    for message_id in late:
        cache.add(message_id, now=4.0)
    assert cache.next_expiry() == 16.0
    cache.expire(now=15.9)
    assert all(m in cache for m in early + late)
    cache.expire(now=16.0)
    assert not any(m in cache for m in early)
    assert all(m in cache for m in late)
    assert cache.next_expiry() == 20.0
    cache.expire(now=20.0)
    assert len(cache) == 0
    assert cache.next_expiry() is None


def test_capacity_evicts_the_oldest_and_counts_it() -> None:
    cache = SeenCache(capacity=3, ttl=16.0)
    first = ids(5)
    for i, message_id in enumerate(first):
        cache.add(message_id, now=float(i))
    assert len(cache) == 3
    assert cache.evicted == 2
    assert [m in cache for m in first] == [False, False, True, True, True]
    # Expiry after eviction: the runs still line up with the ids that are left.
    cache.expire(now=18.0)
    assert [m in cache for m in first] == [False, False, False, True, True]
    cache.expire(now=20.0)
    assert len(cache) == 0


def test_adding_an_id_twice_keeps_one_entry_and_its_first_expiry() -> None:
    cache = SeenCache(capacity=10, ttl=16.0)
    (message_id,) = ids(1)
    cache.add(message_id, now=0.0)
    cache.add(message_id, now=5.0)
    assert len(cache) == 1
    cache.expire(now=16.0)
    assert message_id not in cache


def test_expiry_touches_only_what_expires() -> None:
    # 100,000 ids, of which one run expires: the sweep must not walk the rest. The
    # deque of ids is consumed from the left only, so its length tells what was touched.
    cache = SeenCache(capacity=200_000, ttl=16.0)
    for message_id in ids(10):
        cache.add(message_id, now=0.0)
    for message_id in ids(100_000, start=10):
        cache.add(message_id, now=5.0)
    cache.expire(now=16.0)
    assert len(cache) == 100_000
    assert len(cache._order) == 100_000
    assert len(cache._runs) == 1


def test_arrivals_at_distinct_instants_share_one_run_per_quantum() -> None:
    # A real node stamps each arrival with its own loop time: runs must not grow with
    # the rate, and no id may outlive its ttl by a quantum or more.
    cache = SeenCache(capacity=100_000, ttl=600.0)
    assert cache.quantum == 1.0
    arrivals = [(n.to_bytes(16, "big"), n * 0.001) for n in range(10_000)]  # 1,000/s
    for message_id, now in arrivals:
        cache.add(message_id, now=now)
    assert len(cache._runs) <= 11
    for message_id, now in arrivals[::97]:
        cache.expire(now=now + 600.0 - 1e-9)
        assert message_id in cache
    cache.expire(now=arrivals[-1][1] + 600.0 + cache.quantum)
    assert len(cache) == 0
