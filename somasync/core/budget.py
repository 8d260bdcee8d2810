"""Token buckets: how much of something a node still grants now, refilled with time.

Used wherever a request costs this node more than it costs the asker: answering a
neighbour's digest or GRAFT, a membership PUSH, an IAM, a key agreement with a sender
never seen. Pure logic: time is the caller's (monotonic seconds).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["AMPLIFICATION_LIMIT", "KeyedBuckets", "TokenBucket"]

# Bytes a node sends in answer to a peer per byte that peer sent it, at most: on a link
# over the link's whole life (QUIC's anti-amplification rule, RFC 9000 section 8), for a
# membership PUSH per request. What a node sends unasked does not count. A peer that
# expects a large answer pays for it with a padded request.
AMPLIFICATION_LIMIT = 10


class TokenBucket:
    """``burst`` tokens at first, refilled at ``rate`` per second up to ``burst``."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, *, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, *, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many; False (nothing spent) if not."""
        if not self.has(now=now, cost=cost):
            return False
        self.tokens -= cost
        return True

    def has(self, *, now: float, cost: float = 1.0) -> bool:
        """Whether ``cost`` tokens are there now (nothing spent)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return self.tokens >= cost


class KeyedBuckets:
    """One :class:`TokenBucket` per key (a peer's public key, so reconnecting does not
    refill it), for at most ``capacity`` keys, the least recently used forgotten first
    (a forgotten key starts full again: that takes ``capacity`` other keys)."""

    __slots__ = ("_buckets", "burst", "capacity", "rate")

    def __init__(self, rate: float, burst: float, *, capacity: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.capacity = capacity
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def take(self, key: Hashable, *, now: float, cost: float = 1.0) -> bool:
        return self._bucket(key, now).take(now=now, cost=cost)

    def has(self, key: Hashable, *, now: float, cost: float = 1.0) -> bool:
        """Whether ``key`` could spend ``cost`` now, without making it a bucket: asking
        about keys a peer makes up (checks come before what is checked) must not push
        out the buckets of others, which would start full again."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return cost <= self.burst
        self._buckets.move_to_end(key)
        return bucket.has(now=now, cost=cost)

    def _bucket(self, key: Hashable, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now=now)
            if len(self._buckets) > self.capacity:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)
