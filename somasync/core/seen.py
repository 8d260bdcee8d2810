"""A bounded de-duplication cache of message ids with a time-to-live."""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["SeenCache"]


class SeenCache:
    """Remembers message ids for ``ttl`` seconds, holding at most ``capacity`` of them.

    Ids are kept in insertion order, so expiry and eviction both pop from the front in
    O(1). When full, the oldest id goes first (and is counted in ``evicted``).
    """

    __slots__ = ("_entries", "capacity", "evicted", "ttl")

    def __init__(self, capacity: int, ttl: float) -> None:
        self._entries: OrderedDict[bytes, float] = OrderedDict()
        self.capacity = capacity
        self.ttl = ttl
        self.evicted = 0

    def __contains__(self, message_id: bytes) -> bool:
        return message_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, message_id: bytes, *, now: float) -> None:
        entries = self._entries
        entries[message_id] = now + self.ttl
        entries.move_to_end(message_id)
        if len(entries) > self.capacity:
            entries.popitem(last=False)
            self.evicted += 1

    def expire(self, *, now: float) -> None:
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if oldest > now:
                break
            entries.popitem(last=False)

    def next_expiry(self) -> float | None:
        if not self._entries:
            return None
        return next(iter(self._entries.values()))
